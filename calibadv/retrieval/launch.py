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
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import httpx

from calibadv.errors import CalibAdvError


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


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


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM the server when the launching process dies.

    A job killed by SIGKILL/SIGTERM (Snakemake cancelling, ``scancel``, a test timeout) never
    runs the ``finally`` below; without this its server would live on as an orphan holding
    memory and a port. Elsewhere than Linux this is a no-op.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


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
        log_file.parent.mkdir(parents=True, exist_ok=True)
        cmd = serve_command(
            corpus, index, encoder, reranker, host, port, port_file, extra_args
        )
        child_env = {**os.environ, **(env or {}), "CALIBADV_NO_PROGRESS": "1"}
        with open(log_file, "ab") as log_fh:
            proc = subprocess.Popen(
                cmd, stdout=log_fh, stderr=subprocess.STDOUT, env=child_env,
                stdin=subprocess.DEVNULL, start_new_session=True,
                preexec_fn=_die_with_parent,
            )  # fmt: skip
        try:
            url = _wait_ready(proc, port_file, host, log_file, startup_timeout)
            yield url
        finally:
            _stop(proc)


def _base_url(host: str, port: int | str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


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
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = failure()
        if message:
            raise CalibAdvError(message)
        url = url_of()
        if url is not None:
            try:
                if httpx.get(url + "/health", timeout=5.0).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
        time.sleep(0.2)
    where = f"; log {log_file}:\n{_tail(log_file)}" if log_file else ""
    raise CalibAdvError(
        f"retrieval server not ready after {timeout:.0f} s (GET /health never answered 200); "
        f"raise startup_timeout for big indexes{where}"
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
        return _base_url(host, text) if text.isdigit() else None

    def failure() -> str | None:
        code = proc.poll()
        if code is None:
            return None
        return (f"retrieval server exited with code {code} before it was ready; "
                f"log {log_file}:\n{_tail(log_file)}")

    return _await_health(url_of, failure, timeout, log_file)


def _stop(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _serve_namespace(
    corpus: str | os.PathLike,
    index: str | os.PathLike,
    encoder: str,
    reranker: str | None,
    host: str,
    port: int,
    extra_args: Sequence[str],
) -> Any:
    """Parse the flags ``serve_in_background`` would pass, with the ``serve`` parser itself."""
    from calibadv.cli import build_parser

    argv = serve_command(corpus, index, encoder, reranker, host, port, None, extra_args)[3:]
    try:
        return build_parser().parse_args(argv)
    except SystemExit as err:  # argparse already printed which flag is wrong
        raise CalibAdvError(f"bad retrieval server flags: {' '.join(argv[1:])}") from err


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
    import uvicorn

    from calibadv.commands.retrieval import server_parts
    from calibadv.retrieval.server import bind_socket, create_app

    args = _serve_namespace(corpus, index, encoder, reranker, host, port, extra_args)
    load, cfg = server_parts(args, own_process=False)
    failed: list[BaseException] = []
    app = create_app(load, cfg, on_load_error=failed.append)
    sock = bind_socket(host, port)
    url = _base_url(host, sock.getsockname()[1])
    # log_config=None: leave the host process's logging set-up alone.
    server = uvicorn.Server(
        uvicorn.Config(app, log_config=None, access_log=False, timeout_keep_alive=30)
    )
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
        server.should_exit = True
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
