"""Downloads: the post-download steps on local files, and the whole command through the real
hub client answering from a local cache (offline), as a pre-seeded cluster cache would."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest

from calibadv.errors import CalibAdvError
from calibadv.retrieval.download import (
    CORPUS_FILE,
    CORPUS_REPO,
    INDEX_REPO,
    concat_parts,
    gunzip_file,
)

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def seed_hub_cache(cache: Path, repo_id: str, files: dict[str, bytes]) -> None:
    """Lay files out exactly as huggingface_hub caches a dataset repo."""
    repo = cache / ("datasets--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snap = repo / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    for name, data in files.items():
        (snap / name).write_bytes(data)


def run_cli(args: list[str], cache: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(cache),
        "CALIBADV_NO_PROGRESS": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "calibadv.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_concat_parts_is_cat_in_order(tmp_path):
    parts = []
    for i, data in enumerate([b"abc", b"", b"defg"]):
        parts.append(tmp_path / f"part_{i}")
        parts[-1].write_bytes(data)
    out = concat_parts(parts, tmp_path / "out" / "joined.index")
    assert out.read_bytes() == b"abcdefg"
    with pytest.raises(CalibAdvError, match="part_9"):
        concat_parts([tmp_path / "part_9"], tmp_path / "x")


def test_gunzip_writes_atomically_and_rejects_broken_files(tmp_path):
    src = tmp_path / "c.jsonl.gz"
    src.write_bytes(gzip.compress(b'{"id": "0", "contents": "\\"A\\"\\nx"}\n' * 1000))
    out = gunzip_file(src, tmp_path / "c.jsonl")
    assert out.read_bytes().count(b"\n") == 1000
    truncated = tmp_path / "t.gz"
    truncated.write_bytes(src.read_bytes()[:40])
    with pytest.raises(CalibAdvError, match="not a valid gzip"):
        gunzip_file(truncated, tmp_path / "t.jsonl")
    assert not (tmp_path / "t.jsonl").exists()
    assert not list(tmp_path.glob(".t.jsonl*"))


def test_download_commands_through_the_hub_client(tmp_path, corpus_path, index_path):
    cache = tmp_path / "hub"
    blob = index_path.read_bytes()
    half = len(blob) // 2
    seed_hub_cache(cache, INDEX_REPO, {"part_aa": blob[:half], "part_ab": blob[half:]})
    seed_hub_cache(
        cache, CORPUS_REPO, {CORPUS_FILE: gzip.compress(corpus_path.read_bytes())}
    )

    res = run_cli(["download-index", "--out", str(tmp_path / "e5_Flat.index")], cache)
    assert res.returncode == 0, res.stderr
    res = run_cli(["download-corpus", "--out", str(tmp_path / "wiki-18.jsonl")], cache)
    assert res.returncode == 0, res.stderr

    from calibadv.retrieval.corpus import Corpus
    from calibadv.retrieval.index import load_index

    assert (tmp_path / "e5_Flat.index").read_bytes() == blob
    assert load_index(tmp_path / "e5_Flat.index").ntotal == len(
        Corpus(tmp_path / "wiki-18.jsonl")
    )


def test_offline_without_the_files_is_a_clear_error(tmp_path):
    res = run_cli(
        ["download-corpus", "--out", str(tmp_path / "c.jsonl")], tmp_path / "empty"
    )
    assert res.returncode == 2
    assert "not in the Hugging Face cache" in res.stderr
    assert "Traceback" not in res.stderr
