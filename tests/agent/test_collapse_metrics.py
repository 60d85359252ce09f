"""Collapse point, checkpoint selection, High-PPL and the local trainer's pure helpers."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from calibadv.agent.types import Trajectory
from calibadv.evaluate.collapse import collapse_step, select_checkpoint, smooth
from calibadv.evaluate.metrics import rollout_ppl, summarise, turn_ppls
from calibadv.train.local import batch_indices


def test_sustained_drop_is_a_collapse_and_a_dip_is_not():
    steps = [0, 5, 10, 15, 20, 25]
    assert collapse_step(steps, [0.2, 0.4, 0.5, 0.2, 0.1, 0.1], 0.1, 1) == 15
    assert collapse_step(steps, [0.2, 0.4, 0.5, 0.2, 0.5, 0.5], 0.1, 1) is None
    assert collapse_step(steps, [0.2, 0.3, 0.3, 0.3, 0.3, 0.3], 0.1, 3) is None


@given(st.lists(st.floats(0, 1), min_size=1, max_size=30), st.floats(0, 0.5),
       st.integers(1, 5))
def test_collapse_point_stays_below_peak_minus_delta_until_the_end(scores, delta, window):
    steps = list(range(len(scores)))
    c = collapse_step(steps, scores, delta, window)
    sm = smooth(scores, window)
    if c is not None:
        peak = max(sm[: c + 1])
        assert all(v < peak - delta for v in sm[c:])
    # a never-decreasing curve never collapses
    assert collapse_step(steps, sorted(scores), delta, window) is None


def test_selection_prefers_last_checkpoint_before_collapse():
    assert select_checkpoint([2, 4, 6], None)[0] == 6
    assert select_checkpoint([2, 4, 6], 5)[0] == 4
    assert select_checkpoint([2, 4, 6], 1)[0] == 2


def traj(logprobs: list[float], spans: list[list[int]], **kw) -> Trajectory:
    n = len(logprobs)
    return Trajectory(prompt_ids=[0], response_ids=[1] * n, loss_mask=[1] * n,
                      logprobs=logprobs, turn_spans=spans, **kw)


def test_high_ppl_uses_the_worst_turn():
    t = traj([-0.1, -0.1, -5.0, -5.0], [[0, 2], [2, 4]])
    assert turn_ppls(t) == pytest.approx([math.exp(0.1), math.exp(5.0)])
    assert rollout_ppl(t) == pytest.approx(math.exp(5.0))  # >= 50, although the mean is lower
    s = summarise([t, traj([-0.1], [[0, 1]])])
    assert s["high_ppl_ratio"] == 0.5


def test_gated_scores_count_only_format_valid_rollouts():
    good = traj([-1.0], [[0, 1]], reward=0.5, f1=0.5, em=1.0, format_ok=True)
    bad = traj([-1.0], [[0, 1]], reward=0.0, f1=1.0, em=1.0, format_ok=False)
    s = summarise([good, bad])
    assert s["f1"] == 0.25 and s["em"] == 0.5 and s["format_rate"] == 0.5


def test_data_order_is_a_pure_function_of_seed_and_step():
    a = [batch_indices(0, s, 10, 3) for s in range(1, 7)]
    assert a == [batch_indices(0, s, 10, 3) for s in range(1, 7)]
    epoch0 = [i for e, idx in a[:3] for i in idx]
    assert len(set(epoch0)) == 9 and {e for e, _ in a} == {0, 1}  # tail dropped, 3 steps/epoch


def test_micro_batch_losses_add_up_to_the_mini_batch_loss():
    from calibadv.train.policy import actor_config, policy_loss

    torch.manual_seed(0)
    cfg = actor_config(0.2, {"loss_mode": "vanilla", "loss_agg_mode": "token-mean"})
    old, new = torch.randn(4, 5), torch.randn(4, 5)
    adv = torch.randn(4, 5)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]).float()
    n = int(mask.sum())
    whole, _ = policy_loss(cfg, old, new, adv, mask, n, 4)
    parts = sum(policy_loss(cfg, old[i : i + 2], new[i : i + 2], adv[i : i + 2], mask[i : i + 2],
                            n, 4)[0] for i in (0, 2))
    assert torch.allclose(whole, parts)


def test_reward_trend_compares_the_last_quarter_with_the_first_by_hand():
    from calibadv.evaluate.metrics import reward_trend

    rewards = [0.1, 0.3, 0.2, 0.2, 0.5, 0.4, 0.4, 0.6]  # quarters [0.1, 0.3] and [0.4, 0.6]
    t = reward_trend(rewards)
    assert (t["quarter"], t["first"], t["last"]) == (2, pytest.approx(0.2), pytest.approx(0.5))
    # variances 0.02 and 0.02 -> se = sqrt(0.02/2 + 0.02/2) = 0.1414
    assert t["se"] == pytest.approx(0.1414, abs=1e-4)
    assert t["z"] == pytest.approx(0.3 / 0.14142, abs=1e-3)
    with pytest.raises(ValueError, match="at least 8 steps"):
        reward_trend([0.1] * 7)


def test_reward_trend_command_reads_a_run_folder(tmp_path, capsys):
    from calibadv.cli import main
    from calibadv.io import append_jsonl

    for step, r in enumerate([0.1, 0.3, 0.2, 0.2, 0.5, 0.4, 0.4, 0.6], start=1):
        append_jsonl(tmp_path / "metrics.jsonl", {"step": step, "reward_mean": r})
    for step, f1 in ((0, 0.25), (8, 0.375)):
        append_jsonl(tmp_path / "val.jsonl", {"step": step, "f1": f1})
    assert main(["reward-trend", "--run", str(tmp_path)]) == 0
    row = capsys.readouterr().out.splitlines()[1].split()
    assert row[1:7] == ["8", "0.200", "0.500", "+0.300", "0.141", "2.12"]
    assert row[-3:] == ["0.250", "->", "0.375"]
    assert main(["reward-trend", "--run", str(tmp_path / "nope")]) == 2


def test_reward_trend_command_names_a_run_too_short_for_quarters(tmp_path, capsys):
    from calibadv.cli import main
    from calibadv.io import append_jsonl

    for step in range(1, 5):  # a run still in its first steps
        append_jsonl(tmp_path / "metrics.jsonl", {"step": step, "reward_mean": 0.1 * step})
    assert main(["reward-trend", "--run", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "at least 8 steps for a reward trend, got 4" in err and "Traceback" not in err
