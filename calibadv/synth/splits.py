"""Assemble the question splits: a training mix, a dev slice and seven benchmark roles.

Every split draws from a recipe of question kinds; a global key (kind, chain, entities) and the
question text are never reused, so no test question is a paraphrase of a training question.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from typing import Any

from calibadv.synth.questions import QuestionMaker
from calibadv.synth.world import World, WorldSize

BENCHMARKS = ("nq", "triviaqa", "popqa", "hotpotqa", "2wikimultihopqa", "musique", "bamboogle")

Draw = Callable[[QuestionMaker], tuple[tuple, dict[str, Any]]]

# benchmark role -> [(weight, draw)]
RECIPES: dict[str, list[tuple[float, Draw]]] = {
    "nq": [(1.0, lambda m: m.single("nq"))],
    "triviaqa": [(1.0, lambda m: m.single("triviaqa"))],
    "popqa": [(1.0, lambda m: m.single("popqa"))],
    "hotpotqa": [(0.8, lambda m: m.composed("bridge", "hotpotqa", 2)),
                 (0.2, lambda m: m.comparison("hotpotqa"))],
    "2wikimultihopqa": [(0.4, lambda m: m.composed("compositional", "2wikimultihopqa", 2)),
                        (0.3, lambda m: m.inference("2wikimultihopqa")),
                        (0.3, lambda m: m.comparison("2wikimultihopqa"))],
    "musique": [(0.7, lambda m: m.composed("compositional", "musique", 3)),
                (0.3, lambda m: m.composed("compositional", "musique", 2))],
    "bamboogle": [(1.0, lambda m: m.composed("compositional", "bamboogle", 2, heldout=True))],
}
TRAIN_ROLES = ("hotpotqa", "2wikimultihopqa")  # the paper trains on HotpotQA + 2Wiki


def _draw(maker: QuestionMaker, roles: tuple[str, ...], rng: random.Random) -> tuple[tuple, dict]:
    recipe = RECIPES[rng.choice(roles)]
    weights = [w for w, _ in recipe]
    fn = rng.choices([f for _, f in recipe], weights=weights)[0]
    return fn(maker)


def build_splits(world: World, size: WorldSize, seed: int) -> dict[str, list[dict[str, Any]]]:
    """``{"train": [...], "dev": [...], "test/<bench>": [...]}`` of FlashRAG QA records."""
    rng = random.Random(f"calibadv-questions-{seed}")
    maker = QuestionMaker(world, rng)
    used_keys: set[tuple] = set()
    used_text: set[str] = set()
    plan = [(f"test/{b}", (b,), size.bamboogle if b == "bamboogle" else size.test)
            for b in BENCHMARKS] + [("dev", TRAIN_ROLES, size.dev), ("train", TRAIN_ROLES, size.train)]
    splits: dict[str, list[dict[str, Any]]] = {}
    for name, roles, n in plan:
        rows: list[dict[str, Any]] = []
        attempts = 0
        while len(rows) < n:
            attempts += 1
            if attempts > 50 * n + 1000:
                raise RuntimeError(f"could only draw {len(rows)} of {n} distinct questions for "
                                   f"{name}; use a larger world size or fewer questions")
            key, row = _draw(maker, roles, rng)
            if key in used_keys or row["question"] in used_text:
                continue
            used_keys.add(key)
            used_text.add(row["question"])
            prefix = name.split("/")[-1]
            rows.append({"id": f"{prefix}_{len(rows)}", **row})
        splits[name] = rows
    return splits


def split_stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"n": len(rows),
            "types": dict(sorted(Counter(r["metadata"]["type"] for r in rows).items())),
            "hops": dict(sorted(Counter(str(len(r["metadata"]["hops"])) for r in rows).items())),
            "sources": dict(sorted(Counter(r["metadata"]["source"] for r in rows).items()))}
