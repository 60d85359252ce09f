"""The workflow config, resolved: validation, output layout, per-run RunSpecs and resources.

The Snakefile and ``calibadv spec`` share this module, so the DAG's file names and the specs a
run reads can never drift apart. Everything here is pure (dicts in, dicts/paths out); nothing
imports Snakemake.

The config's shape is fixed by ``workflow/schemas/config.schema.yaml``; :func:`validate_config`
fills its defaults and turns jsonschema errors into a :class:`ConfigError` that names the
dotted key (``models.tiny.sftt: unknown key``), so a typo never falls back to a default.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from calibadv.errors import ConfigError
from calibadv.spec import load_validated_yaml, run_spec_from_dict

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"

#: Stages whose resources the config can set (``resources.<stage>``).
STAGES = (
    "corpus", "model", "encode", "merge", "data", "sft", "train", "evaluate", "proxy", "report",
)  # fmt: skip
_RESOURCE_DEFAULTS = {
    "gpus": 0, "gpu_model": None, "cpus": 1, "mem_mb": 4000, "runtime": 60,
    "partition": None, "nodes": 1,
}  # fmt: skip


# --------------------------------------------------------------------------- validation


def load_schema(path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _dotted(path: Any) -> str:
    return ".".join(str(p) for p in path) or "<config>"


def _fill_defaults(instance: Any, schema: dict[str, Any], root: dict[str, Any]) -> Any:
    """Insert schema defaults depth-first (jsonschema validates but never fills)."""
    if "$ref" in schema:
        ref = schema["$ref"].split("/")[-1]
        schema = root["$defs"][ref]
    if not isinstance(instance, dict) or schema.get("type") not in ("object", None):
        return instance
    for key, sub in (schema.get("properties") or {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            instance[key] = _fill_defaults(instance[key], sub, root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key in instance:
            if key not in (schema.get("properties") or {}):
                instance[key] = _fill_defaults(instance[key], extra, root)
    return instance


def validate_config(config: dict[str, Any], schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return a validated copy of ``config`` with defaults filled in.

    Raises :class:`ConfigError` naming the dotted key of the first problem; an unknown key is
    reported as ``unknown key a.b.c (allowed here: …)``.
    """
    import jsonschema

    schema = schema or load_schema()
    config = _fill_defaults(copy.deepcopy(config or {}), schema, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.path), list(e.path)))
    if errors:
        err = errors[0]
        if err.validator == "additionalProperties":
            allowed = sorted((err.schema.get("properties") or {}).keys())
            known = set(allowed)
            bad = sorted(k for k in err.instance if k not in known)
            key = _dotted([*err.path, bad[0]]) if bad else _dotted(err.path)
            raise ConfigError(
                f"unknown key {key} in the workflow config"
                + (f" (allowed here: {', '.join(allowed)})" if allowed else "")
            )
        raise ConfigError(f"{_dotted(err.path)}: {err.message}")
    _check_cross_references(config)
    return config


def _check_run_sections(config: dict[str, Any], model: str) -> None:
    """Check the `training`/`agent` sections a model's runs get against RunSpec now, so a typo
    fails when the workflow starts, not when a training job does."""
    entry = config["models"][model]
    merged = {
        "training": _merge(config.get("training") or {}, entry.get("training") or {}),
        "agent": _merge(config.get("agent") or {}, entry.get("agent") or {}),
    }
    try:
        run_spec_from_dict(merged)
    except ConfigError as err:
        raise ConfigError(f"training/agent settings of model {model!r}: {err}") from None


def _check_cross_references(config: dict[str, Any]) -> None:
    for name, model in config["models"].items():
        _check_run_sections(config, name)
        if model["source"] == "hub" and not model.get("repo_id"):
            raise ConfigError(f"models.{name}.repo_id: required when source is 'hub'")
        if model["source"] == "local" and not model.get("path"):
            raise ConfigError(f"models.{name}.path: required when source is 'local'")
        if not model_methods(config, name):
            raise ConfigError(
                f"models.{name}.methods: no methods to run (set it, or default_methods)"
            )
    if config["world"] == "synthetic" and config["index"]["source"] == "prebuilt":
        raise ConfigError(
            "index.source: 'prebuilt' exists only for world 'real' (use 'build' for synthetic)"
        )
    for section in ("ablation", "uniform", "proxy"):
        model = config["report"][section].get("model")
        if model is not None and model not in config["models"]:
            raise ConfigError(
                f"report.{section}.model: {model!r} is not a model of this config "
                f"(models: {', '.join(config['models'])})"
            )


def load_config(path: str | Path) -> dict[str, Any]:
    return load_validated_yaml(path, "workflow config", validate_config)


# --------------------------------------------------------------------------- runs


def model_methods(config: dict[str, Any], model: str) -> list[str]:
    entry = config["models"][model]
    return list(entry.get("methods") or config.get("default_methods") or [])


def runs(config: dict[str, Any]) -> list[tuple[str, str]]:
    """Every (model, method) pair the config trains, in config order."""
    return [(m, x) for m in config["models"] for x in model_methods(config, m)]


def proxy_runs(config: dict[str, Any]) -> list[tuple[str, str]]:
    wanted = set(config["proxy"]["methods"])
    return [(m, x) for m, x in runs(config) if x in wanted]


def resolve_method(config: dict[str, Any], name: str) -> dict[str, Any]:
    """The fully resolved preset of method ``name`` (config/methods.yaml + config ``methods:``)."""
    from calibadv import methods

    return methods.get_method(
        name,
        extra_presets=config.get("methods") or {},
        path=repo_path(config.get("methods_file", "config/methods.yaml")),
    )


def repo_path(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() or p.exists() else REPO_ROOT / p


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Layout:
    """Where every output of the workflow lives (relative to the working directory)."""

    root: str
    world: str

    @classmethod
    def of(cls, config: dict[str, Any]) -> Layout:
        return cls(root=f"{config['results_dir']}/{config['world']}", world=config["world"])

    # corpus and QA
    @property
    def world_dir(self) -> str:
        return f"{self.root}/world"

    @property
    def corpus(self) -> str:
        if self.world == "synthetic":
            return f"{self.world_dir}/corpus.jsonl"
        return f"{self.root}/corpus/wiki18.jsonl"

    def qa(self, benchmark: str, split: str) -> str:
        """QA JSONL of one benchmark split (the synthetic world writes one train/dev file)."""
        if self.world == "synthetic":
            if split == "test":
                return f"{self.world_dir}/test/{benchmark}.jsonl"
            return f"{self.world_dir}/{split}.jsonl"
        return f"{self.root}/qa/{benchmark}/{split}.jsonl"

    # index
    def index_shard(self, shard: int | str) -> str:
        return f"{self.root}/index/shards/shard_{shard}.npy"

    @property
    def index(self) -> str:
        return f"{self.root}/index/index.faiss"

    # models
    def model_dir(self, model: str, variant: str) -> str:
        """``variant``: ``base`` (downloaded/built), ``sft`` or ``sft-prethink``."""
        return f"{self.root}/models/{model}/{variant}"

    # datasets
    @property
    def train_data(self) -> str:
        return f"{self.root}/data/train.parquet"

    @property
    def val_data(self) -> str:
        return f"{self.root}/data/val.parquet"

    def test_data(self, benchmark: str) -> str:
        return f"{self.root}/data/test/{benchmark}.parquet"

    # runs
    def run_dir(self, model: str, method: str) -> str:
        return f"{self.root}/runs/{model}/{method}"

    def spec(self, model: str, method: str) -> str:
        return f"{self.run_dir(model, method)}/spec.yaml"

    def eval_run_dir(self, model: str, method: str) -> str:
        """One run's evaluations: a sub-folder per benchmark (``evaluate --suite`` writes here)."""
        return f"{self.root}/eval/{model}/{method}"

    def eval_dir(self, model: str, method: str, benchmark: str) -> str:
        return f"{self.eval_run_dir(model, method)}/{benchmark}"

    def proxy(self, model: str, method: str) -> str:
        return f"{self.root}/proxy/{model}/{method}.json"

    @property
    def report_dir(self) -> str:
        return f"{self.root}/report"

    def log(self, rule: str, name: str) -> str:
        return f"{self.root}/logs/{rule}/{name}.log"

    def benchmark(self, rule: str, name: str) -> str:
        return f"{self.root}/benchmarks/{rule}/{name}.tsv"


def model_variant(config: dict[str, Any], model: str, method: str) -> str:
    """Which model directory a run starts from: the base model, or the SFT warm start.

    ``sft_formats: shared`` (default) gives every method the same start point, as the paper
    starts every method from the same model; ``per_format`` gives PreThink methods a warm start
    trained on PreThink demonstrations."""
    entry = config["models"][model]
    if not entry.get("sft"):
        return "base"
    if entry.get("sft_formats", "shared") == "shared":
        return "sft"
    return "sft-prethink" if resolve_method(config, method).get("prethink") else "sft"


def model_source_dir(config: dict[str, Any], model: str) -> str:
    """The base model directory: a user's local path or the one the workflow writes."""
    entry = config["models"][model]
    if entry["source"] == "local":
        return entry["path"]
    return Layout.of(config).model_dir(model, "base")


# --------------------------------------------------------------------------- run specs


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def run_spec_dict(config: dict[str, Any], model: str, method: str) -> dict[str, Any]:
    """The RunSpec of one (model, method) run as a plain dict, checked by ``RunSpec``'s loader.

    Precedence (later wins): RunSpec defaults < config ``training``/``agent`` < the model's own
    ``training``/``agent``. Resources come from ``resources.train`` and the model's override.
    """
    if model not in config["models"]:
        raise ConfigError(f"model {model!r} is not in the config (models: {', '.join(config['models'])})")
    if method not in model_methods(config, model):
        raise ConfigError(
            f"method {method!r} is not run for model {model!r} "
            f"(its methods: {', '.join(model_methods(config, model))})"
        )
    layout = Layout.of(config)
    entry = config["models"][model]
    variant = model_variant(config, model, method)
    model_path = model_source_dir(config, model) if variant == "base" else layout.model_dir(model, variant)
    retrieval = config["retrieval"]
    res = stage_resources(config, "train", model)
    spec = {
        "name": f"{model}/{method}",
        "backend": config["backend"],
        "seed": entry.get("seed", config["seed"]),
        "model": {
            "path": model_path,
            "name": entry.get("label", model),
            "dtype": entry["dtype"],
            "chat_template": entry.get("chat_template"),
        },
        "method": resolve_method(config, method),
        "data": {
            "train": layout.train_data,
            "val": layout.val_data,
            "val_size": config["data"]["val_size"],
        },
        "retrieval": {
            "corpus": layout.corpus,
            "index": layout.index,
            "encoder": retrieval["encoder"],
            "reranker": retrieval["reranker"],
            "query_prefix": retrieval["query_prefix"],
            "passage_prefix": retrieval["passage_prefix"],
            "topk_retrieval": retrieval["topk_retrieval"],
            "topk": retrieval["topk"],
            "server": retrieval["server"],
            "device": retrieval["device"],
            "faiss_gpu": retrieval["faiss_gpu"],
        },
        "agent": _merge(config.get("agent") or {}, entry.get("agent") or {}),
        "training": _merge(config.get("training") or {}, entry.get("training") or {}),
        "resources": {"gpus": res["gpus"], "nodes": res["nodes"], "cpus": res["cpus"]},
        "verl_overrides": [*config.get("verl_overrides", []), *entry.get("verl_overrides", [])],
    }
    try:
        return run_spec_from_dict(spec).to_dict()
    except ConfigError as err:
        raise ConfigError(f"run {model}/{method}: {err}") from None


def stage_resources(config: dict[str, Any], stage: str, model: str | None = None) -> dict[str, Any]:
    """Resources of one stage: built-in defaults < ``resources.default`` < ``resources.<stage>``
    < ``models.<model>.resources.<stage>``."""
    if stage not in STAGES:
        raise ConfigError(f"resources: unknown stage {stage!r} (stages: {', '.join(STAGES)})")
    res = dict(_RESOURCE_DEFAULTS)
    section = config.get("resources") or {}
    res.update(section.get("default") or {})
    res.update(section.get(stage) or {})
    if model is not None:
        res.update(((config["models"][model].get("resources") or {}).get(stage)) or {})
    return res


def snakemake_resources(res: dict[str, Any], attempt: int = 1) -> dict[str, Any]:
    """Map stage resources onto the names the SLURM executor plugin reads; runtime and memory
    grow with the retry ``attempt`` so a job killed for time/memory gets more on its retry."""
    out: dict[str, Any] = {
        "runtime": int(res["runtime"]) * attempt,
        "mem_mb": int(res["mem_mb"]) * attempt,
        "cpus_per_task": int(res["cpus"]),
        "nodes": int(res.get("nodes", 1)),
    }
    if res["gpus"]:
        out["gpu"] = int(res["gpus"])
        if res.get("gpu_model"):
            out["gpu_model"] = res["gpu_model"]
    if res.get("partition"):
        out["slurm_partition"] = res["partition"]
    return out
