"""The rerank path through a real `calibadv serve` subprocess started by the launcher."""

from __future__ import annotations

from pathlib import Path

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


def test_rerank_answers_empty_and_repeated_queries_like_any_other(
    rerank_url, cross_encoder_dir, encoder, embeddings, rows
):
    """A GRPO group repeats queries and empty searches send "": each is reranked against its
    own candidates, and a repeat gets exactly its twin's answer."""
    queries = ["Tokyo", "", "Tokyo", "   "]
    body = {"queries": queries, "topk": 3, "return_scores": True}
    result = httpx.post(rerank_url + "/retrieve", json=body).json()["result"]
    assert result[0] == result[2]
    for query, hits in zip(queries, result):
        ids, scores = expected_rerank(
            cross_encoder_dir, encoder, embeddings, rows, query, 10, 3
        )
        assert [h["document"]["id"] for h in hits] == ids
        np.testing.assert_allclose(
            [h["score"] for h in hits], scores, rtol=1e-3, atol=1e-4
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
    on_gpus = RetrievalSpec(topk=3, device="cuda", faiss_gpu=True)
    assert spec_server_args(on_gpus) == ["--topk", "3", "--device", "cuda", "--faiss-gpu"]
    fast_cpu = RetrievalSpec(topk=3, device="cpu", precision="bf16")
    assert spec_server_args(fast_cpu) == ["--topk", "3", "--device", "cpu", "--precision", "bf16"]


def test_paper_config_serves_the_exact_index_from_the_trainers_gpus():
    """config/config.yaml's choice (docs/retrieval.md, "Paper scale") reaches the server."""
    from calibadv.retrieval.launch import spec_server_args
    from calibadv.spec import RetrievalSpec
    from calibadv.workflow.run_specs import run_spec_dict
    from calibadv.workflow.validation import load_config

    config = load_config(Path(__file__).resolve().parents[2] / "config" / "config.yaml")
    assert config["index"]["kind"] == "flat" and config["retrieval"]["faiss_gpu"] is True
    model = next(iter(config["models"]))
    method = config["default_methods"][0]
    retrieval = RetrievalSpec(**run_spec_dict(config, model, method)["retrieval"])
    flags = spec_server_args(retrieval)
    assert flags[flags.index("--device") + 1] == "cuda" and "--faiss-gpu" in flags


def test_serve_defaults_are_the_server_config_defaults():
    from calibadv.cli import build_parser
    from calibadv.retrieval.server_config import ServerConfig

    args = build_parser().parse_args(["serve", "--corpus", "c", "--index", "i", "--encoder", "e"])
    d = ServerConfig()
    assert (args.max_queries, args.max_body_bytes, args.max_batch) == (
        d.max_queries, d.max_body_bytes, d.max_batch
    )
    assert d.max_queries >= 512 * 5  # a paper turn in one request


def test_every_server_config_field_comes_from_its_serve_flag():
    """Each ServerConfig knob is set by a flag: a non-default value for every field, through
    the parser, arrives in the ServerConfig unchanged (a field without a flag, or a flag mapped
    to the wrong field, fails here)."""
    from dataclasses import fields

    from calibadv.cli import build_parser
    from calibadv.retrieval.server_config import CONFIG_FLAG_DEST, ServerConfig, ServerOptions

    d = ServerConfig()
    argv = ["serve", "--corpus", "c", "--index", "i", "--encoder", "e", "--no-batching",
            "--precision", "bf16"]  # fmt: skip
    want = {}
    for f in fields(ServerConfig):
        if f.name == "batching":
            continue
        value = getattr(d, f.name)
        new = value + 1 if isinstance(value, int) else value * 2 + 0.5
        flag = "--" + CONFIG_FLAG_DEST.get(f.name, f.name).replace("_", "-")
        argv += [flag, str(new)]
        want[f.name] = new
    options = ServerOptions.from_args(build_parser().parse_args(argv))
    assert options.precision == "bf16"
    assert options.config == ServerConfig(**want, batching=False)


def test_thread_server_answers_exactly_like_the_serve_process(
    rerank_url, corpus_path, index_path, cross_encoder_dir
):
    """`retrieval.server: thread` is the same server, flags and all, inside the caller."""
    from calibadv.retrieval.launch import serve_in_thread

    body = {"queries": QUERIES[:4], "topk": 3, "return_scores": True}
    with serve_in_thread(
        corpus_path, index_path, "bundled:minilm", cross_encoder_dir,
        extra_args=["--retrieval-topk", "10", "--rerank-topk", "3", "--device", "cpu"],
        startup_timeout=300,
    ) as url:  # fmt: skip
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(url + "/health").json()["reranker"] == cross_encoder_dir
        ours = httpx.post(url + "/retrieve", json=body).json()["result"]
    theirs = httpx.post(rerank_url + "/retrieve", json=body).json()["result"]
    assert [[h["document"]["id"] for h in q] for q in ours] == [
        [h["document"]["id"] for h in q] for q in theirs
    ]
    for mine, other in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(
            [h["score"] for h in mine], [h["score"] for h in other], rtol=1e-4, atol=1e-5
        )


def test_thread_server_stops_and_frees_its_port(corpus_path, index_path):
    from calibadv.retrieval.launch import serve_in_thread

    with serve_in_thread(
        corpus_path, index_path, "bundled:minilm", extra_args=["--device", "cpu"]
    ) as url:
        assert httpx.get(url + "/health").status_code == 200
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/health", timeout=2)


def test_thread_server_reports_a_load_failure(corpus_path, tmp_path):
    from calibadv.retrieval.launch import serve_in_thread

    with (
        pytest.raises(CalibAdvError, match="missing.faiss"),
        serve_in_thread(corpus_path, tmp_path / "missing.faiss", "bundled:minilm"),
    ):
        pass


def test_thread_server_names_bad_flags(corpus_path, tmp_path):
    """`retrieval.server: thread` parses the same `serve` flags, and refuses bad ones."""
    from calibadv.retrieval.launch import serve_in_thread

    with (
        pytest.raises(CalibAdvError, match="bad retrieval server flags: .*--no-such-flag"),
        serve_in_thread(corpus_path, tmp_path / "i.faiss", "bundled:minilm",
                        extra_args=["--no-such-flag"]),
    ):
        pass


def test_an_unknown_server_mode_is_named():
    from calibadv.retrieval.launch import serve

    with pytest.raises(CalibAdvError, match="'fork' is not one of process, thread"):
        serve("fork", "c.jsonl", "i.faiss", "bundled:minilm")


def test_run_spec_rejects_an_unknown_server_mode(tmp_path):
    from calibadv.errors import ConfigError
    from calibadv.spec import load_run_spec

    bad = tmp_path / "spec.yaml"
    bad.write_text("name: x\nretrieval: {server: fork}\n")
    with pytest.raises(ConfigError, match=r"retrieval\.server"):
        load_run_spec(bad)
