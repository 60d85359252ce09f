"""The retrieval server's limits and batching knobs (no heavy imports: the CLI reads the
defaults for ``serve --help`` without loading FastAPI)."""

from __future__ import annotations

from dataclasses import dataclass


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
    batching: bool = True
    max_batch: int = 64  # queries per merged batch
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for company
