"""The rerank path through a real `calibadv serve` subprocess started by the launcher."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from calibadv.errors import CalibAdvError
from calibadv.retrieval.client import RetrievalClient
from calibadv.retrieval.launch import serve_in_background

from .conftest import QUERIES


def expected_rerank(cross_encoder_dir, encoder, embeddings, rows, query, n_cand, k):
    from sentence_transformers import CrossEncoder

    from calibadv.retrieval.corpus import split_contents

    q = encoder.encode_queries([query])[0]
    cand = np.argsort(-(embeddings @ q), kind="stable")[:n_cand]
    ce = CrossEncoder(cross_encoder_dir, device="cpu")
    pairs = []
    for i in cand:
        title, text = split_contents(rows[i]["contents"])
        pairs.append((query, f"(Title: {title}) {text}"))
    scores = np.asarray(ce.predict(pairs), dtype=np.float32)
    order = np.argsort(-scores, kind="stable")[:k]
    return [rows[cand[j]]["id"] for j in order], scores[order]


def test_rerank_scores_each_query_against_its_own_candidates(
    rerank_url, cross_encoder_dir, encoder, embeddings, rows
):
    queries = QUERIES[:4]
    got = RetrievalClient(rerank_url).search(queries, topk=3)
    for query, hits in zip(queries, got):
        ids, scores = expected_rerank(
            cross_encoder_dir, encoder, embeddings, rows, query, 10, 3
        )
        assert [h.id for h in hits] == ids
        np.testing.assert_allclose(
            [h.score for h in hits], scores, rtol=1e-3, atol=1e-4
        )


def test_rerank_fields_of_search_r1(
    rerank_url, cross_encoder_dir, encoder, embeddings, rows
):
    body = {
        "queries": ["river floods in spring"],
        "topk_retrieval": 5,
        "topk_rerank": 2,
        "return_scores": True,
    }
    resp = httpx.post(rerank_url + "/retrieve", json=body)
    assert resp.status_code == 200
    hits = resp.json()["result"][0]
    ids, _ = expected_rerank(
        cross_encoder_dir, encoder, embeddings, rows, body["queries"][0], 5, 2
    )
    assert [h["document"]["id"] for h in hits] == ids


def test_rerank_topk_cannot_exceed_candidates(rerank_url):
    resp = httpx.post(
        rerank_url + "/retrieve",
        json={"queries": ["q"], "topk_retrieval": 2, "topk_rerank": 3},
    )
    assert resp.status_code == 422
    assert "topk_retrieval" in resp.json()["detail"]


def test_health_names_the_models(rerank_url, cross_encoder_dir):
    body = httpx.get(rerank_url + "/health").json()
    assert body["status"] == "ok"
    assert body["encoder"] == "bundled:minilm" and body["reranker"] == cross_encoder_dir


def test_launcher_reports_a_server_that_cannot_start(corpus_path, tmp_path):
    with (
        pytest.raises(CalibAdvError) as err,
        serve_in_background(
            corpus_path,
            tmp_path / "missing.faiss",
            "bundled:minilm",
            startup_timeout=300,
        ),
    ):
        pass
    message = str(err.value)
    assert "exited with code 1" in message
    assert "missing.faiss" in message  # the log tail names the bad file


@pytest.mark.slow
def test_launcher_stops_the_server(corpus_path, index_path):
    with serve_in_background(
        corpus_path,
        index_path,
        "bundled:minilm",
        extra_args=["--device", "cpu"],
        startup_timeout=300,
    ) as url:
        assert httpx.get(url + "/health").status_code == 200
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/health", timeout=2)


@pytest.mark.slow
def test_server_dies_with_a_killed_launcher(corpus_path, index_path, tmp_path):
    """A job killed with SIGKILL (no finally runs) must not leave its server behind."""
    import os
    import signal
    import subprocess
    import sys
    import time

    url_file = tmp_path / "url"
    script = (
        "import os, signal, sys\n"
        "from calibadv.retrieval.launch import serve_in_background\n"
        f"with serve_in_background({str(corpus_path)!r}, {str(index_path)!r}, 'bundled:minilm',"
        " extra_args=['--device', 'cpu'], startup_timeout=300) as url:\n"
        f"    open({str(url_file)!r}, 'w').write(url)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], timeout=400)
    assert proc.returncode == -signal.SIGKILL
    url = url_file.read_text()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/health", timeout=1)
        except httpx.TransportError:
            return
        time.sleep(0.5)
    raise AssertionError(f"server at {url} outlived its killed launcher (pid {os.getpid()})")


def test_run_spec_retrieval_settings_become_server_flags():
    from calibadv.retrieval.launch import spec_server_args
    from calibadv.spec import RetrievalSpec

    plain = RetrievalSpec(topk=3)
    assert spec_server_args(plain) == ["--topk", "3"]
    paper = RetrievalSpec(reranker="ce", topk_retrieval=20, topk=3, query_prefix="query: ")
    assert spec_server_args(paper) == [
        "--topk", "3", "--retrieval-topk", "20", "--rerank-topk", "3", "--query-prefix", "query: "
    ]
