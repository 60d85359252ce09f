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
_NON_SCALAR_STATS = ("per_step_c", "silver_sets", "rollout_advantage")


@dataclass
class RolloutContext:
    """Per-rollout extras of the batch being processed, and what the estimator produced."""

    extras: list[dict[str, Any]]
    stats: dict[str, Any] = field(default_factory=dict)
    calls: int = 0


_local = threading.local()


@contextmanager
def rollout_context(extras: Sequence[Mapping[str, Any]]) -> Iterator[RolloutContext]:
    """Make ``extras`` (one dict per batch row, batch order) visible to the estimator."""
    ctx = RolloutContext(extras=[dict(e) if e is not None else {} for e in extras])
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
    from calibadv.advantage import CalibConfig

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
    """verl estimator signature → :func:`calibadv.advantage.calibrate` on the same batch.

    Returns ``(advantages, returns)``, both the calibrated token advantages (verl's GRPO
    returns the advantages as returns too).
    """
    from calibadv.advantage import calibrate

    ctx = current_context()
    n = token_level_rewards.shape[0]
    if len(ctx.extras) != n:
        raise ValueError(
            f"the trainer handed {len(ctx.extras)} rollout extras for a batch of {n} rows"
        )
    missing = [k for k in ("turn_spans", "doc_ids", "thinks") if k not in ctx.extras[0]]
    if missing:
        raise ValueError(
            f"rollout extra_fields lack {missing}: use the calibadv agent loop "
            "(actor_rollout_ref.rollout.agent.default_agent_loop=calibadv_search)"
        )
    scores = token_level_rewards.sum(dim=-1).float()
    format_ok = torch.tensor([_format_flag(e) for e in ctx.extras], dtype=torch.bool)
    calib = calib_config_from_algorithm(config)
    judge_scores, judge_metrics = None, {}
    if calib.score == "judge":  # calibadv.judge.training: c of negative rollouts' steps
        from calibadv.judge.training import verl_step_judge

        judge = verl_step_judge(_section(_section(config, "calibadv"), "judge"))
        judge_scores, judge_metrics = judge.score(
            ctx.extras, scores.cpu(), format_ok, response_mask.cpu(), _group_ids(index, n), calib
        )
    advantages, stats = calibrate(
        scores.cpu(),
        format_ok,
        response_mask.cpu(),
        _group_ids(index, n),
        [[list(map(int, s)) for s in e["turn_spans"]] for e in ctx.extras],
        [[[str(d) for d in step] for step in e["doc_ids"]] for e in ctx.extras],
        [[str(t) for t in e["thinks"]] for e in ctx.extras],
        calib,
        judge_scores=judge_scores,
    )
    advantages = torch.as_tensor(advantages, dtype=torch.float32).to(response_mask.device)
    advantages = advantages * response_mask
    ctx.stats = {**stats, **judge_metrics}
    ctx.calls += 1
    return advantages, advantages


def register() -> None:
    """Register the estimator in verl's registry (idempotent)."""
    from verl.trainer.ppo import core_algos

    from calibadv.train.verl import ESTIMATOR_NAME

    if core_algos.ADV_ESTIMATOR_REGISTRY.get(ESTIMATOR_NAME) is not compute_calibadv_advantage:
        core_algos.register_adv_est(ESTIMATOR_NAME)(compute_calibadv_advantage)
