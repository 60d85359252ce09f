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
import dataclasses
import re
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
    "download", "judge",
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
        raise ConfigError(_schema_error_message(err))
    _check_cross_references(config)
    return config


_KINDS = {
    "integer": "an integer", "number": "a number", "string": "a string",
    "boolean": "true or false", "array": "a list", "object": "a mapping", "null": "null",
}  # fmt: skip


def _fmt_bound(value: Any) -> str:
    return repr(value) if not isinstance(value, float) else f"{value:g}"


def allowed_values(schema: dict[str, Any]) -> str:
    """What one schema node accepts, in words: ``a number > 0``, ``an integer in [0, 1]``,
    ``one of 'flat', 'hnsw'``. Error messages quote it as the allowed range."""
    if "enum" in schema:
        return "one of " + ", ".join(repr(v) for v in schema["enum"])
    types = schema.get("type") or []
    types = [types] if isinstance(types, str) else list(types)
    nullable = "null" in types
    kinds = [_KINDS.get(t, t) for t in types if t != "null"]
    text = " or ".join(kinds) if kinds else "a value"
    lo, lo_open = schema.get("minimum"), False
    if "exclusiveMinimum" in schema:
        lo, lo_open = schema["exclusiveMinimum"], True
    hi, hi_open = schema.get("maximum"), False
    if "exclusiveMaximum" in schema:
        hi, hi_open = schema["exclusiveMaximum"], True
    if lo is not None and hi is not None:
        text += f" in {'(' if lo_open else '['}{_fmt_bound(lo)}, {_fmt_bound(hi)}{')' if hi_open else ']'}"
    elif lo is not None:
        text += f" {'>' if lo_open else '>='} {_fmt_bound(lo)}"
    elif hi is not None:
        text += f" {'<' if hi_open else '<='} {_fmt_bound(hi)}"
    if "multipleOf" in schema:
        text += f", a multiple of {_fmt_bound(schema['multipleOf'])}"
    if "minLength" in schema:
        text += f" of at least {schema['minLength']} character(s)"
    if "pattern" in schema:
        text += f" matching {schema['pattern']}"
    if "minItems" in schema:
        text += f" of at least {schema['minItems']} item(s)"
    if schema.get("uniqueItems"):
        text += " without repeats"
    if "minProperties" in schema:
        text += f" of at least {schema['minProperties']} entr{'y' if schema['minProperties'] == 1 else 'ies'}"
    return text + (" (or null)" if nullable else "")


def _schema_error_message(err: Any) -> str:
    """``key: what is wrong; allowed: what the schema accepts`` for one jsonschema error."""
    key = _dotted(err.path)
    if err.validator == "required":
        return f"{key}: {err.message}"
    return f"{key}: {err.message}; allowed: {allowed_values(err.schema)}"


def _value_error(key: str, value: Any, allowed: str, why: str = "") -> ConfigError:
    """The message of a cross-field check: the key, the value, why, and what is allowed."""
    return ConfigError(f"{key}: {value!r} is not allowed{f' ({why})' if why else ''}; allowed: {allowed}")


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


#: verl advantage estimators that do not compare the rollouts of one question; every other
#: method (GRPO and every preset built on it, CalibAdv included) is group-relative.
NON_GROUP_ESTIMATORS = frozenset({"gae", "reinforce_plus_plus", "remax"})


def group_relative(method: dict[str, Any]) -> bool:
    """Whether a resolved method preset computes advantages within a question's group: with a
    group of one, GRPO's baseline is the rollout itself and every advantage is 0."""
    estimator = method.get("estimator", "grpo")
    name = estimator.get("name", "grpo") if isinstance(estimator, dict) else estimator
    return name not in NON_GROUP_ESTIMATORS


def _where(config: dict[str, Any], model: str, section: str, key: str) -> str:
    """The dotted key a merged training/agent value came from (the model's own, or shared)."""
    own = config["models"][model].get(section) or {}
    return f"models.{model}.{section}.{key}" if key in own else f"{section}.{key}"


def _check_training_values(config: dict[str, Any], model: str) -> None:
    """Relations between training values the schema cannot express, per model (after the
    model's overrides): mini-batches split the batch, group-relative methods need groups."""
    from calibadv.spec import TrainingSpec

    t = {**dataclasses.asdict(TrainingSpec()), **(config.get("training") or {}),
         **(config["models"][model].get("training") or {})}  # fmt: skip
    batch, mini = t["batch_size"], t["mini_batch_size"]
    if isinstance(batch, int) and isinstance(mini, int) and mini > 0 and batch % mini:
        divisors = [d for d in range(1, batch + 1) if batch % d == 0]
        shown = ", ".join(map(str, divisors[:12])) + (", …" if len(divisors) > 12 else "")
        raise _value_error(
            _where(config, model, "training", "mini_batch_size"), mini,
            f"a divisor of {_where(config, model, 'training', 'batch_size')} = {batch}: {shown}",
            "mini-batches must split the batch evenly",
        )  # fmt: skip
    group = t["group_size"]
    if isinstance(group, int) and group < 2:
        for method in model_methods(config, model):
            if group_relative(resolve_method(config, method)):
                raise _value_error(
                    _where(config, model, "training", "group_size"), group, "an integer >= 2",
                    f"method {method!r} of model {model!r} computes advantages within a "
                    "question's group of rollouts; a group of one gives every rollout advantage 0",
                )  # fmt: skip


def _check_build_options(config: dict[str, Any], model: str) -> None:
    """The tiny model's shape: heads split the hidden size, key/value heads split the heads
    (the command's defaults fill what the config leaves out)."""
    from calibadv.models.tiny import TinyConfig  # the command's defaults (no torch)

    options = config["models"][model].get("build_options") or {}
    if not options:
        return
    d = TinyConfig()
    hidden = options.get("hidden_size", d.hidden_size)
    heads = options.get("heads", d.num_attention_heads)
    kv = options.get("kv_heads", d.num_key_value_heads)
    where = f"models.{model}.build_options"
    if hidden % heads:
        raise _value_error(f"{where}.hidden_size", hidden, f"a multiple of heads = {heads}",
                           "each attention head gets hidden_size / heads dimensions")
    if heads % kv:
        raise _value_error(f"{where}.kv_heads", kv, f"a divisor of heads = {heads}",
                           "grouped-query attention shares each key/value head among heads")


def _check_cross_references(config: dict[str, Any]) -> None:
    retrieval = config["retrieval"]
    if retrieval["topk"] > retrieval["topk_retrieval"]:
        raise _value_error(
            "retrieval.topk", retrieval["topk"],
            f"an integer in [1, retrieval.topk_retrieval = {retrieval['topk_retrieval']}]",
            "the agent cannot see more passages than dense retrieval returns",
        )  # fmt: skip
    for name, model in config["models"].items():
        for method in model_methods(config, name):
            try:
                resolve_method(config, method)
            except ConfigError as err:
                raise ConfigError(f"models.{name}.methods: {method!r}: {err}") from None
        _check_training_values(config, name)
        _check_build_options(config, name)
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
    for name, model in config["models"].items():
        start = model.get("start_from")
        if start is None:
            continue
        if start not in config["models"] or start == name:
            others = [m for m in config["models"] if m != name]
            raise _value_error(f"models.{name}.start_from", start,
                               f"another model of this config: {', '.join(others) or 'none'}")
        if config["models"][start].get("start_from"):
            raise _value_error(
                f"models.{name}.start_from", start, "a model without start_from of its own",
                f"model {start!r} itself starts from {config['models'][start]['start_from']!r}",
            )  # fmt: skip
    for section in ("ablation", "uniform", "proxy", "stress"):
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
    """Every (model, method) pair the config trains, in config order (each has one training
    run per seed: :func:`seed_runs`)."""
    return [(m, x) for m in config["models"] for x in model_methods(config, m)]


def model_seeds(config: dict[str, Any], model: str) -> list[int]:
    """The RL seeds of a model's runs: ``models.<m>.seeds``, else the config's ``seeds``, else
    the one seed ``models.<m>.seed`` / ``seed`` (a config without ``seeds`` runs as before,
    one run per (model, method))."""
    entry = config["models"][model]
    seeds = entry.get("seeds") or config.get("seeds")
    if seeds:
        return [int(s) for s in seeds]
    return [int(entry.get("seed", config.get("seed", 0)))]


def seed_runs(config: dict[str, Any]) -> list[tuple[str, str, int]]:
    """Every training run: (model, method, seed), in config order, seeds innermost."""
    return [(m, x, s) for m, x in runs(config) for s in model_seeds(config, m)]


def proxy_runs(config: dict[str, Any]) -> list[tuple[str, str, int]]:
    """The training runs whose rollout dumps ``calibadv proxy-stats`` summarises."""
    wanted = set(config["proxy"]["methods"])
    return [(m, x, s) for m, x, s in seed_runs(config) if x in wanted]


def start_model(config: dict[str, Any], model: str) -> str:
    """The model entry whose base model and warm start a model's runs start from: itself, or
    the one its ``start_from`` names (the same weights under other training settings)."""
    return config["models"][model].get("start_from") or model


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
    """Where every file of the workflow lives (relative to the working directory).

    Two trees: ``resources`` (``resources_dir``) holds what is downloaded — the wiki-18 corpus,
    the prebuilt index, the QA splits, hub models — and ``root`` (``results_dir/world``) what
    the workflow computes, the synthetic world and the tiny model included. Deleting results
    never throws away a download, and one resources tree serves many results trees.
    """

    root: str
    world: str
    resources: str = "resources"
    index_source: str = "build"

    @classmethod
    def of(cls, config: dict[str, Any]) -> Layout:
        return cls(
            root=f"{config['results_dir']}/{config['world']}",
            world=config["world"],
            resources=config.get("resources_dir", "resources"),
            index_source=(config.get("index") or {}).get("source", "build"),
        )

    # corpus and QA
    @property
    def world_dir(self) -> str:
        return f"{self.root}/world"

    @property
    def corpus(self) -> str:
        if self.world == "synthetic":
            return f"{self.world_dir}/corpus.jsonl"
        return f"{self.resources}/corpus/wiki18.jsonl"

    def qa(self, benchmark: str, split: str) -> str:
        """QA JSONL of one benchmark split (the synthetic world writes one train/dev file)."""
        if self.world == "synthetic":
            if split == "test":
                return f"{self.world_dir}/test/{benchmark}.jsonl"
            return f"{self.world_dir}/{split}.jsonl"
        return f"{self.resources}/qa/{benchmark}/{split}.jsonl"

    # index
    def index_shard(self, shard: int | str) -> str:
        return f"{self.root}/index/shards/shard_{shard}.npy"

    @property
    def index(self) -> str:
        """The FAISS index: built from the corpus (results) or the downloaded e5 one."""
        if self.index_source == "prebuilt":
            return f"{self.resources}/index/wiki18-e5-flat.faiss"
        return f"{self.root}/index/index.faiss"

    # downloads
    def hub_model_dir(self, repo_id: str) -> str:
        """A hub model (policy, encoder or reranker), keyed by its repo id so that configs
        naming the same model differently share one download: ``models/ORG--NAME`` (the hub
        cache's spelling; no job's command line carries a hub id, not even inside a path)."""
        return f"{self.resources}/models/{hub_dir_name(repo_id)}"

    def download_log(self, rule: str, name: str) -> str:
        """Logs of download jobs live beside the downloads they describe."""
        return f"{self.resources}/logs/{rule}/{name}.log"

    def download_benchmark(self, rule: str, name: str) -> str:
        return f"{self.resources}/benchmarks/{rule}/{name}.tsv"

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

    # runs: one per (model, method, seed); ``seed`` may be a wildcard pattern such as "{seed}"
    def run_dir(self, model: str, method: str, seed: int | str) -> str:
        return f"{self.root}/runs/{model}/{method}/seed_{seed}"

    def spec(self, model: str, method: str, seed: int | str) -> str:
        return f"{self.run_dir(model, method, seed)}/spec.yaml"

    def eval_run_dir(self, model: str, method: str, seed: int | str) -> str:
        """One run's evaluations: a sub-folder per benchmark (``evaluate --suite`` writes here)."""
        return f"{self.root}/eval/{model}/{method}/seed_{seed}"

    def eval_dir(self, model: str, method: str, seed: int | str, benchmark: str) -> str:
        return f"{self.eval_run_dir(model, method, seed)}/{benchmark}"

    def start_eval_run_dir(self, model: str) -> str:
        """The start point's evaluation (``evaluation.start_point``): the model RL starts from,
        with no RL. ``_start_point`` cannot be a method name (those start with a letter or
        digit), so it never meets a run's folder."""
        return f"{self.root}/eval/{model}/_start_point"

    def start_eval_dir(self, model: str, benchmark: str) -> str:
        return f"{self.start_eval_run_dir(model)}/{benchmark}"

    def proxy(self, model: str, method: str, seed: int | str) -> str:
        return f"{self.root}/proxy/{model}/{method}/seed_{seed}.json"

    def judge_dir(self, model: str, method: str, seed: int | str) -> str:
        """Proxy validation with the LLM judge of one run (calibadv judge validate)."""
        return f"{self.root}/judge/{model}/{method}/seed_{seed}"

    @property
    def judge_cache(self) -> str:
        return f"{self.root}/judge/cache.sqlite"

    @property
    def judge_stand_in(self) -> str:
        return f"{self.root}/models/judge/smollm2-135m-instruct"

    @property
    def report_dir(self) -> str:
        return f"{self.root}/report"

    def log(self, rule: str, name: str) -> str:
        return f"{self.root}/logs/{rule}/{name}.log"

    def benchmark(self, rule: str, name: str) -> str:
        return f"{self.root}/benchmarks/{rule}/{name}.tsv"


def hub_dir_name(repo_id: str) -> str:
    """``Qwen/Qwen2.5-7B`` -> ``Qwen--Qwen2.5-7B``: one folder name per hub repo."""
    return repo_id.replace("/", "--")


def model_variant(config: dict[str, Any], model: str, method: str) -> str:
    """Which model directory a run starts from: the base model, or the SFT warm start.

    ``sft_formats: shared`` (default) gives every method the same start point, as the paper
    starts every method from the same model; ``per_format`` gives PreThink methods a warm start
    trained on PreThink demonstrations."""
    entry = config["models"][start_model(config, model)]
    if not entry.get("sft"):
        return "base"
    if entry.get("sft_formats", "shared") == "shared":
        return "sft"
    return "sft-prethink" if resolve_method(config, method).get("prethink") else "sft"


def start_point_runs(config: dict[str, Any]) -> dict[str, tuple[str, str, int]]:
    """Start model -> the run whose RunSpec and start checkpoint its no-RL evaluation uses.

    Empty unless ``evaluation.start_point``. One entry per start model (a model whose runs
    ``start_from`` another shares that one's evaluation: same weights). The run is the
    reference method's (``report.reference_method``; its start point is the one Table 1's
    effects are taken against), else the model's first run: evaluation is greedy, so the seed
    and the method's training settings do not matter, only its prompt format and start point.
    """
    if not config.get("evaluation", {}).get("start_point"):
        return {}
    reference = config["report"]["reference_method"]
    out: dict[str, tuple[str, str, int]] = {}
    for model, method, seed in seed_runs(config):
        start = start_model(config, model)
        if start not in out or (method == reference and out[start][1] != reference):
            out[start] = (model, method, seed)
    return out


def start_point_checkpoint(config: dict[str, Any], model: str, method: str) -> str:
    """The model directory a (model, method) run starts from: the SFT warm start or the base."""
    variant = model_variant(config, model, method)
    if variant == "base":
        return model_source_dir(config, model)
    return Layout.of(config).model_dir(start_model(config, model), variant)


def model_source_dir(config: dict[str, Any], model: str) -> str:
    """The base model directory: a user's local path, the hub download in resources_dir, or
    the tiny model the workflow builds (of the model ``start_from`` names, if any)."""
    model = start_model(config, model)
    entry = config["models"][model]
    if entry["source"] == "local":
        return entry["path"]
    if entry["source"] == "hub":
        return Layout.of(config).hub_model_dir(entry["repo_id"])
    return Layout.of(config).model_dir(model, "base")


_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def is_hub_id(name: str | None) -> bool:
    """``org/name`` that is not an existing path: a model the workflow has to download."""
    return bool(name) and bool(_HUB_ID.match(name or "")) and not Path(name or "").exists()


def retrieval_model(config: dict[str, Any], role: str) -> str | None:
    """What retrieval jobs get for ``retrieval.<role>`` (encoder/reranker): ``bundled:…``, a
    local directory as given, or — for a hub id — the directory rule download_model writes."""
    name = config["retrieval"][role]
    return Layout.of(config).hub_model_dir(name) if is_hub_id(name) else name


def retrieval_model_dirs(config: dict[str, Any]) -> dict[str, str]:
    """``{role: directory}`` of the encoder/reranker that are files in the DAG (downloaded or
    local); bundled models and an unset reranker are absent."""
    out = {}
    for role in ("encoder", "reranker"):
        path = retrieval_model(config, role)
        if path and not path.startswith("bundled:"):
            out[role] = path
    return out


def hub_downloads(config: dict[str, Any]) -> dict[str, str]:
    """``{repo id: what it is}`` of every hub model the config needs (policies, encoder,
    reranker): the repo ids rule download_model may be asked for."""
    out = {e["repo_id"]: f"policy model {m}" for m, e in config["models"].items()
           if e["source"] == "hub"}  # fmt: skip
    for role in ("encoder", "reranker"):
        name = config["retrieval"][role]
        if is_hub_id(name):
            out.setdefault(name, f"retrieval {role}")
    return out


def localized_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config as compute jobs see it: every hub id replaced by the local directory its
    download rule writes (hub models become ``source: local``), so nothing a job reads can
    send it to the network."""
    out = copy.deepcopy(config)
    for name, entry in out["models"].items():
        if entry["source"] == "hub":
            entry["path"] = model_source_dir(config, name)
            entry["source"] = "local"
            entry.pop("repo_id", None)
    for role in ("encoder", "reranker"):
        out["retrieval"][role] = retrieval_model(config, role)
    return out


#: Layout path shapes (last components; ``*`` = any) -> the rule writing them, first match wins.
_PRODUCERS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("final",), "train"),
    (("models", "*", "sft"), "sft"),
    (("models", "*", "sft-prethink"), "sft"),
    (("models", "*", "base"), "build_tiny_model"),
    (("corpus", "wiki18.jsonl"), "download_corpus"),
    (("world", "corpus.jsonl"), "synth_world"),
    (("world", "*.jsonl"), "synth_world"),
    (("world", "test", "*.jsonl"), "synth_world"),
    (("index", "wiki18-e5-flat.faiss"), "download_index"),
    (("index", "index.faiss"), "merge_index"),
    (("qa", "*", "*.jsonl"), "download_qa"),
    (("data", "train.parquet"), "prepare_train"),
    (("data", "val.parquet"), "prepare_val"),
    (("data", "test", "*.parquet"), "prepare_test"),
    (("runs", "*", "*", "seed_*", "spec.yaml"), "spec"),
)


def producing_rule(path: str, default: str | None = "download_model") -> str | None:
    """The workflow rule that writes ``path`` (a layout file or model directory), for errors
    about a missing one; ``default`` for any other path (a model directory: a hub model)."""
    import fnmatch

    parts = Path(path).parts
    for shape, rule in _PRODUCERS:
        tail = parts[-len(shape):]
        if len(tail) == len(shape) and all(fnmatch.fnmatch(p, s) for p, s in zip(tail, shape, strict=True)):
            return rule
    return default


# --------------------------------------------------------------------------- run specs


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def run_spec_dict(
    config: dict[str, Any], model: str, method: str, seed: int | None = None
) -> dict[str, Any]:
    """The RunSpec of one (model, method, seed) run as a plain dict, checked by ``RunSpec``'s
    loader. ``seed`` (the RL seed: data order, sampling, initial RNG state) defaults to the
    model's first seed and must be one of :func:`model_seeds`.

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
    seeds = model_seeds(config, model)
    if seed is None:
        seed = seeds[0]
    if seed not in seeds:
        raise ConfigError(
            f"seed {seed!r} is not a seed of model {model!r} (its seeds: "
            f"{', '.join(map(str, seeds))}; set `seeds` in the config)"
        )
    layout = Layout.of(config)
    entry = config["models"][model]
    variant = model_variant(config, model, method)
    model_path = (model_source_dir(config, model) if variant == "base"
                  else layout.model_dir(start_model(config, model), variant))  # fmt: skip
    retrieval = config["retrieval"]
    res = stage_resources(config, "train", model)
    spec = {
        "name": f"{model}/{method}" + (f"/seed_{seed}" if len(seeds) > 1 else ""),
        "backend": config["backend"],
        "seed": seed,
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
            "encoder": retrieval_model(config, "encoder"),
            "reranker": retrieval_model(config, "reranker"),
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
        "verl": _merge(config.get("verl") or {}, entry.get("verl") or {}),
        "verl_overrides": [*config.get("verl_overrides", []), *entry.get("verl_overrides", [])],
    }
    from calibadv.judge.config import run_judge_section

    spec["judge"] = run_judge_section(config, spec["method"])
    try:
        from calibadv.train.backends import check_method

        check_method(config["backend"], spec["method"])  # e.g. tree rollouts on verl: refused here
        _check_method_data(config, spec["method"])
        return run_spec_from_dict(spec).to_dict()
    except ConfigError as err:
        raise ConfigError(f"run {spec['name']}: {err}") from None


def _check_method_data(config: dict[str, Any], method: dict[str, Any]) -> None:
    """A method whose parts need gold documents and sub-query keys (StepSearch's reward) runs
    on the synthetic world only: the real training mix (plain QA sets) has neither, so its run
    would stop at start-up; refused while the DAG is built instead."""
    from calibadv.parts import method_needs

    if "gold_docs" in method_needs(method) and config.get("world") != "synthetic":
        raise ConfigError(
            f"method {method.get('name')!r} needs the gold supporting paragraphs and sub-query "
            f"keys of every training question (StepSearch's step and search-key rewards); the "
            f"{config.get('world')!r} world's training data ({', '.join(config.get('train_benchmarks') or [])}) "
            "has neither. StepSearch trains on its own released training set, which this "
            "workflow does not prepare; run it on world: synthetic, or leave it out of the "
            "model's methods (docs/baselines.md, StepSearch)"
        )


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
