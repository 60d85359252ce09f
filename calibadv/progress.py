"""Progress reporting that suits where the output goes.

On a terminal: a tqdm bar. Anywhere else (a Snakemake job log, a pipe) a bar's carriage-return
redraws pile up into megabytes of one "line", so :class:`LineProgress` writes one plain line per
``every`` of the total (default 10%) instead: ``sft: 440/1100 (40%) loss=0.512 [83s]``.
``CALIBADV_NO_PROGRESS=1`` silences both.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO


def progress_enabled() -> bool:
    return os.environ.get("CALIBADV_NO_PROGRESS") != "1"


class LineProgress:
    """The part of tqdm's interface the package uses, printing whole lines at milestones."""

    def __init__(self, iterable: Iterable[Any] | None = None, total: int | None = None,
                 desc: str = "", initial: int = 0, every: float = 0.1,
                 stream: TextIO | None = None, disable: bool = False, **_: Any) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total = total
        self.desc = desc
        self.n = initial
        self.every = every
        self.stream = stream or sys.stderr
        self.disable = disable
        self.postfix = ""
        self.t0 = time.monotonic()
        self._next_mark = self._mark_after(initial)

    def _mark_after(self, n: int) -> int:
        if not self.total:
            return n + 1
        step = max(1, int(self.total * self.every))
        return (n // step + 1) * step

    def __iter__(self) -> Iterator[Any]:
        assert self.iterable is not None
        for item in self.iterable:
            yield item
            self.update(1)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n >= self._next_mark or (self.total and self.n >= self.total and n):
            self._next_mark = self._mark_after(self.n)
            self._write()

    def set_postfix(self, **kw: Any) -> None:
        self.postfix = " ".join(f"{k}={v}" for k, v in kw.items())

    def _write(self) -> None:
        if self.disable:
            return
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        total = f"/{self.total}" if self.total else ""
        extra = f" {self.postfix}" if self.postfix else ""
        elapsed = time.monotonic() - self.t0
        print(f"{self.desc}: {self.n}{total}{share}{extra} [{elapsed:.0f}s]",
              file=self.stream, flush=True)

    def close(self) -> None:
        pass

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress(iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "",
             **kw: Any) -> Any:
    """A tqdm bar on a terminal, a :class:`LineProgress` elsewhere; silent when disabled."""
    if not progress_enabled():
        return LineProgress(iterable, total=total, desc=desc, disable=True, **kw)
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, **kw)
    return LineProgress(iterable, total=total, desc=desc, **kw)
