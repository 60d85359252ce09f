"""``calibadv counterfactual``: each method's update from one start point on one batch, and how
it moves the log-probability of held-out intermediate steps (calibadv.train.counterfactual)."""

from __future__ import annotations

import argparse


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from calibadv.commands._pairs import name_value_pairs
    from calibadv.errors import ConfigError
    from calibadv.spec import load_run_spec
    from calibadv.train.counterfactual import CounterfactualConfig, run

    try:
        updates = tuple(sorted({int(x) for x in args.updates.split(",")}))
    except ValueError as err:
        raise ConfigError(f"--updates {args.updates!r}: give comma-separated integers, "
                          "e.g. 1,4") from err
    cfg = CounterfactualConfig(
        questions=args.questions, group_size=args.group_size, mini_batches=args.mini_batches,
        dev_questions=args.dev_questions, dev_samples=args.dev_samples, updates=updates,
        seed=args.seed, reference=args.reference, sample_method=args.sample_method,
        reps=args.reps)
    paths = name_value_pairs(args.spec, "--spec", "METHOD=RUNSPEC_YAML",
                             "calibadv=results/synthetic/runs/tiny/calibadv/seed_0/spec.yaml")
    specs = {m: load_run_spec(p) for m, p in paths.items()}
    summary = run(specs, args.start, args.train, args.dev, Path(args.out), cfg)
    for r in summary["rows"]:
        if r["cls"] == "all steps" and r["split"] == "held-out":
            d = r["delta"]
            print(f"K={r['updates']} {r['method']}: held-out Δ log-prob "
                  f"{d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}] "
                  f"({r['n_steps']} steps)" if d else f"K={r['updates']} {r['method']}: no steps")
    print(f"wall {summary['wall_s']:.0f} s")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "counterfactual",
        help="one update per method from the start point; Δ log-prob of held-out steps",
        description=(
            "Samples one training batch (--questions x --group-size rollouts) and held-out "
            "rollouts (--dev-samples per --dev-questions validation question) from the start "
            "point, then applies each method's update (the local trainer's own phases, fresh "
            "optimiser, same seeds) --updates times on that batch, and writes OUT/summary.json "
            "(mean Δ step log-prob per method and step class, question-bootstrap intervals, "
            "paired differences from --reference with Holm) and OUT/steps.jsonl (per step). "
            "docs/training.md, 'The counterfactual update'."
        ),
    )
    p.add_argument("--spec", action="append", required=True, metavar="METHOD=YAML",
                   help="a method's RunSpec (repeat per method; its estimator, loss, format "
                        "rules and optimiser settings are used)")
    p.add_argument("--start", required=True, help="the start point's HF checkpoint directory")
    p.add_argument("--train", required=True,
                   help="Parquet of the dedicated batch's questions (at least --questions)")
    p.add_argument("--dev", required=True, help="Parquet of held-out (validation) questions")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--questions", type=int, default=64)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--mini-batches", type=int, default=2,
                   help="AdamW steps per update (the batch split in this many mini-batches)")
    p.add_argument("--dev-questions", type=int, default=64)
    p.add_argument("--dev-samples", type=int, default=2)
    p.add_argument("--updates", default="1,4", help="read the policy after these update counts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reference", default="search-r1", help="the paired differences' baseline")
    p.add_argument("--sample-method", default="calibadv",
                   help="whose prompt (PreThink or not) samples every rollout")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap draws")
    p.set_defaults(func=_run)
