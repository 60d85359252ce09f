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
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import (
    Request,  # module level: FastAPI resolves endpoint annotations by name
)
from starlette.requests import ClientDisconnect

from calibadv.retrieval.engine import Hit, Job, SearchEngine
from calibadv.retrieval.server_config import ServerConfig

log = logging.getLogger(__name__)


#: Bodies larger than this are decoded off the event loop, so one big request (a 2,560-query
#: turn is ~0.2-10 MB) does not stall /health and every other client while it parses.
JSON_OFFLOAD_BYTES = 1 << 20
#: Answers to requests of more queries than this are rendered to JSON off the event loop too.
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
        return Job(list(queries), k, k, rerank=False), return_scores
    final = (
        k_rer if k_rer is not None else topk if topk is not None else cfg.rerank_topk
    )
    final = min(final, size)
    cands = k_ret if k_ret is not None else min(max(cfg.retrieval_topk, final), size)
    if final > cands:
        raise RequestError(
            422, f"'topk_rerank' ({final}) must not exceed 'topk_retrieval' ({cands})"
        )
    return Job(list(queries), final, cands, rerank=True), return_scores


def format_result(answers: list[list[Hit]], return_scores: bool) -> dict[str, Any]:
    if return_scores:
        result = [
            [{"document": h.document.to_dict(), "score": h.score} for h in hits]
            for hits in answers
        ]
    else:
        result = [[h.document.to_dict() for h in hits] for hits in answers]
    return {"result": result}


class MicroBatcher:
    """Merge concurrent jobs into one engine call: bounded wait, bounded batch size.

    One worker thread runs the engine, so the model is never entered from two threads at once
    (HF fast tokenizers are not re-entrant). While a batch runs, new jobs queue up and form the
    next batch, so under load batches grow by themselves and the wait bound rarely matters.

    Requests are validated before they get here, but if a merged batch raises anyway, every
    request of it is re-run alone: one bad request never changes what its neighbours get.
    """

    def __init__(
        self,
        run: Callable[[list[Job]], list[list[list[Hit]]]],
        max_batch: int,
        max_wait_s: float,
        executor: ThreadPoolExecutor,
    ) -> None:
        self._run = run
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._executor = executor
        self._queue: asyncio.Queue[tuple[Job, asyncio.Future[Any]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.isolated = 0  # engine calls made to re-run requests of a failed batch alone

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def submit(self, job: Job) -> list[list[Hit]]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self._queue.put((job, fut))
        return await fut

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        carry: tuple[Job, asyncio.Future[Any]] | None = None
        while True:
            batch = [carry if carry is not None else await self._queue.get()]
            carry = None
            n = len(batch[0][0].queries)
            deadline = loop.time() + self._max_wait_s
            while n < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self._queue.get(), remaining)
                    except TimeoutError:
                        break
                if n + len(item[0].queries) > self._max_batch:
                    carry = item  # too big to join: it opens the next batch
                    break
                batch.append(item)
                n += len(item[0].queries)
            live = [(j, f) for j, f in batch if not f.cancelled()]
            if not live:
                continue
            self.batches += 1
            try:
                results = await loop.run_in_executor(
                    self._executor, self._run, [j for j, _ in live]
                )
            except Exception as err:  # noqa: BLE001 - isolated below
                if len(live) == 1:
                    _deliver_error(live[0][1], err)
                    continue
                log.warning(
                    "a merged batch of %d requests failed (%s: %s); re-running each alone",
                    len(live), type(err).__name__, err,
                )  # fmt: skip
                await self._run_alone(live)
                continue
            for (_, fut), res in zip(live, results, strict=True):
                if not fut.done():
                    fut.set_result(res)

    async def _run_alone(self, live: list[tuple[Job, asyncio.Future[Any]]]) -> None:
        """After a failed merged batch: one engine call per request, so that the request that
        breaks the engine fails alone and every other one gets its own answer."""
        loop = asyncio.get_running_loop()
        for job, fut in live:
            if fut.done():
                continue
            self.isolated += 1
            try:
                res = await loop.run_in_executor(self._executor, self._run, [job])
            except Exception as err:  # noqa: BLE001 - this request is the culprit
                _deliver_error(fut, err)
            else:
                if not fut.done():
                    fut.set_result(res[0])


def _deliver_error(fut: asyncio.Future[Any], err: BaseException) -> None:
    if not fut.done():
        fut.set_exception(err)


class _State:
    def __init__(self) -> None:
        self.engine: SearchEngine | None = None
        self.error: str | None = None
        self.loaded_at: float | None = None
        self.started_at = time.time()


def create_app(
    load: Callable[[], SearchEngine],
    cfg: ServerConfig = ServerConfig(),
    on_load_error: Callable[[BaseException], None] | None = None,
) -> Any:
    """Build the FastAPI app; ``load`` runs in a background thread when the server starts."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    state = _State()
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="retrieval-engine")
    model_lock = threading.Lock()
    holder: dict[str, MicroBatcher] = {}

    def _load() -> None:
        try:
            engine = load()
        except BaseException as err:  # noqa: BLE001 - reported on /health and to the caller
            state.error = f"{type(err).__name__}: {err}"
            log.error("retrieval server failed to load: %s", state.error)
            if on_load_error is not None:
                on_load_error(err)
            return
        state.engine = engine
        state.loaded_at = time.time()
        log.info("retrieval server ready: %d passages", engine.size)

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        threading.Thread(target=_load, name="retrieval-load", daemon=True).start()
        if cfg.batching:
            batcher = MicroBatcher(
                lambda jobs: state.engine.run(jobs),  # type: ignore[union-attr]
                cfg.max_batch,
                cfg.max_wait_ms / 1000.0,
                executor,
            )
            batcher.start()
            holder["batcher"] = batcher
        yield
        if "batcher" in holder:
            await holder["batcher"].stop()
        executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="calibadv retrieval", lifespan=lifespan)
    app.state.retrieval = state

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"detail": message}, status_code=status)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return error(500, f"internal error: {type(err).__name__}: {err}")

    @app.get("/health")
    async def health() -> JSONResponse:
        if state.engine is None:
            body = {
                "status": "failed" if state.error else "loading",
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
                "batches": holder["batcher"].batches if "batcher" in holder else None,
                "isolated": holder["batcher"].isolated if "batcher" in holder else None,
            }
        )

    async def _read_body(request: Request) -> bytes:
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
        async for chunk in request.stream():
            total += len(chunk)
            if total > cfg.max_body_bytes:
                raise RequestError(
                    413,
                    f"body larger than {cfg.max_body_bytes} bytes (serve --max-body-bytes)",
                )
            chunks.append(chunk)
        return b"".join(chunks)

    async def _answer(engine: SearchEngine, job: Job) -> list[list[Hit]]:
        if "batcher" in holder:
            return await holder["batcher"].submit(job)
        loop = asyncio.get_running_loop()

        def run_one() -> list[list[Hit]]:
            with model_lock:
                return engine.run([job])[0]

        return await loop.run_in_executor(None, run_one)

    @app.post("/retrieve")
    async def retrieve(request: Request) -> JSONResponse:
        engine = state.engine
        try:
            raw = await _read_body(request)
            if engine is None:
                return JSONResponse(
                    {
                        "detail": "index still loading; poll GET /health",
                        "error": state.error,
                    },
                    status_code=503,
                    headers={"Retry-After": "5"},
                )
            if len(raw) > JSON_OFFLOAD_BYTES:
                obj = await asyncio.to_thread(decode_json, raw)
            else:
                obj = decode_json(raw)
            job, return_scores = parse_request(
                obj, cfg, engine.size, engine.reranker is not None
            )
        except RequestError as err:
            return error(err.status, err.message)
        except ClientDisconnect:
            # the client went away mid-body (killed trainer, timeout): nothing to answer and
            # nothing wrong with the server, so one line instead of two tracebacks
            log.warning("client %s disconnected before sending the whole body", _peer(request))
            return error(400, "client disconnected")
        if not job.queries:
            return JSONResponse({"result": []})  # a turn in which no rollout searched
        try:
            answers = await _answer(engine, job)
        except Exception as err:  # noqa: BLE001 - this request's failure, reported to it alone
            log.error(
                "engine failed on a request of %d queries: %s: %s",
                len(job.queries), type(err).__name__, err, exc_info=err,
            )  # fmt: skip
            return error(500, f"internal error: {type(err).__name__}: {err}")
        body = format_result(answers, return_scores)
        if len(job.queries) > LARGE_ANSWER_QUERIES:  # render a paper turn's ~5 MB off the loop
            return await asyncio.to_thread(JSONResponse, body)
        return JSONResponse(body)

    return app


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


def run_server(
    load: Callable[[], SearchEngine],
    cfg: ServerConfig,
    host: str = "127.0.0.1",
    port: int = 8000,
    port_file: str | None = None,
    log_level: str = "warning",
) -> int:
    """Serve until SIGINT/SIGTERM; returns 1 when loading failed (the server then shuts down)."""
    import uvicorn

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
    config = uvicorn.Config(
        app, log_level=log_level, access_log=False, timeout_keep_alive=30
    )
    server = uvicorn.Server(config)
    server_box["server"] = server
    if port_file:
        atomic_write_text(port_file, f"{actual}\n")
    log.warning("retrieval server listening on http://%s:%d", host, actual)
    server.run(sockets=[sock])
    return 1 if failed else 0
