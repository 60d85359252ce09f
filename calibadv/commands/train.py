"""``calibadv train``: run one RunSpec with its backend (local or verl)."""

from __future__ import annotations

import argparse


def _run(args: argparse.Namespace) -> int:
    from calibadv.spec import load_run_spec
    from calibadv.train.backends import run_backend

    spec = load_run_spec(args.spec)
    return run_backend(spec, args.out, dry_run=args.dry_run)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train one run (RunSpec) with its backend",
        description=(
            "Reads a RunSpec YAML; writes OUT/metrics.jsonl, val.jsonl, rollouts/, "
            "checkpoints/ (resumable), final/, selection.json and done.json. A killed run "
            "started again with the same arguments resumes from checkpoints/latest."
        ),
    )
    p.add_argument("--spec", required=True, help="RunSpec YAML")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--dry-run", action="store_true",
                   help="print what would run (verl: the launch command) and exit")
    p.set_defaults(func=_run)
