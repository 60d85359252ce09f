"""One tiny world for the slow end-to-end tests: world → tiny model → index → SFT start point.

Built once per session (a few minutes on 2 cores) and shared by every slow test here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from calibadv.cli import main

os.environ.setdefault("CALIBADV_NO_PROGRESS", "1")


def cli(*args: str) -> None:
    code = main([str(a) for a in args])
    assert code == 0, f"calibadv {' '.join(map(str, args))} exited {code}"


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("agent_world")
    w = root / "world"
    cli("synth", "--out-dir", w, "--size", "tiny", "--seed", "0")
    cli("build-tiny-model", "--corpus", w / "corpus.jsonl", "--qa", w / "train.jsonl",
        "--out", root / "tiny", "--hidden-size", "132", "--layers", "2")
    cli("index", "encode", "--corpus", w / "corpus.jsonl", "--encoder", "bundled:minilm",
        "--out", root / "emb.npy")
    cli("index", "merge", "--shards", root / "emb.npy", "--out", root / "index.faiss")
    cli("prepare-data", "--input", f"hotpotqa={w / 'train.jsonl'}", "--out",
        root / "train.parquet", "--limit", "64", "--corpus", w / "corpus.jsonl")  # + gold_docs
    cli("prepare-data", "--input", f"hotpotqa={w / 'dev.jsonl'}", "--out",
        root / "dev.parquet", "--split", "dev", "--limit", "8")
    cli("sft", "--model", root / "tiny", "--qa", w / "train.jsonl", "--corpus",
        w / "corpus.jsonl", "--index", root / "index.faiss", "--out", root / "sft",
        "--limit", "64", "--epochs", "1", "--batch-size", "8", "--eval-qa", w / "dev.jsonl",
        "--eval-limit", "8",
        "--max-tokens-per-turn", "32")
    return {"root": root, "world": w, "model": root / "tiny", "sft": root / "sft",
            "index": root / "index.faiss", "corpus": w / "corpus.jsonl",
            "train": root / "train.parquet", "dev": root / "dev.parquet"}


@pytest.fixture(scope="session")
def server(world: dict[str, Path]):
    from calibadv.retrieval.launch import serve_in_background

    with serve_in_background(world["corpus"], world["index"], "bundled:minilm") as url:
        yield url
