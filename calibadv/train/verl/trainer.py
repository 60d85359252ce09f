"""Trainer mode ``calibadv``: verl's synchronous trainer plus the extra_fields hand-over.

``_compute_advantage`` fetches each rollout's ``extra_fields`` from the TransferQueue (same
keys, same order as the batch verl is about to process), exposes them to the estimator
through :func:`rollout_context`, runs verl's own step unchanged, then logs our per-step
signals and, at the configured steps, dumps the rollouts.

Sync behaviour has to be kept explicitly: verl 0.9.1 decides between its synchronous and
asynchronous machinery by comparing ``self.trainer_mode`` with ``"sync"`` (replay-buffer
type, ``data.gen_batch_size`` forced to 1, a TransferQueue snapshot in every checkpoint,
failed prompt groups evicted and refilled). A mode registered under another name would get
all of the async side while training synchronously, so :attr:`CalibAdvTrainer.trainer_mode`
answers ``"sync"`` whatever name selected it. On top of verl's sync buffer, a step with a
failed rollout group (an exception in the agent loop, e.g. the retrieval server is down)
fails instead of training on the groups that happened to survive.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import transfer_queue as tq
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer
from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

from calibadv.train.verl import ESTIMATOR_NAME, TRAINER_MODE
from calibadv.train.verl.estimator import PADDING, rollout_context
from calibadv.train.verl.settings import calibadv_section
from calibadv.train.verl.signals import step_metrics


#: What a padding row (verl's ``upsample_batch_to_divisible_size``) hands the estimator,
#: which leaves it out of ``calibrate`` (zero advantage, not in any statistic).
PADDING_EXTRAS: dict[str, Any] = {PADDING: True, "turn_spans": [], "doc_ids": [], "thinks": [],
                                  "format_ok": False}
#: The mode string verl's base trainer compares with to pick its synchronous code paths.
SYNC_MODE = "sync"


class RolloutGroupsFailed(RuntimeError):
    """Some prompt groups of a step ended with status ``failure`` in the agent loop."""


def is_padding(tag: Any) -> bool:
    return bool(isinstance(tag, dict) and tag.get("is_padding", False))


def fetch_extra_fields(batch: Any) -> list[dict[str, Any]]:
    """The agent loop's ``extra_fields`` of every row of ``batch`` (a TQ ``KVBatchMeta``);
    padding rows (tag ``is_padding``) get :data:`PADDING_EXTRAS` instead of the copy of a
    real rollout's fields verl gives them."""
    data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                           select_fields=["extra_fields"])
    extras = data["extra_fields"]
    extras = extras.tolist() if hasattr(extras, "tolist") else list(extras)
    tags = list(batch.tags) if batch.tags else [{}] * len(extras)
    return [dict(PADDING_EXTRAS) if is_padding(tag) else (e if isinstance(e, dict) else {})
            for e, tag in zip(extras, tags)]


class FailFastReplayBuffer(ReplayBuffer):
    """verl's synchronous replay buffer that raises when a sampled step had failed groups.

    verl's sync buffer keeps failed groups sampleable (the surviving rollouts of a group are
    trained on) and only raises when no rollout at all survived. For search agents that is a
    silent bias: with the retrieval server down, the rollouts that answered without searching
    survive and are trained on. One failed group fails the step; re-running resumes.
    """

    def sample(self, global_steps: int, partition_id: str, batch_size: int):
        try:
            out = super().sample(global_steps, partition_id, batch_size)
        except RuntimeError as err:
            self._raise_on_failures(partition_id, err)
            raise
        self._raise_on_failures(partition_id)
        return out

    def _raise_on_failures(self, partition_id: str, cause: BaseException | None = None) -> None:
        failed = sorted(self.failure_keys.get(partition_id, ()))
        if not failed:
            return
        total = len(failed) + len(self.finished_keys.get(partition_id, ()))
        raise RolloutGroupsFailed(
            f"{len(failed)} of {total} prompt groups of the {partition_id!r} batch failed in the "
            f"agent loop (first: {failed[0]}); the agent-loop worker log above has the "
            "exception, e.g. the retrieval server is unreachable. The step is not trained; fix "
            "the cause and re-run the same command to resume from the last checkpoint."
        ) from cause


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
    """``trainer.v1.trainer_mode=calibadv``: verl's sync trainer + the extra_fields hand-over."""

    @property
    def trainer_mode(self) -> str:
        """What verl's base class compares with ``"sync"``: always sync (module docstring)."""
        return SYNC_MODE

    @trainer_mode.setter
    def trainer_mode(self, name: str) -> None:
        # verl's __init__ assigns config.trainer.v1.trainer_mode here; keep it for the record.
        self.registered_mode = name

    def _build_replay_buffer(self) -> ReplayBuffer:
        buffer = super()._build_replay_buffer()
        # verl computes the buffer's arguments privately; FailFastReplayBuffer only adds a
        # check to sample(), so the instance verl built is specialised rather than rebuilt.
        # A user's custom sampler (trainer.v1.sampler.custom_sampler) is left alone.
        if type(buffer) is ReplayBuffer:
            buffer.__class__ = FailFastReplayBuffer
        return buffer

    def _compute_advantage(self, batch: Any, metrics: dict) -> Any:
        if self.config.algorithm.adv_estimator != ESTIMATOR_NAME:  # verl's own (gae: PPO)
            self._place_token_rewards(batch, metrics)
            return super()._compute_advantage(batch, metrics)
        extras = fetch_extra_fields(batch)
        with rollout_context(extras, step=int(self.global_steps)) as ctx:
            batch = super()._compute_advantage(batch, metrics)
        real = [i for i, e in enumerate(extras) if not e.get(PADDING)]
        real_extras = [extras[i] for i in real]  # ctx.stats describes these, in this order
        metrics.update(step_metrics(real_extras, ctx.stats))
        self._maybe_dump([batch.keys[i] for i in real], real_extras, ctx.stats)
        return batch

    def _place_token_rewards(self, batch: Any, metrics: dict) -> None:
        """With a token reward (``algorithm.calibadv.reward``, StepSearch's), rewrite the
        batch's ``rm_scores`` in the TransferQueue before verl reads them as
        ``token_level_scores`` (then the KL penalty and GAE are verl's)."""
        reward = dict(calibadv_section(self.config).get("reward") or {})
        if not reward.get("name"):
            return
        from tensordict import TensorDict
        from verl.workers.utils.padding import response_to_nested

        from calibadv.train.verl.estimator import token_reward_scores

        extras = fetch_extra_fields(batch)
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                               select_fields=["rm_scores", "response_mask"])
        mask = data["response_mask"]
        padded = data.to_padded_tensor()
        scores, stats = token_reward_scores(padded["rm_scores"], extras, reward)
        tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id,
                        fields=TensorDict({"rm_scores": response_to_nested(scores, mask)},
                                          batch_size=len(batch)))
        metrics.update(stats)

    def _maybe_dump(self, keys: list[str], extras: list[dict[str, Any]], stats: dict[str, Any]
                    ) -> None:
        section = calibadv_section(self.config)
        step = int(self.global_steps)
        if not section.get("run_dir") or step not in set(section.get("dump_rollouts_at") or []):
            return
        from calibadv.io import atomic_write_jsonl

        path = Path(section["run_dir"]) / "rollouts" / f"step_{step:06d}.jsonl"
        atomic_write_jsonl(path, dump_rows(step, keys, extras, stats))
