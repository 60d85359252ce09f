"""Rollout shapes, registered in :data:`calibadv.methods.registry.ROLLOUTS`: how the rollouts of one
prompt are grown.

- ``chains`` (default): ``group_size`` independent rollouts per prompt (GRPO);
- ``tree``: Tree-GRPO's trees. Per prompt, ``m`` trees each start from one full chain; for
  ``l`` rounds, ``n`` nodes per tree are drawn uniformly with replacement among the root and the
  non-leaf nodes (a node = one turn with its observation) and a full continuation is generated
  from each (:meth:`calibadv.agent.protocol.AgentState.fork`); then ``k`` leaves per tree are
  drawn without replacement. Each leaf is one training sample, tagged with its tree id.

A shape is engine-agnostic: it builds :class:`AgentState` objects and drives them with
:func:`calibadv.agent.protocol.run_batch`, so any generate function works. The local backend
calls it; verl's rollout is its own agent loop, which grows chains only (a tree needs a custom
rollout; :mod:`calibadv.train.verl.method_parts` rejects it at config validation).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from calibadv.agent.protocol import AgentState, run_batch
from calibadv.methods.registry import ROLLOUTS, Knob

__all__ = ["Grown", "grow", "grow_trees", "rollouts_per_prompt"]


@dataclass
class Grown:
    """Rollouts of a batch in prompt-major order: ``owner[i]`` indexes the prompt of rollout
    ``i``; ``extra[i]`` holds what the estimator reads beyond the Trajectory (``tree``)."""

    trajectories: list[Any]
    owner: list[int]
    extra: list[dict[str, Any]]


def grow(name: str, knobs: dict[str, Any], prompts: Sequence[Sequence[int]], tokenizer: Any,
         config: Any, generate_fn: Any, search_fn: Any, group_size: int, rng: random.Random,
         progress: Any = None) -> Grown:
    """Run rollout shape ``name`` (knobs validated) on ``prompts`` (token ids, one per prompt)."""
    part = ROLLOUTS.get(name, "rollout.name")
    checked = ROLLOUTS.resolve(name, knobs, "rollout")
    return part.fn(prompts, tokenizer, config, generate_fn, search_fn, group_size, rng, progress,
                   **checked)


def rollouts_per_prompt(name: str, knobs: dict[str, Any], group_size: int) -> int:
    """How many training samples a prompt yields under this shape."""
    checked = ROLLOUTS.resolve(name, knobs, "rollout")
    return _PER_PROMPT[name](group_size, **checked)


def _check_tree(n: int, l: int, k: int) -> None:  # noqa: E741
    if k > 1 + n * l:
        from calibadv.errors import ConfigError

        raise ConfigError(f"rollout.knobs.k = {k}: a tree has only 1 + n·l = {1 + n * l} leaves; "
                          "lower k or raise n or l")


@ROLLOUTS.register("chains", description="group_size independent rollouts per prompt")
def chains(prompts, tokenizer, config, generate_fn, search_fn, group_size, rng, progress) -> Grown:
    states = [AgentState(p, tokenizer, config) for p in prompts for _ in range(group_size)]
    trajs = run_batch(states, generate_fn, search_fn, progress=progress)
    owner = [i for i in range(len(prompts)) for _ in range(group_size)]
    return Grown(trajs, owner, [{} for _ in trajs])


@dataclass
class _Path:
    """One root-to-leaf path of a tree: its final state and the turn count it branched at."""

    state: AgentState
    branched_at: int  # 0: grown from the root (the chain, or a root expansion)


def _nodes(paths: list[_Path]) -> list[tuple[int, int]]:
    """The root (-1, 0) and each non-leaf node once, as (path, turn count): a branch shares its
    first ``branched_at`` turns with its parent, so only its later nodes are new."""
    out = [(-1, 0)]
    for j, p in enumerate(paths):
        out += [(j, n) for n in p.state.branch_points() if n > p.branched_at]
    return out


def grow_trees(prompts: Sequence[Sequence[int]], tokenizer: Any, config: Any, generate_fn: Any,
               search_fn: Any, rng: random.Random, m: int, n: int, l: int, k: int,
               progress: Any = None) -> Grown:
    """Tree-GRPO rollouts: ``m`` trees per prompt, ``l`` rounds of ``n`` expansions, ``k``
    leaves per tree; leaves in (prompt, tree, leaf) order, ``extra[i]['tree']`` the tree id."""
    trees: list[list[_Path]] = []
    roots = [AgentState(p, tokenizer, config) for p in prompts for _ in range(m)]
    run_batch(roots, generate_fn, search_fn)
    trees = [[_Path(s, 0)] for s in roots]
    for _ in range(l):
        new: list[tuple[int, _Path]] = []
        for t, paths in enumerate(trees):
            nodes = _nodes(paths)
            for _ in range(n):
                j, at = nodes[rng.randrange(len(nodes))]
                state = roots[t].fork(0) if j < 0 else paths[j].state.fork(at)
                new.append((t, _Path(state, at)))
        run_batch([p.state for _, p in new], generate_fn, search_fn)
        for t, p in new:
            trees[t].append(p)
    trajs, owner, extra = [], [], []
    for t, paths in enumerate(trees):
        picked = sorted(rng.sample(range(len(paths)), k))
        for j in picked:
            trajs.append(paths[j].state.trajectory())
            owner.append(t // m)
            extra.append({"tree": t % m, "branched_at": paths[j].branched_at})
    if progress is not None:
        progress.update(len(trajs) - progress.n)
    return Grown(trajs, owner, extra)


def _tree_per_prompt(group_size: int, m: int, n: int, l: int, k: int) -> int:  # noqa: E741
    _check_tree(n, l, k)
    return m * k


#: Training samples per prompt, by shape (trees ignore ``group_size``).
_PER_PROMPT = {"chains": lambda group_size: group_size, "tree": _tree_per_prompt}


@ROLLOUTS.register(
    "tree",
    knobs={
        "m": Knob(int, 2, "trees per prompt (Tree-GRPO script: 2)", min=1),
        "n": Knob(int, 2, "nodes expanded per tree and round (script: 2)", min=1),
        "l": Knob(int, 1, "expansion rounds (script: 1)", min=1),
        "k": Knob(int, 3, "leaves kept per tree (script: 3); at most 1 + n·l", min=1),
    },
    description="Tree-GRPO: m trees per prompt grown by re-generating from sampled nodes",
    works_with={"estimator": ("tree_grpo",)},  # leaves of one tree share a prefix: tree z-scores
)
def tree(prompts, tokenizer, config, generate_fn, search_fn, group_size, rng, progress,
         m: int = 2, n: int = 2, l: int = 1, k: int = 3) -> Grown:  # noqa: E741
    _check_tree(n, l, k)
    return grow_trees(prompts, tokenizer, config, generate_fn, search_fn, rng, m, n, l, k, progress)
