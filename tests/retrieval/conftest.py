"""Shared fixtures: a small real corpus, the real MiniLM encoder, a real FAISS index, a
cross-encoder built locally from MiniLM, and real uvicorn servers on 127.0.0.1."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CALIBADV_NO_PROGRESS", "1")

CITIES = ["Paris", "Berlin", "Tokyo", "Cairo", "Lima", "Oslo", "Nairobi", "Hanoi"]
SUBJECTS = [
    ("river", "The {c} river floods every spring and feeds the farms around it."),
    ("museum", "The {c} museum of art holds paintings from the seventeenth century."),
    ("football", "The {c} football club won the national league three times."),
    ("cuisine", "Food in {c} is known for spicy soups, grilled fish and sweet bread."),
    ("climate", "{c} has a climate with cold winters and heavy rain in autumn."),
    ("university", "The university of {c} was founded by monks and teaches medicine."),
    ("airport", "The main airport of {c} handles forty million passengers a year."),
]
QUERIES = [
    "Which football club won the league?",
    "spicy soups and grilled fish",
    "university founded by monks",
    "rain in autumn and cold winters",
    "paintings from the seventeenth century",
    "airport passengers per year",
    "river floods in spring",
    "Tokyo",
]


def make_rows() -> list[dict[str, str]]:
    rows = []
    for i, (c, (subj, tmpl)) in enumerate((c, s) for c in CITIES for s in SUBJECTS):
        rows.append({"id": f"doc-{i}", "contents": f'"{c} {subj}"\n{tmpl.format(c=c)}'})
    return rows  # 56 passages, ids that are not row numbers


def write_corpus(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def rows() -> list[dict[str, str]]:
    return make_rows()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("retrieval")


@pytest.fixture(scope="session")
def corpus_path(data_dir: Path, rows: list[dict[str, str]]) -> Path:
    return write_corpus(data_dir / "corpus.jsonl", rows)


@pytest.fixture(scope="session")
def encoder() -> Any:
    from calibadv.retrieval.encoder import Encoder

    return Encoder("bundled:minilm", device="cpu")


@pytest.fixture(scope="session")
def index_path(data_dir: Path, corpus_path: Path, encoder: Any) -> Path:
    from calibadv.retrieval.corpus import Corpus
    from calibadv.retrieval.index import encode_shard, merge_shards

    corpus = Corpus(corpus_path)
    shards = [
        encode_shard(corpus, encoder, i, 2, data_dir / f"emb-{i}.npy", chunk_size=16)
        for i in range(2)
    ]
    return merge_shards(shards, data_dir / "index.faiss")


@pytest.fixture(scope="session")
def embeddings(data_dir: Path, index_path: Path) -> Any:
    import numpy as np

    return np.concatenate([np.load(data_dir / f"emb-{i}.npy") for i in range(2)])


@pytest.fixture(scope="session")
def cross_encoder_dir(data_dir: Path) -> str:
    """MiniLM weights with a fresh 1-label head: a real CrossEncoder, saved and reloaded."""
    import torch
    from sentence_transformers import CrossEncoder

    from calibadv.retrieval.encoder import resolve_model_path

    torch.manual_seed(0)
    model = CrossEncoder(
        resolve_model_path("bundled:minilm"), num_labels=1, device="cpu"
    )
    out = data_dir / "cross-encoder"
    model.save(str(out))
    return str(out)


@pytest.fixture(scope="session")
def engine(corpus_path: Path, index_path: Path, encoder: Any) -> Any:
    from calibadv.retrieval.corpus import Corpus
    from calibadv.retrieval.engine import SearchEngine
    from calibadv.retrieval.index import load_index

    return SearchEngine(Corpus(corpus_path), load_index(index_path), encoder)


@contextmanager
def app_server(app: Any, cfg: Any = None) -> Iterator[str]:
    """Run the app under the server's own uvicorn set-up (:func:`uvicorn_server`: timeouts,
    connection limit) on a free loopback port, in a thread; ``cfg`` as given to the app."""
    from calibadv.retrieval.server import ServerConfig, bind_socket, uvicorn_server

    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn_server(app, cfg or ServerConfig(), log_level="warning")
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def wait_healthy(url: str, timeout: float = 30.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(url + "/health").status_code == 200:
            return
        time.sleep(0.02)
    raise RuntimeError(f"{url} never became healthy")


@pytest.fixture(scope="session")
def server_url(engine: Any) -> Iterator[str]:
    """The real app (batching on) serving the session engine."""
    from calibadv.retrieval.server import ServerConfig, create_app

    cfg = ServerConfig(
        max_queries=16,
        max_topk=20,
        max_query_chars=200,
        max_body_bytes=4096,
        max_wait_ms=20.0,
    )
    with app_server(create_app(lambda: engine, cfg), cfg) as url:
        wait_healthy(url)
        yield url


@pytest.fixture(scope="session")
def unbatched_url(engine: Any) -> Iterator[str]:
    from calibadv.retrieval.server import ServerConfig, create_app

    with app_server(create_app(lambda: engine, ServerConfig(batching=False))) as url:
        wait_healthy(url)
        yield url


@pytest.fixture(scope="session")
def rerank_url(
    corpus_path: Path, index_path: Path, cross_encoder_dir: str
) -> Iterator[str]:
    """A real `calibadv serve` subprocess with a reranker, started by the launcher."""
    from calibadv.retrieval.launch import serve_in_background

    with serve_in_background(
        corpus_path, index_path, "bundled:minilm", cross_encoder_dir,
        extra_args=["--retrieval-topk", "10", "--rerank-topk", "3", "--device", "cpu"],
        startup_timeout=300, env={"HF_HUB_OFFLINE": "1"},
    ) as url:  # fmt: skip
        yield url
