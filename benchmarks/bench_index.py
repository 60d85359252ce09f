"""Index kinds at paper scale, side by side in one run: flat vs HNSW vs IVF.

    nice python benchmarks/bench_index.py                      # 1M x 768, ~3.5 GB peak
    nice python benchmarks/bench_index.py --vectors 50000      # a quick look
    python benchmarks/bench_index.py --help

One paper training turn sends up to 2,560 queries (512 prompts x 5 rollouts) against wiki-18's
21,015,324 e5-base-v2 passages (768-d; a 64.6 GB fp32 flat index). This benchmark builds each
index kind over the same --vectors synthetic vectors of --dim dimensions and reports, per kind:
build time, index memory (exact bytes of its arrays) and the peak RSS of the run so far,
queries/s for ONE request of --queries queries (top-3, as the server asks), and recall@3
against the flat index's exact answer (the paper's retrieval). It then extrapolates each to
21M vectors and, for flat, to GPUs; the assumptions are printed beside the numbers.

Memory stays bounded: vectors are generated in seeded chunks (never all at once), one index
lives at a time, and the flat answer is kept as ids only. Peak ~ one fp32 copy of the vectors
(3.1 GB at 1M x 768) plus the HNSW links. Not run by CI (it takes tens of minutes at 1M).

The vectors are NOT real embeddings: each is the sum of one of --clusters random unit centres
(weight 0.7), a random unit direction of a fixed 64-dimensional subspace (weight 0.8) and
isotropic noise (weight 0.3), L2-normalised; queries are drawn the same way. Text embeddings are clustered and have low intrinsic dimension
(tens, not 768), which is what approximate indexes exploit; uniform random 768-d vectors would
make every approximate index look far worse than on real data. Recall on the real e5 index must
be checked on real vectors; build time, memory and flat q/s do not depend on what the vectors
hold.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

WIKI18_PASSAGES = 21_015_324
CHUNK = 65_536


class Vectors:
    """Seeded synthetic embeddings, produced chunk by chunk (row r is the same every time)."""

    def __init__(
        self, n: int, dim: int, clusters: int, seed: int, cache: Path | None = None,
        intrinsic: int = 64,
    ) -> None:  # fmt: skip
        self.n, self.dim, self.seed, self.cache = n, dim, seed, cache
        rng = np.random.default_rng(seed)
        self.basis = rng.standard_normal((intrinsic, dim), dtype=np.float32) / math.sqrt(intrinsic)
        centres = rng.standard_normal((clusters, dim), dtype=np.float32)
        self.centres = centres / np.linalg.norm(centres, axis=1, keepdims=True)

    def _make(self, rng: np.random.Generator, m: int) -> np.ndarray:
        def unit(a: np.ndarray) -> np.ndarray:
            return a / np.linalg.norm(a, axis=1, keepdims=True)

        sub = unit(rng.standard_normal((m, self.basis.shape[0]), dtype=np.float32) @ self.basis)
        centre = self.centres[rng.integers(0, len(self.centres), m)]
        noise = unit(rng.standard_normal((m, self.dim), dtype=np.float32))
        return np.ascontiguousarray(unit(0.8 * sub + 0.7 * centre + 0.3 * noise), dtype=np.float32)

    def chunks(self) -> Iterator[np.ndarray]:
        """The vectors in chunks; with a cache file, generated once and then read back (a
        loaded machine spends longer generating 1M x 768 normals than adding them to flat)."""
        cached = self.cache is not None and self.cache.is_file()
        if cached:
            # plain reads, not a memory map: mapped pages would count in the RSS reported
            fh = open(self.cache, "rb")  # noqa: SIM115 - closed below
            major, _ = np.lib.format.read_magic(fh)
            read_header = (
                np.lib.format.read_array_header_1_0
                if major == 1
                else np.lib.format.read_array_header_2_0
            )
            shape, _, _ = read_header(fh)
            if shape != (self.n, self.dim):
                raise SystemExit(f"{self.cache} holds {shape}, not {(self.n, self.dim)}")
        elif self.cache is not None:
            tmp = self.cache.with_name(self.cache.name + ".tmp.npy")
            out = np.lib.format.open_memmap(tmp, "w+", np.float32, (self.n, self.dim))
        for i, start in enumerate(range(0, self.n, CHUNK)):
            stop = min(start + CHUNK, self.n)
            if cached:
                yield np.fromfile(fh, np.float32, (stop - start) * self.dim).reshape(-1, self.dim)
                continue
            chunk = self._make(np.random.default_rng([self.seed, 1, i]), stop - start)
            if self.cache is not None:
                out[start:stop] = chunk
            yield chunk
        if cached:
            fh.close()
        elif self.cache is not None:
            out.flush()
            del out
            os.replace(tmp, self.cache)

    def sample(self, m: int) -> np.ndarray:
        """Training sample for IVF: the first rows (the chunks are i.i.d.)."""
        parts, got = [], 0
        for c in self.chunks():
            parts.append(c[: m - got])
            got += len(parts[-1])
            if got >= m:
                break
        return np.concatenate(parts)

    def queries(self, m: int) -> np.ndarray:
        return self._make(np.random.default_rng([self.seed, 2]), m)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def index_bytes(index: Any) -> int:
    """Bytes of the index's own arrays (vectors, graph links, inverted lists, centroids)."""
    import faiss

    if isinstance(index, faiss.IndexHNSW):
        h = index.hnsw
        graph = 4 * (h.neighbors.size() + h.levels.size()) + 8 * h.offsets.size()
        return index_bytes(faiss.downcast_index(index.storage)) + graph
    if isinstance(index, faiss.IndexIVF):
        inv = index.invlists
        lists = sum(inv.list_size(i) for i in range(inv.nlist)) * (inv.code_size + 8)
        return lists + index_bytes(faiss.downcast_index(index.quantizer))
    if isinstance(index, faiss.IndexFlat):
        return index.ntotal * index.d * 4
    raise TypeError(type(index))


def build(
    kind: str, vecs: Vectors, args: argparse.Namespace
) -> tuple[Any, float, float]:
    """(index, wall s, CPU s of this process). Generating the vectors is part of both: it
    costs the same for every kind (a few CPU seconds per million)."""
    import faiss

    t, cpu = time.perf_counter(), time.process_time()
    if kind == "flat":
        index = faiss.IndexFlatIP(vecs.dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(vecs.dim, args.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = args.ef_construction
    elif kind == "ivf":
        quant = faiss.IndexFlatIP(vecs.dim)
        index = faiss.IndexIVFFlat(quant, vecs.dim, args.nlist, faiss.METRIC_INNER_PRODUCT)
        index.own_fields = True
        quant.this.disown()
        index.train(vecs.sample(min(vecs.n, args.nlist * 40)))
    else:
        raise ValueError(kind)
    done = 0
    for chunk in vecs.chunks():
        index.add(chunk)
        done += len(chunk)
        if args.verbose:
            print(f"  {kind}: {done}/{vecs.n} added, {time.perf_counter() - t:.0f} s",
                  file=sys.stderr, flush=True)  # fmt: skip
    return index, time.perf_counter() - t, time.process_time() - cpu


def search_setting(kind: str, index: Any, value: int) -> str:
    if kind == "hnsw":
        index.hnsw.efSearch = value
        return f"efSearch={value}"
    if kind == "ivf":
        index.nprobe = value
        return f"nprobe={value}"
    return "exact"


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(f) & set(t)) for f, t in zip(found.tolist(), truth.tolist()))
    return hits / truth.size


def extrapolate(kind: str, qps: float, mem: int, build_s: float, n: int, nlist: int) -> dict:
    """To wiki-18's 21M passages: the scaling laws of each kind, stated."""
    f = WIKI18_PASSAGES / n
    if kind == "flat":
        law = "search and memory linear in N (every vector scanned)"
        q, b = qps / f, build_s * f
    elif kind == "hnsw":
        g = math.log(WIKI18_PASSAGES) / math.log(n)
        law = f"search ~ log N at fixed efSearch (x{g:.2f}, recall drifts down); build ~ N log N"
        q, b = qps / g, build_s * f * g
    else:
        g = math.sqrt(f)
        law = (f"nlist scaled with sqrt(N) (x{g:.1f}) at the same nprobe: scanned vectors and "
               "coarse search ~ sqrt(N); build (assignment) ~ N sqrt(N)")  # fmt: skip
        q, b = qps / g, build_s * f * g
    return {"law": law, "qps": q, "turn_s": 2560 / q, "memory_gb": mem * f / 1e9, "build_h": b / 3600}


def gpu_flat(dim: int, queries: int, tflops: float, gpus: int) -> dict:
    flop = 2.0 * queries * WIKI18_PASSAGES * dim
    return {
        "assumption": f"fp16 GEMM at {tflops:.0f} TFLOP/s sustained per GPU (about half of an "
        f"H20's 148 dense fp16 TFLOP/s; faiss-gpu, useFloat16), index sharded over {gpus} GPUs",
        "flop_per_turn": flop,
        "turn_s": flop / (tflops * 1e12 * gpus),
        "memory_gb_per_gpu": WIKI18_PASSAGES * dim * 2 / gpus / 1e9,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])  # fmt: skip
    ap.add_argument("--vectors", type=int, default=1_000_000, help="index size")
    ap.add_argument("--dim", type=int, default=768, help="e5-base-v2: 768")
    ap.add_argument("--queries", type=int, default=2560, help="one request: 512 x 5 rollouts")
    ap.add_argument("--topk", type=int, default=3)
    ap.add_argument("--kinds", nargs="+", default=["flat", "hnsw", "ivf"],
                    choices=["flat", "hnsw", "ivf"])
    ap.add_argument("--clusters", type=int, default=4096)
    ap.add_argument("--hnsw-m", type=int, default=32, help="HNSW graph degree")
    ap.add_argument("--ef-construction", type=int, default=40, help="FAISS default")
    ap.add_argument("--ef-search", type=int, nargs="+", default=[32, 64, 128, 256])
    ap.add_argument("--nlist", type=int, default=1024, help="IVF lists (~sqrt(N))")
    ap.add_argument("--nprobe", type=int, nargs="+", default=[8, 32, 128])
    ap.add_argument("--threads", type=int, default=None, help="FAISS threads (default: all)")
    ap.add_argument("--gpu-tflops", type=float, default=74.0)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", default="results/bench/index",
                    help="keep the generated vectors here (fp32 .npy, 3.1 GB at 1M x 768), so "
                    "that build times exclude generating them; '' = regenerate in every build")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    ap.add_argument("--verbose", action="store_true", help="progress while adding")
    args = ap.parse_args()  # fmt: skip
    import faiss

    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    if "flat" not in args.kinds:
        args.kinds.insert(0, "flat")  # recall needs the exact answer
    cache = None
    if args.cache_dir:
        cache = Path(args.cache_dir) / f"vectors-{args.vectors}x{args.dim}-c{args.clusters}-s{args.seed}.npy"
        cache.parent.mkdir(parents=True, exist_ok=True)
    vecs = Vectors(args.vectors, args.dim, args.clusters, args.seed, cache)
    if cache is not None and not cache.is_file():
        t = time.perf_counter()
        for _ in vecs.chunks():  # generate once, outside every timed build
            pass
        print(f"generated {cache} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    queries = vecs.queries(args.queries)
    truth: np.ndarray | None = None
    rows: list[dict] = []
    for kind in args.kinds:
        index, build_s, build_cpu = build(kind, vecs, args)
        mem = index_bytes(index)
        values = {"hnsw": args.ef_search, "ivf": args.nprobe}.get(kind, [0])
        for v in values:
            setting = search_setting(kind, index, v)
            t, cpu = time.perf_counter(), time.process_time()
            _, ids = index.search(queries, args.topk)
            search_s, search_cpu = time.perf_counter() - t, time.process_time() - cpu
            if kind == "flat":
                truth = ids
            row = {
                "kind": kind, "setting": setting, "build_s": build_s, "build_cpu_s": build_cpu, "index_gb": mem / 1e9,
                "peak_rss_gb": peak_rss_gb(), "request_s": search_s, "request_cpu_s": search_cpu,
                "qps": args.queries / search_s, "recall_at_k": recall(ids, truth),
            }  # fmt: skip
            row["at_21M"] = extrapolate(kind, row["qps"], mem, build_s, args.vectors, args.nlist)
            rows.append(row)
            print(f"{kind:5s} {setting:13s} build {build_s:7.1f} s ({build_cpu:.0f} CPU s)  index {mem / 1e9:6.2f} GB  "
                  f"request of {args.queries}: {search_s:7.2f} s ({search_cpu:.1f} CPU s, "
                  f"{row['qps']:8.1f} q/s)  "
                  f"recall@{args.topk} {row['recall_at_k']:.3f}", file=sys.stderr, flush=True)  # fmt: skip
        del index
        gc.collect()
    load = os.getloadavg()[0]
    gpu = gpu_flat(args.dim, args.queries, args.gpu_tflops, args.gpus)
    print(f"\n{args.vectors:,} synthetic vectors x {args.dim} (clustered, intrinsic dim 64), one "
          f"request of {args.queries} queries, top-{args.topk}, FAISS {faiss.__version__} CPU, "
          f"{faiss.omp_get_max_threads()} threads, {os.cpu_count()} CPUs, load average "
          f"{load:.1f}; peak RSS {peak_rss_gb():.1f} GB\n")  # fmt: skip
    print(f"| index | search | build s (CPU s) | index GB | q/s | s per request (CPU s) | recall@{args.topk} "
          "vs flat | q/s at 21M | s per turn at 21M | GB at 21M | build h at 21M |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        x = r["at_21M"]
        print(f"| {r['kind']} | {r['setting']} | {r['build_s']:.0f} ({r['build_cpu_s']:.0f}) | "
              f"{r['index_gb']:.2f} | {r['qps']:.0f} | {r['request_s']:.2f} "
              f"({r['request_cpu_s']:.1f}) | {r['recall_at_k']:.3f} | {x['qps']:.1f} | "
              f"{x['turn_s']:.1f} | {x['memory_gb']:.1f} | {x['build_h']:.1f} |")  # fmt: skip
    print("\nextrapolation to 21M:")
    for kind in dict.fromkeys(r["kind"] for r in rows):
        law = next(r["at_21M"]["law"] for r in rows if r["kind"] == kind)
        print(f"- {kind}: {law}")
    print(f"- flat on GPUs: {gpu['assumption']}: {gpu['flop_per_turn']:.2e} flop "
          f"per turn -> {gpu['turn_s']:.2f} s per {args.queries}-query turn, "
          f"{gpu['memory_gb_per_gpu']:.1f} GB fp16 per GPU (arithmetic, not measured here)")  # fmt: skip
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(
            {"args": vars(args), "rows": rows, "gpu_flat": gpu, "load": load}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
