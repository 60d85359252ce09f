"""Loading and validating the workflow config: the schema, then what relates keys.

:func:`validate_config` is the one gate every config passes (the Snakefile, ``calibadv spec``,
``calibadv report``): the schema (:mod:`calibadv.workflow.schema`) checks each value alone,
the checks here what the schema cannot express — a mini-batch that must divide the batch, a
method that needs groups of rollouts, a ``start_from`` naming another model. Each error names
the dotted key, the value and what is allowed, so a bad config fails when the workflow starts,
not hours later in a job.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from pathlib import Path
from typing import Any

from calibadv.errors import ConfigError
from calibadv.spec import load_validated_yaml, run_spec_from_dict
from calibadv.workflow.run_specs import merge_sections
from calibadv.workflow.runs import model_methods, resolve_method
from calibadv.workflow.schema import check_schema, fill_defaults, load_schema

#: verl advantage estimators that do not compare the rollouts of one question; every other
#: method (GRPO and every preset built on it, CalibAdv included) is group-relative.
NON_GROUP_ESTIMATORS = frozenset({"gae", "reinforce_plus_plus", "remax"})
#: ``report.<section>.model``: the sections that name one model of the config.
_REPORT_MODEL_SECTIONS = ("ablation", "uniform", "proxy", "stress")


def load_config(path: str | Path) -> dict[str, Any]:
    """The workflow config in the YAML file ``path``, validated, with defaults filled in."""
    return load_validated_yaml(path, "workflow config", validate_config)


def validate_config(config: dict[str, Any], schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return a validated copy of ``config`` with defaults filled in.

    Raises :class:`ConfigError` naming the dotted key of the first problem; an unknown key is
    reported as ``unknown key a.b.c (allowed here: …)``.
    """
    schema = schema or load_schema()
    config = fill_defaults(copy.deepcopy(config or {}), schema, schema)
    _check_finite(config, "")
    check_schema(config, schema)
    _check_cross_references(config)
    return config


def group_relative(method: dict[str, Any]) -> bool:
    """Whether a resolved method preset computes advantages within a question's group: with a
    group of one, GRPO's baseline is the rollout itself and every advantage is 0."""
    estimator = method.get("estimator", "grpo")
    name = estimator.get("name", "grpo") if isinstance(estimator, dict) else estimator
    return name not in NON_GROUP_ESTIMATORS


def _value_error(key: str, value: Any, allowed: str, why: str = "") -> ConfigError:
    """The message of a cross-field check: the key, the value, why, and what is allowed."""
    return ConfigError(f"{key}: {value!r} is not allowed{f' ({why})' if why else ''}; allowed: {allowed}")


def _check_finite(node: Any, key: str) -> None:
    """No NaN or infinity anywhere: YAML's ``.nan``/``.inf`` pass every schema bound
    (``nan > 0`` and ``nan <= 0`` are both false), and a ``training.lr: .nan`` would only
    show up as NaN losses hours into a job."""
    if isinstance(node, float) and not math.isfinite(node):
        raise _value_error(key or "(top level)", node, "a finite number",
                           "YAML .nan/.inf is not a usable setting")  # fmt: skip
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        _check_finite(v, f"{key}.{k}" if key else str(k))


def _check_dirs(config: dict[str, Any]) -> None:
    """``resources_dir`` (downloads, shareable) must lie outside ``results_dir`` (what the
    workflow computes): ``rm -r results`` to start over must not delete the downloads."""
    results = os.path.abspath(os.path.expanduser(config["results_dir"]))
    resources = os.path.abspath(os.path.expanduser(config["resources_dir"]))
    if resources == results or resources.startswith(results.rstrip(os.sep) + os.sep):
        raise _value_error(
            "resources_dir", config["resources_dir"],
            f"a folder outside results_dir = {config['results_dir']!r} (e.g. 'resources')",
            "deleting results_dir to start over would delete the downloads",
        )  # fmt: skip


def _check_cross_references(config: dict[str, Any]) -> None:
    """Every check between keys, in the order their errors are reported."""
    _check_dirs(config)
    _check_retrieval(config)
    for name in config["models"]:
        _check_model(config, name)
    if config["world"] == "synthetic" and config["index"]["source"] == "prebuilt":
        raise ConfigError(
            "index.source: 'prebuilt' exists only for world 'real' (use 'build' for synthetic)"
        )
    for name in config["models"]:
        _check_start_from(config, name)
    _check_report_models(config)
    _check_counterfactual(config)


def _check_retrieval(config: dict[str, Any]) -> None:
    retrieval = config["retrieval"]
    if retrieval["topk"] > retrieval["topk_retrieval"]:
        raise _value_error(
            "retrieval.topk", retrieval["topk"],
            f"an integer in [1, retrieval.topk_retrieval = {retrieval['topk_retrieval']}]",
            "the agent cannot see more passages than dense retrieval returns",
        )  # fmt: skip
    device = retrieval.get("device")
    if retrieval.get("precision") == "fp16" and device and not str(device).startswith("cuda"):
        raise _value_error(
            "retrieval.precision", "fp16", "auto, fp32 or bf16 on CPU",
            f"retrieval.device is {device!r}; fp16 encoding needs a GPU (bf16 is the fast "
            "CPU choice, fp32 the exact one)",
        )  # fmt: skip


def _check_model(config: dict[str, Any], name: str) -> None:
    """One model entry: its methods resolve, its settings fit them, its source is complete."""
    model = config["models"][name]
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
        raise ConfigError(f"models.{name}.methods: no methods to run (set it, or default_methods)")


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
    _check_mini_batch(config, model, t["batch_size"], t["mini_batch_size"])
    _check_group_size(config, model, t["group_size"])
    _check_response_budget(config, model)


def _check_response_budget(config: dict[str, Any], model: str) -> None:
    """A whole response (``max_response_tokens``) must hold at least one turn
    (``max_tokens_per_turn``): a smaller budget cuts every first turn short."""
    from calibadv.spec import AgentSpec

    a = {**dataclasses.asdict(AgentSpec()), **(config.get("agent") or {}),
         **(config["models"][model].get("agent") or {})}  # fmt: skip
    if a["max_response_tokens"] < a["max_tokens_per_turn"]:
        raise _value_error(
            _where(config, model, "agent", "max_response_tokens"), a["max_response_tokens"],
            f"an integer >= agent.max_tokens_per_turn = {a['max_tokens_per_turn']}",
            "a whole response must hold at least one turn",
        )  # fmt: skip


def _check_mini_batch(config: dict[str, Any], model: str, batch: Any, mini: Any) -> None:
    if isinstance(batch, int) and isinstance(mini, int) and mini > 0 and batch % mini:
        divisors = [d for d in range(1, batch + 1) if batch % d == 0]
        shown = ", ".join(map(str, divisors[:12])) + (", …" if len(divisors) > 12 else "")
        raise _value_error(
            _where(config, model, "training", "mini_batch_size"), mini,
            f"a divisor of {_where(config, model, 'training', 'batch_size')} = {batch}: {shown}",
            "mini-batches must split the batch evenly",
        )  # fmt: skip


def _check_group_size(config: dict[str, Any], model: str, group: Any) -> None:
    if not (isinstance(group, int) and group < 2):
        return
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


def _check_run_sections(config: dict[str, Any], model: str) -> None:
    """Check the `training`/`agent` sections a model's runs get against RunSpec now, so a typo
    fails when the workflow starts, not when a training job does."""
    entry = config["models"][model]
    merged = {
        "training": merge_sections(config.get("training") or {}, entry.get("training") or {}),
        "agent": merge_sections(config.get("agent") or {}, entry.get("agent") or {}),
    }
    try:
        run_spec_from_dict(merged)
    except ConfigError as err:
        raise ConfigError(f"training/agent settings of model {model!r}: {err}") from None


def _check_start_from(config: dict[str, Any], name: str) -> None:
    """``models.<m>.start_from`` names another model, which starts from its own weights."""
    start = config["models"][name].get("start_from")
    if start is None:
        return
    if start not in config["models"] or start == name:
        others = [m for m in config["models"] if m != name]
        raise _value_error(f"models.{name}.start_from", start,
                           f"another model of this config: {', '.join(others) or 'none'}")
    if config["models"][start].get("start_from"):
        raise _value_error(
            f"models.{name}.start_from", start, "a model without start_from of its own",
            f"model {start!r} itself starts from {config['models'][start]['start_from']!r}",
        )  # fmt: skip


def _check_report_models(config: dict[str, Any]) -> None:
    for section in _REPORT_MODEL_SECTIONS:
        model = config["report"][section].get("model")
        if model is not None and model not in config["models"]:
            raise ConfigError(
                f"report.{section}.model: {model!r} is not a model of this config "
                f"(models: {', '.join(config['models'])})"
            )


def _check_counterfactual(config: dict[str, Any]) -> None:
    """The counterfactual update's reference and sampling method are among its methods, and
    every method reads the batch with the sampling method's prompt: a method whose PreThink or
    search rule differs would score every sampled rollout 0 (its format check fails) and so
    make no update at all, which reads as "the method leaves the policy alone"."""
    cf = config.get("counterfactual") or {}
    if not cf.get("enabled"):
        return
    methods = list(cf.get("methods") or [])
    for key in ("reference", "sample_method"):
        if cf.get(key) not in methods:
            raise ConfigError(
                f"counterfactual.{key} = {cf.get(key)!r} is not in counterfactual.methods "
                f"({', '.join(methods)}): add it there or pick one of them"
            )
    model = cf.get("model") or next(iter(config["models"]))
    run = model_methods(config, model) if model in config["models"] else []
    missing = [m for m in methods if m not in run]
    if missing:
        raise ConfigError(
            f"counterfactual.methods: {', '.join(map(repr, missing))} not run for model "
            f"{model!r} (its methods: {', '.join(run)}); the update reads each method's run "
            "spec: add them to the model's methods, or set counterfactual.enabled: false"
        )
    from calibadv.methods.catalog import check_shared_prompt

    check_shared_prompt({name: resolve_method(config, name) for name in methods},
                        cf["sample_method"])

