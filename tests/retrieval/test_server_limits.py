"""Bounded work per request, read timeouts, a connection limit, chunked fairness and a clean
SIGTERM (issue 30). Real app, real uvicorn (the server's own set-up), real sockets."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from calibadv.retrieval.engine import Job
from calibadv.retrieval.server import MicroBatcher, ServerConfig, create_app

from .conftest import app_server, wait_healthy

LIMITS = ServerConfig(
    max_results=50,
    max_total_query_chars=100,
    max_answer_bytes=3000,
    header_timeout_s=1.0,
    body_timeout_s=1.0,
    max_connections=3,
)


@pytest.fixture(scope="module")
def limited_url(engine: Any) -> Any:
    with app_server(create_app(lambda: engine, LIMITS), LIMITS) as url:
        wait_healthy(url)
        yield url


def post(url: str, body: dict) -> httpx.Response:
    return httpx.post(url + "/retrieve", json=body, timeout=30)


# -- work per request ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        # 6 queries x topk 10 = 60 passages > 50
        ({"queries": ["Oslo"] * 6, "topk": 10}, r"6 queries x topk 10 = 60 passages; at most 50 per request (serve --max-results)"),
        # 11 queries of 10 characters = 110 > 100
        ({"queries": ["ten chars!"] * 11, "topk": 1}, r"110 characters in all; at most 100 per request (serve --max-total-query-chars)"),
        # 5 x 10 = 50 passages (allowed), but ~100 bytes each: the answer is over 3,000 bytes
        ({"queries": ["Oslo", "Lima", "Cairo", "Hanoi", "Tokyo"], "topk": 10, "return_scores": True},
         r"bytes; at most 3000 (serve --max-answer-bytes)"),
    ],
    ids=["queries-x-topk", "total-characters", "answer-bytes"],
)
def test_work_beyond_a_cap_is_a_413_naming_the_cap_and_its_flag(limited_url, body, needle):
    r = post(limited_url, body)
    assert r.status_code == 413
    assert needle in r.json()["detail"]


def test_a_request_within_every_cap_is_answered(limited_url):
    r = post(limited_url, {"queries": ["Oslo", "Lima"], "topk": 3, "return_scores": True})
    assert r.status_code == 200
    assert [len(hits) for hits in r.json()["result"]] == [3, 3]


# -- connections --------------------------------------------------------------------------------


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server closed the connection (EOF or a reset), False if it stays open
    for the socket's timeout."""
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_a_slowloris_client_is_cut_off_while_good_clients_are_answered(limited_url):
    slow = connect(limited_url)
    stop = threading.Event()
    cut: list[bool] = []

    def dribble() -> None:  # one header byte every 0.2 s: a head that never ends
        head = b"POST /retrieve HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 200
        try:
            for byte in head:
                if stop.is_set():
                    return
                slow.send(bytes([byte]))
                time.sleep(0.2)
        except OSError:
            cut.append(True)  # the server closed it under us

    writer = threading.Thread(target=dribble, daemon=True)
    writer.start()
    answered = []
    for _ in range(5):  # a good client meanwhile, on connections of its own
        answered.append(post(limited_url, {"queries": ["Tokyo"], "topk": 1}).status_code)
        time.sleep(0.3)
    slow.settimeout(15)
    assert closed_by_server(slow) or cut, "the slow-header connection is still open"
    stop.set()
    slow.close()
    assert answered == [200] * 5


def test_a_connection_that_sends_nothing_is_closed(limited_url):
    idle = connect(limited_url)
    idle.settimeout(15)
    assert closed_by_server(idle)
    idle.close()


def read_response(sock: socket.socket) -> bytes:
    """One whole HTTP response: uvicorn may write the head and the body in separate sends, so
    one recv can hold the head alone; read on until Content-Length bytes of body are in."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?i)content-length:\s*(\d+)", head)
    while length and len(body) < int(length.group(1)):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def test_a_slow_body_gets_a_408(limited_url):
    sock = connect(limited_url)
    sock.sendall(
        b"POST /retrieve HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n" + b'{"queries": ['
    )
    sock.settimeout(15)
    answer = read_response(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408")
    assert b"serve --body-timeout" in answer


def test_beyond_the_connection_limit_requests_get_503_until_connections_close(limited_url):
    idle = [connect(limited_url) for _ in range(LIMITS.max_connections)]
    time.sleep(0.1)
    try:
        assert post(limited_url, {"queries": ["Tokyo"], "topk": 1}).status_code == 503
    finally:
        for s in idle:
            s.close()
    time.sleep(0.2)
    assert post(limited_url, {"queries": ["Tokyo"], "topk": 1}).status_code == 200


# -- chunks take turns ---------------------------------------------------------------------------


def test_a_small_request_is_served_between_the_chunks_of_a_big_one(engine):
    """A 40-query request runs as 5 chunks of 8; a 1-query request sent after it is answered in
    the second engine call, not after all five."""
    from concurrent.futures import ThreadPoolExecutor

    calls: list[list[int]] = []

    def run(jobs: list[Job]) -> Any:
        calls.append([len(j.queries) for j in jobs])
        return engine.run(jobs)

    big = Job([f"river {i}" for i in range(40)], 3, 3)
    small = Job(["Tokyo"], 3, 3)

    async def scenario() -> tuple[Any, Any]:
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(run, max_batch=8, max_wait_s=0.0, executor=pool, chunk=8)
            batcher.start()
            first = asyncio.ensure_future(batcher.submit(big))
            await asyncio.sleep(0)  # the big request is queued first
            second = asyncio.ensure_future(batcher.submit(small))
            out = await asyncio.gather(first, second)
            await batcher.stop()
            return out

    big_answer, small_answer = asyncio.run(scenario())
    assert calls[:3] == [[8], [1], [8]]
    assert sum(n for call in calls for n in call) == 41
    assert [[h.row for h in hits] for hits in big_answer] == [
        [h.row for h in hits] for hits in engine.run([big])[0]
    ]
    assert [h.row for h in small_answer[0]] == [h.row for h in engine.run([small])[0][0]]


# -- SIGTERM -------------------------------------------------------------------------------------


def test_sigterm_during_a_long_request_stops_the_server_after_its_chunk(
    tmp_path: Path, corpus_path: Path, index_path: Path
):
    """A request of 3,000 distinct queries in chunks of 4 keeps the engine busy for minutes on
    2 cores; SIGTERM answers it 503 after the running chunk and the process exits."""
    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [sys.executable, "-m", "calibadv.cli", "serve", "--corpus", str(corpus_path),
         "--index", str(index_path), "--encoder", "bundled:minilm", "--device", "cpu",
         "--threads", "1", "--port", "0", "--port-file", str(port_file),
         "--chunk-queries", "4", "--max-batch", "4", "--shutdown-timeout", "5"],
        env={**os.environ, "HF_HUB_OFFLINE": "1", "CALIBADV_NO_PROGRESS": "1"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not port_file.is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        url = f"http://127.0.0.1:{port_file.read_text().strip()}"
        wait_healthy(url, timeout=300)
        answer: list[Any] = []
        queries = [f"which river floods in spring number {i}" for i in range(3000)]

        def long_request() -> None:
            try:
                answer.append(post(url, {"queries": queries, "topk": 3}))
            except httpx.HTTPError as err:
                answer.append(err)

        client = threading.Thread(target=long_request)
        client.start()
        while httpx.get(url + "/health").json()["batches"] < 3:  # the engine is at work
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        client.join(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down
    assert isinstance(answer[0], httpx.Response), answer
    assert answer[0].status_code == 503
    assert "shutting down" in answer[0].json()["detail"]


# -- threads -------------------------------------------------------------------------------------


def test_the_engine_thread_searches_with_the_servers_thread_count(corpus_path, index_path):
    """``serve --threads 1`` holds in the thread the engine runs in. FAISS keeps its OpenMP
    thread count per thread, so setting it where the engine was loaded left the server's engine
    thread at every core (3x the CPU per query under load; docs/retrieval.md)."""
    import faiss

    from calibadv.retrieval.engine import load_engine

    engine = load_engine(str(corpus_path), str(index_path), "bundled:minilm", device="cpu",
                         threads=1)  # fmt: skip
    seen: list[int] = []

    def serve_one() -> None:
        engine.run([Job(queries=["Oslo"], k_final=2, k_candidates=2)])
        seen.append(faiss.omp_get_max_threads())

    worker = threading.Thread(target=serve_one)
    worker.start()
    worker.join()
    assert seen == [1]
