"""The workflow config's ``judge`` section: the judge's endpoint as jobs see it, the runs its
proxy validation covers, and the human labels each one reads.

:class:`calibadv.judge.config.JudgeConfig` says how to reach a judge; this module fills it from
the workflow (the stand-in's directory, the per-world cache, the judge stage's resources), so
the judge package itself knows nothing of the workflow's layout.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from calibadv.errors import ConfigError
from calibadv.judge.config import BUNDLED_SMOLLM2, JudgeConfig
from calibadv.workflow.layout import Layout
from calibadv.workflow.resources import stage_resources
from calibadv.workflow.runs import runs

#: Keys of the workflow's ``judge`` section that are about the stage, not the endpoint.
STAGE_KEYS = ("methods", "sample", "helpful_min", "labels_dir", "where")


def workflow_judge(config: Mapping[str, Any]) -> dict[str, Any]:
    """The :class:`JudgeConfig` dict of a validated workflow config (checked).

    ``model: bundled:smollm2-135m-instruct`` points ``model_path`` at the stand-in directory
    the workflow converts; the cache is one SQLite file per world; a local server gets the
    GPUs/CPUs of ``resources.judge``.
    """
    section = dict(config.get("judge") or {})
    layout = Layout.of(dict(config))
    _check_labels_dir(config, layout)
    data = {k: v for k, v in section.items() if k not in STAGE_KEYS}
    if data.get("model") == BUNDLED_SMOLLM2 and not data.get("model_path"):
        data["model_path"] = layout.judge_stand_in
    res = stage_resources(dict(config), "judge")
    data.setdefault("gpus", int(res["gpus"]))
    data.setdefault("threads", int(res["cpus"]))
    data["cache"] = layout.judge_cache
    return JudgeConfig.from_dict(data).to_dict()


def validate_on_submit_host(config: Mapping[str, Any]) -> bool:
    """Whether ``judge_validate`` is a local rule (runs where Snakemake runs): an external judge
    needs the network, which compute nodes lack (docs/workflow.md), so by default
    (``judge.where: local``) its calls go out from the submit host, as downloads do, and that
    host is the one writer of the verdict cache. A local server runs as a job."""
    section = config.get("judge") or {}
    return section.get("server", "external") == "external" and section.get("where", "local") == "local"


def run_judge_section(config: Mapping[str, Any], method: Mapping[str, Any]) -> dict[str, Any] | None:
    """The RunSpec ``judge`` section of a run: the endpoint, for ``calibration.score: judge``."""
    if (method.get("calibration") or {}).get("score") != "judge":
        return None
    return workflow_judge(config)


def judge_runs(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(model, method) runs whose rollouts the proxy-validation stage judges: the runs of
    ``report.proxy.model`` (else every model) whose method is in ``judge.methods``."""
    wanted = list((config.get("judge") or {}).get("methods") or [])
    model = ((config.get("report") or {}).get("proxy") or {}).get("model")
    return [(m, x) for m, x in runs(dict(config)) if x in wanted and (model is None or m == model)]


def _check_labels_dir(config: Mapping[str, Any], layout: Layout) -> None:
    """``judge.labels_dir`` must lie outside every folder the workflow writes (the results
    tree): Snakemake deletes a job's outputs before rerunning it, and a person's labels are
    never to be deleted or overwritten."""
    labels = (config.get("judge") or {}).get("labels_dir")
    if not labels:
        return
    results = Path(str(config.get("results_dir", "results"))).resolve()
    where = Path(labels).resolve()
    if where == results or results in where.parents:
        raise ConfigError(
            f"judge.labels_dir: {labels} lies inside results_dir ({results}), whose files the workflow deletes and rewrites: put human labels "
            "in their own folder (the default: labels/judge)"
        )


def labels_path(config: Mapping[str, Any], model: str, method: str, seed: int | str) -> str | None:
    """The human labels file of one run, ``judge.labels_dir/<model>/<method>/seed_<N>.csv``
    (a filled copy of the run's ``sheet.csv``; read when it exists, never written)."""
    labels = (config.get("judge") or {}).get("labels_dir")
    if not labels:
        return None
    return f"{labels}/{model}/{method}/seed_{seed}.csv"
