"""``calibadv reward-trend``: did a finished run learn? Batch reward and validation F1."""

from __future__ import annotations

import argparse
from pathlib import Path


def _run(args: argparse.Namespace) -> int:
    from calibadv.errors import ConfigError
    from calibadv.evaluate.metrics import reward_trend
    from calibadv.io import read_jsonl

    lines = [f"{'run':40s} {'steps':>5s} {'first q.':>8s} {'last q.':>8s} {'diff':>7s} "
             f"{'se':>6s} {'z':>6s} {'val F1 start -> end':>20s}"]
    for run in args.run:
        metrics = Path(run) / "metrics.jsonl"
        if not metrics.exists():
            raise ConfigError(f"{metrics} does not exist: --run takes a training run folder")
        rewards = [float(r[args.key]) for r in read_jsonl(metrics)]
        try:
            t = reward_trend(rewards)
        except ValueError as err:  # a run still in its first steps, or a short smoke run
            raise ConfigError(f"{run}: {err} in {metrics} (the trend compares quarters of at "
                              "least 2 steps; wait for the run or give a longer one)") from None
        val_path = Path(run) / "val.jsonl"
        val = read_jsonl(val_path) if val_path.exists() else []
        vals = f"{val[0]['f1']:.3f} -> {val[-1]['f1']:.3f}" if val else "-"
        lines.append(f"{str(run)[-40:]:40s} {t['steps']:5d} {t['first']:8.3f} {t['last']:8.3f} "
                     f"{t['diff']:+7.3f} {t['se']:6.3f} {t['z']:6.2f} {vals:>20s}")
    print("\n".join(lines))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reward-trend",
        help="last quarter vs first quarter of a run's batch reward, and its validation F1",
        description=(
            "For each training run folder: the mean batch reward (metrics.jsonl) over the first "
            "and the last quarter of its steps, their difference, its standard error and z = "
            "diff / se (z > 2: the reward rose by more than two standard errors), and the "
            "validation F1 (val.jsonl) at the first and the last validation."
        ),
    )
    p.add_argument("--run", nargs="+", required=True, help="training run folder(s)")
    p.add_argument("--key", default="reward_mean", help="metrics.jsonl column (reward_mean)")
    p.set_defaults(func=_run)
