"""Tables and figures from small synthetic result files: ours beside the paper's numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from wf_helpers import REPO, dump, load_yaml

from calibadv import workflow_config as wc
from calibadv.cli import main
from calibadv.io import atomic_write_jsonl
from calibadv.report.collect import collect, load_paper
from calibadv.report.render import render, tex_escape
from calibadv.report.tables import MISSING, NOT_IN_PAPER, build_tables

BENCHES = ["nq", "triviaqa", "popqa", "hotpotqa", "2wikimultihopqa", "musique", "bamboogle"]


@pytest.fixture
def config(tmp_path, tiny_config):
    """The tiny config, writing under tmp_path, with the model labelled as the paper's 7B."""
    tiny_config["results_dir"] = str(tmp_path / "results")
    tiny_config["models"]["tiny"]["label"] = "Qwen2.5-7B"
    tiny_config["report"]["alpha_sweep"] = {"calibadv": 1.0}
    return wc.validate_config(tiny_config)


@pytest.fixture
def results(config):
    """search-r1 (F1 0.5, collapsed at step 4) and calibadv (F1 0.6) evaluated everywhere;
    prethink only on nq; proxy statistics for calibadv; Parquet tables for Table 7."""
    layout = wc.Layout.of(config)
    scores = {"search-r1": 0.5, "calibadv": 0.6}
    for method, f1 in scores.items():
        for bench in BENCHES:
            dump(f"{layout.eval_dir('tiny', method, bench)}/metrics.json",
                 {"f1": f1, "em": f1 / 2, "high_ppl_ratio": 0.1, "benchmark": bench})  # fmt: skip
        run = layout.run_dir("tiny", method)
        dump(f"{run}/done.json", {"steps": 6, "wall_s": 10, "backend": "local"})
        dump(f"{run}/selection.json", {"step": 3 if method == "search-r1" else 6,
                                       "collapse_step": 4 if method == "search-r1" else None, "reason": "x"})  # fmt: skip
        atomic_write_jsonl(f"{run}/metrics.jsonl", [
            {"step": s, "time_s": 2.0 * s, "entropy": 1.0 / s, "c_mean": 0.3, "f1_mean": 0.1 * s,
             "penalised_c1_frac": 0.4, "empty_silver_frac": 0.25, "softpen_frac": 0.2,
             "c_hist": {"0": 0.5, "1/3": 0.2, "2/3": 0.1, "1": 0.2}}
            for s in (1, 2, 3)
        ])  # fmt: skip
        atomic_write_jsonl(f"{run}/val.jsonl", [{"step": s, "f1": 0.1 * s} for s in (0, 3, 6)])
    dump(f"{layout.eval_dir('tiny', 'prethink', 'nq')}/metrics.json", {"f1": 0.55, "high_ppl_ratio": 0.0})
    dump(layout.proxy("tiny", "calibadv"), {
        "steps": [1, 3],
        "per_step": {"1": {"c_pos_precision": 0.9, "has_gold": True}, "3": {"c_pos_precision": 0.8, "has_gold": True}},
        "overall": {"c_pos_precision": 0.85, "has_gold": True},
    })  # fmt: skip
    Path(layout.test_data("nq")).parent.mkdir(parents=True)
    pd.DataFrame({"data_source": ["synthetic"] * 5 + ["hotpotqa"] * 2}).to_parquet(layout.train_data)
    for bench in BENCHES:
        pd.DataFrame({"data_source": [bench] * 3}).to_parquet(layout.test_data(bench))
    return collect(config)


@pytest.fixture
def tables(config, results):
    paper = load_paper(REPO / "config/paper_results.yaml")
    return {t.key: t for t in build_tables(config, results, paper)}


def rows_of(table, first):
    i = next(i for i, row in enumerate(table.rows) if row[: len(first)] == first)
    return table.rows[i : i + 3]


def test_collect_reads_what_exists_and_skips_what_does_not(results):
    assert ("tiny", "calibadv", "nq") in results.evals
    assert ("tiny", "prethink", "triviaqa") not in results.evals
    assert results.test_counts == {b: 3 for b in BENCHES}
    assert results.train_counts == {"synthetic": 5, "hotpotqa": 2}


def test_table1_puts_ours_beside_the_paper_with_the_difference(tables):
    ours, paper, delta = rows_of(tables["table1_main"], ["Qwen2.5-7B", "CalibAdv"])
    assert ours[2] == "ours" and paper[2] == "paper" and delta[2] == "Δ"
    assert ours[3:5] == ["60.00", "60.00"] and paper[3] == "53.20" and delta[3] == "+6.80"
    assert ours[10] == "60.00" and paper[10] == "56.70" and delta[10] == "+3.30"  # average
    assert ours[11] == "none" and paper[11] == "none"  # collapse point


def test_a_method_the_paper_never_ran_says_so_in_the_paper_cells(tables):
    ours, paper, delta = rows_of(tables["table1_main"], ["Qwen2.5-7B", "SAPO (ours)"])
    assert set(paper[3:]) == {NOT_IN_PAPER} and set(ours[3:]) == set(delta[3:]) == {MISSING}


def test_collapse_point_is_step_over_total(tables):
    ours, paper, _ = rows_of(tables["table1_main"], ["Qwen2.5-7B", "Search-R1"])
    assert ours[11] == "4/6" and paper[11] == "58/205"


def test_paper_rows_without_a_run_show_missing_ours_never_invented(tables):
    ours, paper, delta = rows_of(tables["table1_main"], ["Qwen2.5-3B", "CalibAdv"])
    assert set(ours[3:]) == {MISSING} and set(delta[3:]) == {MISSING}
    assert paper[3] == "50.95"


def test_ablation_shows_partial_runs_and_high_ppl(tables):
    t = tables["table2_ablation"]
    ours, paper, delta = rows_of(t, ["+PreThink", "F1"])
    assert ours[3] == "55.00" and ours[4] == MISSING and ours[10] == MISSING  # no average of 1/7
    assert paper[3] == "49.87" and delta[3] == "+5.13"
    ours, paper, delta = rows_of(t, ["Standard GRPO", "HighPPLRatio"])
    assert ours[3] == "10.00" and paper[3] == "collapse" and delta[3] == MISSING


def test_table3_reports_time_per_step_and_hardware(tables):
    ours, paper, _ = rows_of(tables["table3_proxy"], ["CalibAdv (silver doc)", "F1"])
    assert ours[-2] == "4.00" and paper[-2] == "809.00"
    assert ours[-1] == "CPU x1" and paper[-1] == "8xH20"


def test_table5_has_our_gold_precision_and_the_papers_raters(tables):
    t = tables["table5_judge"]
    assert t.columns[2:4] == ["step 1", "step 3"] and "step 200" in t.columns
    ours = t.rows[0]
    assert ours[1] == "ours" and ours[2:4] == ["0.90", "0.80"] and ours[-1] == "0.85"
    human = next(r for r in t.rows if r[0] == "Human")
    assert human[-1] == "0.89" and human[2] == MISSING


def test_table7_counts_our_tables_beside_the_papers(tables):
    ours, paper, delta = rows_of(tables["table7_datasets"], ["HotpotQA"])
    assert ours[2:] == ["2", "3"] and paper[2:] == ["90447", "7405"] and delta[3] == "-7402"
    ours, paper, _ = rows_of(tables["table7_datasets"], ["NaturalQuestions"])
    assert ours[2] == MISSING and paper[2] == MISSING
    assert any("synthetic 5" in note for note in tables["table7_datasets"].notes)


def test_renders_markdown_booktabs_latex_and_html(tables):
    t = tables["table1_main"]
    md = render(t, "md")
    assert md.splitlines()[2].startswith("| Model | Method |") and "| +6.80 |" in md
    tex = render(t, "tex")
    assert "\\toprule" in tex and "\\bottomrule" in tex and "$\\Delta$" in tex and "---" in tex
    html = render(t, "html")
    assert "<table>" in html and "<td class=\"num\">+6.80</td>" in html
    assert tex_escape("a_b & 50%") == "a\\_b \\& 50\\%"


def test_report_commands_write_every_table_and_figure(tmp_path, config, results):
    cfg = json.dumps(config)
    assert main(["report", "tables", "--config-json", cfg, "--out-dir", str(tmp_path / "t")]) == 0
    names = sorted(p.name for p in (tmp_path / "t").iterdir())
    assert len(names) == 18 and "table1_main.tex" in names
    assert main(["report", "figures", "--config-json", cfg, "--out-dir", str(tmp_path / "f")]) == 0
    pngs = sorted(p.name for p in (tmp_path / "f").iterdir())
    assert pngs == sorted(f"{n}.png" for n in
                          ["training_dynamics", "penalised_c1", "alpha_sweep", "c_distribution",
                           "empty_silver", "softpen_share"])  # fmt: skip
    for png in (tmp_path / "f").iterdir():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_figures_render_when_nothing_has_run_yet(tmp_path, config):
    assert main(["report", "figures", "--config-json", json.dumps(config), "--out-dir", str(tmp_path)]) == 0
    assert len(list(tmp_path.glob("*.png"))) == 6


def test_shipped_paper_config_labels_match_the_papers_rows():
    paper = load_yaml(REPO / "config/paper_results.yaml")
    config = wc.load_config(REPO / "config/config.yaml")
    methods = {r["method"] for r in paper["table1_main"]}
    models = {r["model"] for r in paper["table1_main"]}
    ours_only = {"LLDS (official code)", "SAPO (ours)"}  # rows of ours: "not in paper"
    assert set(config["report"]["method_labels"].values()) - methods == ours_only
    assert {m["label"] for m in config["models"].values()} == models
    variants = {r["variant"] for r in paper["table2_ablation"]}
    assert set(config["report"]["ablation"]["rows"].values()) == variants
