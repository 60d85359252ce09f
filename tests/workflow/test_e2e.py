"""The embedded default end to end on CPU: every rule of the tiny config, then the HTML report."""

from __future__ import annotations

import json

import pytest
from wf_helpers import REPO, snakemake

pytestmark = pytest.mark.slow

BENCHES = ["nq", "triviaqa", "popqa", "hotpotqa", "2wikimultihopqa", "musique", "bamboogle"]
METHODS = ["search-r1", "prethink", "prethink-softpen", "calibadv", "uniform-neg"]


def test_tiny_pipeline_runs_to_tables_figures_and_report(tmp_path):
    snakemake("-c2", "-d", str(tmp_path), "--configfile", str(REPO / "config/tiny.yaml"), timeout=3600)
    root = tmp_path / "results/synthetic"
    for method in METHODS:
        run = root / "runs/tiny" / method / "seed_0"
        assert json.loads((run / "done.json").read_text())["backend"] == "local"
        assert (run / "final/config.json").exists()
        assert (run / "metrics.jsonl").read_text().count("\n") >= 1
        for bench in BENCHES:
            metrics = json.loads((root / "eval/tiny" / method / "seed_0" / bench / "metrics.json").read_text())
            assert metrics["benchmark"] == bench and 0.0 <= metrics["f1"] <= 1.0
    proxy = json.loads((root / "proxy/tiny/calibadv/seed_0.json").read_text())
    assert proxy["overall"]["has_gold"] is True  # the synthetic world carries gold passages
    table1 = (root / "report/tables/table1_main.md").read_text()
    assert "Tiny (synthetic)" in table1 and "CalibAdv" in table1 and "53.20" in table1
    # the seven training/proxy figures, the Kaplan-Meier figure and the counterfactual update's
    assert len(list((root / "report/figures").glob("*.png"))) == 9
    assert (root / "report/figures/counterfactual_update.png").exists()
    counterfactual = json.loads((root / "counterfactual/tiny/summary.json").read_text())
    assert counterfactual["config"]["reference"] == "prethink"
    assert counterfactual["counts"]["held-out"]["steps"] > 0
    assert all(a["reward_mean"] > 0 for a in counterfactual["advantages"].values())  # none scores 0
    assert "held-out (evidence)" in (root / "report/tables/table10_counterfactual.md").read_text()
    # proxy validation with the stand-in judge on a real transformers serve (docs/judge.md)
    judged = root / "judge/tiny/calibadv/seed_0"
    summary = json.loads((judged / "summary.json").read_text())
    assert summary["stand_in"] is True and summary["overall"]["n"] == 12  # 4 × 3 checkpoints
    assert summary["overall"]["has_gold"] is True
    assert summary["sample_steps"] == "scored"  # the paper's sample: steps the proxy scored c = 1
    assert summary["overall"]["llm_judged"] == 12  # verdict tokens: a verdict for every step
    assert (judged / "sheet.csv").read_text().count("\n") >= 13 and (judged / "sheet.html").exists()
    assert (root / "judge/cache.sqlite").exists()
    table5 = (root / "report/tables/table5_judge.md").read_text()
    assert "stand-in, not a competent judge" in table5 and "Cohen's κ" in table5
    assert "Wilson interval" in table5

    report = tmp_path / "report.html"
    snakemake("-d", str(tmp_path), "--configfile", str(REPO / "config/tiny.yaml"), "--report", str(report))
    assert report.stat().st_size > 10_000
    # a second run finds nothing to do: every output is complete and up to date
    again = snakemake("-n", "-d", str(tmp_path), "--configfile", str(REPO / "config/tiny.yaml"))
    assert "Nothing to be done" in again.stdout + again.stderr
