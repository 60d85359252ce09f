"""RunSpec → the hydra overrides of ``python -m verl.trainer.main_ppo``.

Pure: no verl import, no I/O. The paper's setup (docs/calibadv-spec "Training setup") is the
RunSpec's defaults; this module only spells it in verl 0.9.1's keys, which
``tests/verl/test_overrides.py`` composes against verl's real ``ppo_trainer`` config so a
renamed or silently ignored key fails a test instead of a 200 GPU-hour run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calibadv.errors import ConfigError
from calibadv.spec import RunSpec
from calibadv.train.verl import AGENT_LOOP_NAME, ESTIMATOR_NAME, TRAINER_MODE

#: Where the reward function lives (verl's ``load_extern_object`` accepts ``pkg://module``).
REWARD_PATH = "pkg://calibadv.train.verl.reward"
REWARD_NAME = "compute_score"
#: Prompt budget (tokens): the Search-R1 prompt plus a question is ~300 tokens.
MAX_PROMPT_LENGTH = 1024
#: Checkpoint contents: FSDP shards to resume + an HF copy to evaluate without merging.
SAVE_CONTENTS = ("model", "optimizer", "extra", "hf_model")


@dataclass(frozen=True)
class RunPaths:
    """Files of one verl run inside the run directory."""

    out_dir: Path

    @property
    def verl_checkpoints(self) -> Path:
        return self.out_dir / "verl_checkpoints"

    @property
    def logs(self) -> Path:
        return self.out_dir / "verl_logs"

    def attempt_log(self, attempt: int) -> Path:
        return self.logs / f"metrics_attempt{attempt:03d}.jsonl"


_PLAIN = re.compile(r"[A-Za-z_/][A-Za-z0-9_\-./:]*")
_QUOTE_RUN = re.compile(r"(\\*)('|$)")
_KEYWORDS = {"null", "true", "false", "inf", "nan", "+inf", "-inf"}


def hydra_value(value: Any) -> str:
    """A Python value as a hydra override value (strings quoted when hydra would misparse)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    text = str(value)
    if _PLAIN.fullmatch(text) and text.lower() not in _KEYWORDS:
        return text
    # hydra quoted strings: backslashes are literal except in a run that precedes a quote
    # (or the closing quote), which is doubled; interpolations ``${`` are escaped as ``\\${``.
    escaped = _QUOTE_RUN.sub(lambda m: m.group(1) * 2 + ("\\" + m.group(2) if m.group(2) else ""),
                             text.replace("${", "\\${"))
    return "'" + escaped + "'"


def _local(path: str) -> str:
    """Absolute path: verl runs in the run directory, not where the spec was written."""
    return str(Path(path).expanduser().resolve())


def _flatten(prefix: str, value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        out: list[tuple[str, Any]] = []
        for k, v in value.items():
            out += _flatten(f"{prefix}.{k}", v)
        return out
    return [(prefix, value)]


def _method_parts(method: dict[str, Any]) -> tuple[bool, bool, dict[str, Any], dict[str, Any]]:
    known = {"description", "base", "prethink", "require_search", "calibration", "loss", "name",
             "filter", "estimator", "rollout"}
    unknown = sorted(set(method) - known)
    if unknown:
        raise ConfigError(
            f"method.{unknown[0]}: unknown method key for the verl backend "
            f"(known: {', '.join(sorted(known))})"
        )
    return (bool(method.get("prethink", False)), bool(method.get("require_search", False)),
            dict(method.get("calibration") or {}), dict(method.get("loss") or {}))


def build_overrides(spec: RunSpec, out_dir: Path, retrieval_url: str,
                    attempt: int = 1) -> list[str]:
    """Every override of one run, in a stable order (spec.verl_overrides last, verbatim)."""
    if not spec.model.path:
        raise ConfigError("model.path: give the HF directory (or hub id) of the policy to train")
    if not spec.data.train:
        raise ConfigError("data.train: give the training Parquet file (calibadv prepare-data)")
    r, t, a = spec.resources, spec.training, spec.agent
    if r.gpus < 1:
        raise ConfigError(
            f"resources.gpus: the verl backend needs GPUs per node >= 1 (got {r.gpus}); "
            "use backend: local on a machine without GPUs"
        )
    if r.nodes < 1:
        raise ConfigError(f"resources.nodes must be >= 1, got {r.nodes}")
    prethink, require_search, calib, loss = _method_parts(spec.method)
    paths = RunPaths(Path(out_dir).resolve())
    micro = max(1, t.micro_batch_size)
    use_kl = t.kl_coef > 0

    train, val = _local(spec.data.train), _local(spec.data.val or spec.data.train)
    model = _local(spec.model.path) if Path(spec.model.path).exists() else spec.model.path
    kv: list[tuple[str, Any]] = [
        # data
        ("data.train_files", train),
        ("data.val_files", val),
        ("data.train_batch_size", t.batch_size),
        ("data.max_prompt_length", MAX_PROMPT_LENGTH),
        ("data.max_response_length", a.max_response_tokens),
        ("data.filter_overlong_prompts", True),
        ("data.truncation", "error"),
        ("data.return_raw_chat", True),
        ("data.shuffle", True),
        ("data.seed", spec.seed),
        ("data.val_max_samples", spec.data.val_size if spec.data.val_size else -1),
        # model + actor (full fine-tuning with FSDP)
        ("actor_rollout_ref.model.path", model),
        ("actor_rollout_ref.model.use_remove_padding", True),
        ("actor_rollout_ref.model.enable_gradient_checkpointing", True),
        ("actor_rollout_ref.actor.strategy", "fsdp"),
        ("actor_rollout_ref.actor.optim.lr", t.lr),
        ("actor_rollout_ref.actor.optim.weight_decay", t.weight_decay),
        ("actor_rollout_ref.actor.optim.clip_grad", t.grad_clip),
        ("actor_rollout_ref.actor.grad_clip", t.grad_clip),
        ("actor_rollout_ref.actor.ppo_mini_batch_size", t.mini_batch_size),
        ("actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu", micro),
        ("actor_rollout_ref.actor.ppo_epochs", 1),
        ("actor_rollout_ref.actor.clip_ratio", t.clip_ratio),
        ("actor_rollout_ref.actor.clip_ratio_low", t.clip_ratio),
        ("actor_rollout_ref.actor.clip_ratio_high", t.clip_ratio),
        ("actor_rollout_ref.actor.entropy_coeff", t.entropy_coef),
        ("actor_rollout_ref.actor.use_kl_loss", use_kl),
        ("actor_rollout_ref.actor.kl_loss_coef", t.kl_coef),
        ("actor_rollout_ref.actor.policy_loss.loss_mode", loss.get("loss_mode", "vanilla")),
        ("actor_rollout_ref.actor.loss_agg_mode", loss.get("loss_agg_mode", "token-mean")),
        ("actor_rollout_ref.actor.checkpoint.save_contents", list(SAVE_CONTENTS)),
        ("actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu", micro),
        # rollout: vLLM, TP 1, G rollouts per question
        ("actor_rollout_ref.rollout.name", "vllm"),
        ("actor_rollout_ref.rollout.tensor_model_parallel_size", 1),
        ("actor_rollout_ref.rollout.gpu_memory_utilization", 0.6),
        ("actor_rollout_ref.rollout.n", t.group_size),
        ("actor_rollout_ref.rollout.temperature", t.temperature),
        ("actor_rollout_ref.rollout.top_p", t.top_p),
        ("actor_rollout_ref.rollout.calculate_log_probs", True),
        ("actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu", micro),
        ("actor_rollout_ref.rollout.val_kwargs.temperature", 0),
        ("actor_rollout_ref.rollout.val_kwargs.top_p", 1.0),
        ("actor_rollout_ref.rollout.val_kwargs.do_sample", False),
        ("actor_rollout_ref.rollout.val_kwargs.n", 1),
        ("actor_rollout_ref.rollout.agent.default_agent_loop", AGENT_LOOP_NAME),
        # algorithm: our estimator, no KL in the reward
        ("algorithm.adv_estimator", ESTIMATOR_NAME),
        ("algorithm.use_kl_in_reward", False),
        ("algorithm.norm_adv_by_std_in_grpo", bool(calib.get("norm_by_std", True))),
        # reward
        ("reward.custom_reward_function.path", REWARD_PATH),
        ("reward.custom_reward_function.name", REWARD_NAME),
        # trainer
        ("trainer.use_v1", True),
        ("trainer.v1.trainer_mode", TRAINER_MODE),
        ("trainer.project_name", "calibadv"),
        ("trainer.experiment_name", spec.name or Path(out_dir).name),
        ("trainer.logger", ["console", "file"]),
        ("trainer.nnodes", r.nodes),
        ("trainer.n_gpus_per_node", r.gpus),
        ("trainer.total_epochs", t.epochs),
        ("trainer.total_training_steps", t.steps),
        ("trainer.save_freq", t.save_every),
        ("trainer.test_freq", t.val_every),
        ("trainer.val_before_train", t.val_before_train),
        ("trainer.resume_mode", "auto"),
        ("trainer.default_local_dir", str(paths.verl_checkpoints)),
        ("trainer.max_actor_ckpt_to_keep", None),
        ("ray_kwargs.ray_init.num_cpus", r.cpus),
    ]
    added: list[tuple[str, Any]] = [
        ("reward.custom_reward_function.reward_kwargs.prethink", prethink),
        ("reward.custom_reward_function.reward_kwargs.require_search", require_search),
        ("algorithm.calibadv.prethink", prethink),
        ("algorithm.calibadv.require_search", require_search),
        *_flatten("algorithm.calibadv.calibration", calib),
        ("algorithm.calibadv.agent.max_turns", a.max_turns),
        ("algorithm.calibadv.agent.max_tokens_per_turn", a.max_tokens_per_turn),
        ("algorithm.calibadv.agent.max_response_tokens", a.max_response_tokens),
        ("algorithm.calibadv.agent.invalid_action", a.invalid_action),
        ("algorithm.calibadv.agent.retrieval_url", retrieval_url),
        ("algorithm.calibadv.agent.topk", spec.retrieval.topk),
        ("algorithm.calibadv.run_dir", str(paths.out_dir)),
        ("algorithm.calibadv.dump_rollouts_at", list(t.dump_rollouts_at)),
        ("ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH",
         str(paths.attempt_log(attempt))),
    ]
    out = [f"{k}={hydra_value(v)}" for k, v in kv]
    out += [f"+{k}={hydra_value(v)}" for k, v in added]
    out += _method_part_overrides(spec.method)
    return out + list(spec.verl_overrides)


def _method_part_overrides(method: dict[str, Any]) -> list[str]:
    """The registered loss' knobs and the rollout filter (:mod:`calibadv.train.verl.method_parts`)."""
    from calibadv.train.verl.method_parts import part_overrides

    return [f"{'+' if new else ''}{k}={hydra_value(v)}" for k, v, new in part_overrides(method)]
