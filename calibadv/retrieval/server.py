"""HTTP retrieval server (FastAPI + uvicorn), compatible with Search-R1's ``/retrieve``.

Request: ``{"queries": [...], "topk": k, "return_scores": bool}`` (+ ``topk_retrieval`` /
``topk_rerank`` when a cross-encoder is loaded). Response: ``{"result": [...]}`` with one list
per query, in order; each item is ``{"document": {"id", "contents"}, "score"}`` when
``return_scores`` is true, else the bare document, as Search-R1's server does.

The contract is the one real training clients rely on (docs/retrieval.md, "What a Search-R1
client sends, and what it gets"): an empty ``queries`` list is a normal turn (no rollout
searched) and answers ``{"result": []}``; an empty or blank query (``<search></search>``) is
searched like any other string, so it never fails the other queries of its request; the default
limits take a whole paper turn (512 prompts x 5 rollouts = 2,560 queries) in one request.

The server starts listening at once and loads index/corpus/models in a background thread:
``GET /health`` answers 503 until everything is loaded, so launchers can poll it. Concurrent
requests are merged by a micro-batcher into one encoder + FAISS (+ cross-encoder) call. Bad
input gets a 4xx naming the problem before it can join a batch; if a merged batch fails anyway,
each of its requests is re-run alone, so only the request that breaks the engine gets a 500 and
the server lives on.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import (
    Request,  # module level: FastAPI resolves endpoint annotations by name
)
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from calibadv.retrieval.engine import Hit, Job, SearchEngine
from calibadv.retrieval.server_config import ServerConfig

log = logging.getLogger(__name__)


#: Bodies larger than this are decoded off the event loop, so one big request (a 2,560-query
#: turn is ~0.2-10 MB) does not stall /health and every other client while it parses.
JSON_OFFLOAD_BYTES = 1 << 20
#: Answers to requests of more queries than this are rendered to JSON off the event loop too;
#: smaller ones (a rollout's single query) on it, where a thread hop would cost more.
LARGE_ANSWER_QUERIES = 256


class RequestError(Exception):
    """A client error: HTTP status + a message that names the bad field and the fix."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _int_field(obj: dict[str, Any], key: str, lo: int, hi: int) -> int | None:
    if key not in obj or obj[key] is None:
        return None
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(
            422, f"{key!r} must be an integer in [{lo}, {hi}], got {value!r}"
        )
    if not lo <= value <= hi:
        raise RequestError(422, f"{key!r} must be in [{lo}, {hi}], got {value}")
    return value


def check_encodable(text: str, where: str) -> None:
    """Reject text that the tokenizer cannot take, before it can join (and fail) a batch.

    JSON may carry lone UTF-16 surrogates (``"\\ud800"``); Python decodes them into a ``str``
    that is not valid Unicode, and the Rust tokenizer raises on it. Text a model generated is
    always valid UTF-8, so such a query only comes from a broken or hostile client.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        bad = text[err.start]
        raise RequestError(
            422,
            f"{where} contains a lone UTF-16 surrogate U+{ord(bad):04X} at character "
            f"{err.start}: send valid Unicode (pair the surrogate or drop it)",
        ) from None


def decode_json(raw: bytes) -> Any:
    """``json.loads`` with the client's mistakes turned into 400s that say what is wrong."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise RequestError(
            400, "body is nested too deeply to be a /retrieve request: send "
            '{"queries": ["..."], "topk": 3}',
        ) from None
    except (ValueError, UnicodeDecodeError) as err:
        raise RequestError(400, f"body is not valid JSON: {err}") from err


def parse_request(
    obj: Any, cfg: ServerConfig, size: int, has_reranker: bool
) -> tuple[Job, bool]:
    """Validate a decoded ``/retrieve`` body into a :class:`Job` and the ``return_scores`` flag."""
    if not isinstance(obj, dict):
        raise RequestError(
            400, 'the body must be a JSON object like {"queries": ["..."], "topk": 3}'
        )
    queries = obj.get("queries")
    if queries is None and isinstance(obj.get("query"), str):
        queries = [obj["query"]]  # single-query form some Search-R1 forks send
    if not isinstance(queries, list):
        raise RequestError(
            422, f"'queries' must be a list of strings, got {type(queries).__name__}"
        )
    if len(queries) > cfg.max_queries:
        raise RequestError(
            422,
            f"'queries' has {len(queries)} items; at most {cfg.max_queries} per request",
        )
    total_chars = 0
    for i, q in enumerate(queries):
        if not isinstance(q, str):
            raise RequestError(
                422, f"queries[{i}] must be a string, got {type(q).__name__}"
            )
        # empty/blank strings are searched as they are (Search-R1 sends "" for an empty
        # <search></search>, and its server answers them): never a reason to fail the batch
        if len(q) > cfg.max_query_chars:
            raise RequestError(
                422,
                f"queries[{i}] has {len(q)} characters; at most {cfg.max_query_chars}",
            )
        check_encodable(q, f"queries[{i}]")
        total_chars += len(q)
    if total_chars > cfg.max_total_query_chars:
        raise RequestError(
            413,
            f"the queries have {total_chars} characters in all; at most "
            f"{cfg.max_total_query_chars} per request (serve --max-total-query-chars): "
            "send fewer or shorter queries per request",
        )
    return_scores = obj.get("return_scores", False)
    if return_scores is None:
        return_scores = False
    if not isinstance(return_scores, bool):
        raise RequestError(
            422, f"'return_scores' must be true or false, got {return_scores!r}"
        )
    max_k = max(1, min(cfg.max_topk, size))
    topk = _int_field(obj, "topk", 1, max_k)
    k_ret = _int_field(
        obj,
        "topk_retrieval",
        1,
        max(1, min(max(cfg.max_topk, cfg.retrieval_topk), size)),
    )
    k_rer = _int_field(obj, "topk_rerank", 1, max_k)
    if not has_reranker:
        if k_ret is not None or k_rer is not None:
            raise RequestError(
                400,
                "'topk_retrieval'/'topk_rerank' need a reranker: this server was started "
                "without --reranker; send 'topk' instead",
            )
        k = topk if topk is not None else min(cfg.default_topk, size)
        return _within_work(Job(list(queries), k, k, rerank=False), cfg), return_scores
    final = (
        k_rer if k_rer is not None else topk if topk is not None else cfg.rerank_topk
    )
    final = min(final, size)
    cands = k_ret if k_ret is not None else min(max(cfg.retrieval_topk, final), size)
    if final > cands:
        raise RequestError(
            422, f"'topk_rerank' ({final}) must not exceed 'topk_retrieval' ({cands})"
        )
    return _within_work(Job(list(queries), final, cands, rerank=True), cfg), return_scores


def _within_work(job: Job, cfg: ServerConfig) -> Job:
    """``job``, unless it asks for more passages than ``max_results`` (413, before any work)."""
    results = len(job.queries) * job.k_candidates
    if results > cfg.max_results:
        which = "topk_retrieval" if job.rerank else "topk"
        raise RequestError(
            413,
            f"{len(job.queries)} queries x {which} {job.k_candidates} = {results} passages; at "
            f"most {cfg.max_results} per request (serve --max-results): send fewer queries or "
            f"a smaller {which}",
        )
    return job


def render_answer(
    answers: list[list[Hit]], return_scores: bool, max_bytes: int
) -> bytes:
    """The JSON answer as bytes (as Starlette's ``JSONResponse`` renders it), or a 413 when
    it is larger than ``max_bytes``. Runs in a worker thread: a 2,560-query answer is ~5 MB
    and would stall ``/health`` and every other client on the event loop."""
    body = json.dumps(
        format_result(answers, return_scores),
        ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"),
    ).encode("utf-8")  # fmt: skip
    if len(body) > max_bytes:
        raise RequestError(
            413,
            f"the answer is {len(body)} bytes; at most {max_bytes} (serve --max-answer-bytes): "
            "send fewer queries or a smaller topk",
        )
    return body


def format_result(answers: list[list[Hit]], return_scores: bool) -> dict[str, Any]:
    if return_scores:
        result = [
            [{"document": h.document.to_dict(), "score": h.score} for h in hits]
            for hits in answers
        ]
    else:
        result = [[h.document.to_dict() for h in hits] for hits in answers]
    return {"result": result}


class ShuttingDown(Exception):
    """The server is stopping: the request gets a 503 and can be retried elsewhere."""


def split_job(job: Job, size: int) -> list[Job]:
    """``job`` as consecutive chunks of at most ``size`` queries (the same k and rerank)."""
    q = job.queries
    return [
        Job(q[i : i + size], job.k_final, job.k_candidates, job.rerank)
        for i in range(0, len(q), max(1, size))
    ] or [job]


def distinct(job: Job) -> tuple[Job, list[int]]:
    """``job`` with each query string once, and where each original query's answer is.

    Chunks are cut from the distinct queries, so the 5 rollouts of a GRPO group that send the
    same query in a turn cost one search however the request is chunked.
    """
    where: dict[str, int] = {}
    index = [where.setdefault(q, len(where)) for q in job.queries]
    return Job(list(where), job.k_final, job.k_candidates, job.rerank), index


class _Pending:
    """One request in the batcher: its chunks, the answers so far, and its future."""

    def __init__(self, job: Job, chunk: int, fut: asyncio.Future[Any]) -> None:
        unique, self.index = distinct(job)
        self.chunks = split_job(unique, chunk)
        self.next = 0
        self.answers: list[list[Hit]] = []
        self.fut = fut

    def result(self) -> list[list[Hit]]:
        return [self.answers[i] for i in self.index]

    @property
    def done(self) -> bool:
        return self.next >= len(self.chunks) or self.fut.done()


class MicroBatcher:
    """Merge concurrent jobs into one engine call: bounded wait, bounded batch size, big
    requests in chunks that take turns with small ones.

    One worker thread runs the engine, so the model is never entered from two threads at once
    (HF fast tokenizers are not re-entrant). While a batch runs, new jobs queue up and form the
    next batch, so under load batches grow by themselves and the wait bound rarely matters.

    A request of more than ``chunk`` queries is split into chunks; each batch takes at most one
    chunk of every waiting request, round-robin, so a single-query client waits for about one
    chunk behind a 4,096-query request, not for all of it (issue 30), and :meth:`close` stops
    the engine after the chunk it is running.

    Requests are validated before they get here, but if a merged batch raises anyway, every
    request of it is re-run alone: one bad request never changes what its neighbours get.
    """

    def __init__(
        self,
        run: Callable[[list[Job]], list[list[list[Hit]]]],
        max_batch: int,
        max_wait_s: float,
        executor: ThreadPoolExecutor,
        chunk: int | None = None,
    ) -> None:
        self._run = run
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._executor = executor
        self._chunk = chunk or max_batch
        self._waiting: collections.deque[_Pending] = collections.deque()
        self._wake: asyncio.Event | None = None
        self._cycling_turn = False
        self._task: asyncio.Task[None] | None = None
        self.closing = False
        self.batches = 0
        self.isolated = 0  # engine calls made to re-run requests of a failed batch alone

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    def close(self) -> None:
        """Stop taking work: every waiting request (and the rest of the running ones' chunks)
        gets :class:`ShuttingDown`; the chunk in the engine now finishes. Loop thread only."""
        self.closing = True
        for p in self._waiting:
            _deliver_error(p.fut, ShuttingDown("the retrieval server is shutting down"))
        self._waiting.clear()
        if self._wake is not None:
            self._wake.set()

    async def stop(self) -> None:
        self.close()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def submit(self, job: Job) -> list[list[Hit]]:
        if self.closing:
            raise ShuttingDown("the retrieval server is shutting down")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Pending(job, self._chunk, fut))
        self._wake.set()  # type: ignore[union-attr]
        return await fut

    def _queued(self) -> int:
        return sum(len(p.chunks[p.next].queries) for p in self._waiting if not p.done)

    async def _gather(self) -> list[tuple[_Pending, Job]]:
        """The next batch: wait for a first request, then up to ``max_wait_s`` for company,
        then one chunk of each waiting request in turn, up to ``max_batch`` queries."""
        loop = asyncio.get_running_loop()
        while not self._waiting:
            if self.closing:
                return []
            self._wake.clear()  # type: ignore[union-attr]
            await self._wake.wait()  # type: ignore[union-attr]
        deadline = loop.time() + self._max_wait_s
        while self._queued() < self._max_batch and not self.closing:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._wake.clear()  # type: ignore[union-attr]
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)  # type: ignore[union-attr]
            except TimeoutError:
                break
        return self._take()

    def _take(self) -> list[tuple[_Pending, Job]]:
        """One chunk of each waiting request, up to ``max_batch`` queries, in turn order.

        Requests not yet started ("fresh", FIFO) and requests with chunks left ("cycling")
        take turns at going first: a single query that arrives while a 4,096-query request
        runs rides in the next engine call, and a stream of small requests cannot starve the
        big one either.
        """
        live = [p for p in self._waiting if not p.done]
        fresh = [p for p in live if p.next == 0]
        cycling = [p for p in live if p.next > 0]
        order = cycling + fresh if self._cycling_turn else fresh + cycling
        batch: list[tuple[_Pending, Job]] = []
        n = 0
        for p in order:
            chunk = p.chunks[p.next]
            if batch and n + len(chunk.queries) > self._max_batch:
                break  # it opens the next batch
            batch.append((p, chunk))
            n += len(chunk.queries)
        served = [p for p, _ in batch]
        if cycling:
            self._cycling_turn = not any(p in cycling for p in served)
        for p in served:
            p.next += 1
        self._waiting = collections.deque(
            [p for p in live if p not in served] + [p for p in served if not p.done]
        )
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.closing:
            batch = await self._gather()
            if not batch:
                continue
            self.batches += 1
            try:
                results = await loop.run_in_executor(
                    self._executor, self._run, [j for _, j in batch]
                )
            except Exception as err:  # noqa: BLE001 - isolated below
                if len(batch) == 1:
                    self._fail(batch[0][0], err)
                    continue
                log.warning(
                    "a merged batch of %d requests failed (%s: %s); re-running each alone",
                    len(batch), type(err).__name__, err,
                )  # fmt: skip
                await self._run_alone(batch)
                continue
            for (p, _), res in zip(batch, results, strict=True):
                self._deliver(p, res)

    def _deliver(self, p: _Pending, res: list[list[Hit]]) -> None:
        p.answers.extend(res)
        if p.next >= len(p.chunks) and not p.fut.done():
            p.fut.set_result(p.result())

    def _fail(self, p: _Pending, err: BaseException) -> None:
        _deliver_error(p.fut, err)
        p.next = len(p.chunks)  # its other chunks are dropped from the queue

    async def _run_alone(self, batch: list[tuple[_Pending, Job]]) -> None:
        """After a failed merged batch: one engine call per request, so that the request that
        breaks the engine fails alone and every other one gets its own answer."""
        loop = asyncio.get_running_loop()
        for p, job in batch:
            if p.fut.done():
                continue
            self.isolated += 1
            try:
                res = await loop.run_in_executor(self._executor, self._run, [job])
            except Exception as err:  # noqa: BLE001 - this request is the culprit
                self._fail(p, err)
            else:
                self._deliver(p, res[0])


def _deliver_error(fut: asyncio.Future[Any], err: BaseException) -> None:
    if not fut.done():
        fut.set_exception(err)


class _State:
    def __init__(self) -> None:
        self.engine: SearchEngine | None = None
        self.error: str | None = None
        self.loaded_at: float | None = None
        self.started_at = time.time()
        self.closing = False


def _run_chunked(engine: SearchEngine, job: Job, size: int, state: _State) -> list[list[Hit]]:
    """``--no-batching``: one request alone, still chunk by chunk, so that a shutdown stops it
    after the chunk it is running."""
    unique, index = distinct(job)
    answers: list[list[Hit]] = []
    for chunk in split_job(unique, size):
        if state.closing:
            raise ShuttingDown("the retrieval server is shutting down")
        answers.extend(engine.run([chunk])[0])
    return [answers[i] for i in index]


def create_app(
    load: Callable[[], SearchEngine],
    cfg: ServerConfig = ServerConfig(),
    on_load_error: Callable[[BaseException], None] | None = None,
) -> Any:
    """Build the FastAPI app; ``load`` runs in a background thread when the server starts.

    ``app.state.begin_shutdown()`` (any thread; :func:`uvicorn_server` calls it on SIGTERM)
    makes every new and queued request a 503 and stops the engine after its current chunk.
    """
    from fastapi import FastAPI

    service = _Service(load, cfg, on_load_error)
    app = FastAPI(title="calibadv retrieval", lifespan=service.lifespan)
    app.state.retrieval = service.state
    app.state.begin_shutdown = service.begin_shutdown
    app.add_exception_handler(Exception, service.unexpected)
    app.add_api_route("/health", service.health, methods=["GET"])
    app.add_route("/retrieve", service.retrieve, methods=["POST"])
    return _FastPath(app, service)


class _FastPath:
    """The ASGI app uvicorn serves: ``POST /retrieve`` goes straight to the handler, everything
    else (``/health``, lifespan, 404/405) through FastAPI.

    Why: under 128 single-query clients, FastAPI's and Starlette's middleware and routing
    (error, telemetry, body-limit, exit-stack middleware, the router) were ~40% of the event
    loop's busy time (py-spy), and that time holds the GIL the engine thread needs between its
    torch calls. The handler catches its own errors; what escapes it is a 500 here, as
    FastAPI's handler would answer. Attributes (``state``, ...) are the FastAPI app's.
    """

    def __init__(self, app: Any, service: _Service) -> None:
        self.app = app
        self.service = service

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/retrieve" and scope["method"] == "POST":
            request = Request(scope, receive)
            try:
                response = await self.service.retrieve(request)
            except Exception as err:  # noqa: BLE001 - one request's failure, answered to it
                response = await self.service.unexpected(request, err)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _error(status: int, message: str, **headers: str) -> Any:
    return JSONResponse({"detail": message}, status_code=status, headers=headers or None)


def _shutting_down() -> Any:
    return _error(503, "the retrieval server is shutting down; retry on its replacement",
                  **{"Retry-After": "5"})  # fmt: skip


class _Service:
    """One server's state and handlers: the engine (loaded in a background thread), the
    micro-batcher on the event loop, and the ``/health`` and ``/retrieve`` endpoints."""

    def __init__(
        self,
        load: Callable[[], SearchEngine],
        cfg: ServerConfig,
        on_load_error: Callable[[BaseException], None] | None,
    ) -> None:
        self.load_engine = load
        self.cfg = cfg
        self.on_load_error = on_load_error
        self.state = _State()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="retrieval-engine")
        self.model_lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.batcher: MicroBatcher | None = None

    # -- life cycle ---------------------------------------------------------------------------

    def _load(self) -> None:
        state = self.state
        try:
            engine = self.load_engine()
        except BaseException as err:  # noqa: BLE001 - reported on /health and to the caller
            state.error = f"{type(err).__name__}: {err}"
            log.error("retrieval server failed to load: %s", state.error)
            if self.on_load_error is not None:
                self.on_load_error(err)
            return
        state.engine = engine
        state.loaded_at = time.time()
        log.info("retrieval server ready: %d passages", engine.size)

    def begin_shutdown(self) -> None:
        self.state.closing = True
        if self.loop is not None and self.batcher is not None:
            self.loop.call_soon_threadsafe(self.batcher.close)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any) -> Any:
        self.loop = asyncio.get_running_loop()
        threading.Thread(target=self._load, name="retrieval-load", daemon=True).start()
        if self.cfg.batching:
            self.batcher = MicroBatcher(
                lambda jobs: self.state.engine.run(jobs),  # type: ignore[union-attr]
                self.cfg.max_batch,
                self.cfg.max_wait_ms / 1000.0,
                self.executor,
                chunk=self.cfg.chunk_queries,
            )
            self.batcher.start()
        yield
        self.state.closing = True
        if self.batcher is not None:
            await self.batcher.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)

    # -- endpoints ----------------------------------------------------------------------------

    async def unexpected(self, request: Request, err: Exception) -> Any:
        log.exception("unexpected error on %s", request.url.path)
        return _error(500, f"internal error: {type(err).__name__}: {err}")

    async def health(self) -> Any:
        state, cfg = self.state, self.cfg
        if state.engine is None or state.closing:
            body = {
                "status": "closing" if state.closing else "failed" if state.error else "loading",
                "error": state.error,
            }
            return JSONResponse(body, status_code=503)
        return JSONResponse(
            {
                "status": "ok",
                "passages": state.engine.size,
                "encoder": getattr(state.engine.encoder, "name", None),
                "reranker": getattr(state.engine.reranker, "name", None),
                "batching": cfg.batching,
                "batches": self.batcher.batches if self.batcher is not None else None,
                "isolated": self.batcher.isolated if self.batcher is not None else None,
            }
        )

    async def _read_body(self, request: Request) -> bytes:
        cfg = self.cfg
        declared = request.headers.get("content-length")
        if (
            declared is not None
            and declared.isdigit()
            and int(declared) > cfg.max_body_bytes
        ):
            raise RequestError(
                413,
                f"body of {declared} bytes; at most {cfg.max_body_bytes} "
                "(serve --max-body-bytes)",
            )
        chunks: list[bytes] = []
        total = 0
        try:
            async with asyncio.timeout(cfg.body_timeout_s):
                async for chunk in request.stream():
                    total += len(chunk)
                    if total > cfg.max_body_bytes:
                        raise RequestError(
                            413,
                            f"body larger than {cfg.max_body_bytes} bytes "
                            "(serve --max-body-bytes)",
                        )
                    chunks.append(chunk)
        except TimeoutError:
            log.warning("client %s sent %d body bytes in %.0f s; cut off",
                        _peer(request), total, cfg.body_timeout_s)  # fmt: skip
            raise RequestError(
                408,
                f"body not received within {cfg.body_timeout_s:g} s (serve --body-timeout)",
            ) from None
        return b"".join(chunks)

    async def _answer(self, engine: SearchEngine, job: Job) -> list[list[Hit]]:
        if self.batcher is not None:
            return await self.batcher.submit(job)
        loop = asyncio.get_running_loop()

        def run_one() -> list[list[Hit]]:
            with self.model_lock:
                return _run_chunked(engine, job, self.cfg.chunk_queries, self.state)

        return await loop.run_in_executor(None, run_one)

    async def _parse(self, request: Request, engine: SearchEngine) -> tuple[Job, bool]:
        raw = await self._read_body(request)
        if len(raw) > JSON_OFFLOAD_BYTES:
            obj = await asyncio.to_thread(decode_json, raw)
        else:
            obj = decode_json(raw)
        return parse_request(obj, self.cfg, engine.size, engine.reranker is not None)

    async def retrieve(self, request: Request) -> Any:
        engine = self.state.engine
        if self.state.closing:
            return _shutting_down()
        if engine is None:
            return JSONResponse(
                {"detail": "index still loading; poll GET /health", "error": self.state.error},
                status_code=503,
                headers={"Retry-After": "5"},
            )
        try:
            job, return_scores = await self._parse(request, engine)
        except RequestError as err:
            return _error(err.status, err.message)
        except ClientDisconnect:
            # the client went away mid-body (killed trainer, timeout): nothing to answer and
            # nothing wrong with the server, so one line instead of two tracebacks
            log.warning("client %s disconnected before sending the whole body", _peer(request))
            return _error(400, "client disconnected")
        if not job.queries:
            return JSONResponse({"result": []})  # a turn in which no rollout searched
        return await self._respond(engine, job, return_scores)

    async def _respond(self, engine: SearchEngine, job: Job, return_scores: bool) -> Any:
        max_bytes = self.cfg.max_answer_bytes
        try:
            answers = await self._answer(engine, job)
            if len(job.queries) > LARGE_ANSWER_QUERIES:
                body = await asyncio.to_thread(render_answer, answers, return_scores, max_bytes)
            else:  # a thread hop costs more than rendering a few hits
                body = render_answer(answers, return_scores, max_bytes)
        except ShuttingDown:
            return _shutting_down()
        except RequestError as err:
            return _error(err.status, err.message)
        except Exception as err:  # noqa: BLE001 - this request's failure, reported to it alone
            log.error(
                "engine failed on a request of %d queries: %s: %s",
                len(job.queries), type(err).__name__, err, exc_info=err,
            )  # fmt: skip
            return _error(500, f"internal error: {type(err).__name__}: {err}")
        return Response(body, media_type="application/json")


def _peer(request: Request) -> str:
    client = request.client
    return f"{client.host}:{client.port}" if client else "(unknown)"


def bind_socket(host: str, port: int) -> Any:
    """Bind a listening TCP socket (port 0 = any free port) before uvicorn takes it over."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def header_timeout_protocol(timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol with a deadline for the request head.

    uvicorn times out only idle keep-alive connections, and only after a first answer: a
    client that connects and sends nothing, or sends its headers a byte at a time
    (slowloris), holds its connection forever (issue 30 held 3,000). Here a connection must
    complete each request head within ``timeout_s`` of connecting, of its previous answer or
    of the first byte of the head, whichever comes first; otherwise it is closed.
    """
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class HeaderTimeoutProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        _head_timer: asyncio.TimerHandle | None = None

        def _awaiting_head(self) -> bool:
            cycle = getattr(self, "cycle", None)
            return cycle is None or cycle.response_complete

        def _arm(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(timeout_s, self._expire)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _expire(self) -> None:
            self._head_timer = None
            if self._awaiting_head() and not self.transport.is_closing():
                log.warning("closing a connection that sent no request head in %g s", timeout_s)
                self.transport.close()

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._awaiting_head():
                self._arm()
            else:
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._disarm()  # uvicorn's keep-alive timeout takes over until the next byte

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderTimeoutProtocol


def uvicorn_server(app: Any, cfg: ServerConfig, **config: Any) -> Any:
    """The uvicorn server every launcher runs ``app`` under: head/body timeouts, a connection
    limit, and SIGTERM/``should_exit`` that first tells the app to shed its work."""
    import uvicorn

    class Server(uvicorn.Server):  # type: ignore[misc]
        def handle_exit(self, sig: int, frame: Any) -> None:
            app.state.begin_shutdown()
            super().handle_exit(sig, frame)

        def request_exit(self) -> None:
            """``should_exit = True`` for launchers in this process (no signal)."""
            app.state.begin_shutdown()
            self.should_exit = True

    options = {"access_log": False, "timeout_keep_alive": 30, **config}
    return Server(
        uvicorn.Config(
            app,
            http=header_timeout_protocol(cfg.header_timeout_s),
            limit_concurrency=cfg.max_connections,
            timeout_graceful_shutdown=max(1, math.ceil(cfg.shutdown_timeout_s)),
            **options,
        )
    )


def run_server(
    load: Callable[[], SearchEngine],
    cfg: ServerConfig,
    host: str = "127.0.0.1",
    port: int = 8000,
    port_file: str | None = None,
    log_level: str = "warning",
) -> int:
    """Serve until SIGINT/SIGTERM; returns 1 when loading failed (the server then shuts down).

    On SIGTERM new and queued requests get 503 at once, the engine stops after its current
    chunk, and requests still open after ``cfg.shutdown_timeout_s`` are cancelled.
    """
    from calibadv.io import atomic_write_text

    failed: list[BaseException] = []
    server_box: dict[str, Any] = {}

    def on_error(err: BaseException) -> None:
        failed.append(err)
        if "server" in server_box:
            server_box["server"].should_exit = True

    app = create_app(load, cfg, on_load_error=on_error)
    sock = bind_socket(host, port)
    actual = sock.getsockname()[1]
    server = uvicorn_server(app, cfg, log_level=log_level)
    server_box["server"] = server
    if port_file:
        atomic_write_text(port_file, f"{actual}\n")
    log.warning("retrieval server listening on http://%s:%d", host, actual)
    server.run(sockets=[sock])
    return 1 if failed else 0
