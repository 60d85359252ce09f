"""Offline compute jobs: the environment that forbids downloads, and the error a job gives
when a model directory it needs is missing.

On most clusters compute nodes have no internet. The workflow therefore downloads every
model, corpus and index in its download rules (on the submit host by default) and runs every
other job with :data:`OFFLINE_ENV`; the Hugging Face libraries then never try the network.
A job that is handed a model directory that does not exist must say so at once — and say
which rule writes it — instead of stalling on a connection attempt or failing deep inside
``from_pretrained``. :func:`check_model_args` does that before a command imports torch.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from calibadv.errors import CalibAdvError

#: Variables that make huggingface_hub, transformers and datasets use local files only.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}

#: ``calibadv`` commands whose flags name model directories (the flags' dest names), and
#: whether the command reads a RunSpec (``--spec``) naming more of them.
MODEL_ARGS: dict[str, tuple[tuple[str, ...], bool]] = {
    "sft": (("model", "encoder", "reranker"), False),
    "evaluate": (("checkpoint",), True),
    "train": ((), True),
    "serve": (("encoder", "reranker"), False),
    "index": (("encoder",), False),
}


def is_offline(environ: dict[str, str] | None = None) -> bool:
    """True when ``HF_HUB_OFFLINE`` is set to a true value (what huggingface_hub reads)."""
    value = (environ if environ is not None else os.environ).get("HF_HUB_OFFLINE", "")
    return value.strip().lower() in ("1", "true", "yes", "on")


def shell_exports() -> str:
    """``export HF_HUB_OFFLINE=1 …;`` for the workflow's shell prefix."""
    return "export " + " ".join(f"{k}={v}" for k, v in OFFLINE_ENV.items()) + "; "


def shell_online() -> str:
    """``env -u HF_HUB_OFFLINE …`` in front of a download command (the one kind of job that
    may use the network)."""
    return "env " + " ".join(f"-u {k}" for k in OFFLINE_ENV) + " "


def _in_hub_cache(repo_id: str) -> bool:
    """Whether ``repo_id`` has a config.json in the local hub cache (usable offline)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - a dependency of the package
        return False
    found = try_to_load_from_cache(repo_id, "config.json")
    return isinstance(found, str)


def missing_model_error(flag: str, value: str) -> CalibAdvError:
    """The error for a model directory an offline job cannot find, naming the producing rule."""
    from calibadv.workflow_config import is_hub_id, producing_rule

    if is_hub_id(value):
        return CalibAdvError(
            f"{flag} {value}: a hub id, but this job runs offline (HF_HUB_OFFLINE=1) and the model "
            "is not in the local Hugging Face cache. Compute jobs never download: pass the "
            "directory rule download_model writes (RESOURCES_DIR/models/" + value + "), or run "
            f"`calibadv download-model --repo-id {value} --out DIR` where there is internet"
        )
    rule = producing_rule(value)
    fix = {
        "download_model": "a download rule: with downloads.where: local (the default) it runs on "
        "the host running Snakemake, so run the workflow (or `snakemake --until download_model`) "
        "there first",
        "build_tiny_model": "rule build_tiny_model",
        "sft": "rule sft (the SFT warm start)",
        "train": "rule train (final/ is the run's chosen checkpoint)",
    }[rule]
    return CalibAdvError(
        f"{flag} {value}: no such model directory, and this job runs offline "
        f"(HF_HUB_OFFLINE=1), so nothing is downloaded here. It is written by rule {rule} — "
        f"{fix}; on a cluster, results_dir and resources_dir must be on a filesystem the "
        "compute nodes mount"
    )


def check_model_dir(flag: str, value: str | None) -> None:
    """Raise :func:`missing_model_error` unless ``value`` is usable without the network."""
    if not value or value.startswith("bundled:") or Path(value).expanduser().is_dir():
        return
    from calibadv.workflow_config import is_hub_id

    if is_hub_id(value) and _in_hub_cache(value):
        return
    raise missing_model_error(flag, value)


def check_model_args(args: argparse.Namespace) -> None:
    """Under ``HF_HUB_OFFLINE``, fail fast on a ``--model/--encoder/--reranker/--checkpoint``
    (or a RunSpec's model/encoder/reranker) that is neither a directory nor cached."""
    if not is_offline() or getattr(args, "command", None) not in MODEL_ARGS:
        return
    flags, reads_spec = MODEL_ARGS[args.command]
    for name in flags:
        value = getattr(args, name, None)
        if isinstance(value, str):
            check_model_dir(f"--{name}", value)
    spec_path = getattr(args, "spec", None)
    if reads_spec and isinstance(spec_path, str) and Path(spec_path).is_file():
        import yaml

        with open(spec_path, encoding="utf-8") as fh:
            spec = yaml.safe_load(fh) or {}
        if getattr(args, "checkpoint", None) is None:  # evaluate reads --checkpoint instead
            check_model_dir(f"{spec_path}: model.path", (spec.get("model") or {}).get("path"))
        for role in ("encoder", "reranker"):
            check_model_dir(f"{spec_path}: retrieval.{role}", (spec.get("retrieval") or {}).get(role))
