"""``calibadv synth``: write the synthetic world (corpus, QA splits, statistics)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "synth",
        help="generate the synthetic world (corpus + QA splits)",
        description=(
            "Generate a seeded fictional encyclopedia and its questions. Writes "
            "OUT_DIR/corpus.jsonl (wiki-18 format), OUT_DIR/train.jsonl, OUT_DIR/dev.jsonl, "
            "OUT_DIR/test/<bench>.jsonl for nq, triviaqa, popqa, hotpotqa, 2wikimultihopqa, "
            "musique, bamboogle (FlashRAG JSONL with gold passages per hop) and "
            "OUT_DIR/world.json (statistics, written last). Same seed, same bytes."
        ),
    )
    p.add_argument("--out-dir", required=True, help="folder to write the world into")
    p.add_argument("--seed", type=int, default=0, help="world seed (default 0)")
    p.add_argument("--size", default="tiny", help="world size: tiny (default) or small")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from calibadv.synth import write_world

    stats = write_world(args.out_dir, seed=args.seed, size=args.size)
    n_q = sum(s["n"] for s in stats["splits"].values())
    print(f"wrote {stats['passages']} passages and {n_q} questions to {args.out_dir}")
    return 0
