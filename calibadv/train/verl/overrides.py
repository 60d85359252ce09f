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
#: Called by verl after every save: exports the HF copy, prunes old FSDP shards.
CHECKPOINT_CALLBACK = "calibadv.train.verl.checkpoints.ExportAndPrune"
#: verl's tracking backends (``verl.utils.tracking.Tracking.supported_backend``).
LOGGERS = ("console", "file", "tensorboard", "wandb", "mlflow", "swanlab", "clearml", "trackio")
#: Ray CPUs verl's FSDP resource pool reserves per GPU (``max_colocate_count`` of its bundles),
#: plus the TaskRunner and room to place the agent-loop and reward workers.
RAY_CPUS_PER_GPU = 3
RAY_CPUS_EXTRA = 2
#: TransferQueue's SimpleStorage, which verl's v1 TaskRunner starts with ``tq.init`` before any
#: worker: a controller and ``num_data_storage_units`` storage units, each a Ray actor holding
#: one CPU for its lifetime (``transfer_queue/controller.py`` ~943 and
#: ``transfer_queue/storage/simple_storage.py`` ~722: ``@ray.remote(num_cpus=1)``); the units are
#: placed by one placement group that ``tq.init`` waits on without a timeout.
TQ_STORAGE_UNITS_KEY = "transfer_queue.backend.SimpleStorage.num_data_storage_units"
#: verl's default (``trainer/config/transfer_queue/transfer_queue.yaml``), written explicitly.
TQ_STORAGE_UNITS = 8
TQ_CPUS_PER_ACTOR = 1


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

    @property
    def exported(self) -> Path:
        """HF copies of the saved steps (``step_{N:06d}``), kept after verl prunes its shards."""
        return self.out_dir / "checkpoints"


_PLAIN = re.compile(r"[A-Za-z_/][A-Za-z0-9_\-./:]*")
_QUOTE_RUN = re.compile(r"(\\*)('|$)")
_INTERPOLATION = re.compile(r"(\\*)\$\{")
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
    # Two layers. OmegaConf (when verl's config resolves): ``${`` starts an interpolation, so
    # it is escaped as ``\\${`` and a backslash run right before it is doubled. Hydra's
    # quoted string: backslashes are literal except in a run that precedes a quote (or the
    # closing quote), which is doubled.
    omega = _INTERPOLATION.sub(lambda m: m.group(1) * 2 + "\\${", text)
    escaped = _QUOTE_RUN.sub(lambda m: m.group(1) * 2 + ("\\" + m.group(2) if m.group(2) else ""),
                             omega)
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
             "filter", "estimator", "rollout", "reward"}
    unknown = sorted(set(method) - known)
    if unknown:
        raise ConfigError(
            f"method.{unknown[0]}: unknown method key for the verl backend "
            f"(known: {', '.join(sorted(known))})"
        )
    return (bool(method.get("prethink", False)), bool(method.get("require_search", False)),
            dict(method.get("calibration") or {}), dict(method.get("loss") or {}))


def _tracking_env(loggers: list[str], wandb_mode: str, paths: RunPaths
                  ) -> list[tuple[str, Any]]:
    """Where tensorboard/wandb write (inside the run directory; wandb offline unless asked)."""
    env = "ray_kwargs.ray_init.runtime_env.env_vars."
    out: list[tuple[str, Any]] = []
    if "tensorboard" in loggers:
        out.append((env + "TENSORBOARD_DIR", str(paths.logs / "tensorboard")))
    if "wandb" in loggers:
        out += [(env + "WANDB_MODE", wandb_mode), (env + "WANDB_DIR", str(paths.logs))]
    return out


def max_model_len(spec: RunSpec) -> int:
    """vLLM's context length: ``verl.max_model_len``, or prompt budget + response budget.

    Always explicit: verl's vLLM server replaces ``null`` with the model's
    ``max_position_embeddings`` (``vllm_async_server.py``, ``_validate_configs`` ~1104), e.g.
    32768 for Qwen2.5-7B, not the prompt + response length a rollout can reach."""
    v = spec.verl.max_model_len
    return v if v is not None else MAX_PROMPT_LENGTH + spec.agent.max_response_tokens


def tq_storage_units(spec: RunSpec) -> int:
    """TransferQueue storage units the run starts: the last ``verl_overrides`` entry for
    :data:`TQ_STORAGE_UNITS_KEY` (hydra applies the last), else :data:`TQ_STORAGE_UNITS`."""
    units = TQ_STORAGE_UNITS
    for item in spec.verl_overrides:
        key, sep, value = str(item).lstrip("+~").partition("=")
        if sep and key == TQ_STORAGE_UNITS_KEY:
            try:
                units = int(value)
            except ValueError:
                raise ConfigError(f"verl_overrides: {item!r}: the storage unit count must be an "
                                  "integer") from None
    if units < 1:
        raise ConfigError(f"verl_overrides: {TQ_STORAGE_UNITS_KEY}={units} must be >= 1")
    return units


def _user_sets(spec: RunSpec, key: str) -> bool:
    return any(str(o).lstrip("+~").partition("=")[0] == key for o in spec.verl_overrides)


def min_ray_cpus(gpus: int, nodes: int = 1, storage_units: int = TQ_STORAGE_UNITS) -> int:
    """CPUs Ray needs per node so that every placement verl waits on can be scheduled: the
    FSDP bundles (:data:`RAY_CPUS_PER_GPU` per GPU + :data:`RAY_CPUS_EXTRA`) and this node's
    share of TransferQueue's controller and storage units (spread over the nodes)."""
    tq_actors = (1 + storage_units) * TQ_CPUS_PER_ACTOR
    return RAY_CPUS_PER_GPU * gpus + RAY_CPUS_EXTRA + -(-tq_actors // max(1, nodes))


def check_ray_cpus(cpus: int, gpus: int, nodes: int, storage_units: int) -> None:
    """Raise :class:`ConfigError` naming every number when Ray would wait forever."""
    need = min_ray_cpus(gpus, nodes, storage_units)
    if cpus < need:
        tq = (1 + storage_units) * TQ_CPUS_PER_ACTOR
        raise ConfigError(
            f"resources.cpus: verl needs at least {need} CPUs per node for {gpus} GPUs on "
            f"{nodes} node(s), got {cpus}: {RAY_CPUS_PER_GPU} per GPU for its worker placement "
            f"groups + {RAY_CPUS_EXTRA} + this node's share of {tq} for TransferQueue (a "
            f"controller and {storage_units} storage units, one CPU each; "
            f"{TQ_STORAGE_UNITS_KEY}). With fewer, Ray waits forever in tq.init. Raise "
            f"resources.cpus to {need}, or lower the storage units in verl_overrides"
        )


def _resume(mode: str) -> list[tuple[str, Any]]:
    """``verl.resume_mode`` → verl's ``resume_mode`` (+ ``resume_from_path``)."""
    if mode in ("auto", "disable"):
        return [("trainer.resume_mode", mode)]
    path = Path(mode).expanduser().resolve()
    if not path.name.startswith("global_step_"):
        raise ConfigError(
            f"verl.resume_mode: {mode!r} is neither auto, disable nor a verl checkpoint folder "
            "(…/verl_checkpoints/global_step_N)"
        )
    return [("trainer.resume_mode", "resume_path"), ("trainer.resume_from_path", str(path))]


def _check_verl(spec: RunSpec) -> None:
    v, r = spec.verl, spec.resources
    bad = sorted(set(v.loggers) - set(LOGGERS))
    if bad:
        raise ConfigError(f"verl.loggers: unknown logger {bad[0]!r} (verl knows: {', '.join(LOGGERS)})")
    if v.use_remove_padding and v.attn_implementation != "flash_attention_2":
        raise ConfigError(
            "verl.use_remove_padding: true needs verl.attn_implementation: flash_attention_2 "
            "(and the flash-attn package); with sdpa keep use_remove_padding: false"
        )
    if v.max_ckpt_to_keep < 1:
        raise ConfigError(f"verl.max_ckpt_to_keep must be >= 1, got {v.max_ckpt_to_keep}")
    longest = MAX_PROMPT_LENGTH + spec.agent.max_response_tokens
    if v.use_dynamic_bsz and v.ppo_max_token_len_per_gpu < longest:
        raise ConfigError(
            f"verl.ppo_max_token_len_per_gpu ({v.ppo_max_token_len_per_gpu}) is below the longest "
            f"sequence ({MAX_PROMPT_LENGTH} prompt + {spec.agent.max_response_tokens} response "
            f"tokens = {longest}); raise it to at least {longest}"
        )
    if v.max_model_len is not None and v.max_model_len < longest:
        raise ConfigError(f"verl.max_model_len ({v.max_model_len}) must be >= {longest} "
                          "(prompt budget + agent.max_response_tokens), or null")
    check_ray_cpus(r.cpus, r.gpus, r.nodes, tq_storage_units(spec))
    if v.agent_num_workers < 1:
        raise ConfigError(f"verl.agent_num_workers must be >= 1, got {v.agent_num_workers}")


def build_overrides(spec: RunSpec, out_dir: Path, retrieval_url: str,
                    attempt: int = 1) -> list[str]:
    """Every override of one run, in a stable order (spec.verl_overrides last, verbatim): verl's
    own keys phase by phase (data, model and actor, rollout, algorithm and reward, trainer,
    critic), then the keys its composed config lacks (``+``), then the method's parts."""
    _check_run(spec)
    prethink, require_search, calib, loss = _method_parts(spec.method)
    from calibadv.train.verl.method_parts import verl_estimator

    native_estimator, kl_in_reward = verl_estimator(spec.method)  # gae: verl's own, with a critic
    critic = native_estimator is not None
    paths = RunPaths(Path(out_dir).resolve())
    micro = max(1, spec.training.micro_batch_size)
    model = _local(spec.model.path) if Path(spec.model.path).exists() else spec.model.path
    kv: list[tuple[str, Any]] = [
        *_data(spec),
        *_actor(spec, model, micro, loss),
        *_rollout(spec, micro),
        *_algorithm(native_estimator, kl_in_reward, calib),
        *_trainer(spec, out_dir, paths),
        *_critic(spec, model, micro, critic),
    ]
    added: list[tuple[str, Any]] = [
        ("actor_rollout_ref.model.override_config.attn_implementation", spec.verl.attn_implementation),
        *_calibadv_keys(spec, retrieval_url, paths, prethink, require_search, calib),
        *_logging_keys(spec, paths, attempt),
        *_critic_engine(spec, micro, critic),
    ]
    out = [f"{k}={hydra_value(v)}" for k, v in kv]
    out += [f"+{k}={hydra_value(v)}" for k, v in added]
    out += _method_part_overrides(spec.method)
    return out + list(spec.verl_overrides)


def _check_run(spec: RunSpec) -> None:
    """What a verl run cannot start without (a policy, training data, GPUs), then the
    ``verl`` section (:func:`_check_verl`)."""
    if not spec.model.path:
        raise ConfigError("model.path: give the HF directory (or hub id) of the policy to train")
    if not spec.data.train:
        raise ConfigError("data.train: give the training Parquet file (calibadv prepare-data)")
    r = spec.resources
    if r.gpus < 1:
        raise ConfigError(
            f"resources.gpus: the verl backend needs GPUs per node >= 1 (got {r.gpus}); "
            "use backend: local on a machine without GPUs"
        )
    if r.nodes < 1:
        raise ConfigError(f"resources.nodes must be >= 1, got {r.nodes}")
    _check_verl(spec)


def _data(spec: RunSpec) -> list[tuple[str, Any]]:
    """``data.*``: the Parquet files (absolute), batch size, prompt and response budgets."""
    t = spec.training
    train, val = _local(spec.data.train), _local(spec.data.val or spec.data.train)
    return [
        ("data.train_files", train),
        ("data.val_files", val),
        ("data.train_batch_size", t.batch_size),
        ("data.max_prompt_length", MAX_PROMPT_LENGTH),
        ("data.max_response_length", spec.agent.max_response_tokens),
        ("data.filter_overlong_prompts", True),
        ("data.truncation", "error"),
        ("data.return_raw_chat", True),
        ("data.shuffle", True),
        ("data.seed", spec.seed),
        ("data.val_max_samples", spec.data.val_size if spec.data.val_size else -1),
    ]


def _actor(spec: RunSpec, model: str, micro: int, loss: dict[str, Any]) -> list[tuple[str, Any]]:
    """Model, actor and reference: full fine-tuning with FSDP, the method's policy loss."""
    t, v = spec.training, spec.verl
    return [
        ("actor_rollout_ref.model.path", model),
        ("actor_rollout_ref.model.use_remove_padding", v.use_remove_padding),
        ("actor_rollout_ref.model.enable_gradient_checkpointing", True),
        ("actor_rollout_ref.actor.strategy", "fsdp"),
        ("actor_rollout_ref.actor.optim.lr", t.lr),
        ("actor_rollout_ref.actor.optim.weight_decay", t.weight_decay),
        ("actor_rollout_ref.actor.optim.clip_grad", t.grad_clip),
        ("actor_rollout_ref.actor.grad_clip", t.grad_clip),
        ("actor_rollout_ref.actor.ppo_mini_batch_size", t.mini_batch_size),
        ("actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu", micro),
        ("actor_rollout_ref.actor.use_dynamic_bsz", v.use_dynamic_bsz),
        ("actor_rollout_ref.actor.ppo_max_token_len_per_gpu", v.ppo_max_token_len_per_gpu),
        ("actor_rollout_ref.actor.ppo_epochs", 1),
        ("actor_rollout_ref.actor.clip_ratio", t.clip_ratio),
        ("actor_rollout_ref.actor.clip_ratio_low", t.clip_ratio),
        ("actor_rollout_ref.actor.clip_ratio_high", t.clip_ratio),
        ("actor_rollout_ref.actor.entropy_coeff", t.entropy_coef),
        ("actor_rollout_ref.actor.use_kl_loss", t.kl_coef > 0),
        ("actor_rollout_ref.actor.kl_loss_coef", t.kl_coef),
        ("actor_rollout_ref.actor.policy_loss.loss_mode", loss.get("loss_mode", "vanilla")),
        ("actor_rollout_ref.actor.loss_agg_mode", loss.get("loss_agg_mode", "token-mean")),
        ("actor_rollout_ref.actor.checkpoint.save_contents", list(SAVE_CONTENTS)),
        ("actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu", micro),
    ]


def _rollout(spec: RunSpec, micro: int) -> list[tuple[str, Any]]:
    """The rollout: vLLM, TP 1, G rollouts per question through our agent loop; greedy
    validation."""
    t, v = spec.training, spec.verl
    return [
        ("actor_rollout_ref.rollout.name", "vllm"),
        ("actor_rollout_ref.rollout.tensor_model_parallel_size", 1),
        ("actor_rollout_ref.rollout.gpu_memory_utilization", v.gpu_memory_utilization),
        ("actor_rollout_ref.rollout.max_num_seqs", v.max_num_seqs),
        ("actor_rollout_ref.rollout.max_model_len", max_model_len(spec)),
        ("actor_rollout_ref.rollout.enforce_eager", v.enforce_eager),
        ("actor_rollout_ref.rollout.agent.num_workers", v.agent_num_workers),
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
    ]


def _algorithm(native_estimator: str | None, kl_in_reward: bool,
               calib: dict[str, Any]) -> list[tuple[str, Any]]:
    """The algorithm: our estimator (or verl's GAE for PPO), KL in the reward only for PPO's;
    the reward function."""
    return [
        ("algorithm.adv_estimator", native_estimator or ESTIMATOR_NAME),
        ("algorithm.use_kl_in_reward", kl_in_reward),
        ("algorithm.norm_adv_by_std_in_grpo", bool(calib.get("norm_by_std", True))),
        ("reward.custom_reward_function.path", REWARD_PATH),
        ("reward.custom_reward_function.name", REWARD_NAME),
    ]


def _trainer(spec: RunSpec, out_dir: Path, paths: RunPaths) -> list[tuple[str, Any]]:
    """The trainer: verl's v1 trainer, logging, steps and validation, checkpoints and resume,
    Ray's CPUs and TransferQueue's storage units (unless ``verl_overrides`` sets them)."""
    r, t, v = spec.resources, spec.training, spec.verl
    return [
        ("trainer.use_v1", True),
        ("trainer.v1.trainer_mode", TRAINER_MODE),
        ("trainer.project_name", "calibadv"),
        ("trainer.experiment_name", spec.name or Path(out_dir).name),
        ("trainer.logger", list(v.loggers)),
        ("trainer.log_val_generations", v.log_val_generations),
        ("trainer.validation_data_dir", str(paths.logs / "val_generations")),
        ("trainer.nnodes", r.nodes),
        ("trainer.n_gpus_per_node", r.gpus),
        ("trainer.total_epochs", t.epochs),
        ("trainer.total_training_steps", t.steps),
        ("trainer.save_freq", t.save_every),
        ("trainer.test_freq", t.val_every),
        ("trainer.val_before_train", t.val_before_train),
        *_resume(v.resume_mode),
        ("trainer.default_local_dir", str(paths.verl_checkpoints)),
        ("trainer.max_actor_ckpt_to_keep", v.max_ckpt_to_keep),
        ("trainer.checkpoint_callback_class", CHECKPOINT_CALLBACK),
        ("ray_kwargs.ray_init.num_cpus", r.cpus),
        *([] if _user_sets(spec, TQ_STORAGE_UNITS_KEY)
          else [(TQ_STORAGE_UNITS_KEY, tq_storage_units(spec))]),
    ]


def _calibadv_keys(spec: RunSpec, retrieval_url: str, paths: RunPaths, prethink: bool,
                   require_search: bool, calib: dict[str, Any]) -> list[tuple[str, Any]]:
    """Our keys verl's config lacks: the reward's kwargs and ``algorithm.calibadv`` (the method,
    the agent's budgets and retriever, the run directory, the rollout dumps)."""
    a = spec.agent
    return [
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
        ("algorithm.calibadv.dump_rollouts_at", list(spec.training.dump_rollouts_at)),
    ]


def _logging_keys(spec: RunSpec, paths: RunPaths, attempt: int) -> list[tuple[str, Any]]:
    """Where verl's file logger (this attempt's metrics) and the tracking backends write."""
    v = spec.verl
    return [
        ("ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH",
         str(paths.attempt_log(attempt))),
        *_tracking_env(v.loggers, v.wandb_mode, paths),
    ]


def _critic(spec: RunSpec, model: str, micro: int, enabled: bool) -> list[tuple[str, Any]]:
    """verl's critic for PPO (the ``gae`` estimator): a full model started from the policy's
    weights, trained as the actor is (FSDP, same batch split, token budget and attention); its
    lr and value clip come from the estimator's knobs (:mod:`calibadv.train.verl.method_parts`).
    Nothing otherwise (verl enables a critic only for ``adv_estimator=gae``)."""
    if not enabled:
        return []
    t, v = spec.training, spec.verl
    return [
        ("critic.enable", True),
        ("critic.strategy", "fsdp"),
        ("critic.model.path", model),
        ("critic.model.use_remove_padding", v.use_remove_padding),
        ("critic.model.enable_gradient_checkpointing", True),
        ("critic.ppo_mini_batch_size", t.mini_batch_size),
        ("critic.ppo_micro_batch_size_per_gpu", micro),
        ("critic.use_dynamic_bsz", v.use_dynamic_bsz),
        ("critic.ppo_max_token_len_per_gpu", v.ppo_max_token_len_per_gpu),
        ("critic.ppo_epochs", 1),
        ("critic.grad_clip", t.grad_clip),
        ("critic.optim.clip_grad", t.grad_clip),
        ("trainer.max_critic_ckpt_to_keep", v.max_ckpt_to_keep),
    ]


def _critic_engine(spec: RunSpec, micro: int, enabled: bool) -> list[tuple[str, Any]]:
    """Keys of the critic that verl's composed config lacks (added with ``+``), each one a
    value verl's v1 trainer reads when it builds the critic's engine:

    * ``ppo_infer_max_token_len_per_gpu``: ``trainer_base.py`` (``_init_workers``, ~267-268)
      sets the critic engine's train *and* infer token budgets from it, not from
      ``ppo_max_token_len_per_gpu`` (dataclass default 32768, ``workers/config/critic.py``).
    * ``fsdp.use_dynamic_bsz`` / ``fsdp.micro_batch_size_per_gpu`` /
      ``fsdp.infer_micro_batch_size_per_gpu``: the engine config (``critic.fsdp`` becomes
      ``critic.engine``) is what ``TrainingWorker`` splits batches by
      (``workers/engine_workers.py`` ~355 and ~409); its own defaults are dynamic batching
      with no micro batch size.
    * ``model.override_config.attn_implementation``: the critic's attention, which reaches the
      value-head loader through :mod:`calibadv.train.verl.valuehead`.
    """
    if not enabled:
        return []
    v = spec.verl
    return [
        ("critic.ppo_infer_max_token_len_per_gpu", v.ppo_max_token_len_per_gpu),
        ("critic.fsdp.use_dynamic_bsz", v.use_dynamic_bsz),
        ("critic.fsdp.micro_batch_size_per_gpu", micro),
        ("critic.fsdp.infer_micro_batch_size_per_gpu", micro),
        ("critic.model.override_config.attn_implementation", v.attn_implementation),
    ]


def _method_part_overrides(method: dict[str, Any]) -> list[str]:
    """The registered loss' knobs and the rollout filter (:mod:`calibadv.train.verl.method_parts`)."""
    from calibadv.train.verl.method_parts import part_overrides

    return [f"{'+' if new else ''}{k}={hydra_value(v)}" for k, v, new in part_overrides(method)]
