"""The counterfactual update on a real tiny start point: every method updates the same batch
from the same state, with the trainer's own phases, and the summary holds what the table reads."""

from __future__ import annotations

import json

import pytest

from calibadv.evaluate.counterfactual import ALL, CLASSES

from .conftest import cli
from .test_end_to_end import write_spec

pytestmark = pytest.mark.slow

METHODS = ["search-r1", "prethink-softpen", "calibadv", "uniform-neg"]


def test_counterfactual_writes_deltas_per_method_class_and_update_count(world, server, tmp_path):
    flags = []
    for m in METHODS:
        flags += ["--spec", f"{m}={write_spec(tmp_path / f'{m}.yaml', world, server, m, 1)}"]
    out = tmp_path / "cf"
    cli("counterfactual", *flags, "--start", world["sft"], "--train", world["train"],
        "--dev", world["dev"], "--out", out, "--questions", "4", "--group-size", "3",
        "--dev-questions", "4", "--dev-samples", "2", "--updates", "1,2", "--reps", "200",
        # the fixture's start point learned the plain prompt alone (a short SFT): it searches
        "--sample-method", "search-r1")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["methods"] == METHODS
    rows = summary["rows"]
    # one row per (updates, split, method, class): 2 x 2 x 4 x 5
    assert len(rows) == 2 * 2 * len(METHODS) * (1 + len(CLASSES))
    assert {r["cls"] for r in rows} == {ALL, *CLASSES}
    held = [r for r in rows if r["split"] == "held-out" and r["cls"] == ALL]
    assert all(r["n_steps"] == summary["counts"]["held-out"]["steps"] for r in held)
    # the reference has no paired difference; every other method has one where steps exist
    for r in held:
        assert (r["vs_ref"] is None) == (r["method"] == "search-r1" or r["n_steps"] == 0)
    # the batch has steps, and the update moved the policy: some step's log-prob changed
    assert summary["counts"]["in-batch"]["steps"] > 0, summary["counts"]
    steps = [json.loads(x) for x in (out / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == sum(c["steps"] for c in summary["counts"].values())
    assert any(abs(s["search-r1@2"] or 0) > 0 for s in steps if s["split"] == "in-batch")
    assert summary["times"]["sample_s"] > 0 and set(summary["advantages"]) == set(METHODS)
