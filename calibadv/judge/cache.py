"""SQLite cache of judge verdicts, keyed by (model, template version, exact rendered prompt).

Why SQLite: every answered call is committed the moment it returns (a crash loses nothing
answered), several jobs can share one file (a busy timeout serialises writers), and a rerun
finds every earlier answer without any request.

Why the rollback journal, not WAL: WAL keeps its index in shared memory (``-shm``), which only
works for processes on one host; a cache on a network file system shared by jobs on several
nodes can be corrupted under WAL. The rollback journal (``journal_mode=DELETE``) relies on file
locks alone. Its cost, readers waiting while a write commits, is nothing next to a judge call.
Network file systems with broken locks (some NFS setups) remain unsafe for any SQLite file:
keep the cache on a local disk there, or let one writer own it (``judge.where: local``). Only final
outcomes are stored: a verdict, or "unparsable" after the re-ask. Transport failures are not
cached, so a rerun retries them.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS verdicts (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    template_version TEXT NOT NULL,
    messages TEXT NOT NULL,
    verdict REAL,
    status TEXT NOT NULL,
    answers TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    created REAL NOT NULL
)
"""


def cache_key(model: str, template_version: str, messages: Sequence[dict[str, str]]) -> str:
    """SHA-256 of the model name, the template version and the exact messages."""
    blob = json.dumps([model, template_version, list(messages)], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _set_up(db: sqlite3.Connection, deadline: float) -> None:
    """Switch to the rollback journal and create the table, retrying while another process does
    the same.

    Why a loop: SQLite answers "database is locked" at once, without calling the busy handler
    that ``timeout=`` installs, when two connections change the journal mode of one new file
    at the same moment (one of them holds the lock the mode change needs). Two judge jobs
    that open a fresh cache together hit exactly that; retrying until the same deadline makes
    the open as patient as every later write.
    """
    delay = 0.01
    while True:
        try:
            # DELETE also turns a cache an older version left in WAL back to the rollback journal
            db.execute("PRAGMA journal_mode=DELETE")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(_SCHEMA)
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) and "busy" not in str(err):
                raise
            if time.monotonic() >= deadline:
                raise sqlite3.OperationalError(
                    f"{err} (still locked after the cache's timeout; another process holds "
                    f"the cache file: raise timeout_s or wait for it)") from err
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


@dataclass(frozen=True)
class CachedVerdict:
    verdict: float | None
    status: str  # "ok" | "unparsable"
    answers: list[str]
    prompt_tokens: int
    completion_tokens: int


class VerdictCache:
    """One SQLite file; safe to share between threads of a process and between processes."""

    def __init__(self, path: str | Path, timeout_s: float = 60.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=timeout_s, check_same_thread=False,
                                   isolation_level=None)
        with self._lock:
            _set_up(self._db, deadline=time.monotonic() + timeout_s)

    def get(self, key: str) -> CachedVerdict | None:
        with self._lock:
            row = self._db.execute(
                "SELECT verdict, status, answers, prompt_tokens, completion_tokens "
                "FROM verdicts WHERE key = ?", (key,)
            ).fetchone()
        if row is None:
            return None
        return CachedVerdict(row[0], row[1], json.loads(row[2]), int(row[3]), int(row[4]))

    def put(self, key: str, model: str, template_version: str, messages: Sequence[dict[str, Any]],
            entry: CachedVerdict) -> None:
        """Store one final outcome (committed at once; the same key again replaces it)."""
        if entry.status not in ("ok", "unparsable"):
            raise ValueError(f"only final outcomes are cached, not {entry.status!r}")
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, model, template_version, json.dumps(list(messages), ensure_ascii=False),
                 entry.verdict, entry.status, json.dumps(entry.answers, ensure_ascii=False),
                 entry.prompt_tokens, entry.completion_tokens, time.time()),
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> VerdictCache:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
