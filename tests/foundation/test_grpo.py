"""grpo_advantage equals verl's compute_grpo_outcome_advantage (verl's own code is the oracle)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

from calibadv.methods.advantage import grpo_advantage


def _verl(scores: torch.Tensor, mask: torch.Tensor, index, norm_by_std: bool) -> torch.Tensor:
    token_rewards = torch.zeros_like(mask)
    token_rewards[:, -1] = scores
    adv, _ = compute_grpo_outcome_advantage(
        token_rewards, mask, np.array(index, dtype=object), norm_adv_by_std_in_grpo=norm_by_std
    )
    return adv


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 7), min_size=1, max_size=12),
    values=st.sampled_from(["f1", "binary", "equal"]),
    norm_by_std=st.booleans(),
    as_str=st.booleans(),
    seed=st.integers(0, 10**6),
)
def test_matches_verl_on_random_batches(sizes, values, norm_by_std, as_str, seed):
    gen = torch.Generator().manual_seed(seed)
    index = [f"uid-{g}" if as_str else g for g, n in enumerate(sizes) for _ in range(n)]
    perm = torch.randperm(len(index), generator=gen).tolist()  # groups interleaved, as in verl
    index = [index[p] for p in perm]
    codes = {g: k for k, g in enumerate(dict.fromkeys(index))}
    if values == "f1":
        scores = torch.rand(len(index), generator=gen)
    elif values == "binary":
        scores = torch.randint(0, 2, (len(index),), generator=gen).float()
    else:  # every group all-equal, at a random non-dyadic value: verl's float32 rounding shows
        level = torch.rand(len(codes), generator=gen)
        scores = torch.stack([level[codes[g]] for g in index])
    mask = (torch.rand(len(index), 9, generator=gen) > 0.3).float()
    ours = grpo_advantage(scores, mask, index, norm_by_std=norm_by_std)
    theirs = _verl(scores, mask, index, norm_by_std)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)


def test_singletons_keep_their_reward_and_ties_cancel():
    scores = torch.tensor([0.8, 0.5, 0.5, 0.0, 1.0])
    mask = torch.ones(5, 2)
    adv = grpo_advantage(scores, mask, ["a", "b", "b", "c", "c"])
    assert adv[0, 0].item() == pytest.approx(0.8 / (1 + 1e-6))  # verl: mean 0, std 1 for n = 1
    assert adv[1].tolist() == [0.0, 0.0] and adv[2].tolist() == [0.0, 0.0]
    assert adv[3, 0].item() == pytest.approx(-0.5 / (0.5**0.5 + 1e-6))  # unbiased std


def test_token_level_rewards_are_summed_like_verl():
    rewards = torch.tensor([[0.0, 1.0], [0.5, 0.0], [0.0, 0.0]])
    mask = torch.ones(3, 2)
    torch.testing.assert_close(
        grpo_advantage(rewards, mask, [0, 0, 0]), grpo_advantage(rewards.sum(-1), mask, [0, 0, 0])
    )


def test_group_index_must_match_the_batch():
    with pytest.raises(ValueError, match="group_index"):
        grpo_advantage(torch.zeros(3), torch.ones(3, 2), [0, 0])
