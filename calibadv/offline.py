"""Offline compute jobs: the environment that forbids downloads, and the error a job gives
when a model directory it needs is missing.

On most clusters compute nodes have no internet. The workflow therefore downloads every
model, corpus and index in its download rules (on the submit host by default) and runs every
other job with :data:`OFFLINE_ENV`; the Hugging Face libraries then never try the network.
A job that is handed a model directory that does not exist must say so at once — and say
which rule writes it — instead of stalling on a connection attempt or failing deep inside
``from_pretrained``; so must a job missing an input file (a corpus, an index, a Parquet
table). :func:`check_job_inputs` does both before a command imports torch.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from calibadv.errors import CalibAdvError

#: Variables that make huggingface_hub, transformers and datasets use local files only.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
#: Usage reports the libraries of a training job would otherwise send (vLLM, Ray, the hub):
#: off in every job, downloads included — a node without internet must not try them either.
NO_TELEMETRY_ENV = {
    "HF_HUB_DISABLE_TELEMETRY": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
}  # fmt: skip

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
    from calibadv.workflow_config import hub_dir_name, is_hub_id, producing_rule

    if is_hub_id(value):
        return CalibAdvError(
            f"{flag} {value}: a hub id, but this job runs offline (HF_HUB_OFFLINE=1) and the model "
            "is not in the local Hugging Face cache. Compute jobs never download: pass the "
            f"directory rule download_model writes (RESOURCES_DIR/models/{hub_dir_name(value)}), "
            f"or run `calibadv download-model --repo-id {value} --out DIR` where there is internet"
        )
    rule = producing_rule(value)
    fix = {
        "download_model": "a download rule: with downloads.where: local (the default) it runs on "
        "the host running Snakemake, so run the workflow (or `snakemake --until download_model`) "
        "there first",
        "build_tiny_model": "rule build_tiny_model",
        "sft": "rule sft (the SFT warm start)",
        "train": "rule train (final/ is the run's chosen checkpoint)",
    }.get(rule, f"rule {rule}")
    return CalibAdvError(
        f"{flag} {value}: no such model directory, and this job runs offline "
        f"(HF_HUB_OFFLINE=1), so nothing is downloaded here. It is written by rule {rule} — "
        f"{fix}; on a cluster, results_dir and resources_dir must be on a filesystem the "
        "compute nodes mount"
    )


def missing_file_error(flag: str, value: str) -> CalibAdvError:
    """The error for an input file that is not there, naming the rule that writes it."""
    from calibadv.workflow_config import producing_rule

    rule = producing_rule(value, default=None)
    where = f" It is written by rule {rule}: run `snakemake {value}` (or the workflow) first." if rule else ""
    return CalibAdvError(
        f"{flag} {value}: no such file.{where} On a cluster, results_dir and resources_dir must "
        "be on a filesystem the compute nodes mount."
    )


def check_input_file(flag: str, value: str | None) -> None:
    if value and not Path(value).expanduser().exists():
        raise missing_file_error(flag, value)


def check_model_dir(flag: str, value: str | None) -> None:
    """Raise :func:`missing_model_error` unless ``value`` is usable without the network."""
    if not value or value.startswith("bundled:") or Path(value).expanduser().is_dir():
        return
    from calibadv.workflow_config import is_hub_id

    if is_hub_id(value) and _in_hub_cache(value):
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
    for name in models if offline else ():
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
    spec_path = getattr(args, "spec", None)
    if not (reads_spec and isinstance(spec_path, str) and Path(spec_path).is_file()):
        return
    import yaml

    with open(spec_path, encoding="utf-8") as fh:
        spec = yaml.safe_load(fh) or {}
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
