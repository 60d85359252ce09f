"""How a retrieval server is configured: its limits and batching knobs, the ``serve`` flags,
and the mapping from those flags to an engine loader and a :class:`ServerConfig`.

Both ways of running the server use this one mapping: ``calibadv serve`` (a process of its
own) and ``retrieval.server: thread`` (:func:`calibadv.retrieval.launch.serve_in_thread`), so
the same flags give the same server either way. It lives in the library, not in the CLI,
because the thread launcher needs it and library code never imports the CLI.

No heavy imports: the CLI reads the defaults for ``serve --help`` without loading FastAPI,
torch or FAISS (the engine is imported only when a loader is built).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

from calibadv.errors import CalibAdvError
from calibadv.retrieval.precision import PRECISIONS

if TYPE_CHECKING:
    from calibadv.retrieval.engine import SearchEngine


@dataclass(frozen=True)
class ServerConfig:
    default_topk: int = 3
    max_topk: int = 100
    retrieval_topk: int = 20  # candidates per query for the cross-encoder
    rerank_topk: int = 3  # results per query after reranking
    # Sized for one paper turn in one request: 512 prompts x 5 rollouts = 2,560 queries (Search-R1
    # sends every active rollout's query of a turn in one POST), with headroom for bigger groups.
    max_queries: int = 4096
    max_query_chars: int = 4096
    # 2,560 queries of 4,096 characters are 10.5 MB of plain ASCII JSON and up to 63 MB when
    # every character arrives \u-escaped (requests/json.dumps escape all non-ASCII by default).
    max_body_bytes: int = 64 << 20
    # Work per request (issue 30): a 20 KB body of 4,096 queries x topk 100 asked for 85 MB of
    # passages, and 4,096 queries of 4,096 characters kept the engine busy for minutes. A paper
    # turn (2,560 queries x topk 3, short queries) is far inside all three.
    max_results: int = 65_536  # queries x topk (topk_retrieval with a reranker)
    max_total_query_chars: int = 1 << 20  # characters of all queries of one request
    max_answer_bytes: int = 64 << 20  # the rendered JSON answer
    batching: bool = True
    max_batch: int = 64  # queries per merged batch
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for company
    # A request of more queries runs as chunks of this many, one chunk per engine call, taking
    # turns with other requests: a small client waits for at most about one chunk, and a
    # shutdown for at most one chunk.
    chunk_queries: int = 64
    # Connections: a client must send its request head within header_timeout_s of connecting
    # (or of its previous answer) and its body within body_timeout_s; beyond max_connections
    # open connections new requests get 503 (uvicorn's limit_concurrency).
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    max_connections: int = 1024
    # After SIGTERM: new and queued requests get 503 at once, the running chunk finishes; open
    # requests are cancelled after this many seconds.
    shutdown_timeout_s: float = 10.0


@dataclass(frozen=True)
class ServerOptions:
    """Everything a retrieval server is built from, except where it listens.

    The model/index half goes to :func:`calibadv.retrieval.engine.load_engine`; ``config``
    holds the request limits and batching knobs. ``threads=None`` means "the default of where
    the server runs" (see :func:`server_parts`).
    """

    corpus: str
    index: str
    encoder: str
    reranker: str | None = None
    device: str | None = None
    faiss_gpu: bool = False
    mmap_index: bool = False
    threads: int | None = None
    query_prefix: str | None = None
    precision: str = "auto"  # encoder precision: encoder.resolve_precision
    config: ServerConfig = field(default_factory=ServerConfig)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ServerOptions:
        """The options of parsed ``serve`` flags (see :func:`add_serve_arguments`): every
        :class:`ServerConfig` field comes from the flag of the same name, or of the name in
        :data:`CONFIG_FLAG_DEST`, so a new knob needs a field and a flag, not a third line."""
        values = {
            f.name: getattr(args, CONFIG_FLAG_DEST.get(f.name, f.name))
            for f in fields(ServerConfig)
            if f.name != "batching"
        }
        return cls(
            corpus=args.corpus, index=args.index, encoder=args.encoder, reranker=args.reranker,
            device=args.device, faiss_gpu=args.faiss_gpu, mmap_index=args.mmap_index,
            threads=args.threads, query_prefix=args.query_prefix, precision=args.precision,
            config=ServerConfig(**values, batching=not args.no_batching),
        )  # fmt: skip


#: ServerConfig fields whose ``serve`` flag has another name (the flag's argparse dest);
#: ``batching`` is the negation of ``--no-batching``.
CONFIG_FLAG_DEST = {
    "default_topk": "topk",
    "header_timeout_s": "header_timeout",
    "body_timeout_s": "body_timeout",
    "shutdown_timeout_s": "shutdown_timeout",
}


def server_parts(
    options: ServerOptions, own_process: bool = True
) -> tuple[Callable[[], SearchEngine], ServerConfig]:
    """(engine loader, ServerConfig) of ``options``: one mapping for both the ``serve``
    subprocess and the in-process server of ``retrieval.server: thread``.

    Thread counts are per process: a server of its own gets :func:`server_threads` unless
    ``threads`` says otherwise; a server in a thread of a job (``own_process=False``) leaves
    the job's thread count alone unless ``threads`` is given.
    """
    from functools import partial

    from calibadv.retrieval.encoder import server_threads
    from calibadv.retrieval.engine import load_engine

    o = options
    load = partial(
        load_engine, o.corpus, o.index, o.encoder, o.reranker,
        device=o.device, faiss_gpu=o.faiss_gpu, mmap_index=o.mmap_index,
        threads=o.threads or (server_threads() if own_process else None),
        query_prefix=o.query_prefix, precision=o.precision,
    )  # fmt: skip
    return load, o.config


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``serve`` flags to ``parser``: the CLI's ``serve`` command and the thread
    launcher parse the same flags, so a flag list means the same server in both modes."""
    parser.add_argument(
        "--corpus", required=True, help="corpus JSONL (row i = index vector i)"
    )
    parser.add_argument("--index", required=True, help="FAISS index file")
    parser.add_argument(
        "--encoder", required=True, help="query encoder (same as the index's)"
    )
    parser.add_argument(
        "--reranker", default=None, help="cross-encoder model: enables reranking"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default loopback)"
    )
    parser.add_argument("--port", type=int, default=8000, help="port (0 = any free port)")
    parser.add_argument(
        "--port-file", default=None, help="write the bound port to this file"
    )
    parser.add_argument(
        "--device", default=None, help="model device (default: GPU if any)"
    )
    parser.add_argument(
        "--faiss-gpu", action="store_true", help="put the index on GPUs (faiss-gpu)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch/FAISS (default: $OMP_NUM_THREADS, else a quarter of the "
        "CPUs this job may use, 1 to 4: the server shares its node; see docs/retrieval.md)",
    )
    parser.add_argument(
        "--mmap-index", action="store_true", help="memory-map the index file"
    )
    parser.add_argument(
        "--query-prefix", default=None, help="override the model's query prefix"
    )
    parser.add_argument(
        "--precision", choices=PRECISIONS, default="auto",
        help="encoder precision (default auto: fp16 on a GPU as Search-R1 serves it, fp32 on "
        "CPU: exact). bf16 on CPU is ~1.9x faster on CPUs with AVX-512 BF16 and agrees with "
        "fp32 on ~99%% of top-3 results (docs/retrieval.md)",
    )  # fmt: skip
    d = ServerConfig()
    parser.add_argument("--topk", type=int, default=d.default_topk,
                        help="default results per query")
    parser.add_argument("--max-topk", type=int, default=d.max_topk, help="largest topk accepted")
    parser.add_argument("--retrieval-topk", type=int, default=d.retrieval_topk,
                        help="candidates for reranking")
    parser.add_argument("--rerank-topk", type=int, default=d.rerank_topk,
                        help="results after reranking")
    parser.add_argument("--max-queries", type=int, default=d.max_queries,
                        help="queries per request (default %(default)s: a paper turn of 512 "
                        "prompts x 5 rollouts is 2,560)")
    parser.add_argument("--max-query-chars", type=int, default=d.max_query_chars,
                        help="characters per query")
    parser.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes,
                        help="request body limit (default %(default)s = 64 MiB: 2,560 queries "
                        "of 4,096 \\u-escaped characters)")
    parser.add_argument("--max-results", type=int, default=d.max_results,
                        help="queries x topk per request (413 beyond)")
    parser.add_argument("--max-total-query-chars", type=int, default=d.max_total_query_chars,
                        help="characters of all queries of a request (413 beyond)")
    parser.add_argument("--max-answer-bytes", type=int, default=d.max_answer_bytes,
                        help="size of one JSON answer (413 beyond)")
    parser.add_argument("--chunk-queries", type=int, default=d.chunk_queries,
                        help="a bigger request runs in chunks of this many queries, taking "
                        "turns with other requests")
    parser.add_argument("--header-timeout", type=float, default=d.header_timeout_s,
                        help="seconds a connection has to send its request head")
    parser.add_argument("--body-timeout", type=float, default=d.body_timeout_s,
                        help="seconds a request has to send its body (408 beyond)")
    parser.add_argument("--max-connections", type=int, default=d.max_connections,
                        help="open connections before new requests get 503")
    parser.add_argument("--shutdown-timeout", type=float, default=d.shutdown_timeout_s,
                        help="seconds open requests get after SIGTERM")
    parser.add_argument("--no-batching", action="store_true",
                        help="one engine call per request")
    parser.add_argument("--max-batch", type=int, default=d.max_batch,
                        help="queries per merged batch")
    parser.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms,
                        help="batch collection window")


def parse_serve_flags(flags: Sequence[str]) -> argparse.Namespace:
    """Parse ``serve`` flags (without the command name) as ``calibadv serve`` would.

    Raises :class:`CalibAdvError` naming the flags when they are wrong (argparse has then
    already printed which one, with the usage, to stderr).
    """
    parser = argparse.ArgumentParser(prog="calibadv serve")
    add_serve_arguments(parser)
    try:
        return parser.parse_args(list(flags))
    except SystemExit as err:
        raise CalibAdvError(f"bad retrieval server flags: {' '.join(flags)}") from err
