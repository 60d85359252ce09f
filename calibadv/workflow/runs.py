"""Which training runs a config asks for: each model's methods and seeds, and where runs start.

A training run is one (model, method, seed). The DAG, the report's tables and the judge's
proxy validation all enumerate runs through these functions, so they agree on which exist and
in what order (config order, seeds innermost).
"""

from __future__ import annotations

from typing import Any

from calibadv.workflow.layout import repo_path


def model_methods(config: dict[str, Any], model: str) -> list[str]:
    """The methods trained for ``model``: ``models.<m>.methods``, else ``default_methods``."""
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


def resolve_method(config: dict[str, Any], name: str) -> dict[str, Any]:
    """The fully resolved preset of method ``name`` (config/methods.yaml + config ``methods:``)."""
    from calibadv.methods.presets import get_method

    return get_method(
        name,
        extra_presets=config.get("methods") or {},
        path=repo_path(config.get("methods_file", "config/methods.yaml")),
    )


def start_model(config: dict[str, Any], model: str) -> str:
    """The model entry whose base model and warm start a model's runs start from: itself, or
    the one its ``start_from`` names (the same weights under other training settings)."""
    return config["models"][model].get("start_from") or model


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
