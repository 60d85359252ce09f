"""RunSpec: everything one training run needs, independent of the workflow config layout.

The Snakemake workflow resolves its config into one spec per (model, method) and writes it as
YAML; ``calibadv train --spec FILE`` reads it, whichever backend runs it. A user can write one
by hand to run a single experiment without Snakemake.

Loading is strict: an unknown key or a value of the wrong type raises :class:`ConfigError`
naming the dotted key, so a typo never silently falls back to a default (the failure mode of
the authors' launch script, see docs/spec-switches.md).
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from calibadv.errors import ConfigError

T = TypeVar("T")


@dataclass
class ModelSpec:
    """The policy to train: a local HF directory or a hub id (downloaded by the workflow)."""

    path: str = ""
    name: str = ""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    chat_template: str | None = None  # Jinja template overriding the tokenizer's own


@dataclass
class DataSpec:
    train: str = ""  # verl-format Parquet
    val: str | None = None  # held-out slice for the validation curve (collapse point)
    val_size: int | None = None  # cap on validation questions (None = all)


@dataclass
class RetrievalSpec:
    """Where the search tool comes from: an existing server (url) or one the run starts."""

    url: str | None = None
    corpus: str | None = None
    index: str | None = None
    encoder: str | None = None
    reranker: str | None = None
    query_prefix: str = ""
    passage_prefix: str = ""
    topk_retrieval: int = 20
    topk: int = 3
    port: int = 0  # 0 = pick a free port
    # How a run starts its own server (no url): a child process, or a thread of the run's
    # process (saves a second torch/transformers start-up; small CPU jobs). launch.SERVER_MODES.
    server: Literal["process", "thread"] = "process"
    # Where a started server computes (serve --device / --faiss-gpu): None = GPU if any for the
    # models; faiss_gpu shards the index over the node's GPUs in fp16 (docs/retrieval.md).
    device: str | None = None
    faiss_gpu: bool = False
    # The encoder's precision (serve --precision): auto = fp16 on GPU, fp32 on CPU.
    precision: str = "auto"


@dataclass
class AgentSpec:
    max_turns: int = 4  # searches allowed before an answer is forced
    max_tokens_per_turn: int = 1024
    max_response_tokens: int = 4096  # whole response incl. observations
    invalid_action: Literal["end", "message"] = "end"
    # Engine of local rollouts (local backend, SFT start point, evaluate --generator kv):
    # kv = KVCacheGenerator (own decode loop, KV reused across turns), hf = model.generate.
    generator: Literal["kv", "hf"] = "kv"


@dataclass
class TrainingSpec:
    steps: int | None = None  # total optimiser "training steps" (rollout batches); None = epochs
    epochs: int = 1
    batch_size: int = 512  # questions per step
    group_size: int = 5  # rollouts per question (G)
    mini_batch_size: int = 256  # questions per optimiser update
    micro_batch_size: int = 8  # rollouts per forward/backward (gradient accumulation)
    lr: float = 5e-7
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    kl_coef: float = 0.0
    entropy_coef: float = 0.0
    clip_ratio: float = 0.2
    temperature: float = 1.0
    top_p: float = 0.95
    save_every: int = 10
    val_every: int = 5
    val_before_train: bool = True
    dump_rollouts_at: list[int] = field(default_factory=list)
    collapse_delta: float = 0.1  # see calibadv.evaluate.collapse
    collapse_window: int = 3


@dataclass
class ResourceSpec:
    gpus: int = 0
    nodes: int = 1
    cpus: int = 2


@dataclass
class VerlSpec:
    """Knobs of the verl backend only (docs/verl-backend.md); the local backend ignores them.

    Defaults suit one 8-GPU node with Qwen2.5-3B/7B and no flash-attn package.
    """

    # Attention: verl defaults to flash_attention_2, which needs the flash-attn package;
    # sdpa ships with torch. use_remove_padding needs flash-attn's varlen kernel.
    attn_implementation: Literal["sdpa", "flash_attention_2", "eager"] = "sdpa"
    use_remove_padding: bool = False
    # Token-budget micro-batches (verl's use_dynamic_bsz) instead of a fixed micro_batch_size.
    use_dynamic_bsz: bool = True
    ppo_max_token_len_per_gpu: int = 16384
    # Resumable FSDP checkpoints kept (the HF copy of every save is exported before pruning).
    max_ckpt_to_keep: int = 2
    resume_mode: str = "auto"  # auto | disable | a global_step_N folder to resume from
    # Experiment tracking: verl logger names; tensorboard/wandb are opt-in, wandb offline.
    loggers: list[str] = field(default_factory=lambda: ["console", "file"])
    wandb_mode: Literal["offline", "online"] = "offline"
    log_val_generations: int = 10
    # vLLM rollout
    gpu_memory_utilization: float = 0.6
    max_num_seqs: int = 256
    max_model_len: int | None = None  # None: prompt budget + max_response_tokens (set
    # explicitly: verl would take the model's max_position_embeddings)
    enforce_eager: bool = False
    agent_num_workers: int = 8  # agent-loop workers; each keeps its own retrieval connections
    # Device of the retrieval server the launcher starts on the training node: cpu, or a GPU
    # the trainer does not use (then lower resources.gpus by one).
    retrieval_device: str = "cpu"


@dataclass
class RunSpec:
    name: str = ""
    backend: Literal["local", "verl"] = "local"
    seed: int = 0
    model: ModelSpec = field(default_factory=ModelSpec)
    method: dict[str, Any] = field(default_factory=dict)  # a resolved method preset
    data: DataSpec = field(default_factory=DataSpec)
    retrieval: RetrievalSpec = field(default_factory=RetrievalSpec)
    agent: AgentSpec = field(default_factory=AgentSpec)
    training: TrainingSpec = field(default_factory=TrainingSpec)
    resources: ResourceSpec = field(default_factory=ResourceSpec)
    verl: VerlSpec = field(default_factory=VerlSpec)
    verl_overrides: list[str] = field(default_factory=list)  # extra hydra overrides, verbatim
    # calibration.score = judge: where the judge is (calibadv.judge.config.JudgeConfig keys)
    judge: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_type(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            if arg is type(None) and value is None:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        return [_check_type(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{key}: expected {hint.__name__}, got a boolean {value!r}")
    if not isinstance(value, hint):
        raise ConfigError(f"{key}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def _build(cls: type, data: Any, prefix: str = "") -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'spec'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown key {where}{unknown[0]} (allowed here: {', '.join(sorted(names))})"
        )
    kwargs = {
        name: _check_type(value, hints[name], f"{prefix}.{name}" if prefix else name)
        for name, value in data.items()
    }
    return cls(**kwargs)


def run_spec_from_dict(data: dict[str, Any]) -> RunSpec:
    """Build a RunSpec, rejecting unknown keys and wrong types with the dotted key named."""
    spec = _build(RunSpec, data)
    t = spec.training
    if t.group_size < 1 or t.batch_size < 1 or t.mini_batch_size < 1:
        raise ConfigError("training.batch_size, mini_batch_size and group_size must be >= 1")
    if t.batch_size % t.mini_batch_size:
        raise ConfigError(
            f"training.batch_size ({t.batch_size}) must be a multiple of "
            f"training.mini_batch_size ({t.mini_batch_size})"
        )
    return spec


def load_validated_yaml(path: str | Path, what: str, validate: Callable[[Any], T]) -> T:
    """Read a YAML file and validate it; errors name the file (and, from ``validate``, the key)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{what} {path} does not exist")
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    try:
        return validate(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def load_run_spec(path: str | Path) -> RunSpec:
    return load_validated_yaml(path, "run spec", run_spec_from_dict)


def dump_run_spec(spec: RunSpec) -> str:
    return yaml.safe_dump(spec.to_dict(), sort_keys=False)
