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
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from calibadv.errors import CalibAdvError, ConfigError

ENGINES = ("transformers", "vllm")


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


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) or "(empty log)"
    except OSError:
        return "(no log)"


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


def _stop_group(proc: subprocess.Popen[bytes], grace: float = 20.0) -> None:
    """SIGTERM the server's process group, wait, then SIGKILL what is left."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def wait_healthy(base_url: str, proc: subprocess.Popen[bytes] | None, log_file: Path | None,
                 timeout: float) -> None:
    """Poll ``GET /health`` and ``GET /v1/models`` until both answer 200."""
    root = base_url.removesuffix("/v1")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise CalibAdvError(
                f"the judge server exited with code {proc.returncode} before it was ready; "
                f"log {log_file}:\n{_tail(log_file) if log_file else ''}"
            )
        try:
            if (httpx.get(root + "/health", timeout=5.0).status_code == 200
                    and httpx.get(root + "/v1/models", timeout=10.0).status_code == 200):
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise CalibAdvError(
        f"the judge server at {base_url} was not ready after {timeout:.0f} s (GET /health and "
        f"/v1/models); raise judge.startup_timeout_s for big models"
        + (f"; log {log_file}:\n{_tail(log_file)}" if log_file else "")
    )


@contextlib.contextmanager
def serve_judge(server: LocalServer, log_path: str | os.PathLike | None = None) -> Iterator[str]:
    """Run ``server`` until the block ends; yields its base URL (``http://host:port/v1``)."""
    from calibadv.retrieval.launch import _die_with_parent

    with tempfile.TemporaryDirectory(prefix="calibadv-judge-") as tmp:
        log_file = Path(log_path) if log_path else Path(tmp) / "judge-server.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
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
        shown = f"[{server.host}]" if ":" in server.host else server.host
        base_url = f"http://{shown}:{port}/v1"
        with _terminate_on_sigterm():
            with open(log_file, "ab") as fh:
                proc = subprocess.Popen(
                    server_command(server, port), stdout=fh, stderr=subprocess.STDOUT, env=env,
                    stdin=subprocess.DEVNULL, start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
            try:
                wait_healthy(base_url, proc, log_file, server.startup_timeout_s)
                yield base_url
            finally:
                _stop_group(proc)
