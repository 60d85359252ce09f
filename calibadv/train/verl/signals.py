"""Per-step signals under our names (docs/design.md), from rollout extras and verl's metrics.

Two sources: (1) what the trainer mode computes from the agent loop's ``extra_fields`` and
``calibrate``'s stats, logged by verl as ``calibadv/<our name>``; (2) verl's own metrics
(entropy, loss, grad norm, lr, timing) renamed. :func:`to_metrics_row` turns one verl log
record into one ``metrics.jsonl`` line, :func:`to_val_row` one validation record into a
``val.jsonl`` line, so tables and figures read the same files whichever backend ran.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from calibadv.train.verl.estimator import METRIC_PREFIX, scalar_stats

HIGH_PPL_THRESHOLD = 50.0  # calibadv.evaluate.metrics.HIGH_PPL_THRESHOLD

#: verl metric name → ours (signals verl computes itself).
VERL_TO_OURS: dict[str, str] = {
    "actor/entropy": "entropy",
    "actor/pg_loss": "loss",
    "actor/pg_clipfrac": "pg_clipfrac",
    "actor/grad_norm": "grad_norm",
    "actor/lr": "lr",
    "training/epoch": "epoch",
    "timing_s/step": "time_s",
}


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else 0.0


def rollout_signals(extras: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Reward, format, search, length and perplexity signals of one batch of rollouts."""
    infos = [e.get("reward_extra_info") or {} for e in extras]
    ppls = [float(e.get("ppl", 1.0)) for e in extras]
    n_gen = sum(int(e.get("num_generated", 0)) for e in extras)
    prob_sum = sum(float(e.get("token_prob_sum", 0.0)) for e in extras)
    return {
        "reward_mean": _mean([float(i.get("score", 0.0)) for i in infos]),
        "f1_mean": _mean([float(i.get("f1", 0.0)) for i in infos]),
        "em_mean": _mean([float(i.get("em", 0.0)) for i in infos]),
        "format_rate": _mean([float(bool(i.get("format_ok", e.get("format_ok", False))))
                              for i, e in zip(infos, extras)]),
        "token_prob_mean": prob_sum / n_gen if n_gen else 0.0,
        "ppl_mean": _mean(ppls),
        "high_ppl_ratio": _mean([float(p >= HIGH_PPL_THRESHOLD) for p in ppls]),
        "valid_searches_mean": _mean([float(e.get("num_searches", 0)) for e in extras]),
        "response_len_mean": _mean([float(e.get("response_len", 0)) for e in extras]),
    }


def step_metrics(extras: Sequence[Mapping[str, Any]], stats: Mapping[str, Any]) -> dict[str, float]:
    """What the trainer mode adds to verl's metrics dict (prefixed ``calibadv/``)."""
    values = {**rollout_signals(extras), **scalar_stats(stats)}
    return {METRIC_PREFIX + k: v for k, v in values.items()}


def _number(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def to_metrics_row(step: int, data: Mapping[str, Any]) -> dict[str, Any] | None:
    """One verl log record → one metrics.jsonl line (None for validation-only records)."""
    if not any(k.startswith(METRIC_PREFIX) for k in data):
        return None
    row: dict[str, Any] = {"step": int(step)}
    hist: dict[str, float] = {}
    for key, value in data.items():
        num = _number(value)
        if num is None:
            continue
        if key.startswith(METRIC_PREFIX + "c_hist/"):
            hist[key[len(METRIC_PREFIX + "c_hist/"):]] = num
        elif key.startswith(METRIC_PREFIX):
            row[key[len(METRIC_PREFIX):]] = num
        elif key in VERL_TO_OURS:
            row[VERL_TO_OURS[key]] = num
    if hist:
        row["c_hist"] = hist
    if "epoch" in row:
        row["epoch"] = int(row["epoch"])
    row.setdefault("time_s", 0.0)
    return row


#: reward_extra_info key (calibadv.train.verl.reward) → val.jsonl column. As in the local
#: backend's validation, ``f1`` and ``em`` are gated by the format check.
_VAL_FIELDS = {"score": "f1", "gated_em": "em", "format_ok": "format_rate",
               "high_ppl": "high_ppl_ratio", "num_searches": "mean_searches"}


def to_val_row(step: int, data: Mapping[str, Any]) -> dict[str, Any] | None:
    """Validation means per data source (``val-aux/<src>/<key>/mean@1``) → one val.jsonl line.

    Several validation sources are averaged with equal weight; our validation slice has one.
    """
    per_field: dict[str, list[float]] = {}
    for key, value in data.items():
        parts = key.split("/")
        if len(parts) != 4 or parts[0] not in ("val-aux", "val-core"):
            continue
        _, _source, name, stat = parts
        if stat != "mean@1" or name not in _VAL_FIELDS:
            continue
        num = _number(value)
        if num is not None:
            per_field.setdefault(_VAL_FIELDS[name], []).append(num)
    if "f1" not in per_field:
        return None
    row: dict[str, Any] = {"step": int(step)}
    for ours in ("f1", "em", "format_rate", "high_ppl_ratio", "mean_searches"):
        row[ours] = _mean(per_field.get(ours, []))
    return row


def convert_log(records: Sequence[Mapping[str, Any]]
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """verl FileLogger records (``{"step", "data"}``, several attempts concatenated in order)
    → (metrics rows, val rows), one per step, a later attempt replacing an earlier one."""
    metrics: dict[int, dict[str, Any]] = {}
    val: dict[int, dict[str, Any]] = {}
    for rec in records:
        step, data = int(rec["step"]), rec.get("data") or {}
        m = to_metrics_row(step, data)
        if m is not None:
            metrics[step] = m
        v = to_val_row(step, data)
        if v is not None:
            val[step] = v
    return [metrics[s] for s in sorted(metrics)], [val[s] for s in sorted(val)]
