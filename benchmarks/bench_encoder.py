"""Encoder settings on CPU, side by side in one process: torch threads and encode batch size.

    nice python benchmarks/bench_encoder.py                       # both parts, ~2-4 min
    nice python benchmarks/bench_encoder.py --part threads --rounds 5
    nice python benchmarks/bench_encoder.py --part batch --corpus data/world/corpus.jsonl

Part ``threads`` answers "how many torch threads should a CPU retrieval server use on a shared
node?": it encodes one training turn's request (--queries Search-R1-style queries, default
2,560 = 512 prompts x 5 rollouts, of which --distinct are distinct) with the real MiniLM and
searches a flat index of --passages vectors, alternating every thread count of --threads
round by round so that load from other jobs hits each setting alike. It prints the median time
per request and the ratio against the first setting.

Part ``batch`` answers "which ``index encode --batch-size`` on CPU?": it encodes the passages
of --corpus (or --passages synthetic passages whose lengths vary like the synthetic world's and
wiki-18's) with each batch size of --batch-sizes, again alternating round by round.

Nothing here asserts a time: it prints what it measured, with the load average, because the
numbers depend on what else the machine runs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_retrieval import NAMES, WORDS, synth_queries  # noqa: E402


def synth_passages(n: int, seed: int) -> list[str]:
    """Passages with the spread of lengths a real corpus has: one-line facts (synthetic world,
    ~20 words) up to wiki-18's 100-word chunks."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = rng.choice([15, 25, 40, 100, 100, 100])
        body = " ".join(rng.choice(WORDS + NAMES) for _ in range(words))
        out.append(f"{rng.choice(NAMES)} {rng.choice(WORDS)} {i}\n{body}.")
    return out


def alternate(
    settings: list[object], rounds: int, run: Callable[[object], None]
) -> dict[object, list[float]]:
    """Seconds per call of ``run(setting)``, settings interleaved within every round."""
    times: dict[object, list[float]] = {s: [] for s in settings}
    for r in range(rounds):
        order = settings if r % 2 == 0 else list(reversed(settings))
        for s in order:
            t = time.perf_counter()
            run(s)
            times[s].append(time.perf_counter() - t)
    return times


def report(title: str, unit: str, times: dict[object, list[float]], work: int) -> dict:
    base = statistics.median(next(iter(times.values())))
    print(f"\n{title}\n")
    print(f"| {unit} | median s | min s | {work} items/s | time vs first |")
    print("|---:|---:|---:|---:|---:|")
    rows = {}
    for s, ts in times.items():
        med = statistics.median(ts)
        rows[str(s)] = {"median_s": med, "min_s": min(ts), "all_s": ts}
        print(f"| {s} | {med:.2f} | {min(ts):.2f} | {work / med:.0f} | {med / base:.2f}x |")
    return rows


def part_threads(args: argparse.Namespace, enc: object) -> dict:
    import faiss
    import torch

    queries = synth_queries(args.distinct, args.seed)
    queries = [queries[i % len(queries)] for i in range(args.queries)]
    rng = np.random.default_rng(args.seed)
    vecs = rng.standard_normal((args.passages, enc.dim), dtype=np.float32)  # type: ignore[attr-defined]
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(vecs.shape[1])
    index.add(vecs)
    del vecs
    enc.encode_queries(queries[:64])  # type: ignore[attr-defined]  # warm-up

    def run(threads: object) -> None:
        torch.set_num_threads(int(threads))  # type: ignore[arg-type]
        faiss.omp_set_num_threads(int(threads))  # type: ignore[arg-type]
        emb = enc.encode_queries(queries)  # type: ignore[attr-defined]
        index.search(emb, 3)

    times = alternate(args.threads, args.rounds, run)
    return report(
        f"one request of {args.queries} queries ({min(args.distinct, args.queries)} distinct), MiniLM encode + "
        f"flat search over {args.passages} vectors; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
        "threads",
        times,
        args.queries,
    )


def part_batch(args: argparse.Namespace, enc: object) -> dict:
    import torch

    torch.set_num_threads(args.batch_threads)
    if args.corpus:
        from calibadv.retrieval.corpus import Corpus

        c = Corpus(args.corpus)
        passages = c.contents_range(0, min(len(c), args.batch_passages))
    else:
        passages = synth_passages(args.batch_passages, args.seed)

    def run(bs: object) -> None:
        enc.batch_size = int(bs)  # type: ignore[attr-defined]
        enc.encode_passages(passages)  # type: ignore[attr-defined]

    times = alternate(args.batch_sizes, args.rounds, run)
    src = args.corpus or "synthetic passages (15-100 words)"
    return report(
        f"encode {len(passages)} passages of {src} with MiniLM, {args.batch_threads} torch "
        f"thread(s); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
        "batch size",
        times,
        len(passages),
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=["threads", "batch", "both"], default="both")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, nargs="+", default=None,
                    help="thread counts to compare (default: 1 and every CPU here)")
    ap.add_argument("--queries", type=int, default=2560, help="queries per request")
    ap.add_argument("--distinct", type=int, default=2560, help="distinct queries in it")
    ap.add_argument("--passages", type=int, default=100_000,
                    help="flat index size for the threads part")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64, 256])
    ap.add_argument("--batch-passages", type=int, default=1024)
    ap.add_argument("--batch-threads", type=int, default=1)
    ap.add_argument("--corpus", default=None, help="corpus JSONL for the batch part")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    args = ap.parse_args()  # fmt: skip
    args.threads = args.threads or sorted({1, os.cpu_count() or 1})
    os.environ.setdefault("CALIBADV_NO_PROGRESS", "1")
    from calibadv.retrieval.encoder import Encoder

    enc = Encoder("bundled:minilm", device="cpu")
    out = {"args": vars(args)}
    if args.part in ("threads", "both"):
        out["threads"] = part_threads(args, enc)
    if args.part in ("batch", "both"):
        out["batch"] = part_batch(args, enc)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
