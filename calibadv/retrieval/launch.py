"""Start a retrieval server for the length of a ``with`` block.

Training, SFT and evaluation all need a retrieval server next to them. Two ways to run it, the
same server either way (same flags, same FastAPI app, a real HTTP socket on loopback):

- ``process`` (default): ``calibadv serve`` as a child process. Its models and FAISS threads stay
  out of the trainer's process and a crash of either side is visible; the right choice on GPU
  nodes and for big indexes. The server binds port 0 itself and reports the real port through
  a file, so two launchers never race for the same port.
- ``thread``: uvicorn in a thread of the calling process. It saves a second Python start-up
  (importing torch + transformers + sentence-transformers costs ~14 s of CPU on a small
  machine), which dominates short CPU jobs such as the embedded default's evaluations.

Starting, waiting for and stopping the child process is :mod:`calibadv.server_process` (shared
with the local judge server); turning ``serve`` flags into a server is
:mod:`calibadv.retrieval.server_config` (shared with ``calibadv serve``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from calibadv import server_process
from calibadv.errors import CalibAdvError, ConfigError
from calibadv.retrieval.server_config import ServerOptions, parse_serve_flags, server_parts


def serve_command(
    corpus: str | os.PathLike,
    index: str | os.PathLike,
    encoder: str,
    reranker: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    port_file: str | os.PathLike | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    cmd = [
        sys.executable, "-m", "calibadv.cli", "serve",
        "--corpus", str(corpus), "--index", str(index), "--encoder", encoder,
        "--host", host, "--port", str(port),
    ]  # fmt: skip
    if reranker:
        cmd += ["--reranker", reranker]
    if port_file:
        cmd += ["--port-file", str(port_file)]
    return cmd + list(extra_args)


def spec_server_args(retrieval: object) -> list[str]:
    """Extra ``serve`` flags from a RunSpec's ``retrieval`` section (both backends use this)."""
    args = ["--topk", str(retrieval.topk)]
    if retrieval.reranker:
        args += ["--retrieval-topk", str(retrieval.topk_retrieval),
                 "--rerank-topk", str(retrieval.topk)]  # fmt: skip
    if retrieval.query_prefix:
        args += ["--query-prefix", retrieval.query_prefix]
    if getattr(retrieval, "device", None):
        args += ["--device", retrieval.device]
    if getattr(retrieval, "faiss_gpu", False):
        args.append("--faiss-gpu")
    if getattr(retrieval, "precision", "auto") != "auto":
        args += ["--precision", retrieval.precision]
    return args


@contextmanager
def serve_in_background(
    corpus: str | os.PathLike,
    index: str | os.PathLike,
    encoder: str,
    reranker: str | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    extra_args: Sequence[str] = (),
    startup_timeout: float = 600.0,
    log_path: str | os.PathLike | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """Run a retrieval server until the block ends; yields its base URL (``http://host:port``).

    Raises :class:`CalibAdvError` with the tail of the server log when the server exits or is
    not ready (``GET /health`` = 200) within ``startup_timeout`` seconds.
    """
    with tempfile.TemporaryDirectory(prefix="calibadv-serve-") as tmp:
        port_file = Path(tmp) / "port"
        log_file = Path(log_path) if log_path else Path(tmp) / "server.log"
        cmd = serve_command(
            corpus, index, encoder, reranker, host, port, port_file, extra_args
        )
        child_env = {**os.environ, **(env or {}), "CALIBADV_NO_PROGRESS": "1"}
        with server_process.supervised(cmd, log_file, env=child_env, grace=15.0) as proc:
            yield _wait_ready(proc, port_file, host, log_file, startup_timeout)


def _await_health(
    url_of: Callable[[], str | None],
    failure: Callable[[], str | None],
    timeout: float,
    log_file: Path | None = None,
) -> str:
    """Poll ``GET /health`` until 200 and return the URL; both launchers wait this way.

    ``url_of`` gives the URL once it is known; ``failure`` a message once the server can no
    longer become ready (that message is raised at once).
    """

    def not_ready() -> str:
        where = f"; log {log_file}:\n{server_process.tail(log_file)}" if log_file else ""
        return (
            f"retrieval server not ready after {timeout:.0f} s (GET /health never answered "
            f"200); raise startup_timeout for big indexes{where}"
        )

    return server_process.wait_until_healthy(
        url_of, timeout=timeout, not_ready=not_ready, failure=failure
    )


def _wait_ready(
    proc: subprocess.Popen[bytes],
    port_file: Path,
    host: str,
    log_file: Path,
    timeout: float,
) -> str:
    def url_of() -> str | None:
        text = port_file.read_text().strip() if port_file.is_file() else ""
        return server_process.http_url(host, text) if text.isdigit() else None

    failure = server_process.exited_early(proc, "retrieval server", log_file)
    return _await_health(url_of, failure, timeout, log_file)


@contextmanager
def serve_in_thread(
    corpus: str | os.PathLike,
    index: str | os.PathLike,
    encoder: str,
    reranker: str | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    extra_args: Sequence[str] = (),
    startup_timeout: float = 600.0,
) -> Iterator[str]:
    """Run the retrieval server in a thread of this process until the block ends.

    Yields its base URL. Raises :class:`CalibAdvError` when loading fails or ``GET /health``
    does not answer 200 within ``startup_timeout`` seconds; on exit the server shuts down and
    its port is closed.
    """
    from calibadv.retrieval.server import bind_socket, create_app, uvicorn_server

    # the flags serve_in_background would give its process, parsed with the same definitions
    flags = serve_command(corpus, index, encoder, reranker, host, port, None, extra_args)[4:]
    options = ServerOptions.from_args(parse_serve_flags(flags))
    load, cfg = server_parts(options, own_process=False)
    failed: list[BaseException] = []
    app = create_app(load, cfg, on_load_error=failed.append)
    sock = bind_socket(host, port)
    url = server_process.http_url(host, sock.getsockname()[1])
    # log_config=None: leave the host process's logging set-up alone.
    server = uvicorn_server(app, cfg, log_config=None)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="retrieval-server", daemon=True
    )
    thread.start()

    def failure() -> str | None:
        if failed:
            err = failed[0]
            return f"retrieval server failed to load: {type(err).__name__}: {err}"
        if not thread.is_alive():
            return f"retrieval server thread for {url} stopped before it was ready"
        return None

    try:
        _await_health(lambda: url, failure, startup_timeout)
        yield url
    finally:
        server.request_exit()
        thread.join(timeout=30)
        sock.close()


#: ``retrieval.server`` modes (RunSpec, workflow config, ``calibadv sft --server``).
SERVER_MODES: dict[str, Callable[..., AbstractContextManager[str]]] = {
    "process": serve_in_background,
    "thread": serve_in_thread,
}


def serve(mode: str, *args: Any, **kwargs: Any) -> AbstractContextManager[str]:
    """The server context manager of ``mode`` (see :data:`SERVER_MODES`)."""
    try:
        launcher = SERVER_MODES[mode]
    except KeyError:
        raise CalibAdvError(
            f"retrieval.server: {mode!r} is not one of {', '.join(SERVER_MODES)}"
        ) from None
    return launcher(*args, **kwargs)


@contextmanager
def retrieval_url(retrieval: Any) -> Iterator[str]:
    """The spec's server URL, or a server started here from its corpus/index/encoder."""
    if retrieval.url:
        yield retrieval.url
        return
    needed = {"corpus": retrieval.corpus, "index": retrieval.index, "encoder": retrieval.encoder}
    missing = [k for k, v in needed.items() if not v]
    if missing:
        raise ConfigError(
            f"retrieval: set retrieval.url, or retrieval.{missing[0]} (with corpus, index and "
            "encoder) so that a server can be started"
        )
    try:
        ctx = serve(
            retrieval.server,
            retrieval.corpus,
            retrieval.index,
            retrieval.encoder,
            reranker=retrieval.reranker,
            port=retrieval.port,
            extra_args=spec_server_args(retrieval),
        )
    except FileNotFoundError as err:
        raise CalibAdvError(f"retrieval server could not start: {err}") from err
    with ctx as url:
        yield url
