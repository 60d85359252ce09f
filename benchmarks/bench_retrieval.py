"""Retrieval server throughput/latency: micro-batching on vs off, same corpus, same run.

    python benchmarks/bench_retrieval.py                # 100k passages, 1/8/64 clients
    python benchmarks/bench_retrieval.py --passages 20000 --seconds 5   # quicker

What it builds (cached under --work-dir, default results/bench/retrieval):
- a synthetic corpus of --passages wiki-18-style rows (templated sentences, seeded);
- embeddings: the first --real passages are encoded by the real MiniLM (bundled:minilm,
  CPU); every other row gets a real-embedding mixture (two random real rows + small noise,
  L2-normalised). A flat index costs the same per vector whatever the vectors hold, so the
  timing is that of a real 100k index; encoding all 100k passages on 2 shared CPU cores would
  take hours;
- a FAISS IndexFlatIP through the production merge code.

Then it starts two real `calibadv serve` subprocesses (batching on / --no-batching) one after the
other and drives each with closed-loop asyncio clients (one query per request, topk=3, as a
rollout worker does) for --seconds per concurrency level. Query encoding is real MiniLM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np

WORDS = [
    "river",
    "city",
    "king",
    "battle",
    "album",
    "film",
    "river",
    "station",
    "novel",
    "island",
    "church",
    "bridge",
    "election",
    "army",
    "song",
    "museum",
    "mountain",
    "school",
    "team",
    "species",
    "painter",
    "league",
    "railway",
    "castle",
    "treaty",
    "festival",
    "bishop",
    "harbour",
    "theatre",
    "college",
    "village",
    "empire",
    "senate",
    "desert",
    "prize",
    "singer",
]
NAMES = [
    "Anna",
    "Boris",
    "Carla",
    "Dmitri",
    "Elena",
    "Farid",
    "Greta",
    "Hugo",
    "Ines",
    "Jonas",
    "Kira",
    "Luca",
    "Mara",
    "Nils",
    "Olga",
]


def synth_corpus(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            a, b, c = rng.sample(WORDS, 3)
            name = rng.choice(NAMES)
            year = rng.randint(1500, 2020)
            title = f"{name} {a} {i}"
            text = (
                f"The {a} of {name} was built in {year} near the {b}. It is known for its {c} "
                f"and for the {rng.choice(WORDS)} held there every {rng.randint(2, 9)} years."
            )
            fh.write(
                json.dumps({"id": str(i), "contents": f'"{title}"\n{text}'}) + "\n"
            )


def synth_queries(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [
        f"when was the {rng.choice(WORDS)} of {rng.choice(NAMES)} built near the "
        f"{rng.choice(WORDS)}"
        for _ in range(n)
    ]


def build(work: Path, n: int, n_real: int, seed: int) -> tuple[Path, Path]:
    from calibadv.retrieval.corpus import Corpus
    from calibadv.retrieval.encoder import Encoder
    from calibadv.retrieval.index import merge_shards

    work.mkdir(parents=True, exist_ok=True)
    corpus = work / f"corpus-{n}-{seed}.jsonl"
    index = work / f"index-{n}-{n_real}-{seed}.faiss"
    if not corpus.is_file():
        synth_corpus(corpus, n, seed)
    if index.is_file():
        return corpus, index
    real = work / f"real-{n_real}-{seed}.npy"
    if not real.is_file():
        enc = Encoder("bundled:minilm", device="cpu", batch_size=128)
        c = Corpus(corpus)
        t = time.perf_counter()
        emb = enc.encode_passages(c.contents_range(0, min(n_real, n)))
        print(
            f"encoded {len(emb)} passages with MiniLM in {time.perf_counter() - t:.0f} s",
            file=sys.stderr,
        )
        np.save(real, emb)
    emb = np.load(real)
    rng = np.random.default_rng(seed)
    rest = n - len(emb)
    i, j = rng.integers(0, len(emb), rest), rng.integers(0, len(emb), rest)
    w = rng.uniform(0.2, 0.8, (rest, 1)).astype(np.float32)
    mix = (
        w * emb[i]
        + (1 - w) * emb[j]
        + 0.05 * rng.standard_normal((rest, emb.shape[1]), dtype=np.float32)
    )
    mix /= np.linalg.norm(mix, axis=1, keepdims=True)
    allemb = np.concatenate([emb, mix.astype(np.float32)])
    shard = work / f"emb-{n}-{n_real}-{seed}.npy"
    np.save(shard, allemb)
    merge_shards([shard], index)
    shard.unlink()
    return corpus, index


async def drive(
    url: str, clients: int, seconds: float, queries: list[str]
) -> dict[str, float]:
    """Closed loop: each client sends its next request as soon as the previous one returns.

    The load generator uses aiohttp: httpx's connection pool tops out at ~40 requests/s with
    64 concurrent connections on this machine (even on GET /health), which would measure the
    client instead of the server.
    """
    import aiohttp

    lat: list[float] = []
    stop = 0.0
    errors = 0

    async def one(cid: int, session: aiohttp.ClientSession) -> None:
        nonlocal errors
        k = cid
        while time.perf_counter() < stop:
            q = queries[k % len(queries)]
            k += clients
            t = time.perf_counter()
            async with session.post(
                url + "/retrieve",
                json={"queries": [q], "topk": 3, "return_scores": True},
            ) as r:
                body = await r.json()
                if r.status != 200 or len(body["result"][0]) != 3:
                    errors += 1
            lat.append(time.perf_counter() - t)

    conn = aiohttp.TCPConnector(limit=clients + 8)
    async with aiohttp.ClientSession(
        connector=conn, timeout=aiohttp.ClientTimeout(total=300)
    ) as session:
        for q in queries[:4]:  # warm up
            async with session.post(
                url + "/retrieve", json={"queries": [q], "topk": 3}
            ) as r:
                await r.read()
        t0 = time.perf_counter()
        stop = t0 + seconds
        await asyncio.gather(*(one(c, session) for c in range(clients)))
        wall = time.perf_counter() - t0
    arr = np.array(lat) * 1000
    return {
        "qps": len(lat) / wall,
        "p50_ms": float(np.percentile(arr, 50)),
        "p99_ms": float(np.percentile(arr, 99)),
        "requests": len(lat),
        "errors": errors,
    }


async def one_post(url: str, queries: list[str], answers: list | None = None) -> dict[str, float]:
    """One request of all ``queries`` (a paper turn: Search-R1 sends a turn in one POST);
    the answer's passages (ids, in rank order) go to ``answers`` when given."""
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3600)) as session:
        t = time.perf_counter()
        async with session.post(
            url + "/retrieve", json={"queries": queries, "topk": 3, "return_scores": True}
        ) as r:
            body = await r.json()
        wall = time.perf_counter() - t
    assert r.status == 200 and len(body["result"]) == len(queries), r.status
    if answers is not None:
        answers[:] = [[str(hit["document"]["id"]) for hit in hits] for hits in body["result"]]
    return {"qps": len(queries) / wall, "wall_s": wall}


def server_pid(url: str) -> int:
    """The pid of the child process listening on ``url``'s port (to read its CPU time)."""
    import psutil

    port = int(url.rsplit(":", 1)[1])
    for child in psutil.Process().children(recursive=True):
        try:
            conns = child.net_connections(kind="tcp")
        except psutil.Error:
            continue
        if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in conns):
            return child.pid
    raise RuntimeError(f"no child process listens on {url}")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads."""
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def measured(pid: int, work: Any) -> dict[str, float]:
    """Run ``work`` (a coroutine) and add the server's CPU milliseconds per query to its result:
    the number that load on the machine moves least (wall q/s measures the scheduler too)."""
    before = cpu_s(pid)
    row = asyncio.run(work)
    n = row.get("requests") or row["qps"] * row["wall_s"]
    row["cpu_ms_per_q"] = (cpu_s(pid) - before) * 1000 / n
    return row


def agreement(a: list[list[str]], b: list[list[str]]) -> dict[str, float]:
    """Shares of queries whose top-k lists are identical (order included) and whose top-1 is."""
    same = sum(x == y for x, y in zip(a, b, strict=True))
    top1 = sum(x[:1] == y[:1] for x, y in zip(a, b, strict=True))
    return {"lists": same / len(a), "top1": top1 / len(a)}


async def many_clients(
    url: str, clients: int, per_client: int, queries: list[str]
) -> dict[str, float]:
    """``clients`` concurrent clients, each sending ``per_client`` single-query requests one
    after the other (verl's search tool: one request per rollout's tool call)."""
    import aiohttp

    lat: list[float] = []

    async def one(cid: int, session: aiohttp.ClientSession) -> None:
        for i in range(per_client):
            q = queries[(cid * per_client + i) % len(queries)]
            t = time.perf_counter()
            async with session.post(
                url + "/retrieve", json={"queries": [q], "topk": 3, "return_scores": True}
            ) as r:
                await r.read()
                assert r.status == 200, r.status
            lat.append(time.perf_counter() - t)

    conn = aiohttp.TCPConnector(limit=clients + 8)
    async with aiohttp.ClientSession(
        connector=conn, timeout=aiohttp.ClientTimeout(total=3600)
    ) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(one(c, session) for c in range(clients)))
        wall = time.perf_counter() - t0
    arr = np.array(lat) * 1000
    return {"qps": len(lat) / wall, "wall_s": wall,
            "p50_ms": float(np.percentile(arr, 50)), "p99_ms": float(np.percentile(arr, 99))}  # fmt: skip


async def fairness(url: str, big: list[str], queries: list[str]) -> dict[str, float]:
    """A single-query client's latency while one request of ``big`` queries runs."""
    import aiohttp

    lat: list[float] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3600)) as session:
        big_task = asyncio.ensure_future(one_post(url, big))
        await asyncio.sleep(0.2)  # the big request is in the engine first
        k = 0
        while not big_task.done():
            t = time.perf_counter()
            async with session.post(
                url + "/retrieve", json={"queries": [queries[k % len(queries)]], "topk": 3}
            ) as r:
                await r.read()
            lat.append(time.perf_counter() - t)
            k += 1
        big_r = await big_task
    arr = np.array(lat) * 1000
    return {"big_qps": big_r["qps"], "requests": len(lat),
            "p50_ms": float(np.percentile(arr, 50)), "p99_ms": float(np.percentile(arr, 99)),
            "max_ms": float(arr.max())}  # fmt: skip


@contextmanager
def search_r1_server(args: argparse.Namespace, corpus: Path, index: Path) -> Iterator[str]:
    """Search-R1's own server (``--search-r1 FILE``) on the same index, corpus, model weights
    and thread count, through ``benchmarks/search_r1_server.py``."""
    import socket
    import subprocess

    import httpx

    from calibadv.retrieval.encoder import resolve_model_path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, str(Path(__file__).with_name("search_r1_server.py")), args.search_r1,
           "--index", str(index), "--corpus", str(corpus), "--port", str(port),
           "--model", resolve_model_path("bundled:minilm"), "--threads", str(args.threads or 1)]
    # OMP_NUM_THREADS: its FastAPI endpoint searches in a worker thread, where FAISS ignores
    # the omp_set_num_threads of the thread that loaded the index (FAISS's count is per
    # thread); the environment holds in every thread, so both servers get the same budget
    threads = str(args.threads or 1)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    proc = subprocess.Popen(cmd, env=env)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 900
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Search-R1's server did not start: {' '.join(cmd)}")
            try:
                # Search-R1 answers 500 to return_scores false (its endpoint unpacks two values
                # from a one-value return), so the probe asks for scores
                httpx.post(url + "/retrieve", json={"queries": ["x"], "topk": 3,
                                                    "return_scores": True}, timeout=60)
                break
            except httpx.HTTPError:
                time.sleep(1)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def targets(args: argparse.Namespace, corpus: Path, index: Path) -> int:
    """Issue 30's targets, rounds alternating between servers: one 2,560-query POST to each
    server (ours at fp32 and at bf16, Search-R1's), 128 single-query clients sending the same
    queries, and a single client's p99 beside a 4,096-query POST."""
    from calibadv.retrieval.launch import serve_in_background

    queries = synth_queries(4096, args.seed + 1)
    turn = queries[:2560]
    extra = ["--device", "cpu", "--threads", str(args.threads or 1), "--max-batch",
             str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms),
             "--chunk-queries", str(args.chunk_queries)]  # fmt: skip
    rows: dict[str, list[dict[str, float]]] = {
        k: [] for k in ("post", "clients", "fair", "post_bf16", "clients_bf16", "sr1")
    }
    answers: dict[str, list] = {"fp32": [], "bf16": [], "sr1": []}
    with ExitStack() as stack:
        url = stack.enter_context(serve_in_background(
            corpus, index, "bundled:minilm", extra_args=extra, startup_timeout=900))
        bf16 = stack.enter_context(serve_in_background(
            corpus, index, "bundled:minilm", extra_args=[*extra, "--precision", "bf16"],
            startup_timeout=900))
        sr1 = stack.enter_context(search_r1_server(args, corpus, index)) if args.search_r1 else None
        pids = {u: server_pid(u) for u in (url, bf16, sr1) if u}
        for u in (url, bf16):
            asyncio.run(many_clients(u, 8, 2, queries))  # warm up
        for rnd in range(args.rounds):
            if sr1:
                rows["sr1"].append(measured(pids[sr1], one_post(sr1, turn, answers["sr1"])))
            rows["post"].append(measured(pids[url], one_post(url, turn, answers["fp32"])))
            rows["post_bf16"].append(measured(pids[bf16], one_post(bf16, turn, answers["bf16"])))
            rows["clients"].append(measured(pids[url], many_clients(url, 128, 20, turn)))
            rows["clients_bf16"].append(measured(pids[bf16], many_clients(bf16, 128, 20, turn)))
            rows["fair"].append(asyncio.run(fairness(url, queries, queries[2560:])))
            print(f"round {rnd}: " + " ".join(f"{k}={v[-1]}" for k, v in rows.items() if v),
                  file=sys.stderr)  # fmt: skip
        load = os.getloadavg()
    med = {k: {f: float(np.median([r[f] for r in v])) for f in v[0]} for k, v in rows.items() if v}
    agree = {"bf16 vs fp32": agreement(answers["bf16"], answers["fp32"])}
    if sr1:
        agree["fp32 vs Search-R1"] = agreement(answers["fp32"], answers["sr1"])
    print_targets(args, med, agree, load)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"args": vars(args), "rounds": rows, "agreement": agree, "load": load}, indent=2))
    return 0


def print_targets(args: argparse.Namespace, med: dict[str, dict[str, float]],
                  agree: dict[str, dict[str, float]], load: tuple[float, ...]) -> None:
    """The targets table (markdown) of :func:`targets`' medians."""
    p, f = med["post"], med["fair"]
    print(f"\nretrieval server targets, {args.passages} passages (MiniLM 384-d, IndexFlatIP), "
          f"--threads {args.threads or 1} --max-batch {args.max_batch} --chunk-queries "
          f"{args.chunk_queries}, medians of {args.rounds} alternating rounds, load average "
          f"at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} CPUs\n")
    print("| workload | q/s | server CPU ms/query | p50 ms | p99 ms | ratio |")
    print("|---|---:|---:|---:|---:|---|")

    def row(label: str, r: dict[str, float], ratio: str) -> None:
        lat = (f"{r['p50_ms']:.0f} | {r['p99_ms']:.0f}" if "p50_ms" in r else " | ")
        print(f"| {label} | {r['qps']:.1f} | {r['cpu_ms_per_q']:.2f} | {lat} | {ratio} |")

    sr = med.get("sr1")
    for tag, label in (("", "fp32 (default)"), ("_bf16", "bf16 (--precision bf16)")):
        post, clients = med["post" + tag], med["clients" + tag]
        vs = (f"1 (Search-R1 x{post['qps'] / sr['qps']:.2f} in q/s, "
              f"x{sr['cpu_ms_per_q'] / post['cpu_ms_per_q']:.2f} in CPU; target >= 1.3x)"
              if sr else "1")  # fmt: skip
        row(f"ours {label}, one POST of 2,560 queries", post, vs)
        row(f"ours {label}, 128 clients x 20 single-query requests", clients,
            f"**{clients['qps'] / post['qps']:.2f}x** of its POST (target >= 0.9x)")
    if sr:
        row("Search-R1's server, one POST of 2,560 queries", sr, "")
    print(f"| ours fp32, 1 client beside one POST of 4,096 queries ({f['big_qps']:.1f} q/s, "
          f"{f['requests']:.0f} small requests) | | | {f['p50_ms']:.0f} | **{f['p99_ms']:.0f}** "
          f"(target < 1000) | |")
    for name, a in agree.items():
        print(f"\nanswers, {name}: identical top-3 lists {100 * a['lists']:.1f}%, "
              f"identical top-1 {100 * a['top1']:.1f}%")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--passages", type=int, default=100_000)
    ap.add_argument(
        "--real", type=int, default=2000, help="passages encoded by the real model"
    )
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--seconds", type=float, default=10.0, help="per concurrency level")
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument(
        "--threads", type=int, default=None, help="server torch/FAISS threads"
    )
    ap.add_argument("--chunk-queries", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3, help="--part targets: alternating rounds")
    ap.add_argument("--part", choices=["batching", "targets"], default="batching",
                    help="batching: on vs off by concurrency; targets: issue 30's three")
    ap.add_argument("--search-r1", default=None, metavar="FILE",
                    help="--part targets: Search-R1's search_r1/search/retrieval_server.py, "
                    "measured beside ours")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work-dir", default="results/bench/retrieval")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    args = ap.parse_args()
    os.environ.setdefault("CALIBADV_NO_PROGRESS", "1")

    import httpx

    from calibadv.retrieval.launch import serve_in_background

    corpus, index = build(Path(args.work_dir), args.passages, args.real, args.seed)
    if args.part == "targets":
        return targets(args, corpus, index)
    queries = synth_queries(4096, args.seed + 1)
    common = ["--device", "cpu"] + (
        ["--threads", str(args.threads)] if args.threads else []
    )
    modes = {
        "batching": [
            "--max-wait-ms",
            str(args.max_wait_ms),
            "--max-batch",
            str(args.max_batch),
        ],
        "no-batching": ["--no-batching"],
    }
    results: dict[str, dict[int, dict[str, float]]] = {mode: {} for mode in modes}
    with ExitStack() as stack:
        urls = {
            mode: stack.enter_context(serve_in_background(
                corpus, index, "bundled:minilm", extra_args=[*extra, *common],
                startup_timeout=900))
            for mode, extra in modes.items()
        }  # fmt: skip
        # both servers are up for the whole run and levels alternate between them, so load
        # from anything else on the machine hits both modes alike
        for c in args.clients:
            for mode, url in urls.items():
                before = httpx.get(url + "/health").json()["batches"]
                r = results[mode][c] = asyncio.run(drive(url, c, args.seconds, queries))
                if (
                    before is not None
                ):  # mean queries per engine call (warm-up included)
                    r["mean_batch"] = (r["requests"] + 4) / (
                        httpx.get(url + "/health").json()["batches"] - before
                    )
                print(
                    f"{mode:12s} clients={c:3d} qps={r['qps']:7.1f} p50={r['p50_ms']:7.1f} ms "
                    f"p99={r['p99_ms']:7.1f} ms n={r['requests']} errors={r['errors']} "
                    f"mean_batch={r.get('mean_batch', 1):.1f}",
                    file=sys.stderr,
                )
        load = os.getloadavg()

    print(
        f"\nretrieval server, {args.passages} passages (MiniLM 384-d, FAISS IndexFlatIP), "
        f"CPU threads={os.cpu_count()}, {args.seconds:.0f} s per level, 1 query/request, topk=3, "
        f"load average at the end {load[0]:.1f}\n"
    )
    print(
        "| clients | batching q/s | p50 ms | p99 ms | no batching q/s | p50 ms | p99 ms | ratio |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in args.clients:
        b, n = results["batching"][c], results["no-batching"][c]
        print(
            f"| {c} | {b['qps']:.1f} | {b['p50_ms']:.1f} | {b['p99_ms']:.1f} | {n['qps']:.1f} | "
            f"{n['p50_ms']:.1f} | {n['p99_ms']:.1f} | {b['qps'] / n['qps']:.2f}x |"
        )
    top = max(args.clients)
    ratio = results["batching"][top]["qps"] / results["no-batching"][top]["qps"]
    print(
        f"\nthroughput ratio at {top} clients (batching / no batching): {ratio:.2f}x (target >= 3x)"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"args": vars(args), "results": results}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
