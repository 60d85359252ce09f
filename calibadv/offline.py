"""Offline compute jobs: the environment that forbids downloads, and what a hub id is.

On most clusters compute nodes have no internet. The workflow therefore downloads every
model, corpus and index in its download rules (on the submit host by default) and runs every
other job with :data:`OFFLINE_ENV`; the Hugging Face libraries then never try the network.
A job handed a hub id (:func:`is_hub_id`) must find it in the local cache
(:func:`in_hub_cache`) or in the directory its download rule writes (:func:`hub_dir_name`);
the errors that name that rule live with the workflow layout, in
:mod:`calibadv.workflow.job_inputs`.

This module is low in the package (the downloads and the hub client read it) and imports no
other part of calibadv.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

#: Variables that make huggingface_hub, transformers and datasets use local files only.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
#: Usage reports the libraries of a training job would otherwise send (vLLM, Ray, the hub):
#: off in every job, downloads included — a node without internet must not try them either.
NO_TELEMETRY_ENV = {
    "HF_HUB_DISABLE_TELEMETRY": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
}  # fmt: skip


def is_offline(environ: dict[str, str] | None = None) -> bool:
    """True when ``HF_HUB_OFFLINE`` is set to a true value (what huggingface_hub reads)."""
    value = (environ if environ is not None else os.environ).get("HF_HUB_OFFLINE", "")
    return value.strip().lower() in ("1", "true", "yes", "on")


def shell_exports() -> str:
    """``export HF_HUB_OFFLINE=1 …;`` for the workflow's shell prefix."""
    env = {**OFFLINE_ENV, **NO_TELEMETRY_ENV}
    return "export " + " ".join(f"{k}={v}" for k, v in env.items()) + "; "


def shell_online() -> str:
    """``env -u HF_HUB_OFFLINE …`` in front of a download command (the one kind of job that
    may use the network)."""
    return "env " + " ".join(f"-u {k}" for k in OFFLINE_ENV) + " "


def in_hub_cache(repo_id: str) -> bool:
    """Whether ``repo_id`` has a config.json in the local hub cache (usable offline)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - a dependency of the package
        return False
    found = try_to_load_from_cache(repo_id, "config.json")
    return isinstance(found, str)


_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def is_hub_id(name: str | None) -> bool:
    """``org/name`` that is not an existing path: a model the workflow has to download."""
    return bool(name) and bool(_HUB_ID.match(name or "")) and not Path(name or "").exists()


def hub_dir_name(repo_id: str) -> str:
    """``Qwen/Qwen2.5-7B`` -> ``Qwen--Qwen2.5-7B``: one folder name per hub repo."""
    return repo_id.replace("/", "--")
