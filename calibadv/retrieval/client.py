"""Client of the retrieval server, used by the agent (sync and async).

Connection errors and 5xx answers are retried with exponential backoff: a server that is
restarting or briefly overloaded should not kill a training step. A 4xx means the request is
wrong and retrying cannot help, so it raises at once with the server's message.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Self

import httpx

from calibadv.errors import CalibAdvError
from calibadv.retrieval.corpus import split_contents


@dataclass(frozen=True)
class Passage:
    id: str
    title: str
    text: str
    score: float | None = None

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Passage:
        """Build from a ``/retrieve`` item: ``{"document": {...}, "score"}`` or a bare document."""
        doc = item.get("document", item)
        title, text = split_contents(str(doc.get("contents", "")))
        score = item.get("score") if "document" in item else None
        return cls(
            id=str(doc.get("id", "")),
            title=title,
            text=text,
            score=None if score is None else float(score),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def format_passages(passages: Sequence[Passage], quote_titles: bool = False) -> str:
    """``Doc 1(Title: T) text`` lines, as the agent shows them inside ``<information>``.

    Search-R1 prints the raw first line of ``contents``, which in wiki-18 keeps its quotes
    (``Doc 1(Title: "Oslo") ...``); ``quote_titles=True`` reproduces that byte for byte.
    """

    def title(p: Passage) -> str:
        return f'"{p.title}"' if quote_titles else p.title

    return "\n".join(
        f"Doc {i}(Title: {title(p)}) {p.text}" for i, p in enumerate(passages, 1)
    )


class RetrievalRequestError(CalibAdvError):
    """The server rejected the request (4xx): fix the request, do not retry."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"retrieval server answered {status}: {message}")
        self.status = status


class RetrievalUnavailableError(CalibAdvError):
    """The server could not be reached or kept failing (5xx) after all retries."""


def _endpoint(url: str) -> tuple[str, str]:
    """(``/retrieve`` URL, base URL): accept either form from callers."""
    url = url.rstrip("/")
    if url.endswith("/retrieve"):
        return url, url[: -len("/retrieve")]
    return url + "/retrieve", url


def _detail(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        return str(body.get("detail", body)) if isinstance(body, dict) else str(body)
    except ValueError:
        return resp.text[:500]


def _parse(payload: Any, n: int) -> list[list[Passage]]:
    result = payload.get("result") if isinstance(payload, dict) else None
    if not isinstance(result, list) or len(result) != n:
        raise RetrievalUnavailableError(
            f"malformed answer from the retrieval server (expected {n} result lists): {str(payload)[:300]}"
        )
    return [[Passage.from_item(item) for item in hits] for hits in result]


class _Retry:
    def __init__(self, retries: int, backoff: float, max_backoff: float) -> None:
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff

    def delay(self, attempt: int) -> float:
        base = min(self.max_backoff, self.backoff * (2**attempt))
        return base * (0.5 + random.random() / 2)


class RetrievalClient:
    """``search(queries, topk)`` against a calibadv (or Search-R1) retrieval server.

    ``url`` is the server's base URL or its ``/retrieve`` endpoint. ``topk`` is the number of
    passages returned per query (after reranking when the server has a cross-encoder).
    """

    def __init__(
        self,
        url: str,
        timeout: float = 60.0,
        retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
    ) -> None:
        self.url, self.base_url = _endpoint(url)
        self.timeout = timeout
        self._retry = _Retry(retries, backoff, max_backoff)
        self._client: httpx.Client | None = None
        self._aclient: httpx.AsyncClient | None = None

    # -- shared -------------------------------------------------------------------------
    @staticmethod
    def _payload(queries: Sequence[str], topk: int) -> dict[str, Any]:
        if isinstance(queries, str):
            raise TypeError(
                "search() takes a list of queries; wrap a single query in a list"
            )
        return {"queries": list(queries), "topk": int(topk), "return_scores": True}

    def _check(self, resp: httpx.Response) -> bool:
        """True when done; raises on 4xx; False (retry) on 5xx."""
        if resp.status_code < 400:
            return True
        if resp.status_code < 500:
            raise RetrievalRequestError(resp.status_code, _detail(resp))
        return False

    def _give_up(self, last: str) -> RetrievalUnavailableError:
        return RetrievalUnavailableError(
            f"retrieval server {self.url} failed after {self._retry.retries + 1} attempts "
            f"({last}); is `calibadv serve` running?"
        )

    # -- sync ---------------------------------------------------------------------------
    def search(self, queries: Sequence[str], topk: int = 3) -> list[list[Passage]]:
        payload = self._payload(queries, topk)
        if not payload["queries"]:
            return []
        if self._client is None:
            self._client = httpx.Client(timeout=self.timeout)
        last = ""
        for attempt in range(self._retry.retries + 1):
            try:
                resp = self._client.post(self.url, json=payload)
                if self._check(resp):
                    return _parse(resp.json(), len(payload["queries"]))
                last = f"HTTP {resp.status_code}: {_detail(resp)}"
            except httpx.TransportError as err:
                last = f"{type(err).__name__}: {err}"
            if attempt < self._retry.retries:
                time.sleep(self._retry.delay(attempt))
        raise self._give_up(last)

    def health(self) -> dict[str, Any] | None:
        """The ``/health`` body when the server is ready, else ``None``."""
        try:
            resp = httpx.get(self.base_url + "/health", timeout=min(self.timeout, 10.0))
        except httpx.TransportError:
            return None
        return resp.json() if resp.status_code == 200 else None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- async --------------------------------------------------------------------------
    async def asearch(
        self, queries: Sequence[str], topk: int = 3
    ) -> list[list[Passage]]:
        payload = self._payload(queries, topk)
        if not payload["queries"]:
            return []
        if self._aclient is None:
            self._aclient = httpx.AsyncClient(
                timeout=self.timeout, limits=httpx.Limits(max_connections=256)
            )
        last = ""
        for attempt in range(self._retry.retries + 1):
            try:
                resp = await self._aclient.post(self.url, json=payload)
                if self._check(resp):
                    return _parse(resp.json(), len(payload["queries"]))
                last = f"HTTP {resp.status_code}: {_detail(resp)}"
            except httpx.TransportError as err:
                last = f"{type(err).__name__}: {err}"
            if attempt < self._retry.retries:
                await asyncio.sleep(self._retry.delay(attempt))
        raise self._give_up(last)

    async def aclose(self) -> None:
        if self._aclient is not None:
            await self._aclient.aclose()
            self._aclient = None


class AsyncRetrievalClient(RetrievalClient):
    """Same client whose ``search`` is a coroutine (for asyncio rollout loops)."""

    async def search(
        self, queries: Sequence[str], topk: int = 3
    ) -> list[list[Passage]]:  # type: ignore[override]
        return await self.asearch(queries, topk)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def make_search_fn(url: str, topk: int, chunk: int = 256) -> Callable[[Sequence[str]], list[list[Any]]]:
    """The agent's search function (``SearchFn``): a batch of queries → top-``topk`` passages
    each, sent ``chunk`` queries per request (servers cap the queries per request)."""
    client = RetrievalClient(url)

    def search(queries: Sequence[str]) -> list[list[Any]]:
        out: list[list[Any]] = []
        for i in range(0, len(queries), chunk):  # servers cap the queries per request
            out += client.search(list(queries[i : i + chunk]), topk)
        return out

    return search
