"""Per-stage resources (``resources.<stage>``) and their Snakemake/SLURM names.

The config sets resources per workflow stage, not per rule, with a per-model override (a 7B
model's training needs more GPUs than a 3B one's). :func:`stage_resources` resolves them;
:func:`snakemake_resources` renames them for the SLURM executor plugin.
"""

from __future__ import annotations

from typing import Any

from calibadv.errors import ConfigError

#: Stages whose resources the config can set (``resources.<stage>``).
STAGES = (
    "corpus", "model", "encode", "merge", "data", "sft", "train", "evaluate", "proxy", "report",
    "download", "judge",
)  # fmt: skip
#: What a stage gets when the config sets nothing: one CPU, 4 GB, an hour, no GPU.
RESOURCE_DEFAULTS = {
    "gpus": 0, "gpu_model": None, "cpus": 1, "mem_mb": 4000, "runtime": 60,
    "partition": None, "nodes": 1,
}  # fmt: skip


def stage_resources(config: dict[str, Any], stage: str, model: str | None = None) -> dict[str, Any]:
    """Resources of one stage: built-in defaults < ``resources.default`` < ``resources.<stage>``
    < ``models.<model>.resources.<stage>``."""
    if stage not in STAGES:
        raise ConfigError(f"resources: unknown stage {stage!r} (stages: {', '.join(STAGES)})")
    res = dict(RESOURCE_DEFAULTS)
    section = config.get("resources") or {}
    res.update(section.get("default") or {})
    res.update(section.get(stage) or {})
    if model is not None:
        res.update(((config["models"][model].get("resources") or {}).get(stage)) or {})
    return res


def snakemake_resources(res: dict[str, Any], attempt: int = 1) -> dict[str, Any]:
    """Map stage resources onto the names the SLURM executor plugin reads; runtime and memory
    grow with the retry ``attempt`` so a job killed for time/memory gets more on its retry."""
    out: dict[str, Any] = {
        "runtime": int(res["runtime"]) * attempt,
        "mem_mb": int(res["mem_mb"]) * attempt,
        "cpus_per_task": int(res["cpus"]),
        "nodes": int(res.get("nodes", 1)),
    }
    if res["gpus"]:
        out["gpu"] = int(res["gpus"])
        if res.get("gpu_model"):
            out["gpu_model"] = res["gpu_model"]
    if res.get("partition"):
        out["slurm_partition"] = res["partition"]
    return out
