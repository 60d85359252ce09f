"""Download the paper's wiki-18 corpus and prebuilt e5 flat index from the Hugging Face hub.

The authors (Search-R1) publish the index as split parts (``part_aa``, ``part_ab``: ~64 GB in
all) in the dataset repo ``PeterJinGo/wiki-18-e5-index`` and the corpus as
``wiki-18.jsonl.gz`` in ``PeterJinGo/wiki-18-corpus``. Files come through
:class:`calibadv.downloads.HubDataset` (resumable, checked against the hub's sizes and hashes,
logged; under ``HF_HUB_OFFLINE`` from a pre-filled hub cache); the post-download steps — join
the parts (consuming them: peak disk = the index plus one part), gunzip the corpus — write a
temporary file renamed at the end.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import BinaryIO

from calibadv.errors import CalibAdvError

INDEX_REPO = "PeterJinGo/wiki-18-e5-index"
INDEX_PARTS = ("part_aa", "part_ab")
CORPUS_REPO = "PeterJinGo/wiki-18-corpus"
CORPUS_FILE = "wiki-18.jsonl.gz"
_BUF = 16 << 20


def _bar(total: int, desc: str):  # type: ignore[no-untyped-def]
    from calibadv.progress import progress

    return progress(total=total, desc=desc, unit="B", unit_scale=True)


def _stream_to(out: Path, sources: Sequence[tuple[str, BinaryIO]], total: int) -> Path:
    """Copy the given streams one after the other into ``out`` atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.part")
    try:
        with open(tmp, "wb") as dst, _bar(total, out.name) as bar:
            for _, src in sources:
                while chunk := src.read(_BUF):
                    dst.write(chunk)
                    bar.update(len(chunk))
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def concat_parts(parts: Sequence[str | os.PathLike], out: str | os.PathLike) -> Path:
    """``cat part_* > out`` in the given order, atomically (the index parts are a byte split)."""
    paths = [Path(p) for p in parts]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise CalibAdvError(f"index parts missing: {', '.join(missing)}")
    with ExitStack() as stack:
        handles = [stack.enter_context(open(p, "rb")) for p in paths]
        return _stream_to(
            Path(out),
            [(str(p), h) for p, h in zip(paths, handles, strict=True)],
            sum(p.stat().st_size for p in paths),
        )


def gunzip_file(src: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Decompress ``src`` (gzip) to ``out`` atomically."""
    src = Path(src)
    if not src.is_file():
        raise CalibAdvError(f"{src} does not exist")
    try:
        with gzip.open(src, "rb") as fh:
            return _stream_to(Path(out), [(str(src), fh)], 0)
    except (OSError, EOFError) as err:
        raise CalibAdvError(
            f"{src} is not a valid gzip file ({err}); delete it and download again"
        ) from err


def _staging(out: Path) -> Path:
    return out.with_name(f".{out.name}.download")


JOIN_STATE = "join.json"


def joined_parts(staging: Path) -> tuple[list[str], int]:
    """(parts already inside the growing output, its size then) of an interrupted join."""
    try:
        state = json.loads((staging / JOIN_STATE).read_text(encoding="utf-8"))
        return list(state["joined"]), int(state["size"])
    except (OSError, ValueError, KeyError):
        return [], 0


def write_join_state(staging: Path, joined: list[str], size: int) -> None:
    tmp = staging / f"{JOIN_STATE}.tmp"
    tmp.write_text(json.dumps({"joined": joined, "size": size}), encoding="utf-8")
    os.replace(tmp, staging / JOIN_STATE)


def join_parts_consuming(parts: Sequence[tuple[str, Path]], out: str | os.PathLike,
                         staging: str | os.PathLike) -> Path:
    """``cat parts > out`` for downloaded parts that may be consumed: the first part becomes
    the growing output (a rename), each later one is appended and then deleted, so the disk
    holds at most the joined file plus one part (the 64.6 GB index peaks at ~97 GB, not 129).

    Resumable: ``staging/join.json`` records the parts already inside ``.OUT.part`` and its
    size then; a join killed midway is cut back to that size and continued."""
    out, staging = Path(out), Path(staging)
    tmp = out.with_name(f".{out.name}.part")
    joined, size = joined_parts(staging)
    if joined and not tmp.exists():
        first = staging / joined[0]
        if len(joined) == 1 and first.is_file():  # killed between the record and the rename
            os.replace(first, tmp)
        else:
            raise CalibAdvError(
                f"{tmp} is missing but {staging / JOIN_STATE} says parts {joined} are in it: "
                f"delete {staging} and download again"
            )
    if joined:
        if tmp.stat().st_size < size:
            raise CalibAdvError(f"{tmp} is shorter than recorded ({size} bytes): delete {tmp} "
                                f"and {staging} and download again")  # fmt: skip
        with open(tmp, "r+b") as fh:
            fh.truncate(size)  # drop a half-appended part
    for name, path in parts:
        if name in joined:
            continue
        if not joined:
            write_join_state(staging, [name], path.stat().st_size)
            os.replace(path, tmp)
            joined, size = [name], tmp.stat().st_size
            continue
        with open(tmp, "ab") as dst, open(path, "rb") as src:
            shutil.copyfileobj(src, dst, _BUF)
            dst.flush()
            os.fsync(dst.fileno())
        joined, size = [*joined, name], tmp.stat().st_size
        write_join_state(staging, joined, size)
        path.unlink()
    os.replace(tmp, out)
    (staging / JOIN_STATE).unlink(missing_ok=True)
    return out


def download_index(
    out: str | os.PathLike,
    repo_id: str = INDEX_REPO,
    parts: Sequence[str] = INDEX_PARTS,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    verify: str = "hash",
) -> Path:
    """Fetch the index parts (resumable, verified) and join them into ``out`` (a FAISS
    ``IndexFlatIP`` file); the parts are deleted once joined."""
    from calibadv.downloads import HubDataset

    out = Path(out)
    if out.is_file():
        return out
    staging = _staging(out)
    source = HubDataset(repo_id, staging, verify=verify, revision=revision, cache_dir=cache_dir)
    if source.offline:  # files of the hub cache: copy, never consume
        return concat_parts(source.fetch(list(parts)), out)
    done, _ = joined_parts(staging)
    todo = [p for p in parts if p not in done]
    fetched = dict(zip(todo, source.fetch(todo), strict=True)) if todo else {}
    joined = join_parts_consuming([(p, fetched.get(p, staging / p)) for p in parts], out, staging)
    source.cleanup()
    return joined


def download_corpus(
    out: str | os.PathLike,
    repo_id: str = CORPUS_REPO,
    filename: str = CORPUS_FILE,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    verify: str = "hash",
) -> Path:
    """Fetch the gzipped corpus (resumable, verified) and decompress it to ``out`` (JSONL)."""
    from calibadv.downloads import HubDataset

    out = Path(out)
    if out.is_file():
        return out
    source = HubDataset(repo_id, _staging(out), verify=verify, revision=revision, cache_dir=cache_dir)
    (src,) = source.fetch([filename])
    result = gunzip_file(src, out) if filename.endswith(".gz") else concat_parts([src], out)
    source.cleanup()
    return result
