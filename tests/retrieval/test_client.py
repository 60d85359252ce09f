"""The client: parsing, formatting, and retry policy against a real tiny HTTP server."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from calibadv.retrieval.client import (
    AsyncRetrievalClient,
    Passage,
    RetrievalClient,
    RetrievalRequestError,
    RetrievalUnavailableError,
    format_passages,
)

OK_BODY = {
    "result": [
        [{"document": {"id": "7", "contents": '"Oslo"\nOslo is cold.'}, "score": 0.5}]
    ]
}


@contextmanager
def scripted_server(statuses: list[int]) -> Iterator[tuple[str, list[dict]]]:
    """Answers POSTs with the given statuses in turn (then 200s); records each request body."""
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(body)
            status = statuses[len(seen) - 1] if len(seen) <= len(statuses) else 200
            payload = OK_BODY if status == 200 else {"detail": f"scripted {status}"}
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def fast(url: str, cls=RetrievalClient, retries: int = 4):
    return cls(url, timeout=5, retries=retries, backoff=0.01, max_backoff=0.02)


def test_5xx_is_retried_until_success():
    with scripted_server([503, 500, 502]) as (url, seen):
        got = fast(url).search(["Oslo"], topk=1)
    assert len(seen) == 4
    assert got == [[Passage(id="7", title="Oslo", text="Oslo is cold.", score=0.5)]]
    assert seen[0] == {"queries": ["Oslo"], "topk": 1, "return_scores": True}


def test_4xx_is_not_retried_and_carries_the_server_message():
    with (
        scripted_server([422]) as (url, seen),
        pytest.raises(RetrievalRequestError) as err,
    ):
        fast(url).search(["Oslo"], topk=1)
    assert len(seen) == 1
    assert err.value.status == 422 and "scripted 422" in str(err.value)


def test_persistent_5xx_gives_up_after_the_retry_budget():
    with (
        scripted_server([500] * 10) as (url, seen),
        pytest.raises(RetrievalUnavailableError, match="HTTP 500"),
    ):
        fast(url, retries=2).search(["Oslo"])
    assert len(seen) == 3


def test_connection_refused_is_retried_then_reported():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[
            1
        ]  # closed once the with-block ends: nobody listens there
    with pytest.raises(RetrievalUnavailableError, match="3 attempts"):
        fast(f"http://127.0.0.1:{port}", retries=2).search(["Oslo"])


def test_async_client_retries_the_same_way():
    with scripted_server([503, 503, 422]) as (url, seen):

        async def main():
            async with fast(url, AsyncRetrievalClient) as client:
                return await client.search(["Oslo"], topk=1)

        with pytest.raises(RetrievalRequestError):
            asyncio.run(main())
    assert len(seen) == 3


def test_url_may_name_the_endpoint_or_the_base():
    with scripted_server([]) as (url, seen):
        fast(url + "/retrieve").search(["a"])
        fast(url + "/").search(["b"])
    assert [s["queries"] for s in seen] == [["a"], ["b"]]


def test_empty_query_list_makes_no_request_and_a_bare_string_is_refused():
    with scripted_server([]) as (url, seen):
        assert fast(url).search([]) == []
        with pytest.raises(TypeError):
            fast(url).search("Oslo")
    assert seen == []


def test_passage_from_both_wire_forms():
    scored = Passage.from_item(
        {"document": {"id": 3, "contents": '"T"\nline1\nline2'}, "score": 1}
    )
    assert scored == Passage("3", "T", "line1\nline2", 1.0)
    bare = Passage.from_item({"id": "4", "contents": '"Only title"'})
    assert bare == Passage("4", "Only title", "", None)


def test_format_passages_numbers_docs_without_trailing_newline():
    ps = [
        Passage("1", "Oslo", "Oslo is cold.", 0.9),
        Passage("2", "Lima", "Lima is warm.", 0.1),
    ]
    assert (
        format_passages(ps)
        == "Doc 1(Title: Oslo) Oslo is cold.\nDoc 2(Title: Lima) Lima is warm."
    )
    assert format_passages([]) == ""
    assert (
        format_passages(ps[:1], quote_titles=True)
        == 'Doc 1(Title: "Oslo") Oslo is cold.'
    )
