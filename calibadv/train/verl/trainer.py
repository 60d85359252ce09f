"""Trainer mode ``calibadv``: verl's synchronous trainer plus the extra_fields hand-over.

The only override is ``_compute_advantage``: fetch each rollout's ``extra_fields`` from the
TransferQueue (same keys, same order as the batch verl is about to process), expose them to
the estimator through :func:`rollout_context`, run verl's own step unchanged, then log our
per-step signals and, at the configured steps, dump the rollouts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import transfer_queue as tq
from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

from calibadv.train.verl import ESTIMATOR_NAME, TRAINER_MODE
from calibadv.train.verl.estimator import rollout_context
from calibadv.train.verl.settings import calibadv_section
from calibadv.train.verl.signals import step_metrics


def fetch_extra_fields(batch: Any) -> list[dict[str, Any]]:
    """The agent loop's ``extra_fields`` of every row of ``batch`` (a TQ ``KVBatchMeta``)."""
    data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                           select_fields=["extra_fields"])
    extras = data["extra_fields"]
    extras = extras.tolist() if hasattr(extras, "tolist") else list(extras)
    return [e if isinstance(e, dict) else {} for e in extras]


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def dump_rows(step: int, keys: list[str], extras: list[dict[str, Any]], stats: dict[str, Any]
              ) -> list[dict]:
    """Rollout-dump lines (docs/design.md) from the extras; token ids stay in verl's buffer."""
    per_step_c = stats.get("per_step_c") or [None] * len(extras)
    silver = {str(k): v for k, v in (stats.get("silver_sets") or {}).items()}
    grpo = stats.get("rollout_advantage")
    rows = []
    for i, e in enumerate(extras):
        info = e.get("reward_extra_info") or {}
        uid = keys[i].rsplit("_", 2)[0]  # TQ keys are {uid}_{session}_{index}
        group = e.get("question_index", uid)
        row = {k: v for k, v in e.items() if k != "reward_extra_info"}
        row.update(
            step=step, group=group, reward=float(info.get("score", 0.0)),
            f1=float(info.get("f1", 0.0)), em=float(info.get("em", 0.0)),
            format_ok=bool(info.get("format_ok", e.get("format_ok", False))),
            advantage=None if grpo is None else float(_jsonable(grpo)[i]),
            c=_jsonable(per_step_c[i]), silver_ids=[str(d) for d in silver.get(uid, [])],
        )
        rows.append(row)
    return rows


@register_trainer(TRAINER_MODE)
class CalibAdvTrainer(PPOTrainerSync):
    """``trainer.v1.trainer_mode=calibadv``."""

    def _compute_advantage(self, batch: Any, metrics: dict) -> Any:
        if self.config.algorithm.adv_estimator != ESTIMATOR_NAME:
            return super()._compute_advantage(batch, metrics)
        extras = fetch_extra_fields(batch)
        with rollout_context(extras, step=int(self.global_steps)) as ctx:
            batch = super()._compute_advantage(batch, metrics)
        metrics.update(step_metrics(extras, ctx.stats))
        self._maybe_dump(list(batch.keys), extras, ctx.stats)
        return batch

    def _maybe_dump(self, keys: list[str], extras: list[dict[str, Any]], stats: dict[str, Any]
                    ) -> None:
        section = calibadv_section(self.config)
        step = int(self.global_steps)
        if not section.get("run_dir") or step not in set(section.get("dump_rollouts_at") or []):
            return
        from calibadv.io import atomic_write_jsonl

        path = Path(section["run_dir"]) / "rollouts" / f"step_{step:06d}.jsonl"
        atomic_write_jsonl(path, dump_rows(step, keys, extras, stats))
