"""``calibadv evaluate``: greedy rollouts of a checkpoint over one or several benchmark splits."""

from __future__ import annotations

import argparse


def _suites(args: argparse.Namespace) -> dict[str, tuple[str, str]]:
    """``{benchmark: (parquet, out_dir)}`` from ``--data/--benchmark`` or ``--suite`` flags."""
    import os

    from calibadv.commands._pairs import name_value_pairs
    from calibadv.errors import ConfigError

    if args.suite:
        if args.data or args.benchmark:
            raise ConfigError("give either --suite NAME=PARQUET (repeatable) or --data with "
                              "--benchmark, not both")
        paths = name_value_pairs(args.suite, "--suite", "NAME=PARQUET",
                                 "hotpotqa=results/synthetic/data/test/hotpotqa.parquet")
        return {name: (path, os.path.join(args.out_dir, name)) for name, path in paths.items()}
    if not (args.data and args.benchmark):
        raise ConfigError("give --data PARQUET and --benchmark NAME (or --suite NAME=PARQUET)")
    return {args.benchmark: (args.data, args.out_dir)}


def _run(args: argparse.Namespace) -> int:
    from calibadv.errors import ConfigError
    from calibadv.evaluate.run import evaluate_suites
    from calibadv.spec import load_run_spec

    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {args.limit}")
    suites = _suites(args)
    spec = load_run_spec(args.spec)
    for m in evaluate_suites(spec, args.checkpoint, suites, limit=args.limit,
                             generator=args.generator, batch_size=args.batch_size):
        print(f"{m['benchmark']}: n={m['n']} f1={m['f1']:.3f} em={m['em']:.3f} "
              f"format={m['format_rate']:.3f} high_ppl={m['high_ppl_ratio']:.3f}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a checkpoint on benchmarks (greedy, every question)",
        description=(
            "Reads the run spec (method, agent limits, retrieval), an HF checkpoint and verl "
            "Parquet splits; writes predictions.jsonl and metrics.json per benchmark. One "
            "benchmark: --data/--benchmark, files in OUT_DIR. Several: --suite NAME=PARQUET "
            "per benchmark, files in OUT_DIR/NAME; the model and the retrieval server are then "
            "loaded once for all of them."
        ),
    )
    p.add_argument("--spec", required=True, help="RunSpec YAML of the run")
    p.add_argument("--checkpoint", required=True, help="HF model directory (e.g. RUN/final)")
    p.add_argument("--data", default=None, help="verl Parquet of the benchmark split")
    p.add_argument("--benchmark", default=None, help="benchmark key (nq, hotpotqa, ...)")
    p.add_argument("--suite", action="append", default=[], metavar="NAME=PARQUET",
                   help="a benchmark and its Parquet (repeatable; instead of --data/--benchmark)")
    p.add_argument("--out-dir", required=True, help="output folder")
    p.add_argument("--limit", type=int, default=None, help="first N questions only")
    p.add_argument("--generator", choices=["hf", "kv", "vllm"], default="hf",
                   help="generation engine: hf (model.generate), kv (in-process decode loop "
                   "with the KV cache kept across turns; Qwen2/Llama models, fastest on CPU), "
                   "vllm (needs a GPU and the gpu extra)")
    p.add_argument("--batch-size", type=int, default=64, help="questions per generation batch")
    p.set_defaults(func=_run)
