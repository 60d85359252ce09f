"""Index build: encode the corpus in resumable shards, merge them into a FAISS index.

A shard is a contiguous row range of the corpus, so shard files concatenated in shard order
line up with corpus rows (FAISS id == corpus row). Within a shard, embeddings are written in
chunks (``<out>.parts/chunk_NNNNNN.npy``, each written atomically); a killed job restarts from
the first missing chunk. The shard's ``.npy`` and its ``.json`` sidecar are written last.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from calibadv.errors import CalibAdvError
from calibadv.io import atomic_write_bytes, atomic_write_json


class PassageEncoder(Protocol):
    name: str

    def encode_passages(self, passages: Sequence[str]) -> np.ndarray: ...


def shard_range(n_rows: int, shard: int, num_shards: int) -> tuple[int, int]:
    """Rows ``[start, end)`` of shard ``shard`` out of ``num_shards`` (sizes differ by ≤ 1)."""
    if num_shards < 1:
        raise CalibAdvError(f"--num-shards must be >= 1, got {num_shards}")
    if not 0 <= shard < num_shards:
        raise CalibAdvError(f"--shard must be in [0, {num_shards - 1}], got {shard}")
    base, extra = divmod(n_rows, num_shards)
    start = shard * base + min(shard, extra)
    return start, start + base + (1 if shard < extra else 0)


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _progress(total: int, desc: str, initial: int = 0) -> Any:
    from calibadv.progress import progress

    return progress(total=total, initial=initial, desc=desc, unit="psg")


def encode_shard(
    corpus: Any,
    encoder: PassageEncoder,
    shard: int,
    num_shards: int,
    out: str | os.PathLike,
    chunk_size: int = 4096,
    on_chunk: Callable[[int], None] | None = None,
) -> Path:
    """Encode one shard of ``corpus`` to ``out`` (float32 ``.npy``), resuming finished chunks.

    ``on_chunk(k)`` is called after chunk ``k`` is safely on disk (used for progress hooks and
    to test resumption by interrupting a run).
    """
    out = Path(out)
    start, end = shard_range(len(corpus), shard, num_shards)
    parts = out.with_name(out.name + ".parts")
    parts.mkdir(parents=True, exist_ok=True)
    manifest = {
        "encoder": encoder.name,
        "shard": shard,
        "num_shards": num_shards,
        "start": start,
        "end": end,
        "chunk_size": chunk_size,
        "corpus_rows": len(corpus),
    }
    mpath = parts / "manifest.json"
    if mpath.is_file():
        old = json.loads(mpath.read_text())
        if old != manifest:
            raise CalibAdvError(
                f"{parts} holds chunks of a different job ({old}); delete that folder to start over"
            )
    else:
        atomic_write_json(mpath, manifest)
    chunk_starts = list(range(start, end, chunk_size))
    bar = _progress(end - start, f"encode shard {shard}/{num_shards}")
    for k, c0 in enumerate(chunk_starts):
        path = parts / f"chunk_{k:06d}.npy"
        c1 = min(c0 + chunk_size, end)
        if not path.is_file():
            emb = encoder.encode_passages(corpus.contents_range(c0, c1))
            atomic_write_bytes(path, _npy_bytes(np.asarray(emb, dtype=np.float32)))
            if on_chunk is not None:
                on_chunk(k)
        bar.update(c1 - c0)
    bar.close()
    chunks = [np.load(parts / f"chunk_{k:06d}.npy") for k in range(len(chunk_starts))]
    emb = np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)
    if emb.shape[0] != end - start:
        raise CalibAdvError(
            f"{parts}: chunks hold {emb.shape[0]} rows, expected {end - start}"
        )
    atomic_write_bytes(out, _npy_bytes(emb))
    atomic_write_json(
        shard_meta_path(out), {**manifest, "dim": int(emb.shape[1]) if emb.size else 0}
    )
    for k in range(len(chunk_starts)):
        (parts / f"chunk_{k:06d}.npy").unlink(missing_ok=True)
    mpath.unlink(missing_ok=True)
    parts.rmdir()
    return out


def shard_meta_path(npy: str | os.PathLike) -> Path:
    npy = Path(npy)
    return npy.with_name(npy.name + ".json")


def _ordered_shards(shards: Sequence[str | os.PathLike]) -> list[Path]:
    """Shards in shard order, checked to tile the corpus without gaps or overlaps."""
    paths = [Path(p) for p in shards]
    for p in paths:
        if not p.is_file():
            raise CalibAdvError(
                f"shard {p} does not exist: run `calibadv index encode` for it"
            )
    metas = [shard_meta_path(p) for p in paths]
    if not all(m.is_file() for m in metas):
        return paths  # no sidecars (hand-made embeddings): trust the order given
    info = [(json.loads(m.read_text()), p) for m, p in zip(metas, paths, strict=True)]
    info.sort(key=lambda t: t[0]["start"])
    expected = 0
    for meta, p in info:
        if meta["start"] != expected:
            raise CalibAdvError(
                f"shard {p} starts at row {meta['start']} but row {expected} was expected: "
                "pass all shards of one encode run"
            )
        expected = meta["end"]
    if (
        expected != info[0][0]["corpus_rows"]
        or len({m["num_shards"] for m, _ in info}) != 1
    ):
        raise CalibAdvError(
            f"shards cover rows [0, {expected}) of a corpus of {info[0][0]['corpus_rows']} rows: "
            "some shards are missing"
        )
    return [p for _, p in info]


INDEX_KINDS: dict[str, Callable[[int, dict[str, Any]], Any]] = {}


def _register(kind: str) -> Callable[[Callable[[int, dict[str, Any]], Any]], Any]:
    def deco(fn: Callable[[int, dict[str, Any]], Any]) -> Any:
        INDEX_KINDS[kind] = fn
        return fn

    return deco


@_register("flat")
def _flat(dim: int, opts: dict[str, Any]) -> Any:
    import faiss

    return faiss.IndexFlatIP(dim)


@_register("hnsw")
def _hnsw(dim: int, opts: dict[str, Any]) -> Any:
    import faiss

    index = faiss.IndexHNSWFlat(
        dim, int(opts.get("hnsw_m", 64)), faiss.METRIC_INNER_PRODUCT
    )
    index.hnsw.efConstruction = int(opts.get("ef_construction", 200))
    index.hnsw.efSearch = int(opts.get("ef_search", 128))
    return index


def merge_shards(
    shards: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    kind: str = "flat",
    **opts: Any,
) -> Path:
    """Concatenate shard embeddings (in shard order) into a FAISS index written atomically."""
    import faiss

    if kind not in INDEX_KINDS:
        raise CalibAdvError(
            f"unknown index kind {kind!r}: choose one of {sorted(INDEX_KINDS)}"
        )
    paths = _ordered_shards(shards)
    arrays = [np.load(p, mmap_mode="r") for p in paths]
    dims = {a.shape[1] for a in arrays if a.ndim == 2 and a.shape[0]}
    if len(dims) != 1:
        raise CalibAdvError(
            f"shards have embedding widths {sorted(dims)}: all must match"
        )
    dim = dims.pop()
    index = INDEX_KINDS[kind](dim, opts)
    bar = _progress(sum(a.shape[0] for a in arrays), f"merge → {kind} index")
    for a in arrays:
        for s in range(0, a.shape[0], 65536):
            block = np.ascontiguousarray(a[s : s + 65536], dtype=np.float32)
            index.add(block)
            bar.update(block.shape[0])
    bar.close()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    faiss.write_index(index, str(tmp))
    os.replace(tmp, out)
    return out


def load_index(path: str | os.PathLike, gpu: bool = False, mmap: bool = False) -> Any:
    """Read a FAISS index; ``gpu=True`` shards it over all visible GPUs (needs faiss-gpu)."""
    import faiss

    path = Path(path)
    if not path.is_file():
        raise CalibAdvError(
            f"index file {path} does not exist: pass --index FILE.faiss"
        )
    flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
    try:
        index = faiss.read_index(str(path), flags)
    except RuntimeError as err:
        raise CalibAdvError(f"{path} is not a FAISS index: {err}") from err
    if gpu:
        if not hasattr(faiss, "index_cpu_to_all_gpus") or faiss.get_num_gpus() == 0:
            raise CalibAdvError(
                "--faiss-gpu needs faiss-gpu and a visible GPU; drop the flag"
            )
        co = faiss.GpuMultipleClonerOptions()
        co.shard = True
        co.useFloat16 = True
        index = faiss.index_cpu_to_all_gpus(index, co=co)
    return index
