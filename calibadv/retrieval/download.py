"""Download the paper's wiki-18 corpus and prebuilt e5 flat index from the Hugging Face hub.

The authors (Search-R1) publish the index as split parts (``part_aa``, ``part_ab``: ~64 GB in
all) in the dataset repo ``PeterJinGo/wiki-18-e5-index`` and the corpus as
``wiki-18.jsonl.gz`` in ``PeterJinGo/wiki-18-corpus``. Downloads go through the hub client (its
cache makes them resumable and honours ``HF_HUB_OFFLINE``); the post-download steps — join the
parts, gunzip the corpus — stream to a temporary file renamed at the end.
"""

from __future__ import annotations

import gzip
import os
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


def hub_file(
    repo_id: str,
    filename: str,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """One file of a hub *dataset* repo, through the hub client's resumable cache."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(
            hf_hub_download(
                repo_id=repo_id,
                filename=filename,
                repo_type="dataset",
                revision=revision,
                cache_dir=cache_dir,
            )
        )
    except LocalEntryNotFoundError as err:
        raise CalibAdvError(
            f"{repo_id}/{filename} is not in the Hugging Face cache and the hub cannot be reached "
            "(offline?): connect to the internet or unset HF_HUB_OFFLINE"
        ) from err
    except HfHubHTTPError as err:
        raise CalibAdvError(f"downloading {repo_id}/{filename} failed: {err}") from err


def download_index(
    out: str | os.PathLike,
    repo_id: str = INDEX_REPO,
    parts: Sequence[str] = INDEX_PARTS,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Fetch the index parts and join them into ``out`` (a FAISS ``IndexFlatIP`` file)."""
    out = Path(out)
    if out.is_file():
        return out
    local = [hub_file(repo_id, name, revision, cache_dir) for name in parts]
    return concat_parts(local, out)


def download_corpus(
    out: str | os.PathLike,
    repo_id: str = CORPUS_REPO,
    filename: str = CORPUS_FILE,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Fetch the gzipped corpus and decompress it to ``out`` (JSONL)."""
    out = Path(out)
    if out.is_file():
        return out
    src = hub_file(repo_id, filename, revision, cache_dir)
    if filename.endswith(".gz"):
        return gunzip_file(src, out)
    return concat_parts([src], out)
