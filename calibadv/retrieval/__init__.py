"""Dense retrieval for search agents: corpus, encoder, index build, HTTP server, client.

Importing this package is cheap (no torch/FAISS); the heavy parts load on first use of the
names below.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Corpus": "corpus",
    "Document": "corpus",
    "split_contents": "corpus",
    "join_contents": "corpus",
    "Encoder": "encoder",
    "EncoderConvention": "encoder",
    "resolve_model_path": "encoder",
    "encode_shard": "index",
    "merge_shards": "index",
    "load_index": "index",
    "shard_range": "index",
    "SearchEngine": "engine",
    "Reranker": "engine",
    "ServerConfig": "server",
    "create_app": "server",
    "Passage": "client",
    "RetrievalClient": "client",
    "AsyncRetrievalClient": "client",
    "RetrievalRequestError": "client",
    "RetrievalUnavailableError": "client",
    "format_passages": "client",
    "serve_in_background": "launch",
}

__all__ = [
    "AsyncRetrievalClient",
    "Corpus",
    "Document",
    "Encoder",
    "EncoderConvention",
    "Passage",
    "Reranker",
    "RetrievalClient",
    "RetrievalRequestError",
    "RetrievalUnavailableError",
    "SearchEngine",
    "ServerConfig",
    "create_app",
    "encode_shard",
    "format_passages",
    "join_contents",
    "load_index",
    "merge_shards",
    "resolve_model_path",
    "serve_in_background",
    "shard_range",
    "split_contents",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
