"""SQLite cache of judge verdicts, keyed by (model, template version, exact rendered prompt).

Why SQLite: every answered call is committed the moment it returns (a crash loses nothing
answered), several jobs can share one file (WAL mode and a busy timeout serialise writers;
readers never block), and a rerun finds every earlier answer without any request. Only final
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
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)

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
