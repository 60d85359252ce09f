"""Shared builders for the foundation tests: random rollout batches shaped like the agent's."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
import torch


@dataclass
class Batch:
    scores: torch.Tensor
    format_ok: list[bool]
    mask: torch.Tensor
    group_index: list
    turn_spans: list
    doc_ids: list
    thinks: list

    def args(self):
        return (self.scores, self.format_ok, self.mask, self.group_index, self.turn_spans, self.doc_ids, self.thinks)


def build_batch(seed: int, groups: int = 4, size: int = 5, max_steps: int = 3, pool: int = 6,
                answer_prob: float = 0.85, obs_gap: int = 3) -> Batch:
    """Random batch: each rollout has 0..max_steps search steps (3 docs from a small per-group
    pool) and usually an answer step; observations between turns are masked out."""
    rng = random.Random(seed)
    rollouts = []
    for g in range(groups):
        for _ in range(size):
            steps = rng.randint(0, max_steps)
            has_answer = rng.random() < answer_prob or steps == 0
            spans, pos = [], rng.randint(0, 2)
            for _ in range(steps + has_answer):
                n = rng.randint(1, 6)
                spans.append([pos, pos + n])
                pos += n + rng.randint(1, obs_gap)
            docs = [rng.sample([f"g{g}d{k}" for k in range(pool)], 3) for _ in range(steps)]
            thinks = [" ".join(rng.choices(["find", "the", "city", "born", "river", "year"], k=rng.randint(0, 6)))
                      for _ in range(steps + has_answer)]
            score = rng.choice([0.0, 0.0, 0.3, 0.5, 0.75, 1.0, 1.0])
            rollouts.append((g, spans, docs, thinks, score, rng.random() > 0.1, pos))
    length = max(r[-1] for r in rollouts) + 2
    mask = torch.zeros(len(rollouts), length)
    for i, r in enumerate(rollouts):
        for s, e in r[1]:
            mask[i, s:e] = 1
    return Batch(
        scores=torch.tensor([r[4] for r in rollouts]),
        format_ok=[r[5] for r in rollouts],
        mask=mask,
        group_index=[f"uid-{r[0]}" for r in rollouts],
        turn_spans=[r[1] for r in rollouts],
        doc_ids=[r[2] for r in rollouts],
        thinks=[r[3] for r in rollouts],
    )


@pytest.fixture(scope="session")
def make_batch():
    """The batch builder (session-scoped so hypothesis tests can use it)."""
    return build_batch
