"""Rollout filters (calibadv.methods.filters): SimpleTIR's void turns, masked or dropped."""

from __future__ import annotations

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from calibadv.methods.advantage import CalibConfig, calibrate
from calibadv.errors import ConfigError
from calibadv.methods.filters import RolloutInfo, decide, filtered_advantage, is_void


@pytest.mark.parametrize(
    ("stop_reason", "queries", "void"),
    [
        ("answer", ["q1"], False),              # search, then answer
        ("answer", [], False),                  # direct answer
        ("invalid", [""], True),                # a turn with neither <search> nor <answer> ends it
        ("invalid", ["q1", ""], True),
        ("answer", ["q1", "", "q2"], True),     # invalid_action: message — the void turn stays
        ("max_turns", ["q1", "q2", ""], False),  # search beyond the budget: cut, not void
        ("length", ["q1", ""], False),          # token budget ran out mid-turn: cut, not void
        ("length", ["", "q1", ""], True),       # ... but an earlier void turn still counts
    ],
)
def test_void_turns_by_hand(stop_reason, queries, void):
    assert is_void(RolloutInfo(stop_reason, queries)) is void


def _infos(void: list[bool]) -> list[dict]:
    return [{"stop_reason": "invalid" if v else "answer", "queries": [""] if v else ["q"]} for v in void]


def test_mask_keeps_void_rewards_in_the_group_and_drop_removes_them():
    void = [False, True, False, True]
    mask = decide("void_turns", {"void_mode": "mask", "void_start_step": 0}, _infos(void), 1)
    assert mask.in_stats == [True] * 4 and mask.trains == [True, False, True, False]
    assert mask.metrics == {"void_frac": 0.5, "void_masked": 2.0, "void_dropped": 0.0}
    drop = decide("void_turns", {"void_mode": "drop", "void_start_step": 0}, _infos(void), 1)
    assert drop.in_stats == drop.trains == [True, False, True, False]
    assert drop.metrics == {"void_frac": 0.5, "void_masked": 0.0, "void_dropped": 2.0}


def test_the_filter_waits_for_its_start_step():
    void = [True, False]
    before = decide("void_turns", {"void_mode": "drop", "void_start_step": 50}, _infos(void), 49)
    assert before.in_stats == before.trains == [True, True]
    assert before.metrics["void_frac"] == 0.5 and before.metrics["void_dropped"] == 0.0
    at = decide("void_turns", {"void_mode": "drop", "void_start_step": 50}, _infos(void), 50)
    assert at.trains == [False, True]


def test_simpletir_mask_masks_a_void_rollout_at_step_0():
    """Official SimpleTIR (ltzheng/SimpleTIR@e7b5b4430fe2 recipe/simpletir/simpletir_ray_trainer.py
    ~L1146-1166, mask_void_turns True in config/simpletir_trainer.yaml) multiplies the loss mask
    of a void rollout from the first training step: the preset's filter acts at step 0."""
    from calibadv.methods.presets import get_method

    filt = get_method("simpletir-mask")["filter"]
    first = decide(filt["name"], filt["knobs"], _infos([True, False]), 0)
    assert first.trains == [False, True] and first.in_stats == [True, True]


@pytest.mark.parametrize(
    ("name", "knobs", "message"),
    [
        ("void_turn", {}, r"filter.name = 'void_turn'.*void_turns"),
        ("void_turns", {"mode": "drop"}, r"filter\.knobs\.mode"),
        ("void_turns", {"void_mode": "skip"}, r"filter\.knobs\.void_mode = 'skip'"),
        ("void_turns", {"void_start_step": -1}, r"filter\.knobs\.void_start_step"),
    ],
)
def test_bad_filter_settings_name_the_key(name, knobs, message):
    with pytest.raises(ConfigError, match=message):
        decide(name, knobs, _infos([True]), 1)


# --------------------------------------------------------------------------- with the estimator
GRPO = CalibConfig(soft_penalty="none", rebalance=False)


@st.composite
def groups(draw):
    """Two questions × 4 rollouts: rewards, void flags, lengths."""
    n = 8
    rewards = [draw(st.sampled_from([0.0, 0.2, 0.5, 1.0])) for _ in range(n)]
    void = [draw(st.booleans()) for _ in range(n)]
    lengths = [draw(st.integers(1, 5)) for _ in range(n)]
    return rewards, void, lengths


def _estimate(rewards, lengths):
    width = max(lengths)
    mask = torch.zeros(len(rewards), width)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    group = [i // 4 for i in range(len(rewards))]

    def estimate(rows):
        return calibrate(torch.tensor([rewards[i] for i in rows]), [True] * len(rows), mask[rows],
                         [group[i] for i in rows], [[[0, lengths[i]]] for i in rows],
                         [[] for _ in rows], [[""] for _ in rows], GRPO)

    return estimate, mask


@settings(max_examples=50, deadline=None)
@given(groups())
@example(([0.0] * 8, [True] * 8, [1] * 8))  # every rollout void: nothing left to estimate on
def test_drop_is_the_estimator_on_the_kept_rollouts_alone(case):
    rewards, void, lengths = case
    estimate, mask = _estimate(rewards, lengths)
    decision = decide("void_turns", {"void_mode": "drop", "void_start_step": 0}, _infos(void), 1)
    adv, stats = filtered_advantage(decision, estimate, len(rewards), mask.shape[1])
    kept = [i for i, v in enumerate(void) if not v]
    assert torch.all(adv[[i for i, v in enumerate(void) if v]] == 0)
    if kept:
        alone, _ = estimate(kept)
        assert torch.equal(adv[kept], alone)
    assert len(stats["rollout_advantage"]) == len(rewards)
    assert stats["void_dropped"] == sum(void)


@settings(max_examples=50, deadline=None)
@given(groups())
def test_mask_keeps_the_group_statistics_and_zeroes_void_rollouts(case):
    rewards, void, lengths = case
    estimate, mask = _estimate(rewards, lengths)
    decision = decide("void_turns", {"void_mode": "mask", "void_start_step": 0}, _infos(void), 1)
    adv, stats = filtered_advantage(decision, estimate, len(rewards), mask.shape[1])
    full, _ = estimate(list(range(len(rewards))))
    for i, v in enumerate(void):
        assert torch.equal(adv[i], torch.zeros_like(adv[i]) if v else full[i])
    assert stats["void_masked"] == sum(void)


def test_no_filter_is_the_estimator_unchanged():
    rewards, lengths = [1.0, 0.0, 0.5, 0.0], [3, 2, 4, 1]
    estimate, mask = _estimate(rewards, lengths)
    decision = decide("none", {}, _infos([True, False, True, False]), 100)
    adv, _ = filtered_advantage(decision, estimate, 4, mask.shape[1])
    assert torch.equal(adv, estimate([0, 1, 2, 3])[0])
