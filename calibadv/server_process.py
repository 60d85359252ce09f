"""Supervise a local server that a job runs as a child process for the length of a block.

The retrieval server (``calibadv serve``) and the local judge server (``transformers serve`` /
vLLM) are both started, waited for and stopped the same way, and both must never outlive
their job:

* :func:`start` runs the command in a session of its own, its output appended to a log file,
  with :func:`die_with_parent` so that a SIGKILLed launcher leaves no orphan;
* :func:`wait_until_healthy` polls the server until it answers, and fails at once, with the
  tail of the log, when the process has died (:func:`exited_early`) instead of waiting out the
  whole start-up timeout;
* :func:`stop` sends SIGTERM (to the process or its whole process group), waits a grace
  period, then kills;
* :func:`supervised` ties :func:`start` and :func:`stop` to a ``with`` block.

This module sits low in the layers: it imports only the standard library, ``httpx`` and
:mod:`calibadv.errors`, so both server families can use it without importing each other.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import httpx

from calibadv.errors import CalibAdvError


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a server log, for error messages.

    A failed start is explained by the server's own last words (a missing file, an import
    error), so they go into the exception rather than leaving the user to find the log.
    """
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def die_with_parent() -> None:
    """In the child (a ``preexec_fn``): ask Linux to SIGTERM the server when its launcher dies.

    A job killed by SIGKILL/SIGTERM (Snakemake cancelling, ``scancel``, a test timeout) never
    runs the ``finally`` that stops its server; without this the server would live on as an
    orphan holding memory, GPUs and a port. Elsewhere than Linux this is a no-op.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def http_url(host: str, port: int | str) -> str:
    """``http://host:port``, with an IPv6 host in brackets (as URLs need it)."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def start(
    cmd: Sequence[str], log_file: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` with stdout and stderr appended to ``log_file``; returns the process.

    The child gets no stdin (a server must not steal the job's terminal), a session of its own
    (a Ctrl-C meant for the job does not reach it half-way; :func:`stop` ends it in order) and
    :func:`die_with_parent`. ``env`` is the child's whole environment (``None``: this
    process's).
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log_fh:
        return subprocess.Popen(
            list(cmd), stdout=log_fh, stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent,
        )  # fmt: skip


def stop(proc: subprocess.Popen[bytes], grace: float = 15.0, *, group: bool = False) -> None:
    """SIGTERM the server, wait up to ``grace`` seconds, then SIGKILL it.

    ``group=True`` signals the server's whole process group (its session, see :func:`start`):
    servers that fork workers (vLLM's engine processes, tensor-parallel ranks) would otherwise
    leave them behind; the group is SIGKILLed at the end in any case, for children that
    outlived their parent's clean exit.
    """
    if not group:
        if proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return
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


@contextlib.contextmanager
def supervised(
    cmd: Sequence[str],
    log_file: Path,
    *,
    env: Mapping[str, str] | None = None,
    grace: float = 15.0,
    group: bool = False,
) -> Iterator[subprocess.Popen[bytes]]:
    """:func:`start` ``cmd``, yield the process, and :func:`stop` it however the block ends."""
    proc = start(cmd, log_file, env)
    try:
        yield proc
    finally:
        stop(proc, grace, group=group)


def exited_early(
    proc: subprocess.Popen[bytes], name: str, log_file: Path | None, lines: int = 40
) -> Callable[[], str | None]:
    """A ``failure`` check for :func:`wait_until_healthy`: once ``proc`` has exited, the
    message ``"<name> exited with code N before it was ready"`` with the log's tail; else
    ``None``. A server that crashed at start-up is reported at once, not after the timeout."""

    def failure() -> str | None:
        code = proc.poll()
        if code is None:
            return None
        shown = tail(log_file, lines) if log_file else ""
        return f"{name} exited with code {code} before it was ready; log {log_file}:\n{shown}"

    return failure


def answers_health(url: str) -> bool:
    """Whether ``GET url/health`` answers 200 (the default readiness probe)."""
    return httpx.get(url + "/health", timeout=5.0).status_code == 200


def wait_until_healthy(
    url_of: Callable[[], str | None],
    *,
    timeout: float,
    not_ready: Callable[[], str],
    failure: Callable[[], str | None] = lambda: None,
    probe: Callable[[str], bool] = answers_health,
    interval: float = 0.2,
) -> str:
    """Poll until ``probe(url)`` is true and return the URL.

    ``url_of`` gives the URL once it is known (a server that binds port 0 reports it later);
    ``failure`` a message once the server can no longer become ready, raised at once as
    :class:`CalibAdvError`; ``not_ready`` the message raised after ``timeout`` seconds (a
    callable, so that a log tail in it is read then). Connection errors count as "not yet".
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = failure()
        if message:
            raise CalibAdvError(message)
        url = url_of()
        if url is not None:
            try:
                if probe(url):
                    return url
            except httpx.TransportError:
                pass
        time.sleep(interval)
    raise CalibAdvError(not_ready())
