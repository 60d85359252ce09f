"""Shared fixtures: one tiny world and one tiny model per test session (both are slowish)."""

from __future__ import annotations

from pathlib import Path

import pytest

from calibadv.io import read_jsonl
from calibadv.synth import BENCHMARKS, write_world


@pytest.fixture(scope="session")
def world_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    write_world(out, seed=0, size="tiny")
    return out


@pytest.fixture(scope="session")
def corpus(world_dir) -> dict[str, str]:
    return {row["id"]: row["contents"] for row in read_jsonl(world_dir / "corpus.jsonl")}


@pytest.fixture(scope="session")
def all_questions(world_dir) -> dict[str, list[dict]]:
    files = {"train": world_dir / "train.jsonl", "dev": world_dir / "dev.jsonl"}
    files.update({b: world_dir / "test" / f"{b}.jsonl" for b in BENCHMARKS})
    return {name: read_jsonl(path) for name, path in files.items()}


@pytest.fixture(scope="session")
def tiny_model_dir(world_dir, tmp_path_factory) -> Path:
    from calibadv.models.tiny import build_tiny_model

    out = tmp_path_factory.mktemp("models") / "tiny"
    build_tiny_model(world_dir / "corpus.jsonl",
                     [world_dir / "train.jsonl", world_dir / "test" / "nq.jsonl"], out)
    return out
