"""One real ``transformers serve`` per test session, serving a tiny locally built model, with a
fault-injecting proxy in front of it.

The server is started the way a job starts it (``calibadv.judge.server.serve_judge``) inside
a helper process; at the end of the session the helper gets SIGTERM, as ``scancel`` would
send, and the fixture checks that the server process is gone (no orphan).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bigram_model import build_bigram_judge  # noqa: E402
from fault_proxy import FaultProxy  # noqa: E402

os.environ.setdefault("CALIBADV_NO_PROGRESS", "1")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


@pytest.fixture(scope="session")
def judge_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bigram_judge(tmp_path_factory.mktemp("judge") / "bigram")


@pytest.fixture(scope="session")
def judge_server(judge_model: Path, tmp_path_factory: pytest.TempPathFactory):
    """``(base_url, model name, server pid)`` of the real server."""
    log = tmp_path_factory.mktemp("judge_log") / "server.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parents[1]), *sys.path])}
    holder = subprocess.Popen([sys.executable, str(HERE / "hold_server.py"), str(judge_model),
                               str(log)], stdout=subprocess.PIPE, text=True, env=env)
    line = holder.stdout.readline().split()
    if not line:
        holder.kill()
        pytest.fail(f"the judge server did not start; log:\n{log.read_text() if log.exists() else ''}")
    url, pid = line[0], int(line[1])
    yield url, str(judge_model), pid
    holder.send_signal(signal.SIGTERM)
    holder.wait(60)
    deadline = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(pid), "the judge server outlived its job (orphan after SIGTERM)"


@pytest.fixture(scope="session")
def _proxy(judge_server):
    proxy = FaultProxy(judge_server[0].removesuffix("/v1"))
    yield proxy
    proxy.close()


@pytest.fixture
def proxy(_proxy: FaultProxy) -> FaultProxy:
    _proxy.reset()
    return _proxy
