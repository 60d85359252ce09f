"""The workflow config's ``judge`` section: the judge's endpoint as jobs see it, the runs its
proxy validation covers, and the human labels each one reads.

:class:`calibadv.judge.config.JudgeConfig` says how to reach a judge; this module fills it from
the workflow (the stand-in's directory, the per-world cache, the judge stage's resources), so
the judge package itself knows nothing of the workflow's layout.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from calibadv.judge.config import BUNDLED_SMOLLM2, JudgeConfig
from calibadv.workflow.layout import Layout
from calibadv.workflow.resources import stage_resources
from calibadv.workflow.runs import runs

#: Keys of the workflow's ``judge`` section that are about the stage, not the endpoint.
STAGE_KEYS = ("methods", "sample", "helpful_min", "human_labels")


def workflow_judge(config: Mapping[str, Any]) -> dict[str, Any]:
    """The :class:`JudgeConfig` dict of a validated workflow config (checked).

    ``model: bundled:smollm2-135m-instruct`` points ``model_path`` at the stand-in directory
    the workflow converts; the cache is one SQLite file per world; a local server gets the
    GPUs/CPUs of ``resources.judge``.
    """
    section = dict(config.get("judge") or {})
    layout = Layout.of(dict(config))
    data = {k: v for k, v in section.items() if k not in STAGE_KEYS}
    if data.get("model") == BUNDLED_SMOLLM2 and not data.get("model_path"):
        data["model_path"] = layout.judge_stand_in
    res = stage_resources(dict(config), "judge")
    data.setdefault("gpus", int(res["gpus"]))
    data.setdefault("threads", int(res["cpus"]))
    data["cache"] = layout.judge_cache
    return JudgeConfig.from_dict(data).to_dict()


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


def human_labels_for(config: Mapping[str, Any], method: str) -> str | None:
    """The filled sheet of ``method``: ``judge.human_labels`` (a path for the first method of
    ``judge.methods``, or a method → path mapping)."""
    section = config.get("judge") or {}
    labels = section.get("human_labels")
    if not labels:
        return None
    if isinstance(labels, str):
        methods = list(section.get("methods") or [])
        return labels if methods and methods[0] == method else None
    return labels.get(method)
