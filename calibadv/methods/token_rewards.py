"""Token rewards, registered in :data:`calibadv.methods.registry.REWARDS`: where a rollout's reward sits
on its response tokens.

GRPO-style estimators read one scalar per rollout; PPO's GAE (the ``gae`` estimator,
StepSearch) reads a reward per token. A reward entry maps one rollout (the mapping every
estimator sees, :class:`calibadv.methods.estimators.EstimatorBatch`) and the run's own score of it to a
list of ``(response position, reward)`` pairs; :func:`token_scores` paints them into a
(batch, length) tensor. Both backends call the same entry: the local trainer through the
``gae`` estimator, verl's trainer mode to rewrite ``rm_scores`` before verl's GAE.

Registered here:

- ``task`` (default): the run's score (gated F1) on the last generated token, as verl's reward
  loop places an outcome reward;
- ``stepsearch``: StepSearch's step rewards on the last token of each ``</search>`` and its
  final reward on the last generated token (:func:`calibadv.methods.stepsearch_reward.token_rewards`).

torch is imported inside the functions: the workflow validates presets without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from calibadv.methods.registry import REWARDS, Knob

__all__ = ["last_generated", "token_scores"]


def last_generated(turn_spans: Sequence[Sequence[int]], width: int | None = None) -> int | None:
    """Response position of the last generated token (end of the last turn), clipped to
    ``width``; None for a rollout that generated nothing."""
    ends = [int(e) for s, e in turn_spans if int(e) > int(s)]
    if not ends:
        return None
    end = max(ends)
    return min(end, width) - 1 if width is not None else end - 1


@REWARDS.register("task", description="the run's score on the last generated token")
def _task(rollout: Mapping[str, Any], score: float) -> list[tuple[int, float]]:
    pos = last_generated(rollout.get("turn_spans") or [])
    return [] if pos is None else [(pos, float(score))]


@REWARDS.register(
    "stepsearch",
    knobs={"step_scale": Knob(float, 1.6, "weight of (gain − redundancy) on each </search>: 1.6 "
                              "is what the released code applies (main_ppo.py L94 adds 0.6 × a "
                              "row already holding the score); 0.6 is the paper's", min=0.0)},
    description="StepSearch: step_scale·(gain − redundancy) on each </search>, F1 + 0.618·key "
                "score (or −1) on the last generated token",
    needs=("gold_docs",),
    works_with={"estimator": ("gae",)},  # only GAE reads token rewards; GRPO-style: one scalar
)
def _stepsearch(rollout: Mapping[str, Any], score: float, step_scale: float) -> list[tuple[int, float]]:
    from calibadv.methods.stepsearch_reward import token_rewards

    return token_rewards(rollout, step_scale=step_scale)


def token_scores(name: str, knobs: Mapping[str, Any] | None, scores: Sequence[float],
                 rollouts: Sequence[Mapping[str, Any]], width: int) -> tuple[Any, dict[str, Any]]:
    """(batch, width) float tensor of reward ``name``'s token rewards (positions past ``width``
    are clipped onto its last column, as a truncated response would end there), and stats."""
    import torch

    part = REWARDS.get(name, "reward.name")
    checked = REWARDS.resolve(name, knobs, "reward")
    out = torch.zeros((len(rollouts), width), dtype=torch.float32)
    finals, steps = [], []
    for i, (r, s) in enumerate(zip(rollouts, scores, strict=True)):
        entries = part.fn(r, float(s), **checked)
        for k, (pos, value) in enumerate(entries):
            out[i, min(int(pos), width - 1)] += float(value)
            (finals if k == len(entries) - 1 else steps).append(float(value))
    stats = {"token_reward_final_mean": sum(finals) / len(finals) if finals else 0.0,
             "token_reward_step_mean": sum(steps) / len(steps) if steps else 0.0,
             "token_reward_steps_per_rollout": len(steps) / len(rollouts) if rollouts else 0.0}
    return out, stats
