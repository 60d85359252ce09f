"""The server under the real training clients, as written: Search-R1's trainer
(``clients/search_r1.py``, reproduced from its ``generation.py``) and verl's search tool
(``clients/verl_search_r1_like_utils.py``, vendored verbatim). A whole paper turn must go
through: empty turns, empty searches, 2,560 queries in one request, and no bad request may
change what any other request gets."""

from __future__ import annotations

import json
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import requests

from calibadv.retrieval.engine import SearchEngine
from calibadv.retrieval.server import ServerConfig, create_app

from .clients import search_r1
from .clients.verl_search_r1_like_utils import (
    call_search_api,
    perform_single_search_batch,
)
from .conftest import QUERIES, app_server, wait_healthy
from .test_server import brute_force


@pytest.fixture(scope="module")
def url(engine: Any) -> Any:
    """The app with its shipped defaults (limits, batching) on the session engine."""
    with app_server(create_app(lambda: engine, ServerConfig())) as base:
        wait_healthy(base)
        yield base + "/retrieve"


@pytest.fixture(scope="module")
def expect(encoder: Any, embeddings: Any, rows: list[dict]) -> Any:
    """Brute-force top-3 ids of a query (memoised: a turn repeats queries)."""
    memo: dict[str, list[str]] = {}

    def ids(query: str) -> list[str]:
        if query not in memo:
            memo[query] = brute_force(encoder, embeddings, rows, query, 3)[0]
        return memo[query]

    return ids


def result_ids(result: list[list[dict]]) -> list[list[str]]:
    return [[item["document"]["id"] for item in hits] for hits in result]


# -- an empty turn ------------------------------------------------------------------------------
def test_a_turn_without_searches_is_answered_with_an_empty_result(url):
    assert search_r1.raw_batch_search(url, []) == {"result": []}
    predictions = ["<think>x</think><answer>Paris</answer>", "no tags at all", ""]
    next_obs, dones, valid, is_search = search_r1.execute_predictions(
        url, predictions, active_mask=[True, True, False]
    )
    assert dones == [1, 0, 1] and valid == [1, 0, 0] and is_search == [0, 0, 0]
    assert next_obs[0] == "" and "invalid" in next_obs[1]


def test_verl_tool_reads_an_empty_turn_as_no_results(url):
    text, meta = perform_single_search_batch(url, [], topk=3)
    assert meta["api_request_error"] is None and meta["status"] == "no_results"
    assert json.loads(text) == {"result": "No search results found."}


# -- empty and blank searches ---------------------------------------------------------------------
def test_empty_and_blank_queries_are_searched_beside_real_ones(url, expect):
    queries = ["Tokyo", "", "   ", "river floods in spring", "\n"]
    body = search_r1.raw_batch_search(url, queries)
    assert result_ids(body["result"]) == [expect(q) for q in queries]
    assert all(len(hits) == 3 for hits in body["result"])


def test_search_r1_turn_with_an_empty_search_gets_information_for_every_search(url, rows):
    predictions = [
        "<think>a</think><search></search>",
        "<search> river floods in spring </search>",
        "<answer>Oslo</answer>",
        "<search>\n</search>",
    ]
    next_obs, dones, valid, is_search = search_r1.execute_predictions(
        url, predictions, active_mask=[True] * 4
    )
    assert is_search == [1, 1, 0, 1] and dones == [0, 0, 1, 0]
    contents = {r["contents"] for r in rows}
    for obs in (next_obs[0], next_obs[1], next_obs[3]):
        assert obs.startswith("\n\n<information>Doc 1(Title: ")
        docs = obs.removeprefix("\n\n<information>").removesuffix("</information>\n\n")
        assert docs.count("Doc ") == 3
    first = next_obs[1].split("Doc 2(Title: ")[0].removeprefix("\n\n<information>Doc 1(Title: ")
    title, text = first.split(") ", 1)
    assert f"{title}\n{text.rstrip()}" in contents


# -- a whole paper turn -------------------------------------------------------------------------
def paper_turn() -> list[str]:
    """512 prompts x 5 rollouts: each group's rollouts search variants of one query, some
    search nothing (""), as a real turn does."""
    queries = []
    for prompt in range(512):
        base = QUERIES[prompt % len(QUERIES)]
        for rollout in range(5):
            queries.append("" if rollout == 4 and prompt % 3 == 0 else f"{base} {rollout}")
    return queries


def test_a_paper_turn_of_2560_queries_goes_through_search_r1_in_one_request(url, expect):
    queries = paper_turn()
    assert len(queries) == 2560
    predictions = [f"<think>t</think><search> {q} </search>" for q in queries]
    next_obs, _, _, is_search = search_r1.execute_predictions(
        url, predictions, active_mask=[True] * len(queries)
    )
    assert sum(is_search) == 2560
    body = search_r1.raw_batch_search(url, queries)
    assert result_ids(body["result"]) == [expect(q) for q in queries]
    # the observation text is built from the same answer
    assert next_obs[7] == (
        f"\n\n<information>{search_r1.passages_to_string(body['result'][7]).strip()}"
        "</information>\n\n"
    )


def test_a_paper_turn_goes_through_verls_search_tool(url, expect):
    queries = paper_turn()
    text, meta = perform_single_search_batch(url, queries, topk=3)
    assert meta["api_request_error"] is None and meta["status"] == "success"
    assert meta["total_results"] == 3 * 2560
    assert result_ids(meta["api_response"]["result"]) == [expect(q) for q in queries]
    assert json.loads(text)["result"].count("\n---\n") == 2559


class CountingEncoder:
    """The real encoder, recording what each call is asked to encode."""

    def __init__(self, real: Any) -> None:
        self.real, self.name, self.dim = real, real.name, real.dim
        self.calls: list[list[str]] = []

    def encode_queries(self, queries: list[str]) -> Any:
        self.calls.append(list(queries))
        return self.real.encode_queries(queries)


def test_a_turn_encodes_each_distinct_query_once(engine, expect):
    counting = CountingEncoder(engine.encoder)
    eng = SearchEngine(engine.corpus, engine.index, counting)
    queries = paper_turn()
    with app_server(create_app(lambda: eng, ServerConfig())) as base:
        wait_healthy(base)
        body = search_r1.raw_batch_search(base + "/retrieve", queries)
    assert counting.calls == [list(dict.fromkeys(queries))]
    assert len(counting.calls[0]) == 8 * 5 + 1  # QUERIES x 5 rollout variants, and ""
    assert result_ids(body["result"]) == [expect(q) for q in queries]


# -- bad requests fail alone -----------------------------------------------------------------
def test_a_lone_surrogate_is_a_422_naming_the_query(url):
    raw = b'{"queries": ["Tokyo", "a \\ud800 b"], "topk": 3, "return_scores": true}'
    resp = httpx.post(url, content=raw, headers={"content-type": "application/json"})
    assert resp.status_code == 422
    detail = resp.json()["detail"]
    assert "queries[1]" in detail and "surrogate U+D800" in detail
    # requests escapes the lone surrogate the same way: verl's tool gets a 4xx, not a retry loop
    response, err = call_search_api(url, ["a \ud800 b"], timeout=30)
    assert response is None and "422" in err


@pytest.mark.parametrize(
    "raw", [b"[" * 100_000, b'{"queries": ' + b"[" * 100_000, b'{"a":' * 50_000]
)
def test_deeply_nested_json_is_a_400(url, raw):
    resp = httpx.post(url, content=raw, headers={"content-type": "application/json"})
    assert resp.status_code == 400
    assert "nested too deeply" in resp.json()["detail"]
    assert search_r1.raw_batch_search(url, ["Tokyo"])["result"][0]


def good_queries() -> list[str]:
    return [f"{q} {i}" for i in range(2) for q in QUERIES]  # 16 distinct


def concurrently(calls: list[Any]) -> list[Any]:
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(c) for c in calls]
        return [f.result() for f in futures]


def test_a_surrogate_among_16_concurrent_requests_fails_alone(engine, expect):
    cfg = ServerConfig(max_wait_ms=500.0)
    with app_server(create_app(lambda: engine, cfg)) as base:
        wait_healthy(base)
        bad = lambda: requests.post(base + "/retrieve", json={"queries": ["a \ud800 b"]})  # noqa: E731
        good = [
            (lambda q=q: search_r1.raw_batch_search(base + "/retrieve", [q]))
            for q in good_queries()
        ]
        out = concurrently([*good[:8], bad, *good[8:]])
    assert out[8].status_code == 422
    answers = out[:8] + out[9:]
    assert [result_ids(a["result"])[0] for a in answers] == [
        expect(q) for q in good_queries()
    ]


class ChokingEncoder:
    """The real encoder, except that it raises on one marker string the way a tokenizer raises
    on input it cannot take: a poison that passes every check of the request."""

    POISON = "\u2063poison\u2063"

    def __init__(self, real: Any) -> None:
        self.real = real
        self.name = real.name
        self.dim = real.dim

    def encode_queries(self, queries: list[str]) -> Any:
        if any(self.POISON in q for q in queries):
            raise TypeError("TextEncodeInput must be Union[TextInputSequence, ...]")
        return self.real.encode_queries(queries)


def test_a_poisoned_micro_batch_reruns_its_requests_alone(engine, expect, caplog):
    choking = SearchEngine(engine.corpus, engine.index, ChokingEncoder(engine.encoder))
    cfg = ServerConfig(max_wait_ms=500.0)  # all 17 requests join one batch
    with app_server(create_app(lambda: choking, cfg)) as base:
        wait_healthy(base)
        before = httpx.get(base + "/health").json()
        poison = ChokingEncoder.POISON
        bad = lambda: requests.post(base + "/retrieve", json={"queries": [poison]})  # noqa: E731
        good = [
            (lambda q=q: search_r1.raw_batch_search(base + "/retrieve", [q]))
            for q in good_queries()
        ]
        with caplog.at_level(logging.WARNING, logger="calibadv.retrieval.server"):
            out = concurrently([*good[:8], bad, *good[8:]])
        after = httpx.get(base + "/health").json()
    assert out[8].status_code == 500 and "TextEncodeInput" in out[8].json()["detail"]
    answers = out[:8] + out[9:]
    assert [result_ids(a["result"])[0] for a in answers] == [
        expect(q) for q in good_queries()
    ]
    # the poison shared a merged batch with good requests, which were then re-run alone
    assert after["isolated"] - before["isolated"] >= 2
    assert any("re-running each alone" in r.getMessage() for r in caplog.records)


# -- a client that goes away -----------------------------------------------------------------
class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_client_that_disconnects_mid_body_is_one_log_line(url):
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    handler = Collect()
    loggers = [logging.getLogger(n) for n in ("calibadv.retrieval.server", "uvicorn.error")]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(
                b"POST /retrieve HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000\r\n\r\n" + b'{"queries": ["Tok'
            )
            time.sleep(0.2)
        deadline = time.monotonic() + 10
        while not handler.records and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # anything logged after the first line would show up by now
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
    assert len(handler.records) == 1, [r.getMessage() for r in handler.records]
    record = handler.records[0]
    assert "disconnected" in record.getMessage() and record.exc_info is None
    assert search_r1.raw_batch_search(url, ["Tokyo"])["result"][0]
