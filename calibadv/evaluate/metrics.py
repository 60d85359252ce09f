"""Per-rollout perplexity and the aggregate scores of a set of rollouts.

High-PPL (calibadv-spec): a rollout's perplexity is exp of the mean negative log-probability
of its own generated tokens, computed per generated turn; the rollout's value is the maximum
over its turns, and it counts as High-PPL when that value is >= 50.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from calibadv.agent.types import Trajectory

HIGH_PPL_THRESHOLD = 50.0


def turn_ppls(traj: Trajectory) -> list[float]:
    """Perplexity of each generated turn (turns with no tokens are skipped)."""
    out = []
    for start, end in traj.turn_spans:
        lps = traj.logprobs[start:end]
        if lps:
            out.append(math.exp(min(-sum(lps) / len(lps), 700.0)))
    return out


def rollout_ppl(traj: Trajectory) -> float:
    """Max per-turn perplexity (1.0 for a rollout with no generated tokens)."""
    return max(turn_ppls(traj), default=1.0)


def summarise(trajs: Sequence[Trajectory]) -> dict[str, float]:
    """Gated F1, EM, format rate, High-PPL ratio, mean searches, mean rollout ppl."""
    n = len(trajs)
    if n == 0:
        return {"f1": 0.0, "em": 0.0, "format_rate": 0.0, "high_ppl_ratio": 0.0,
                "mean_searches": 0.0, "ppl_mean": 0.0}
    ppls = [rollout_ppl(t) for t in trajs]
    return {
        "f1": sum(t.reward for t in trajs) / n,  # gated F1: 0 unless the format is valid
        "em": sum(t.em if t.format_ok else 0.0 for t in trajs) / n,
        "format_rate": sum(t.format_ok for t in trajs) / n,
        "high_ppl_ratio": sum(p >= HIGH_PPL_THRESHOLD for p in ppls) / n,
        "mean_searches": sum(t.num_searches for t in trajs) / n,
        "ppl_mean": sum(ppls) / n,
    }


def reward_trend(step_rewards: Sequence[float]) -> dict[str, float | int]:
    """Did training raise the batch reward? Last quarter of the steps against the first.

    Each step's mean batch reward is one observation; ``z`` is the difference of the two
    quarters' means over its standard error (Welch: the quarters' sample variances over their
    sizes). ``z > 2`` is the issue's "learns" criterion (docs/training.md).
    """
    n = len(step_rewards)
    q = n // 4
    if q < 2:
        raise ValueError(f"need at least 8 steps for a reward trend, got {n}")
    first, last = list(step_rewards[:q]), list(step_rewards[-q:])

    def mean_var(xs: list[float]) -> tuple[float, float]:
        m = sum(xs) / len(xs)
        return m, sum((x - m) ** 2 for x in xs) / (len(xs) - 1)

    m1, v1 = mean_var(first)
    m2, v2 = mean_var(last)
    se = math.sqrt(v1 / q + v2 / q)
    diff = m2 - m1
    return {"steps": n, "quarter": q, "first": m1, "last": m2, "diff": diff, "se": se,
            "z": diff / se if se > 0 else (math.inf if diff > 0 else 0.0)}
