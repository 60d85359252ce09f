"""wiki-18 style corpus: JSONL rows ``{"id", "contents": "\\"Title\\"\\ntext"}`` with O(1) row access.

The corpus of the paper has 21M rows, so neither a Python list of documents nor a dataset
scan per lookup is acceptable. We keep the JSONL file as the source of truth, build once a
sidecar array of line byte offsets (``<corpus>.offsets.npy``, memory-mapped afterwards) and
read a row by slicing a memory map of the file. Row ``r`` of the corpus is row ``r`` of the
FAISS index: that is the whole contract between the two.
"""

from __future__ import annotations

import json
import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np

from calibadv.errors import CalibAdvError
from calibadv.io import atomic_write_bytes, atomic_write_json

_CHUNK = 1 << 24  # bytes read at a time while scanning for newlines


def split_contents(contents: str) -> tuple[str, str]:
    """Split wiki-18 ``contents`` into (title, text): first line is the quoted title."""
    head, sep, rest = contents.partition("\n")
    title = head.strip()
    if len(title) >= 2 and title[0] == '"' and title[-1] == '"':
        title = title[1:-1]
    return title, rest if sep else ""


def join_contents(title: str, text: str) -> str:
    """Inverse of :func:`split_contents` (used by generators of corpora)."""
    return f'"{title}"\n{text}'


@dataclass(frozen=True)
class Document:
    id: str
    contents: str

    @property
    def title(self) -> str:
        return split_contents(self.contents)[0]

    @property
    def text(self) -> str:
        return split_contents(self.contents)[1]

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "contents": self.contents}


def _scan_offsets(path: Path) -> np.ndarray:
    """Byte offset of every non-empty line, plus the file size as a final sentinel."""
    size = path.stat().st_size
    starts: list[np.ndarray] = []
    with open(path, "rb") as fh:
        pos = 0
        line_start = 0
        while True:
            block = fh.read(_CHUNK)
            if not block:
                break
            arr = np.frombuffer(block, dtype=np.uint8)
            nl = np.flatnonzero(arr == 0x0A) + pos
            if nl.size:
                ends = nl
                begins = np.concatenate(([line_start], nl[:-1] + 1))
                keep = ends > begins  # drop empty lines
                starts.append(np.stack([begins[keep], ends[keep]], axis=1))
                line_start = int(nl[-1]) + 1
            pos += len(block)
        if line_start < size:
            starts.append(np.array([[line_start, size]], dtype=np.int64))
    if not starts:
        return np.zeros((0, 2), dtype=np.int64)
    return np.concatenate(starts).astype(np.int64)


class Corpus:
    """Random access to a JSONL corpus by row and by id.

    ``Corpus(path)`` builds (or reuses) ``<path>.offsets.npy``: an ``(n, 2)`` int64 array of
    ``[start, end)`` byte spans, one per non-empty line. When the folder is read-only the spans
    are kept in memory only. Ids are mapped to rows lazily: wiki-18's ids are the row numbers,
    which we detect and then never build a 21M-entry dict.
    """

    def __init__(self, path: str | os.PathLike, cache: bool = True) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise CalibAdvError(
                f"corpus file {self.path} does not exist: pass --corpus FILE.jsonl"
            )
        self._spans = self._load_spans(cache)
        self._fh = open(self.path, "rb")  # noqa: SIM115 - lives as long as the memory map
        self._mm = (
            mmap.mmap(self._fh.fileno(), 0, access=mmap.ACCESS_READ)
            if self.path.stat().st_size
            else None
        )
        self._id_to_row: dict[str, int] | None = None

    # -- construction -------------------------------------------------------------------
    def _sidecar(self) -> tuple[Path, Path]:
        return (
            self.path.with_name(self.path.name + ".offsets.npy"),
            self.path.with_name(self.path.name + ".offsets.json"),
        )

    def _load_spans(self, cache: bool) -> np.ndarray:
        npy, meta = self._sidecar()
        st = self.path.stat()
        stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        if cache and npy.is_file() and meta.is_file():
            try:
                if json.loads(meta.read_text()) == stamp:
                    return np.load(npy, mmap_mode="r")
            except (OSError, ValueError):
                pass  # stale or broken sidecar: rebuild below
        spans = _scan_offsets(self.path)
        if cache:
            try:
                import io as _io

                buf = _io.BytesIO()
                np.save(buf, spans)
                atomic_write_bytes(npy, buf.getvalue())
                atomic_write_json(meta, stamp)
            except OSError:
                pass  # read-only folder: keep the spans in memory
        return spans

    # -- access -------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._spans.shape[0])

    def raw_line(self, row: int) -> bytes:
        n = len(self)
        if not -n <= row < n:
            raise IndexError(f"row {row} out of range for a corpus of {n} rows")
        start, end = (int(x) for x in self._spans[row])
        assert self._mm is not None
        return self._mm[start:end]

    def __getitem__(self, row: int) -> Document:
        line = self.raw_line(int(row))
        try:
            obj = json.loads(line)
            return Document(id=str(obj["id"]), contents=str(obj["contents"]))
        except (ValueError, KeyError, TypeError) as err:
            raise CalibAdvError(
                f"{self.path}: row {row} is not a corpus record "
                f'{{"id": ..., "contents": ...}} ({err})'
            ) from err

    def get_many(self, rows: list[int] | np.ndarray) -> list[Document]:
        return [self[int(r)] for r in rows]

    def __iter__(self) -> Iterator[Document]:
        for row in range(len(self)):
            yield self[row]

    def contents_range(self, start: int, end: int) -> list[str]:
        """Contents of rows ``[start, end)``: what the index encoder reads."""
        return [self[r].contents for r in range(start, end)]

    def row_of(self, doc_id: str) -> int:
        """Row of a document id (raises ``KeyError`` with the id when absent).

        Fast path: wiki-18's ids are row numbers, so ``row_of("17")`` reads row 17 and checks
        its id. Any other layout falls back to a dict built once by a full scan.
        """
        if (
            doc_id.isdigit()
            and str(int(doc_id)) == doc_id
            and int(doc_id) < len(self)
            and self[int(doc_id)].id == doc_id
        ):
            return int(doc_id)
        if self._id_to_row is None:
            self._id_to_row = {}
            for row in range(len(self)):
                self._id_to_row.setdefault(self[row].id, row)
        return self._id_to_row[doc_id]

    def close(self) -> None:
        if self._mm is not None:
            self._mm.close()
            self._mm = None
        self._fh.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
