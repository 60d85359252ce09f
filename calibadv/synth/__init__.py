"""The synthetic world: a seeded fictional encyclopedia with multi-hop questions.

``write_world(out_dir, seed, size)`` writes the corpus (wiki-18 JSONL), the QA splits
(FlashRAG JSONL with gold passages per hop) and ``world.json`` statistics. See
docs/synthetic-world.md for how its splits stand in for the paper's benchmarks.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from calibadv.io import atomic_write_json, atomic_write_jsonl
from calibadv.synth.splits import BENCHMARKS, build_splits, split_stats
from calibadv.synth.world import SIZES, World, WorldSize, build_world

GENERATOR_VERSION = 2

__all__ = ["BENCHMARKS", "SIZES", "World", "WorldSize", "build_world", "build_splits",
           "generate", "write_world"]


def generate(seed: int = 0, size: str = "tiny") -> tuple[World, dict[str, list[dict[str, Any]]],
                                                          dict[str, Any]]:
    """Build the world, its splits and its statistics in memory (no I/O)."""
    if size not in SIZES:
        from calibadv.errors import ConfigError

        raise ConfigError(f"unknown world size {size!r}; choose one of {sorted(SIZES)}")
    dims = SIZES[size]
    world = build_world(seed, dims)
    world.size = size
    splits = build_splits(world, dims, seed)
    stats = {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "size": size,
        "entities": dict(sorted(Counter(e.type for e in world.entities.values()).items())),
        "passages": len(world.passages),
        "passages_by_kind": dict(sorted(Counter(p.kind for p in world.passages).items())),
        "benchmarks": list(BENCHMARKS),
        "splits": {name: split_stats(rows) for name, rows in splits.items()},
    }
    return world, splits, stats


def write_world(out_dir: str | os.PathLike, seed: int = 0, size: str = "tiny") -> dict[str, Any]:
    """Write corpus, splits and world.json under ``out_dir``; returns the statistics."""
    out = Path(out_dir)
    world, splits, stats = generate(seed, size)
    atomic_write_jsonl(out / "corpus.jsonl",
                       ({"id": p.id, "contents": p.contents()} for p in world.passages))
    for name, rows in splits.items():
        atomic_write_jsonl(out / f"{name}.jsonl", rows)
    atomic_write_json(out / "world.json", stats)  # last: its presence means the world is whole
    return stats
