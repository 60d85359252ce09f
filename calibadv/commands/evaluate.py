"""``calibadv evaluate``: greedy rollouts of a checkpoint over one benchmark split."""

from __future__ import annotations

import argparse


def _run(args: argparse.Namespace) -> int:
    from calibadv.evaluate.run import evaluate
    from calibadv.spec import load_run_spec

    spec = load_run_spec(args.spec)
    if args.limit is not None and args.limit < 1:
        from calibadv.errors import ConfigError

        raise ConfigError(f"--limit must be >= 1, got {args.limit}")
    m = evaluate(spec, args.checkpoint, args.data, args.benchmark, args.out_dir,
                 limit=args.limit, generator=args.generator, batch_size=args.batch_size)
    print(f"{m['benchmark']}: n={m['n']} f1={m['f1']:.3f} em={m['em']:.3f} "
          f"format={m['format_rate']:.3f} high_ppl={m['high_ppl_ratio']:.3f}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a checkpoint on one benchmark (greedy, every question)",
        description=(
            "Reads the run spec (method, agent limits, retrieval), an HF checkpoint and a verl "
            "Parquet split; writes OUT_DIR/predictions.jsonl and OUT_DIR/metrics.json."
        ),
    )
    p.add_argument("--spec", required=True, help="RunSpec YAML of the run")
    p.add_argument("--checkpoint", required=True, help="HF model directory (e.g. RUN/final)")
    p.add_argument("--data", required=True, help="verl Parquet of the benchmark split")
    p.add_argument("--benchmark", required=True, help="benchmark key (nq, hotpotqa, ...)")
    p.add_argument("--out-dir", required=True, help="output folder")
    p.add_argument("--limit", type=int, default=None, help="first N questions only")
    p.add_argument("--generator", choices=["hf", "vllm"], default="hf",
                   help="generation engine (vllm needs a GPU and the gpu extra)")
    p.add_argument("--batch-size", type=int, default=64, help="questions per generation batch")
    p.set_defaults(func=_run)
