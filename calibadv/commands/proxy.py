"""``calibadv proxy-stats``: silver-proxy statistics from a run's rollout dumps."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "proxy-stats",
        help="silver-proxy statistics from rollout dumps",
        description=(
            "Read ROLLOUTS/step_*.jsonl (a training run's rollout dumps) and write OUT (JSON): "
            "per dumped step and overall — share of groups with an empty silver set, silver set "
            "size, distribution of the step score c, share of penalised steps with c = 1 and, "
            "when rollouts carry gold supporting passages (synthetic world), precision/recall "
            "of silver documents and of c > 0 / c = 1 against gold, and per dumped step the paper's "
            "Figure 2 against gold (penalised steps that retrieved a gold passage beside those "
            "the proxy calls c = 1; the proxy's precision and recall; with --metrics the neg/pos "
            "advantage ratio before and after rebalancing)."
        ),
    )
    p.add_argument("--rollouts", required=True, help="folder of step_{N:06d}.jsonl dumps")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument(
        "--metrics",
        help="the run's metrics.jsonl: adds the neg/pos advantage ratios of the dumped steps "
        "to the Figure 2 section",
    )
    p.add_argument("--k", type=int, default=3, help="documents per step (c buckets a/k; default 3)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from calibadv.errors import CalibAdvError
    from calibadv.io import atomic_write_json, read_jsonl
    from calibadv.proxy import proxy_stats, read_dumps

    metrics = []
    if args.metrics:
        if not Path(args.metrics).is_file():
            raise CalibAdvError(f"--metrics {args.metrics}: no such file (a run's metrics.jsonl)")
        metrics = read_jsonl(args.metrics)
    stats = proxy_stats(read_dumps(args.rollouts), k=args.k, metrics=metrics)
    atomic_write_json(args.out, stats)
    o = stats["overall"]
    print(
        f"{len(stats['steps'])} dumped steps, {o['rollouts']} rollouts; "
        f"empty silver {o['empty_silver_frac']}, mean c {o['c_mean']}"
    )
    return 0
