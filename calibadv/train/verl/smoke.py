"""The cluster smoke test's two Python steps (``scripts/cluster-smoke.sh``).

``spec``: the RunSpec of a two-step verl run of the tiny model on the tiny world (one GPU,
tensor parallel 1, a save and a validation every step). ``check``: what a finished smoke run
must hold, printed line by line; a failed check exits non-zero naming what is missing.

    python -m calibadv.train.verl.smoke spec --work DIR --gpus 1 --cpus 16 --steps 2 \
        [--method stepsearch]
    python -m calibadv.train.verl.smoke check --run DIR/run --steps 2 [--resumed-from 2] \
        [--critic]

The second case, ``--method stepsearch``, is PPO with verl's GAE: it starts verl's critic
(value-head model through :mod:`calibadv.train.verl.valuehead`, its own token budget) and
``--critic`` checks that the critic trained and saved.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from calibadv.errors import CalibAdvError
from calibadv.io import atomic_write_text, read_jsonl
from calibadv.methods.presets import get_method
from calibadv.spec import dump_run_spec, run_spec_from_dict
from calibadv.train.verl.overrides import (
    TQ_STORAGE_UNITS,
    TQ_STORAGE_UNITS_KEY,
    RunPaths,
    check_ray_cpus,
    min_ray_cpus,
)

#: Checkpoints kept by the smoke run: 1, so that pruning is exercised after the second save.
KEEP = 1


def storage_units_for(cpus: int, gpus: int) -> int:
    """TransferQueue storage units that fit ``cpus`` next to verl's workers (verl's default 8
    when they fit; at least 1). Too few CPUs even for one unit: :class:`ConfigError` naming
    the numbers, never an allocation raised past what the node has."""
    spare = cpus - min_ray_cpus(gpus, 1, 0)  # CPUs left for storage units beside the rest
    units = max(1, min(TQ_STORAGE_UNITS, spare))
    check_ray_cpus(cpus, gpus, 1, units)
    return units


#: The smoke run's first case (cluster-smoke.sh writes its spec as spec-N.yaml).
SMOKE_METHOD = "calibadv"


def smoke_spec(work: Path, gpus: int, cpus: int, steps: int, method: str = SMOKE_METHOD
               ) -> dict[str, Any]:
    """A tiny verl run: 4 questions x 2 rollouts per step, short turns, every step saved;
    ``method`` ``stepsearch`` adds verl's critic (PPO with GAE)."""
    work = Path(work).resolve()
    units = storage_units_for(cpus, gpus)
    spec = {
        "name": "cluster-smoke",
        "backend": "verl",
        "model": {"path": str(work / "model"), "dtype": "bfloat16"},
        "method": get_method(method),
        "data": {"train": str(work / "train.parquet"), "val": str(work / "dev.parquet"),
                 "val_size": 8},
        "retrieval": {"corpus": str(work / "world" / "corpus.jsonl"),
                      "index": str(work / "index.faiss"), "encoder": "bundled:minilm",
                      "topk_retrieval": 3, "topk": 3},
        "agent": {"max_turns": 2, "max_tokens_per_turn": 64, "max_response_tokens": 512},
        "training": {"steps": steps, "batch_size": 4, "mini_batch_size": 4, "group_size": 2,
                     "micro_batch_size": 2, "save_every": 1, "val_every": 1,
                     "val_before_train": True, "dump_rollouts_at": [1]},
        "resources": {"gpus": gpus, "nodes": 1, "cpus": cpus},
        "verl": {"max_ckpt_to_keep": KEEP, "gpu_memory_utilization": 0.3, "max_num_seqs": 64,
                 "ppo_max_token_len_per_gpu": 4096, "agent_num_workers": 2},
        "verl_overrides": [f"{TQ_STORAGE_UNITS_KEY}={units}"],
    }
    run_spec_from_dict(spec)  # the same checks as `calibadv train` before it writes the file
    return spec


def check_run(run_dir: Path, steps: int, resumed_from: int | None = None,
              critic: bool = False) -> list[str]:
    """What a finished smoke run holds; raises :class:`CalibAdvError` at the first gap."""
    paths = RunPaths(Path(run_dir))
    done: list[str] = []

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise CalibAdvError(f"cluster smoke check failed: {what} (run directory {run_dir})")
        done.append(what)

    need((paths.out_dir / "done.json").exists(), "done.json written")
    rows = read_jsonl(paths.out_dir / "metrics.jsonl")
    need([r["step"] for r in rows] == list(range(1, steps + 1)),
         f"metrics.jsonl has steps 1..{steps}")
    need(all("reward_mean" in r and "entropy" in r for r in rows),
         "every step logged our signals and verl's entropy")
    val = read_jsonl(paths.out_dir / "val.jsonl") if (paths.out_dir / "val.jsonl").exists() else []
    need(len(val) >= steps, f"val.jsonl has a validation per step ({len(val)} rows)")
    for s in range(1, steps + 1):
        need((paths.exported / f"step_{s:06d}" / "checkpoint.json").exists(),
             f"HF copy of step {s} exported to checkpoints/step_{s:06d}")
    saves = sorted(p.name for p in paths.verl_checkpoints.glob("global_step_*")
                   if (p / "actor").is_dir())
    need(saves == [f"global_step_{steps}"][-KEEP:],
         f"only the newest {KEEP} resumable save kept ({', '.join(saves) or 'none'})")
    need(not any(paths.verl_checkpoints.rglob("transfer_queue")),
         "no TransferQueue snapshot in the checkpoints (sync mode)")
    need((paths.out_dir / "final" / "checkpoint.json").exists(), "final/ model selected")
    if critic:
        need(_critic_in_log(paths),
             "verl's critic ran every step (its value loss and critic/values/mean logged)")
        need((paths.verl_checkpoints / f"global_step_{steps}" / "critic").is_dir(),
             f"the critic saved with the actor (global_step_{steps}/critic)")
    if resumed_from is not None:
        logs = sorted(paths.logs.glob("metrics_attempt*.jsonl"))
        need(len(logs) >= 2, f"a second attempt was logged ({len(logs)} attempt logs)")
        trained = [int(r["step"]) for r in read_jsonl(logs[-1])
                   if any(k.startswith("calibadv/") for k in r.get("data", {}))]
        need(bool(trained) and min(trained) == resumed_from + 1,
             f"the second attempt resumed at step {resumed_from + 1} (trained {trained})")
    return done


def _critic_in_log(paths: RunPaths) -> bool:
    """verl's own log of the run (its metric names, before our conversion) has critic
    metrics in every training record."""
    trained = [r["data"] for f in sorted(paths.logs.glob("metrics_attempt*.jsonl"))
               for r in read_jsonl(f) if any(k.startswith("actor/") for k in r.get("data", {}))]
    return bool(trained) and all("critic/values/mean" in d and any("vf_loss" in k for k in d)
                                 for d in trained)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m calibadv.train.verl.smoke",
                                 description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("spec", help="write the smoke run's RunSpec to WORK/spec-<steps>.yaml")
    sp.add_argument("--work", required=True, type=Path)
    sp.add_argument("--gpus", type=int, default=1)
    sp.add_argument("--cpus", type=int, default=16)
    sp.add_argument("--steps", type=int, default=2)
    sp.add_argument("--method", default=SMOKE_METHOD,
                    help="method preset; stepsearch runs verl's critic (writes "
                         "spec-stepsearch-<steps>.yaml)")
    ck = sub.add_parser("check", help="check a finished smoke run and print what was checked")
    ck.add_argument("--run", required=True, type=Path)
    ck.add_argument("--steps", type=int, default=2)
    ck.add_argument("--resumed-from", type=int, default=None)
    ck.add_argument("--critic", action="store_true", help="also check the critic (stepsearch)")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "spec":
            # the default case keeps its historical file name (spec-N.yaml), others are tagged
            tag = "" if args.method == SMOKE_METHOD else f"{args.method}-"
            out = args.work / f"spec-{tag}{args.steps}.yaml"
            spec = run_spec_from_dict(smoke_spec(args.work, args.gpus, args.cpus, args.steps,
                                                 args.method))
            atomic_write_text(out, dump_run_spec(spec))
            print(out)
        else:
            for line in check_run(args.run, args.steps, args.resumed_from, args.critic):
                print(f"ok: {line}")
    except CalibAdvError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
