"""The workflow through a real SLURM (scripts/slurm-local-setup.sh): GPU requests from the
config reach sbatch, and a job killed with scancel is resubmitted with more time."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time

import pytest
from wf_helpers import snakemake, write_config

pytestmark = [pytest.mark.slow, pytest.mark.slurm]


def _slurm_up() -> str | None:
    if shutil.which("sinfo") is None:
        return "no SLURM here (sinfo not found): run `sudo scripts/slurm-local-setup.sh` first"
    proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        return f"SLURM is installed but not answering (sinfo: {proc.stderr.strip()})"
    return None


def scontrol_job(job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


class Watcher(threading.Thread):
    """Record every job the workflow submits; cancel the first `train` job once it runs."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.jobs: dict[str, dict[str, str]] = {}
        self.cancelled: str | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            out = subprocess.run(["squeue", "-h", "-o", "%i|%k|%T"], capture_output=True, text=True).stdout
            for line in out.splitlines():
                job_id, comment, state = line.split("|", 2)
                if job_id not in self.jobs:
                    self.jobs[job_id] = {**scontrol_job(job_id), "rule": comment}
                if self.cancelled is None and comment.startswith("rule_train") and state == "RUNNING":
                    time.sleep(2)  # let it start working, then kill it
                    subprocess.run(["scancel", job_id], check=True)
                    self.cancelled = job_id
            time.sleep(0.5)


def test_tiny_training_chain_on_slurm_requests_gpus_and_survives_scancel(tmp_path, tiny_config):
    if reason := _slurm_up():
        pytest.skip(reason)
    models = {"tiny": {**tiny_config["models"]["tiny"], "sft": False, "methods": ["calibadv"]}}
    resources = {
        "default": {"cpus": 1, "mem_mb": 1000, "runtime": 10},
        "train": {"gpus": 1, "gpu_model": "fake", "cpus": 1, "mem_mb": 3000, "runtime": 30},
    }
    cfg = write_config(
        tmp_path / "c.yaml", models=models, resources=resources,
        counterfactual={**tiny_config["counterfactual"], "enabled": False},  # its methods are not run
        index={"source": "build", "kind": "flat", "num_shards": 1},
    )  # fmt: skip
    target = "results/synthetic/runs/tiny/calibadv/seed_0/done.json"
    watcher = Watcher()
    watcher.start()
    try:
        proc = snakemake(
            "--profile", "tests/workflow/profiles/slurm-local", "--configfile", str(cfg),
            "-d", str(tmp_path), target, timeout=1500, check=False,
        )  # fmt: skip
    finally:
        watcher.stop.set()
        watcher.join()
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert (tmp_path / target).exists()

    trains = {i: j for i, j in watcher.jobs.items() if j["rule"].startswith("rule_train")}
    others = {i: j for i, j in watcher.jobs.items() if not j["rule"].startswith("rule_train")}
    assert watcher.cancelled in trains, f"no train job was seen running: {watcher.jobs}"
    assert len(trains) == 2, "the cancelled train job was not resubmitted"
    for job in trains.values():  # the config's GPU request reached sbatch as --gpus=fake:1
        assert "gpu:fake:1" in job.get("TresPerJob", ""), job
    for job in others.values():
        assert "gpu" not in job.get("TresPerJob", ""), job
    first, second = sorted(trains, key=int)
    assert trains[first]["TimeLimit"] == "00:30:00"
    assert trains[second]["TimeLimit"] == "01:00:00"  # runtime scales with the attempt
    assert scontrol_job(first).get("JobState", "CANCELLED") == "CANCELLED"
