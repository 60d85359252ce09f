"""The ``calibadv`` advantage estimator for verl, and the hand-over of per-rollout data.

verl 0.9.1 calls a registered estimator with tensors only (rewards, response mask, group
ids, ``config.algorithm``). CalibAdv also needs each rollout's turn spans, retrieved doc ids,
think texts and format flag; they live in the agent loop's ``extra_fields``. The trainer mode
(:mod:`calibadv.train.verl.trainer`) fetches them and opens a :func:`rollout_context` around
verl's own ``_compute_advantage``; the estimator reads them from there, in batch order.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

METRIC_PREFIX = "calibadv/"
#: Key of a padding row's extras (verl's ``upsample_batch_to_divisible_size`` rows).
PADDING = "padding"
_NON_SCALAR_STATS = ("per_step_c", "silver_sets", "rollout_advantage")


@dataclass
class RolloutContext:
    """Per-rollout extras of the batch being processed, and what the estimator produced."""

    extras: list[dict[str, Any]]
    stats: dict[str, Any] = field(default_factory=dict)
    calls: int = 0
    step: int = 0  # the training step (a rollout filter may start at a step)


_local = threading.local()


@contextmanager
def rollout_context(extras: Sequence[Mapping[str, Any]], step: int = 0) -> Iterator[RolloutContext]:
    """Make ``extras`` (one dict per batch row, batch order) visible to the estimator."""
    ctx = RolloutContext(extras=[dict(e) if e is not None else {} for e in extras], step=step)
    previous = getattr(_local, "ctx", None)
    _local.ctx = ctx
    try:
        yield ctx
    finally:
        _local.ctx = previous


def current_context() -> RolloutContext:
    ctx = getattr(_local, "ctx", None)
    if ctx is None:
        raise RuntimeError(
            "the calibadv advantage estimator needs the per-rollout extra_fields: run it with "
            "trainer.v1.trainer_mode=calibadv (calibadv.train.verl.trainer), which provides them"
        )
    return ctx


def _section(config: Any, key: str) -> Mapping[str, Any]:
    """``config[key]`` as a plain dict (DictConfig, dataclass-like or dict; missing → {})."""
    if config is None:
        return {}
    value = config.get(key, None) if hasattr(config, "get") else getattr(config, key, None)
    if value is None:
        return {}
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(value, DictConfig):
            return OmegaConf.to_container(value, resolve=True)  # type: ignore[return-value]
    except ImportError:  # pragma: no cover - omegaconf ships with verl
        pass
    return dict(value)


def calib_config_from_algorithm(config: Any):
    """``CalibConfig`` from ``algorithm.calibadv.calibration`` (verl passes config.algorithm)."""
    from calibadv.methods.advantage import CalibConfig

    calib = dict(_section(_section(config, "calibadv"), "calibration"))
    return CalibConfig.from_dict(calib, where="algorithm.calibadv.calibration")


def _format_flag(extra: Mapping[str, Any]) -> bool:
    """The reward's format verdict when present, else the agent loop's own check."""
    info = extra.get("reward_extra_info") or {}
    if "format_ok" in info:
        return bool(info["format_ok"])
    return bool(extra.get("format_ok", False))


def _group_ids(index: Any, n: int) -> list[Any]:
    if index is None:
        raise ValueError("the calibadv estimator needs group ids (verl's uid) in `index`")
    ids = index.tolist() if hasattr(index, "tolist") else list(index)
    if len(ids) != n:
        raise ValueError(f"index has {len(ids)} entries for a batch of {n} rollouts")
    return ids


def scalar_stats(stats: Mapping[str, Any]) -> dict[str, float]:
    """Flatten ``calibrate`` stats into scalar metrics (``c_hist`` → ``c_hist/<bin>``)."""
    out: dict[str, float] = {}
    for key, value in stats.items():
        if key in _NON_SCALAR_STATS:
            continue
        if isinstance(value, Mapping):
            for sub, v in value.items():
                out[f"{key}/{sub}"] = float(v)
        elif isinstance(value, (int, float, np.number, bool)) or (
            isinstance(value, torch.Tensor) and value.numel() == 1
        ):
            out[key] = float(value)
    return out


def compute_calibadv_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Any = None,
    config: Any = None,
    **_: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """verl estimator signature → the method's registered estimator (``algorithm.calibadv.
    estimator.name``, default ``calibadv`` = :func:`calibadv.methods.advantage.calibrate`) on the batch.

    Returns ``(advantages, returns)``, both the calibrated token advantages (verl's GRPO
    returns the advantages as returns too). Padding rows verl appends to even out a batch
    (extras marked ``padding``, see :data:`PADDING`) are left out of ``calibrate`` and get
    zero advantage, so neither the real rows' advantages nor the step's statistics see them;
    ``ctx.stats`` then describes the real rows, in batch order.
    """
    from calibadv.methods.estimators import EstimatorBatch
    from calibadv.methods.estimators import estimate as run_estimator

    ctx = current_context()
    n = token_level_rewards.shape[0]
    if len(ctx.extras) != n:
        raise ValueError(
            f"the trainer handed {len(ctx.extras)} rollout extras for a batch of {n} rows"
        )
    real = [i for i, e in enumerate(ctx.extras) if not e.get(PADDING)]
    extras = [ctx.extras[i] for i in real]
    missing = [k for k in ("turn_spans", "doc_ids", "thinks") if extras and k not in extras[0]]
    if missing:
        raise ValueError(
            f"rollout extra_fields lack {missing}: use the calibadv agent loop "
            "(actor_rollout_ref.rollout.agent.default_agent_loop=calibadv_search)"
        )
    from calibadv.methods.filters import decide, filtered_advantage

    rows = torch.tensor(real, dtype=torch.long)
    groups = _group_ids(index, n)
    scores = token_level_rewards.sum(dim=-1).float().cpu()[rows]
    format_ok = torch.tensor([_format_flag(e) for e in extras], dtype=torch.bool)
    mask = response_mask.cpu()[rows]
    calib = calib_config_from_algorithm(config)
    real_groups = [groups[i] for i in real]
    judge_scores, judge_metrics = None, {}
    if calib.score == "judge" and real:  # calibadv.train.judge_scoring: c of negative rollouts' steps
        from calibadv.train.judge_scoring import verl_step_judge

        judge = verl_step_judge(_section(_section(config, "calibadv"), "judge"))
        judge_scores, judge_metrics = judge.score(extras, scores, format_ok, mask, real_groups, calib)

    est = _section(_section(config, "calibadv"), "estimator")
    est_name, est_knobs = est.get("name", "calibadv"), dict(est.get("knobs") or {})

    def estimate(sel: list[int]):  # the method's estimator on the real rollouts its filter keeps
        return run_estimator(est_name, est_knobs, EstimatorBatch(
            scores[sel], mask[sel], [real_groups[i] for i in sel],
            [{**extras[i], "format_ok": bool(format_ok[i]),
              "judge_scores": judge_scores[i] if judge_scores is not None else None}
             for i in sel], calib))

    advantages = torch.zeros(response_mask.shape, dtype=torch.float32)
    stats: dict[str, Any] = {}
    if real:
        filt = _section(_section(config, "calibadv"), "filter")
        decision = decide(filt.get("name", "none"), dict(filt.get("knobs") or {}), extras, ctx.step)
        adv, stats = filtered_advantage(decision, estimate, len(real), mask.shape[1])
        advantages[rows] = torch.as_tensor(adv, dtype=torch.float32)
    advantages = advantages.to(response_mask.device) * response_mask
    ctx.stats = {**stats, **judge_metrics}
    ctx.calls += 1
    return advantages, advantages


def register() -> None:
    """Register the estimator in verl's registry (idempotent)."""
    from verl.trainer.ppo import core_algos

    from calibadv.train.verl import ESTIMATOR_NAME

    if core_algos.ADV_ESTIMATOR_REGISTRY.get(ESTIMATOR_NAME) is not compute_calibadv_advantage:
        core_algos.register_adv_est(ESTIMATOR_NAME)(compute_calibadv_advantage)


def token_reward_scores(rm_scores: torch.Tensor, extras: Sequence[Mapping[str, Any]],
                        reward: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
    """verl's ``rm_scores`` (batch, length; the reward function's score on the last response
    token) rewritten by the method's token reward (``algorithm.calibadv.reward``, e.g.
    StepSearch's step rewards on each ``</search>``), from the agent loop's extras. Padding rows
    keep verl's values. Stats are prefixed like the estimator's."""
    from calibadv.methods.token_rewards import token_scores

    out = rm_scores.clone().float()
    real = [i for i, e in enumerate(extras) if not e.get(PADDING)]
    if not real:
        return out, {}
    scores = rm_scores.float().sum(-1)
    rows, stats = token_scores(str(reward.get("name")), dict(reward.get("knobs") or {}),
                               [float(scores[i]) for i in real], [extras[i] for i in real],
                               rm_scores.shape[1])
    out[torch.tensor(real, dtype=torch.long)] = rows.to(out.device)
    return out, {METRIC_PREFIX + k: float(v) for k, v in stats.items()}
