"""Where the judge runs: an external endpoint, or a server the job starts and stops itself.

``judge.server: external`` uses ``judge.base_url`` as it is (DeepSeek's API, a vLLM server the
user runs, …). ``judge.server: local`` starts a real OpenAI-compatible server for the length
of a ``with`` block:

* ``engine: vllm`` — ``python -m vllm.entrypoints.openai.api_server`` on the GPUs of
  ``resources.judge`` (tensor parallel over them), for a real judge model on a GPU node;
* ``engine: transformers`` — ``transformers serve`` (``transformers[serving]``) on CPU, for the
  embedded default's stand-in judge and for tests.

The server runs in its own session (its whole process group is stopped: SIGTERM, then SIGKILL
after a grace period), dies with its launcher (Linux ``PR_SET_PDEATHSIG``, so a SIGKILLed job
leaves no orphan) and, while the block runs in the main thread, a SIGTERM to the job
(``scancel``, Snakemake cancelling) unwinds the block so the server is stopped cleanly.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from calibadv import server_process
from calibadv.errors import ConfigError

ENGINES = ("transformers", "vllm")

#: Servers this process runs, by base URL: what :func:`dead_server` checks when a request fails.
_RUNNING: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}


def dead_server(base_url: str) -> str | None:
    """If ``base_url`` belongs to a local server this process started and that server has
    exited, the message saying so (exit code, log path and tail); else ``None``.

    Why: a request to a dead server fails with a connection error the client would retry for
    minutes; the job must stop at once and say where to look.
    """
    found = _RUNNING.get(base_url)
    if found is None:
        return None
    proc, log_file = found
    code = proc.poll()
    if code is None:
        return None
    return (f"the local judge server at {base_url} died (exit code {code}); its log "
            f"{log_file}:\n{server_process.tail(log_file, 30)}")


@dataclass(frozen=True)
class LocalServer:
    """A server the job starts: which engine, which model directory, which devices."""

    engine: str
    model_path: str
    served_name: str | None = None  # vLLM: the name requests use (default: model_path)
    gpus: int = 0
    host: str = "127.0.0.1"
    port: int = 0  # 0 = a free port
    startup_timeout_s: float = 900.0
    threads: int | None = None  # CPU threads of the server (OMP/MKL); None = torch's default
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"judge.engine: {self.engine!r} is not one of {list(ENGINES)}")
        if not self.model_path:
            raise ConfigError("judge.model_path: give the model directory the local server loads")

    @property
    def request_model(self) -> str:
        """The ``model`` field of requests to this server."""
        if self.engine == "vllm":
            return self.served_name or self.model_path
        return self.model_path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def server_command(server: LocalServer, port: int) -> list[str]:
    """The command line that starts ``server`` on ``port``."""
    if server.engine == "transformers":
        cmd = [sys.executable, "-m", "transformers.cli.transformers", "serve", server.model_path,
               "--host", server.host, "--port", str(port),
               "--device", "cpu" if server.gpus == 0 else "auto", "--log-level", "warning"]
    else:
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
               "--model", server.model_path, "--host", server.host, "--port", str(port),
               "--tensor-parallel-size", str(max(1, server.gpus))]
        if server.served_name:
            cmd += ["--served-model-name", server.served_name]
    return cmd + list(server.extra_args)


@contextlib.contextmanager
def _terminate_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into SystemExit while the block runs (main thread only), so ``finally``
    clauses — stopping the server — run when the job is cancelled."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _answers_openai(root: str) -> bool:
    """Both ``GET /health`` and ``GET /v1/models`` answer 200: clients need the model list,
    and it can fail while ``/health`` is fine (see the hub cache note in :func:`serve_judge`)."""
    return (httpx.get(root + "/health", timeout=5.0).status_code == 200
            and httpx.get(root + "/v1/models", timeout=10.0).status_code == 200)


def wait_healthy(base_url: str, proc: subprocess.Popen[bytes] | None, log_file: Path | None,
                 timeout: float) -> None:
    """Poll ``GET /health`` and ``GET /v1/models`` until both answer 200."""
    root = base_url.removesuffix("/v1")

    def not_ready() -> str:
        return (
            f"the judge server at {base_url} was not ready after {timeout:.0f} s (GET /health "
            f"and /v1/models); raise judge.startup_timeout_s for big models"
            + (f"; log {log_file}:\n{server_process.tail(log_file, 30)}" if log_file else "")
        )

    failure = (server_process.exited_early(proc, "the judge server", log_file, lines=30)
               if proc is not None else lambda: None)
    server_process.wait_until_healthy(lambda: root, timeout=timeout, not_ready=not_ready,
                                      failure=failure, probe=_answers_openai, interval=0.5)


@contextlib.contextmanager
def serve_judge(server: LocalServer, log_path: str | os.PathLike | None = None) -> Iterator[str]:
    """Run ``server`` until the block ends; yields its base URL (``http://host:port/v1``)."""
    with tempfile.TemporaryDirectory(prefix="calibadv-judge-") as tmp:
        log_file = Path(log_path) if log_path else Path(tmp) / "judge-server.log"
        env = dict(os.environ)
        env.setdefault("HF_HUB_DISABLE_UPDATE_CHECK", "1")
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        if server.threads:
            # more OpenMP threads than free cores makes CPU decoding dozens of times slower
            # (measured: 3.9 s vs 110 s for 16 tokens of a 135M model on a busy 2-core box)
            for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                env[var] = str(server.threads)
        # transformers serve answers /v1/models with 500 unless the hub cache dir exists
        hub_cache = env.get("HF_HUB_CACHE")
        if not hub_cache or not Path(hub_cache).is_dir():
            env["HF_HUB_CACHE"] = str(Path(tmp) / "hub-cache")
            Path(env["HF_HUB_CACHE"]).mkdir()
        port = server.port or free_port(server.host)
        base_url = server_process.http_url(server.host, port) + "/v1"
        # the whole process group: vLLM's engine and tensor-parallel workers are children
        with _terminate_on_sigterm(), server_process.supervised(
            server_command(server, port), log_file, env=env, grace=20.0, group=True
        ) as proc:
            wait_healthy(base_url, proc, log_file, server.startup_timeout_s)
            _RUNNING[base_url] = (proc, log_file)
            try:
                yield base_url
            finally:
                _RUNNING.pop(base_url, None)
