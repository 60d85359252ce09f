"""The HTTP server: exact top-k, Search-R1's wire format, limits, concurrency, /health."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import numpy as np
import pytest

from calibadv.retrieval.client import AsyncRetrievalClient, RetrievalClient
from calibadv.retrieval.server import ServerConfig, create_app

from .conftest import QUERIES, app_server


def brute_force(
    encoder: Any, embeddings: np.ndarray, rows: list[dict], query: str, k: int
):
    q = encoder.encode_queries([query])[0]
    scores = embeddings @ q
    order = np.argsort(-scores, kind="stable")[:k]
    return [rows[i]["id"] for i in order], scores[order]


@pytest.mark.parametrize("k", [1, 3, 10])
def test_topk_equals_brute_force(server_url, encoder, embeddings, rows, k):
    got = RetrievalClient(server_url).search(QUERIES, topk=k)
    assert len(got) == len(QUERIES)
    for query, hits in zip(QUERIES, got):
        ids, scores = brute_force(encoder, embeddings, rows, query, k)
        assert [h.id for h in hits] == ids
        np.testing.assert_allclose(
            [h.score for h in hits], scores, rtol=1e-4, atol=1e-5
        )


def test_unbatched_server_gives_the_same_answers(server_url, unbatched_url):
    a = RetrievalClient(server_url).search(QUERIES, topk=5)
    b = RetrievalClient(unbatched_url).search(QUERIES, topk=5)
    assert [[p.id for p in hits] for hits in a] == [[p.id for p in hits] for hits in b]


def test_wire_format_follows_search_r1(server_url, rows):
    by_id = {r["id"]: r["contents"] for r in rows}
    with_scores = httpx.post(
        server_url + "/retrieve",
        json={"queries": ["Tokyo", "Lima"], "topk": 2, "return_scores": True},
    )
    assert with_scores.status_code == 200
    result = with_scores.json()["result"]
    assert len(result) == 2 and all(len(r) == 2 for r in result)
    item = result[0][0]
    assert set(item) == {"document", "score"}
    assert set(item["document"]) == {"id", "contents"}
    assert item["document"]["contents"] == by_id[item["document"]["id"]]
    # Search-R1's server returns bare documents when scores are not asked for
    bare = httpx.post(
        server_url + "/retrieve", json={"queries": ["Tokyo"], "topk": 2}
    ).json()
    assert [d["id"] for d in bare["result"][0]] == [
        r["document"]["id"] for r in result[0]
    ]
    assert set(bare["result"][0][0]) == {"id", "contents"}


def test_default_topk_is_three(server_url):
    body = httpx.post(server_url + "/retrieve", json={"queries": ["Oslo"]}).json()
    assert len(body["result"][0]) == 3


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"queries": "Tokyo"}, 422, "list of strings"),
        ({"queries": ["ok", 3]}, 422, "queries[1]"),
        ({"queries": ["ok", None]}, 422, "queries[1]"),
        ({"queries": ["x" * 201]}, 422, "characters"),
        ({"queries": ["q"] * 17}, 422, "at most 16"),
        ({"queries": ["q"], "topk": 0}, 422, "'topk'"),
        ({"queries": ["q"], "topk": 21}, 422, "'topk'"),
        ({"queries": ["q"], "topk": "3"}, 422, "integer"),
        ({"queries": ["q"], "topk": True}, 422, "integer"),
        ({"queries": ["q"], "topk": 2.5}, 422, "integer"),
        ({"queries": ["q"], "return_scores": "yes"}, 422, "return_scores"),
        ({"queries": ["q"], "topk_rerank": 2}, 400, "--reranker"),
        ({"topk": 3}, 422, "'queries'"),
        ([1, 2], 400, "JSON object"),
    ],
)
def test_bad_requests_get_a_clear_4xx(server_url, body, status, needle):
    resp = httpx.post(server_url + "/retrieve", json=body)
    assert resp.status_code == status, resp.text
    assert needle in resp.json()["detail"]


def test_topk_larger_than_the_corpus_is_rejected(unbatched_url, rows):
    resp = httpx.post(
        unbatched_url + "/retrieve", json={"queries": ["q"], "topk": len(rows) + 1}
    )
    assert resp.status_code == 422
    ok = httpx.post(
        unbatched_url + "/retrieve", json={"queries": ["q"], "topk": len(rows)}
    )
    assert len(ok.json()["result"][0]) == len(rows)


@pytest.mark.parametrize(
    ("content", "status"),
    [(b"{not json", 400), (b"\xff\xfe\x00", 400), (b"", 400), (b"x" * 5000, 413)],
)
def test_malformed_and_oversized_bodies(server_url, content, status):
    resp = httpx.post(
        server_url + "/retrieve",
        content=content,
        headers={"content-type": "application/json"},
    )
    assert resp.status_code == status
    assert resp.json()["detail"]


def test_oversized_chunked_body_is_cut_off(server_url):
    def chunks():
        for _ in range(10):
            yield b"x" * 1000

    resp = httpx.post(server_url + "/retrieve", content=chunks())
    assert resp.status_code == 413


def test_server_survives_every_bad_request(server_url):
    for content in [
        b"null",
        b"[]",
        b'{"queries": [{}]}',
        b'{"queries": [["a"]]}',
        b"1e999",
    ]:
        assert httpx.post(server_url + "/retrieve", content=content).status_code in (
            400,
            422,
        )
    assert httpx.get(server_url + "/health").status_code == 200
    assert RetrievalClient(server_url).search(["Tokyo"], topk=1)[0]


def test_64_concurrent_clients_all_get_their_own_answers(
    server_url, encoder, embeddings, rows
):
    queries = [f"{q} {i}" for i in range(8) for q in QUERIES]  # 64 distinct queries
    expected = {q: brute_force(encoder, embeddings, rows, q, 3)[0] for q in queries}
    before = httpx.get(server_url + "/health").json()["batches"]

    async def main() -> list[list[str]]:
        clients = [AsyncRetrievalClient(server_url) for _ in queries]
        try:
            res = await asyncio.gather(
                *(c.search([q], topk=3) for c, q in zip(clients, queries))
            )
        finally:
            await asyncio.gather(*(c.aclose() for c in clients))
        return [[p.id for p in r[0]] for r in res]

    got = asyncio.run(main())
    assert got == [expected[q] for q in queries]
    batches = httpx.get(server_url + "/health").json()["batches"] - before
    assert batches < len(queries)  # concurrent requests were merged


def test_health_is_503_until_loaded_then_200(engine):
    gate = threading.Event()

    def slow_load():
        gate.wait(30)
        return engine

    with app_server(create_app(slow_load, ServerConfig())) as url:
        resp = httpx.get(url + "/health")
        assert resp.status_code == 503 and resp.json()["status"] == "loading"
        early = httpx.post(url + "/retrieve", json={"queries": ["Tokyo"]})
        assert early.status_code == 503
        gate.set()
        from .conftest import wait_healthy

        wait_healthy(url)
        body = httpx.get(url + "/health").json()
        assert body["status"] == "ok" and body["passages"] == engine.size
        assert (
            httpx.post(url + "/retrieve", json={"queries": ["Tokyo"]}).status_code
            == 200
        )


def test_failed_load_is_reported_on_health(tmp_path):
    def broken():
        raise FileNotFoundError("index.faiss is missing")

    seen: list[BaseException] = []
    with app_server(
        create_app(broken, ServerConfig(), on_load_error=seen.append)
    ) as url:
        import time

        for _ in range(500):
            if seen:
                break
            time.sleep(0.01)
        resp = httpx.get(url + "/health")
        assert resp.status_code == 503
        assert resp.json()["status"] == "failed"
        assert "index.faiss is missing" in resp.json()["error"]


def test_engine_failure_is_a_500_and_the_server_lives_on(engine):
    class Flaky:
        def __init__(self) -> None:
            self.fail = True
            self.size = engine.size
            self.reranker = None
            self.encoder = engine.encoder

        def run(self, jobs):
            if self.fail:
                self.fail = False
                raise RuntimeError("boom")
            return engine.run(jobs)

    with app_server(create_app(Flaky, ServerConfig())) as url:
        from .conftest import wait_healthy

        wait_healthy(url)
        bad = httpx.post(url + "/retrieve", json={"queries": ["Tokyo"]})
        assert bad.status_code == 500 and "boom" in bad.json()["detail"]
        assert (
            httpx.post(url + "/retrieve", json={"queries": ["Tokyo"]}).status_code
            == 200
        )
