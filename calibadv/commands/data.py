"""``calibadv prepare-data`` and ``calibadv download-data``: QA files for training/evaluation."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "prepare-data",
        help="convert QA JSONL files into one verl-format Parquet",
        description=(
            "Read FlashRAG QA JSONL files (BENCH=FILE, repeatable) and write one verl RL Parquet "
            "(data_source, prompt as chat messages, ability, reward_model.ground_truth.target, "
            "extra_info with an index unique across all inputs)."
        ),
    )
    p.add_argument("--input", nargs="+", action="extend", required=True, metavar="BENCH=FILE",
                   help="benchmark key and QA JSONL file, e.g. hotpotqa=data/train.jsonl")
    p.add_argument("--out", required=True, help="output Parquet file")
    p.add_argument("--split", default="train", help="value stored in extra_info.split")
    p.add_argument("--limit", type=int, default=None,
                   help="keep only the first N questions of each input")
    p.add_argument("--corpus", default=None,
                   help="JSONL corpus of the questions' hop documents: their text goes into "
                        "extra_info.gold_docs (StepSearch's step reward; synthetic world)")
    p.set_defaults(func=run_prepare)

    d = subparsers.add_parser(
        "download-data",
        help="download a FlashRAG benchmark split as QA JSONL",
        description=(
            "Fetch DATASET/SPLIT.jsonl from the RUC-NLPIR/FlashRAG_datasets hub repo (the dev "
            "split when SPLIT is missing) and write it as QA JSONL to OUT."
        ),
    )
    d.add_argument("--dataset", required=True, help="FlashRAG name, e.g. nq, hotpotqa, bamboogle")
    d.add_argument("--out", required=True, help="output QA JSONL")
    d.add_argument("--split", default="test", help="preferred split (default test; falls back to dev)")
    d.add_argument("--repo", default=None,
                   help="hub dataset id or a local folder with the same layout "
                        "(default RUC-NLPIR/FlashRAG_datasets)")
    d.add_argument("--verify", choices=["hash", "size"], default="hash",
                   help="check the file against the hub: size and hash (default) or size only")
    d.set_defaults(func=run_download)


def run_prepare(args: argparse.Namespace) -> int:
    from calibadv.data.prepare import prepare

    n = prepare(args.input, args.out, split=args.split, limit=args.limit, corpus=args.corpus)
    print(f"wrote {n} rows to {args.out}")
    return 0


def run_download(args: argparse.Namespace) -> int:
    from calibadv.data.download import FLASHRAG_REPO, download_dataset

    split, n = download_dataset(args.dataset, args.out, split=args.split,
                                repo=args.repo or FLASHRAG_REPO, verify=args.verify)
    print(f"wrote {n} {args.dataset} questions ({split} split) to {args.out}")
    return 0
