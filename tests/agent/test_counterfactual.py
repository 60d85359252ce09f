"""The counterfactual update on a real tiny start point: every method updates the same batch
from the same state, with the trainer's own phases, and the summary holds what the table reads."""

from __future__ import annotations

import json

import pytest
import yaml

from calibadv.evaluate.counterfactual import ALL, CLASSES

from .conftest import cli
from .test_end_to_end import write_spec

pytestmark = pytest.mark.slow

# every method reads the batch with the sampling method's prompt (the fixture's start point
# learned the plain prompt alone): GRPO and two methods of the plain prompt
METHODS = ["search-r1", "llds-calibadv", "sapo-search"]


def test_counterfactual_writes_deltas_per_method_class_and_update_count(world, server, tmp_path):
    flags = []
    for m in METHODS:
        path = write_spec(tmp_path / f"{m}.yaml", world, server, m, 1)
        spec = yaml.safe_load(path.read_text())
        # turns as long as the fixture's SFT demonstrated (32 tokens): a turn cut at 24 never
        # closes its search, and a batch without a search has no intermediate step
        spec["agent"].update(max_tokens_per_turn=48, max_response_tokens=300)
        path.write_text(yaml.safe_dump(spec))
        flags += ["--spec", f"{m}={path}"]
    out = tmp_path / "cf"
    cli("counterfactual", *flags, "--start", world["sft"], "--train", world["train"],
        "--dev", world["dev"], "--out", out, "--questions", "4", "--group-size", "3",
        "--dev-questions", "4", "--dev-samples", "2", "--updates", "1,2", "--reps", "200",
        # the fixture's start point learned the plain prompt alone (a short SFT)
        "--sample-method", "search-r1", "--reference", "search-r1")
    summary = json.loads((out / "summary.json").read_text())
    print(summary["counts"], summary["times"])
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
    # one steps.jsonl line per classified step of either split (the fixture's start point, 8
    # SFT steps, rarely closes a search: the Δ arithmetic on known steps is
    # tests/foundation/test_counterfactual_steps.py)
    steps = [json.loads(x) for x in (out / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == sum(c["steps"] for c in summary["counts"].values())
    assert summary["counts"]["in-batch"]["rollouts"] == 4 * 3
    assert summary["counts"]["held-out"]["rollouts"] == 4 * 2
    for s in steps:  # every method and update count has its Δ column
        assert {f"{m}@{k}" for m in METHODS for k in (1, 2)} <= set(s)
    assert summary["times"]["sample_s"] > 0 and set(summary["advantages"]) == set(METHODS)


def test_a_method_on_another_prompt_than_the_sampled_batch_is_refused_by_name():
    """search-r1 (no PreThink) would score a PreThink batch 0 everywhere: no update at all."""
    from calibadv.errors import ConfigError
    from calibadv.methods import get_method
    from calibadv.methods.catalog import check_shared_prompt

    methods = {m: get_method(m) for m in ("search-r1", "prethink", "calibadv")}
    with pytest.raises(ConfigError, match="'search-r1' scores rollouts with prethink/require_search"):
        check_shared_prompt(methods, "calibadv")
    check_shared_prompt({m: methods[m] for m in ("prethink", "calibadv")}, "calibadv")

