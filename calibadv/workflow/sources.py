"""Where each model a job loads comes from: a hub download, a local directory, the tiny model
the workflow builds, or an SFT warm start.

Compute jobs run offline (:mod:`calibadv.offline`), so no job may be handed a hub id: the
download rules fetch every hub model into :meth:`Layout.hub_model_dir` and everything a job
reads names that directory instead (:func:`localized_config`, :func:`retrieval_model`).
"""

from __future__ import annotations

import copy
from typing import Any

from calibadv.offline import is_hub_id
from calibadv.workflow.layout import Layout
from calibadv.workflow.runs import model_variant, start_model

#: The retrieval models a config names (``retrieval.<role>``).
RETRIEVAL_ROLES = ("encoder", "reranker")


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


def start_point_checkpoint(config: dict[str, Any], model: str, method: str) -> str:
    """The model directory a (model, method) run starts from: the SFT warm start or the base."""
    variant = model_variant(config, model, method)
    if variant == "base":
        return model_source_dir(config, model)
    return Layout.of(config).model_dir(start_model(config, model), variant)


def retrieval_model(config: dict[str, Any], role: str) -> str | None:
    """What retrieval jobs get for ``retrieval.<role>`` (encoder/reranker): ``bundled:…``, a
    local directory as given, or — for a hub id — the directory rule download_model writes."""
    name = config["retrieval"][role]
    return Layout.of(config).hub_model_dir(name) if is_hub_id(name) else name


def retrieval_model_dirs(config: dict[str, Any]) -> dict[str, str]:
    """``{role: directory}`` of the encoder/reranker that are files in the DAG (downloaded or
    local); bundled models and an unset reranker are absent."""
    out = {}
    for role in RETRIEVAL_ROLES:
        path = retrieval_model(config, role)
        if path and not path.startswith("bundled:"):
            out[role] = path
    return out


def hub_downloads(config: dict[str, Any]) -> dict[str, str]:
    """``{repo id: what it is}`` of every hub model the config needs (policies, encoder,
    reranker): the repo ids rule download_model may be asked for."""
    out = {e["repo_id"]: f"policy model {m}" for m, e in config["models"].items()
           if e["source"] == "hub"}  # fmt: skip
    for role in RETRIEVAL_ROLES:
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
    for role in RETRIEVAL_ROLES:
        out["retrieval"][role] = retrieval_model(config, role)
    return out
