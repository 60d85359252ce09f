"""The RunSpec of one training run, composed from the workflow config.

``calibadv spec`` writes it and the Snakefile builds it while parsing the DAG (rule spec), so a
run the backend would refuse (a method its data cannot feed, tree rollouts on verl, a bad
training value) fails when the workflow starts, naming the run, not hours later in a job.
"""

from __future__ import annotations

import copy
from typing import Any

from calibadv.errors import ConfigError
from calibadv.spec import run_spec_from_dict
from calibadv.workflow.judge import run_judge_section
from calibadv.workflow.layout import Layout
from calibadv.workflow.resources import stage_resources
from calibadv.workflow.runs import model_methods, model_seeds, resolve_method
from calibadv.workflow.sources import retrieval_model, start_point_checkpoint


def merge_sections(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` deep-merged over ``base`` (a model's ``training``/``agent``/``verl`` over
    the config's); neither is modified."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_sections(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def run_spec_dict(
    config: dict[str, Any], model: str, method: str, seed: int | None = None
) -> dict[str, Any]:
    """The RunSpec of one (model, method, seed) run as a plain dict, checked by ``RunSpec``'s
    loader. ``seed`` (the RL seed: data order, sampling, initial RNG state) defaults to the
    model's first seed and must be one of :func:`~calibadv.workflow.runs.model_seeds`.

    Precedence (later wins): RunSpec defaults < config ``training``/``agent`` < the model's own
    ``training``/``agent``. Resources come from ``resources.train`` and the model's override.
    """
    seed = _checked_run(config, model, method, seed)
    spec = _compose(config, model, method, seed)
    spec["judge"] = run_judge_section(config, spec["method"])
    try:
        from calibadv.train.backends import check_method

        check_method(config["backend"], spec["method"])  # e.g. tree rollouts on verl: refused here
        check_method_data(config, spec["method"])
        return run_spec_from_dict(spec).to_dict()
    except ConfigError as err:
        raise ConfigError(f"run {spec['name']}: {err}") from None


def _checked_run(config: dict[str, Any], model: str, method: str, seed: int | None) -> int:
    """The run's seed (the model's first by default), once the model runs ``method`` at it."""
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
    return seed


def _compose(config: dict[str, Any], model: str, method: str, seed: int) -> dict[str, Any]:
    """The run's RunSpec fields (all but ``judge``), unchecked."""
    layout = Layout.of(config)
    entry = config["models"][model]
    res = stage_resources(config, "train", model)
    several_seeds = len(model_seeds(config, model)) > 1
    return {
        "name": f"{model}/{method}" + (f"/seed_{seed}" if several_seeds else ""),
        "backend": config["backend"],
        "seed": seed,
        "model": {
            "path": start_point_checkpoint(config, model, method),
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
        "retrieval": _retrieval_section(config, layout),
        "agent": merge_sections(config.get("agent") or {}, entry.get("agent") or {}),
        "training": merge_sections(config.get("training") or {}, entry.get("training") or {}),
        "resources": {"gpus": res["gpus"], "nodes": res["nodes"], "cpus": res["cpus"]},
        "verl": merge_sections(config.get("verl") or {}, entry.get("verl") or {}),
        "verl_overrides": [*config.get("verl_overrides", []), *entry.get("verl_overrides", [])],
    }


def _retrieval_section(config: dict[str, Any], layout: Layout) -> dict[str, Any]:
    """The RunSpec ``retrieval`` section: the layout's corpus/index and local model dirs."""
    retrieval = config["retrieval"]
    return {
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
        "precision": retrieval["precision"],
    }


def check_method_data(config: dict[str, Any], method: dict[str, Any]) -> None:
    """A method whose parts need gold documents and sub-query keys (StepSearch's reward) runs
    on the synthetic world only: the real training mix (plain QA sets) has neither, so its run
    would stop at start-up; refused while the DAG is built instead."""
    from calibadv.methods.catalog import method_needs

    if "gold_docs" in method_needs(method) and config.get("world") != "synthetic":
        raise ConfigError(
            f"method {method.get('name')!r} needs the gold supporting paragraphs and sub-query "
            f"keys of every training question (StepSearch's step and search-key rewards); the "
            f"{config.get('world')!r} world's training data ({', '.join(config.get('train_benchmarks') or [])}) "
            "has neither. StepSearch trains on its own released training set, which this "
            "workflow does not prepare; run it on world: synthetic, or leave it out of the "
            "model's methods (docs/baselines.md, StepSearch)"
        )
