"""``calibadv train --backend verl``: run one RunSpec with verl's PPO trainer.

Steps: start (or reuse) the retrieval server and wait for ``/health``; check that verl sees
our plugin; run ``python -m verl.trainer.main_ppo`` with the overrides of
:mod:`calibadv.train.verl.overrides` (one node: directly; several nodes of one SLURM
allocation: a Ray head + workers script); convert verl's JSONL log into ``metrics.jsonl`` /
``val.jsonl``; export the HF copies of the checkpoints, select one (last before collapse)
and write ``final/``, ``selection.json`` and ``done.json``. Re-running resumes from verl's
latest checkpoint (``trainer.resume_mode=auto``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from calibadv.errors import CalibAdvError, ConfigError
from calibadv.io import atomic_write_json, atomic_write_jsonl, atomic_write_text, read_jsonl
from calibadv.spec import RunSpec, dump_run_spec
from calibadv.train.verl.overrides import RunPaths, build_overrides

log = logging.getLogger(__name__)

RAY_PORT = 6379
_COUNT_NODES = ("import ray; ray.init(address='auto', logging_level='ERROR'); "
                "print(sum(1 for n in ray.nodes() if n['Alive']))")
DRY_RUN_URL = "http://RETRIEVAL-HOST:PORT"  # shown by --dry-run when the launcher starts one


# -- commands ---------------------------------------------------------------------------
def main_ppo_command(overrides: Sequence[str], python: str = sys.executable) -> list[str]:
    return [python, "-m", "verl.trainer.main_ppo", *overrides]


def multinode_script(overrides: Sequence[str], gpus_per_node: int, cpus_per_node: int,
                     nodes: int, python: str = sys.executable) -> str:
    """Bash script run inside one SLURM allocation: Ray head on the first node, workers on
    the others (one ``srun`` each, hostnames from ``scontrol show hostnames``), then the
    trainer on the head, connected to that cluster (so ``ray_init.num_cpus`` is null there:
    Ray forbids it when joining; the CPUs are given to ``ray start`` instead)."""
    cmd = main_ppo_command([*overrides, "ray_kwargs.ray_init.num_cpus=null"], python)
    q = shlex.quote
    ray = f"{q(python)} -m ray.scripts.scripts"
    # Each Ray node is one job step holding the node's GPUs and CPUs: clusters that bind
    # devices per step would otherwise start Ray with no GPU visible.
    step = (f"--nodes=1 --ntasks=1 --gres=gpu:{gpus_per_node} "
            f"--cpus-per-task={cpus_per_node}")
    return f"""#!/usr/bin/env bash
set -euo pipefail
mapfile -t NODES < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
if [ "${{#NODES[@]}}" -lt {nodes} ]; then
  echo "need {nodes} nodes in the allocation, got ${{#NODES[@]}}: ${{NODES[*]}}" >&2; exit 2
fi
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT  # stop the Ray nodes when the trainer ends
HEAD="${{NODES[0]}}"
HEAD_IP=$(srun --nodes=1 --ntasks=1 -w "$HEAD" hostname --ip-address | awk '{{print $1}}')
export RAY_ADDRESS="$HEAD_IP:{RAY_PORT}"
srun {step} -w "$HEAD" {ray} start --head --node-ip-address="$HEAD_IP" \\
  --port={RAY_PORT} --num-cpus={cpus_per_node} --num-gpus={gpus_per_node} --block &
sleep 10
for ((i = 1; i < {nodes}; i++)); do
  srun {step} -w "${{NODES[$i]}}" {ray} start --address="$RAY_ADDRESS" \\
    --num-cpus={cpus_per_node} --num-gpus={gpus_per_node} --block &
done
for _ in $(seq 120); do
  n=$({q(python)} -c {q(_COUNT_NODES)} 2>/dev/null || echo 0)
  [ "$n" -ge {nodes} ] && break; sleep 5
done
{" ".join(q(c) for c in cmd)}
"""


def _attempt(paths: RunPaths) -> int:
    paths.logs.mkdir(parents=True, exist_ok=True)
    return len(list(paths.logs.glob("metrics_attempt*.jsonl"))) + 1


def describe(spec: RunSpec, out_dir: Path, url: str) -> str:
    """What ``--dry-run`` prints: the exact command line (or multi-node script)."""
    overrides = build_overrides(spec, out_dir, url, attempt=_attempt_peek(RunPaths(out_dir)))
    from calibadv.train.judge_scoring import dry_run_judge_overrides

    overrides += dry_run_judge_overrides(spec.method, spec.judge)
    r = spec.resources
    if r.nodes > 1:
        return multinode_script(overrides, r.gpus, r.cpus, r.nodes)
    cmd = [shlex.quote(c) for c in main_ppo_command(overrides)]
    return " \\\n    ".join([" ".join(cmd[:3]), *cmd[3:]]) + "\n"


def _attempt_peek(paths: RunPaths) -> int:
    if not paths.logs.exists():
        return 1
    return len(list(paths.logs.glob("metrics_attempt*.jsonl"))) + 1


# -- retrieval ----------------------------------------------------------------------------
def retrieval_device(spec: RunSpec) -> tuple[str, dict[str, str]]:
    """Device flag and extra environment of the retrieval server started beside the trainer.

    On CPU (the default) the server process sees no GPU at all, so neither its encoder nor
    its reranker can take memory on ``cuda:0`` next to FSDP and vLLM.
    """
    device = spec.verl.retrieval_device
    return device, ({"CUDA_VISIBLE_DEVICES": ""} if device == "cpu" else {})


@contextlib.contextmanager
def retrieval_server(spec: RunSpec, out_dir: Path) -> Iterator[str]:
    """The spec's server URL, or one started on this node for the run (reachable by all
    nodes when the run spans several: it binds 0.0.0.0 and is named by this host's name)."""
    rs = spec.retrieval
    if rs.url:
        yield rs.url
        return
    missing = [k for k in ("corpus", "index", "encoder") if not getattr(rs, k)]
    if missing:
        raise ConfigError(
            f"retrieval: set retrieval.url, or retrieval.{missing[0]} (with corpus, index and "
            "encoder) so that the launcher can start a server"
        )
    from calibadv.retrieval.launch import serve_in_background, spec_server_args

    multi = spec.resources.nodes > 1
    device, env = retrieval_device(spec)
    with serve_in_background(rs.corpus, rs.index, rs.encoder, reranker=rs.reranker,
                             host="0.0.0.0" if multi else "127.0.0.1", port=rs.port,
                             log_path=out_dir / "retrieval_server.log",
                             extra_args=[*spec_server_args(rs), "--device", device],
                             env=env) as url:
        yield url.replace("0.0.0.0", socket.gethostname()) if multi else url


# -- after training ------------------------------------------------------------------------
def convert_logs(paths: RunPaths) -> tuple[int, int]:
    """verl's per-attempt JSONL logs → ``metrics.jsonl`` and ``val.jsonl`` (ours)."""
    from calibadv.train.verl.signals import convert_log

    records = []
    for f in sorted(paths.logs.glob("metrics_attempt*.jsonl")):
        records += read_jsonl(f)
    metrics, val = convert_log(records)
    atomic_write_jsonl(paths.out_dir / "metrics.jsonl", metrics)
    atomic_write_jsonl(paths.out_dir / "val.jsonl", val)
    return len(metrics), len(val)


def finish(spec: RunSpec, paths: RunPaths, wall_s: float) -> dict:
    """Metrics files, exported checkpoints, selection (last before collapse), ``final/``."""
    from calibadv.evaluate.collapse import collapse_step, select_checkpoint
    from calibadv.train.checkpoint import export_hf
    from calibadv.train.verl.checkpoints import export_checkpoint, exported_steps, verl_steps

    convert_logs(paths)
    for s in verl_steps(paths):  # saves the checkpoint callback did not export (a crash)
        export_checkpoint(paths, s)
    steps = exported_steps(paths)  # every save's HF copy, also of pruned FSDP saves
    if not steps:
        raise CalibAdvError(
            f"verl finished but saved no checkpoint under {paths.verl_checkpoints}"
        )
    atomic_write_text(paths.exported / "latest", f"step_{steps[-1]:06d}\n")
    val = read_jsonl(paths.out_dir / "val.jsonl")
    t = spec.training
    collapse = collapse_step([r["step"] for r in val], [r["f1"] for r in val],
                             t.collapse_delta, t.collapse_window) if val else None
    chosen, reason = select_checkpoint(steps, collapse)
    export_hf(paths.exported / f"step_{chosen:06d}", paths.out_dir / "final")
    selection = {"step": chosen, "collapse_step": collapse, "reason": reason}
    atomic_write_json(paths.out_dir / "selection.json", selection)
    atomic_write_json(paths.out_dir / "done.json",
                      {"steps": steps[-1], "wall_s": wall_s, "backend": "verl"})
    return selection


# -- entry point -------------------------------------------------------------------------
def run(spec: RunSpec, out_dir: Path, dry_run: bool = False) -> int:
    """Backend entry point (``calibadv.train.backends``)."""
    out_dir = Path(out_dir).resolve()
    paths = RunPaths(out_dir)
    if dry_run:
        print(describe(spec, out_dir, spec.retrieval.url or DRY_RUN_URL), end="")
        return 0
    build_overrides(spec, out_dir, spec.retrieval.url or DRY_RUN_URL)  # validate before work
    from calibadv.methods.catalog import check_run_data

    check_run_data(spec.method, spec.data.train)  # StepSearch: gold documents in the data
    done = out_dir / "done.json"
    if done.exists():
        prev = json.loads(done.read_text())
        if spec.training.steps is None or prev.get("steps") == spec.training.steps:
            log.info("%s exists: the run is already finished", done)
            return 0
        done.unlink()  # more steps than before: verl resumes from its latest checkpoint
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "spec.resolved.yaml", dump_run_spec(spec))

    r = spec.resources
    if r.nodes > 1 and "SLURM_JOB_NODELIST" not in os.environ:
        raise ConfigError(
            f"resources.nodes={r.nodes}: multi-node runs start inside one SLURM allocation "
            "(sbatch/salloc with --nodes); SLURM_JOB_NODELIST is not set"
        )
    from calibadv.train.verl.plugin import check_registered

    check_registered()
    wall0 = time.time()
    from calibadv.train.judge_scoring import verl_judge_overrides

    with retrieval_server(spec, out_dir) as url, verl_judge_overrides(
        spec.method, spec.judge, str(out_dir / "judge_server.log")
    ) as judge_overrides:
        attempt = _attempt(paths)
        overrides = build_overrides(spec, out_dir, url, attempt=attempt) + judge_overrides
        env = {**os.environ, "VERL_FILE_LOGGER_PATH": str(paths.attempt_log(attempt))}
        if r.nodes > 1:
            script = out_dir / "verl_launch.sh"
            atomic_write_text(script, multinode_script(overrides, r.gpus, r.cpus, r.nodes))
            cmd = ["bash", str(script)]
        else:
            cmd = main_ppo_command(overrides)
        atomic_write_text(out_dir / "verl_command.txt", shlex.join(cmd) + "\n")
        log.info("running %s", shlex.join(cmd))
        code = subprocess.run(cmd, cwd=out_dir, env=env, check=False).returncode
    if code != 0:
        with contextlib.suppress(Exception):
            convert_logs(paths)  # keep the curves of a failed run; re-run resumes
        raise CalibAdvError(
            f"verl exited with code {code}; re-run the same command to resume from the latest "
            f"checkpoint under {paths.verl_checkpoints}"
        )
    finish(spec, paths, time.time() - wall0)
    return 0
