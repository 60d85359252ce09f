"""A job's missing input, reported before it imports torch, with the rule that writes it.

A job handed a model directory that does not exist must say so at once — and say which
workflow rule writes it — instead of stalling on a connection attempt (compute jobs run
offline, :mod:`calibadv.offline`) or failing deep inside ``from_pretrained``; so must a job
missing an input file (a corpus, an index, a Parquet table). :func:`check_job_inputs` does
both for the ``calibadv`` command line. It lives with the workflow because only the workflow's
layout knows which rule writes a path (:func:`~calibadv.workflow.layout.producing_rule`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from calibadv.errors import CalibAdvError
from calibadv.offline import hub_dir_name, in_hub_cache, is_hub_id, is_offline
from calibadv.workflow.layout import producing_rule

#: ``calibadv`` commands whose flags name model directories and input files (the flags' dest
#: names), and whether the command reads a RunSpec (``--spec``) naming more of them.
COMMAND_INPUTS: dict[str, tuple[tuple[str, ...], tuple[str, ...], bool]] = {
    "sft": (("model", "encoder", "reranker"), ("qa", "corpus", "index", "eval_qa"), False),
    "evaluate": (("checkpoint",), ("data",), True),
    "train": ((), (), True),
    # serve reports a bad corpus/index itself while loading (health stays 503, exit code 1)
    "serve": (("encoder", "reranker"), (), False),
    "index": (("encoder",), ("corpus",), False),
}
#: RunSpec fields that are input files (``model.path`` and the retrieval models are checked
#: as model directories).
SPEC_FILES = (("data", "train"), ("data", "val"), ("retrieval", "corpus"), ("retrieval", "index"))

#: How to get a model directory, by the rule that writes it (any other rule: "rule NAME").
_MODEL_FIXES = {
    "download_model": "a download rule: with downloads.where: local (the default) it runs on "
    "the host running Snakemake, so run the workflow (or `snakemake --until download_model`) "
    "there first",
    "build_tiny_model": "rule build_tiny_model",
    "sft": "rule sft (the SFT warm start)",
    "train": "rule train (final/ is the run's chosen checkpoint)",
}


def missing_model_error(flag: str, value: str) -> CalibAdvError:
    """The error for a model directory an offline job cannot find, naming the producing rule."""
    if is_hub_id(value):
        return CalibAdvError(
            f"{flag} {value}: a hub id, but this job runs offline (HF_HUB_OFFLINE=1) and the model "
            "is not in the local Hugging Face cache. Compute jobs never download: pass the "
            f"directory rule download_model writes (RESOURCES_DIR/models/{hub_dir_name(value)}), "
            f"or run `calibadv download-model --repo-id {value} --out DIR` where there is internet"
        )
    rule = producing_rule(value)
    fix = _MODEL_FIXES.get(rule, f"rule {rule}")
    return CalibAdvError(
        f"{flag} {value}: no such model directory, and this job runs offline "
        f"(HF_HUB_OFFLINE=1), so nothing is downloaded here. It is written by rule {rule} — "
        f"{fix}; on a cluster, results_dir and resources_dir must be on a filesystem the "
        "compute nodes mount"
    )


def missing_file_error(flag: str, value: str) -> CalibAdvError:
    """The error for an input file that is not there, naming the rule that writes it."""
    rule = producing_rule(value, default=None)
    where = f" It is written by rule {rule}: run `snakemake {value}` (or the workflow) first." if rule else ""
    return CalibAdvError(
        f"{flag} {value}: no such file.{where} On a cluster, results_dir and resources_dir must "
        "be on a filesystem the compute nodes mount."
    )


def check_input_file(flag: str, value: str | None) -> None:
    """Raise :func:`missing_file_error` when ``value`` names no existing file."""
    if value and not Path(value).expanduser().exists():
        raise missing_file_error(flag, value)


def check_model_dir(flag: str, value: str | None) -> None:
    """Raise :func:`missing_model_error` unless ``value`` is usable without the network."""
    if not value or value.startswith("bundled:") or Path(value).expanduser().is_dir():
        return
    if is_hub_id(value) and in_hub_cache(value):
        return
    raise missing_model_error(flag, value)


def check_job_inputs(args: argparse.Namespace) -> None:
    """Fail fast, before a command imports torch, on an input file that is missing or — under
    ``HF_HUB_OFFLINE`` — a ``--model/--encoder/--reranker/--checkpoint`` (or a RunSpec's) that
    is neither a directory nor cached; the error names the workflow rule that writes it."""
    if getattr(args, "command", None) not in COMMAND_INPUTS or getattr(args, "dry_run", False):
        return  # a dry run only prints what would run
    models, files, reads_spec = COMMAND_INPUTS[args.command]
    offline = is_offline()
    _check_flags(args, models if offline else (), files)
    spec_path = getattr(args, "spec", None)
    if reads_spec and isinstance(spec_path, str) and Path(spec_path).is_file():
        _check_spec(args, spec_path, offline)


def _check_flags(args: argparse.Namespace, models: tuple[str, ...], files: tuple[str, ...]) -> None:
    """The command's own flags: model directories, input files and ``--suite NAME=PARQUET``."""
    for name in models:
        value = getattr(args, name, None)
        if isinstance(value, str):
            check_model_dir(f"--{name}", value)
    for name in files:
        value = getattr(args, name, None)
        if isinstance(value, str):
            check_input_file(f"--{name.replace('_', '-')}", value)
    for item in getattr(args, "suite", None) or []:  # evaluate --suite NAME=PARQUET
        name, _, path = str(item).partition("=")
        check_input_file(f"--suite {name}", path)


def _check_spec(args: argparse.Namespace, spec_path: str, offline: bool) -> None:
    """The model directories (offline) and input files a RunSpec names."""
    import yaml

    with open(spec_path, encoding="utf-8") as fh:
        spec: Any = yaml.safe_load(fh) or {}
    if not isinstance(spec, dict):
        return  # the command's own loader reports a malformed spec
    retrieval = spec.get("retrieval") or {}
    if offline:
        if getattr(args, "checkpoint", None) is None:  # evaluate reads --checkpoint instead
            check_model_dir(f"{spec_path}: model.path", (spec.get("model") or {}).get("path"))
        if not retrieval.get("url"):
            for role in ("encoder", "reranker"):
                check_model_dir(f"{spec_path}: retrieval.{role}", retrieval.get(role))
    for section, key in SPEC_FILES:
        if section == "retrieval" and retrieval.get("url"):
            continue  # an existing server: no local corpus/index needed
        if section == "data" and args.command == "evaluate":
            continue  # evaluate reads its --suite tables, not the training data
        check_input_file(f"{spec_path}: {section}.{key}", (spec.get(section) or {}).get(key))
