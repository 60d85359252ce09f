"""What the local trainer's step phases hand each other (:mod:`calibadv.train.local`).

One RL step runs rollout → score → recompute → estimate → filter → update → log, in verl's
order (:mod:`calibadv.train.verl.trainer`). Each phase reads what the earlier ones left in a
:class:`StepBatch` and adds its own fields, so a phase's inputs are named rather than
threaded through a dozen locals; the update's signals gather in :class:`UpdateStats`.

torch is imported for type checking only, as in :mod:`calibadv.train.local`: importing the
trainer stays cheap for commands that never train.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from calibadv.agent.types import Trajectory
    from calibadv.data.questions import Question
    from calibadv.methods.filters import FilterDecision


def mean(xs: list[float]) -> float:
    """The mean of a step's signal, 0 for an empty list (e.g. a loss no micro-batch reported)."""
    return float(sum(xs) / len(xs)) if xs else 0.0


def micro_batches(batch: int, mb_size: int, micro: int) -> list[tuple[int, int]]:
    """``(start, stop)`` rows of each forward: mini-batches of ``mb_size`` rows (whole questions,
    one optimiser step each) cut into micro-batches of at most ``micro`` rows. The old and
    reference log-probs are computed on exactly the micro-batches the loss uses, so they line
    up even when ``micro`` does not divide a mini-batch."""
    return [(i, min(m0 + mb_size, batch, i + micro)) for m0 in range(0, batch, mb_size)
            for i in range(m0, min(batch, m0 + mb_size), micro)]


@dataclass
class StepBatch:
    """One step's rollouts and what each phase adds to them; fields grouped by the phase that
    fills them. Log-prob dicts are keyed by a micro-batch's first row (:func:`micro_batches`)."""

    # rollout
    step: int
    epoch: int
    trajs: list[Trajectory]
    owners: list[Question]  # the question of each rollout
    extras: list[dict[str, Any]]  # what the rollout shape adds per rollout (tree ids)
    mb_size: int  # rows per mini-batch (one optimiser step)
    chunks: list[tuple[int, int]]  # the micro-batches, in order
    # score
    resp_mask: torch.Tensor | None = None  # (B, L) generated tokens: what the estimator sees
    groups: list[int] = field(default_factory=list)  # one prompt id per rollout
    judge_scores: Any = None  # ``score: judge``: the judge's c per rollout, else None
    judge_metrics: dict[str, Any] = field(default_factory=dict)
    # recompute: the policy before this step's update (no grad)
    old_logp: dict[int, torch.Tensor] = field(default_factory=dict)
    entropies: dict[int, torch.Tensor] = field(default_factory=dict)
    ref_logp: dict[int, torch.Tensor] = field(default_factory=dict)
    hidden: torch.Tensor | None = None  # (B, L, H) for the critic
    ppo: dict[str, torch.Tensor] = field(default_factory=dict)  # (B, L) values, old/ref logp: gae
    # estimate
    decision: FilterDecision | None = None
    advantages: torch.Tensor | None = None  # (B, L)
    stats: dict[str, Any] = field(default_factory=dict)
    est_rows: list[int] = field(default_factory=list)  # the rows the estimator saw
    # filter
    trains: torch.Tensor | None = None  # (B,) 1.0 where the rollout trains
    loss_mask: torch.Tensor | None = None  # resp_mask without the rollouts that do not train

    @property
    def size(self) -> int:
        return len(self.trajs)

    def mini_batches(self) -> list[range]:
        """The rows of each optimiser step (the actor's and the critic's)."""
        return [range(m0, min(self.size, m0 + self.mb_size))
                for m0 in range(0, self.size, self.mb_size)]


@dataclass
class UpdateStats:
    """What the update phase reports: one entry per mini-batch (loss, grad norm) or per
    micro-batch (clip fraction, the registered loss' own signals), and the critic's metrics."""

    losses: list[float] = field(default_factory=list)
    clipfracs: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    term_metrics: dict[str, list[float]] = field(default_factory=dict)
    critic_metrics: dict[str, float] = field(default_factory=dict)

    def metrics(self, lr: float) -> dict[str, Any]:
        """The step's update signals, in metrics.jsonl's key order."""
        return {
            "loss": mean(self.losses),
            "pg_clipfrac": mean(self.clipfracs),
            "grad_norm": mean(self.grad_norms),
            "lr": lr,
            **{key: mean(values) for key, values in self.term_metrics.items()},
            **self.critic_metrics,
        }
