"""Rollout filters: which rollouts enter the group statistics and which train, registered in
:data:`calibadv.methods.registry.FILTERS`.

A filter sees one :class:`RolloutInfo` per rollout (what both backends know about a rollout:
its stop reason and its per-step queries) and returns a :class:`FilterDecision`.
:func:`filtered_advantage` then runs the advantage estimator on the rollouts that enter the
group statistics, scatters the result back to the whole batch and zeroes the rows that do not
train. The local backend also zeroes their loss mask; verl's actor keeps its own mask, so there
a filtered rollout contributes no policy gradient but still counts in the token-mean
denominator (docs/baselines.md).

torch is imported only inside :func:`filtered_advantage`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from calibadv.methods.registry import FILTERS, Knob

__all__ = ["RolloutInfo", "FilterDecision", "is_void", "decide", "filtered_advantage"]


@dataclass(frozen=True)
class RolloutInfo:
    """What a filter reads about one rollout (Trajectory fields, or verl's extra_fields)."""

    stop_reason: str
    queries: Sequence[str]

    @classmethod
    def of(cls, rollout: Any) -> RolloutInfo:
        """From a Trajectory or from the agent loop's extra_fields dict."""
        if isinstance(rollout, Mapping):
            return cls(str(rollout.get("stop_reason", "")), list(rollout.get("queries") or []))
        return cls(str(rollout.stop_reason), list(rollout.queries))


@dataclass
class FilterDecision:
    """``in_stats[i]``: rollout i enters its group's mean/std; ``trains[i]``: its tokens train."""

    in_stats: list[bool]
    trains: list[bool]
    metrics: dict[str, float] = field(default_factory=dict)


def is_void(info: RolloutInfo) -> bool:
    """A rollout with a void turn: a generated turn with neither a valid ``<search>`` nor an
    ``<answer>``. Such a turn is an intermediate step with an empty query; the last step of a
    rollout cut by the turn or token budget (``max_turns``, ``length``) is not one."""
    queries = list(info.queries)
    if info.stop_reason in ("max_turns", "length") and queries:
        queries = queries[:-1]
    return info.stop_reason == "invalid" or any(q == "" for q in queries)


@FILTERS.register("none", description="every rollout enters the statistics and trains")
def no_filter(rollouts: Sequence[RolloutInfo], step: int) -> FilterDecision:
    n = len(rollouts)
    return FilterDecision([True] * n, [True] * n)


@FILTERS.register(
    "void_turns",
    knobs={
        "void_mode": Knob(str, "mask", "mask: loss mask 0, reward stays in the group stats "
                          "(SimpleTIR); drop: removed from the group before the advantage "
                          "(CalibAdv's code)", choices=("mask", "drop")),
        "void_start_step": Knob(int, 50, "first training step the filter acts on (CalibAdv's "
                                "default 50)", min=0),
    },
    description="SimpleTIR: rollouts with a void turn do not train",
)
def void_turns(rollouts: Sequence[RolloutInfo], step: int, void_mode: str = "mask",
               void_start_step: int = 50) -> FilterDecision:
    """SimpleTIR's void-turn filter (mask) or the CalibAdv authors' variant (drop)."""
    void = [is_void(r) for r in rollouts]
    n = len(void)
    acting = step >= void_start_step
    hit = [v and acting for v in void]
    in_stats = [not h for h in hit] if void_mode == "drop" else [True] * n
    return FilterDecision(
        in_stats=in_stats,
        trains=[not h for h in hit],
        metrics={
            "void_frac": sum(void) / n if n else 0.0,
            "void_masked": float(sum(hit)) if void_mode == "mask" else 0.0,
            "void_dropped": float(sum(hit)) if void_mode == "drop" else 0.0,
        },
    )


def decide(name: str, knobs: Mapping[str, Any], rollouts: Sequence[Any], step: int) -> FilterDecision:
    """Run filter ``name`` with its (validated) knobs on a batch of rollouts."""
    part = FILTERS.get(name, "filter.name")
    checked = FILTERS.resolve(name, knobs, "filter")
    return part.fn([RolloutInfo.of(r) for r in rollouts], step, **checked)


#: Per-rollout entries of the estimator's stats, scattered back to the whole batch.
_PER_ROLLOUT = {"per_step_c": None, "rollout_advantage": 0.0}


def filtered_advantage(
    decision: FilterDecision,
    estimate: Callable[[list[int]], tuple[Any, dict[str, Any]]],
    batch: int,
    length: int,
) -> tuple[Any, dict[str, Any]]:
    """The advantage (batch, length) under ``decision``.

    ``estimate(rows)`` computes the advantages of the rollouts ``rows`` alone (their own groups
    and statistics) and returns ``(advantages (len(rows), length), stats)``. Rows outside
    ``decision.in_stats`` get 0 and ``None``/0 in per-rollout stats; rows outside
    ``decision.trains`` are zeroed after the estimate. The filter's metrics join the stats.
    """
    import torch

    rows = [i for i in range(batch) if decision.in_stats[i]]
    if len(rows) == batch:
        adv, stats = estimate(rows)
        adv = torch.as_tensor(adv, dtype=torch.float32).clone()
    else:
        adv = torch.zeros(batch, length, dtype=torch.float32)
        stats = {}
        if rows:
            sub, stats = estimate(rows)
            adv[rows] = torch.as_tensor(sub, dtype=torch.float32).to(adv.device)
        stats = dict(stats)
        for key, empty in _PER_ROLLOUT.items():
            if not rows:  # every rollout filtered out: the per-rollout entries are all empty
                stats[key] = [empty] * batch
            elif key in stats:
                full = [empty] * batch
                values = stats[key].tolist() if hasattr(stats[key], "tolist") else list(stats[key])
                for j, i in enumerate(rows):
                    full[i] = values[j]
                stats[key] = full
    off = [i for i in range(batch) if not decision.trains[i]]
    if off:
        adv[off] = 0.0
    stats = dict(stats)
    stats.update(decision.metrics)
    return adv, stats
