"""The counterfactual update's arithmetic on a hand-made case (calibadv.evaluate.counterfactual):
which turns are steps, their class, their mean log-prob, Δ, and the summary's paired rows."""

from __future__ import annotations

import pytest

from calibadv.evaluate.counterfactual import (
    ALL,
    deltas,
    step_mean_logp,
    step_units,
    summarise,
    unit_logps,
)

# Rollout 0 (question A, answered right): turn 0 searched and hit gold d1; turn 1 answered.
# Rollout 1 (question B, wrong): turn 0 searched (miss), turn 1 an empty query (invalid: no
# step), turn 2 searched and hit gold d9. Response slots 2-3 of rollout 0 are an observation.
ROLLOUTS = [
    {"question_id": "A", "supporting_ids": ["d1"], "em": 1.0,
     "turn_spans": [[0, 2], [4, 6]], "loss_mask": [1, 1, 0, 0, 1, 1],
     "queries": ["who"], "doc_ids": [["d1", "d2"]]},
    {"question_id": "B", "supporting_ids": ["d9"], "em": 0.0,
     "turn_spans": [[0, 1], [1, 2], [2, 4]], "loss_mask": [1, 1, 1, 1],
     "queries": ["x", "", "y"], "doc_ids": [["d3"], [], ["d9"]]},
]
BEFORE = [[-1.0, -3.0, 0.0, 0.0, -0.5, -0.5], [-2.0, -9.0, -1.0, -3.0]]
AFTER = [[-1.5, -3.5, 0.0, 0.0, -0.5, -0.5], [-2.5, -9.0, -0.5, -2.5]]


def test_steps_are_searched_turns_with_their_class():
    units = step_units(ROLLOUTS)
    assert [(u.group, u.row, u.turn, u.cls) for u in units] == [
        ("A", 0, 0, "gold, right"), ("B", 1, 0, "no gold, wrong"), ("B", 1, 2, "gold, wrong")]


def test_step_log_prob_is_the_mean_over_generated_tokens_of_the_turn():
    assert step_mean_logp(BEFORE[0], ROLLOUTS[0]["loss_mask"], [0, 2]) == -2.0
    # an observation-only span has no generated token
    assert step_mean_logp(BEFORE[0], ROLLOUTS[0]["loss_mask"], [2, 4]) is None


def test_deltas_by_hand():
    units = step_units(ROLLOUTS)
    before, after = unit_logps(units, ROLLOUTS, BEFORE), unit_logps(units, ROLLOUTS, AFTER)
    assert before == [-2.0, -2.0, -2.0] and after == [-2.5, -2.5, -1.5]
    assert deltas(before, after) == [-0.5, -0.5, 0.5]
    assert deltas([None, -1.0], [0.0, None]) == [None, None]


def test_summary_means_paired_differences_and_holm_family():
    units = step_units(ROLLOUTS)
    grpo = [-0.5, -0.5, 0.5]
    ours = [-0.25, -0.5, 1.0]
    rows = {(r.method, r.cls): r for r in summarise(units, {"grpo": grpo, "ours": ours},
                                                     "grpo", reps=200)}
    assert rows[("grpo", ALL)].delta.mean == pytest.approx(-0.5 / 3)
    assert rows[("grpo", ALL)].vs_ref is None and rows[("grpo", ALL)].p_holm is None
    # paired: (0.25 + 0 + 0.5) / 3 over the same steps
    assert rows[("ours", ALL)].vs_ref.mean == pytest.approx(0.25)
    assert rows[("ours", ALL)].n_steps == 3 and rows[("ours", ALL)].n_groups == 2
    assert rows[("ours", "gold, wrong")].delta.mean == 1.0
    assert rows[("ours", "no gold, right")].delta is None  # a class with no step: "—"
    # Holm over the family of the non-empty paired cells: adjusted p >= raw p
    for r in rows.values():
        if r.vs_ref is not None:
            assert r.p_holm >= r.vs_ref.p
    with pytest.raises(ValueError, match="'gold'"):
        summarise(units, {"ours": ours}, "gold")
