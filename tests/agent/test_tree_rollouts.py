"""Resuming a rollout from an intermediate state (AgentState.fork) and Tree-GRPO's tree rollout
shape, on scripted generations: a branch's prefix is exactly its parent's."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calibadv.agent import AgentConfig, AgentState, Generation, GenerationRequest, run_batch
from calibadv.methods.rollout_shapes import grow, grow_trees

from .test_protocol import TOK, search


def counting_generator():
    """Searches on the first two turns of a rollout, answers on the third; every generation
    is new text (a global counter), so a re-generated turn differs from its sibling."""
    counter = itertools.count()

    def generate(requests: Sequence[GenerationRequest]) -> list[Generation]:
        out = []
        for req in requests:
            k = next(counter)
            turn = TOK.decode(req.prompt_ids).count("</information>")
            text = (f"<think> t{k} </think><search> q{k} </search>" if turn < 2
                    else f"<think> t{k} </think><answer> a{k} </answer>")
            ids = TOK.encode(text)
            out.append(Generation(ids, [-0.01 * (k + 1)] * len(ids), text, "stop"))
        return out

    return generate


def _full_rollout(prompt=(1000, 81, 58)) -> AgentState:
    state = AgentState(list(prompt), TOK, AgentConfig(max_turns=3))
    run_batch([state], counting_generator(), search)
    return state


def test_a_finished_rollout_can_resume_from_the_root_and_each_non_final_turn():
    parent = _full_rollout()
    assert len(parent.traj.turn_spans) == 3 and parent.traj.answered
    assert parent.branch_points() == [0, 1, 2]
    with pytest.raises(ValueError, match="cannot resume after 3 turns"):
        parent.fork(3)


@pytest.mark.parametrize("n", [0, 1, 2])
def test_a_branch_prefix_is_exactly_its_parent_and_the_parent_is_untouched(n):
    parent = _full_rollout()
    before = parent.trajectory().to_dict()
    child = parent.fork(n)
    cut = parent.traj.turn_spans[n][0]
    c, p = child.traj, parent.traj
    assert (c.response_ids, c.loss_mask, c.logprobs) == (p.response_ids[:cut], p.loss_mask[:cut],
                                                          p.logprobs[:cut])
    assert c.turn_spans == p.turn_spans[:n] and c.queries == p.queries[:n]
    assert c.doc_ids == p.doc_ids[:n] and c.thinks == p.thinks[:n]
    assert child.next_request().prompt_ids == tuple(p.prompt_ids) + tuple(p.response_ids[:cut])
    # grow the branch to its end: the prefix stays, the rest is new
    run_batch([child], counting_generator(), search)
    c = child.trajectory()
    assert c.response_ids[:cut] == p.response_ids[:cut] and c.loss_mask[:cut] == p.loss_mask[:cut]
    assert c.logprobs[:cut] == p.logprobs[:cut] and c.turn_spans[:n] == p.turn_spans[:n]
    assert c.response_text.startswith(TOK.decode(p.response_ids[:cut]))
    assert c.answered and len(c.turn_spans) == 3
    assert parent.trajectory().to_dict() == before


def test_a_branch_keeps_the_search_budget_used_by_its_prefix():
    parent = AgentState([1000], TOK, AgentConfig(max_turns=1))
    run_batch([parent], counting_generator(), search)  # search, then a 2nd search → max_turns
    assert parent.traj.stop_reason == "max_turns"
    child = parent.fork(1)
    run_batch([child], counting_generator(), search)
    assert child.searches == 1 and child.traj.stop_reason == "max_turns"


def test_tree_rollouts_m2_n2_l1_k3():
    prompts = [[1000, 65], [1000, 66]]
    grown = grow_trees(prompts, TOK, AgentConfig(max_turns=3), counting_generator(), search,
                       random.Random(0), m=2, n=2, l=1, k=3)
    assert grown.owner == [0] * 6 + [1] * 6
    assert [e["tree"] for e in grown.extra] == [0, 0, 0, 1, 1, 1] * 2
    for t in range(4):  # every leaf of a tree: its prompt, and a branch shares its parent's turns
        leaves = [(grown.trajectories[i], grown.extra[i]) for i in range(3 * t, 3 * t + 3)]
        assert all(tr.prompt_ids == prompts[t // 2] for tr, _ in leaves)
        chain = leaves[0][0]
        for tr, extra in leaves[1:]:
            b = extra["branched_at"]
            prefix = tr.turn_spans[b][0] if b < len(tr.turn_spans) else len(tr.response_ids)
            assert any(o.response_ids[:prefix] == tr.response_ids[:prefix]
                       and o.loss_mask[:prefix] == tr.loss_mask[:prefix]
                       for o, _ in leaves if o is not tr)
            assert tr.response_ids != chain.response_ids  # re-generated after the node


def test_node_draws_cover_the_root_and_non_leaf_nodes_uniformly():
    seen = {0: 0, 1: 0, 2: 0}
    for seed in range(60):
        grown = grow_trees([[1000]], TOK, AgentConfig(max_turns=3), counting_generator(), search,
                           random.Random(seed), m=1, n=1, l=1, k=2)
        seen[grown.extra[1]["branched_at"]] += 1
    assert all(v > 5 for v in seen.values())  # 3 nodes (root, after turn 1, after turn 2)


def test_the_registered_shapes_grow_chains_and_trees():
    cfg = AgentConfig(max_turns=3)
    chains = grow("chains", {}, [[1000]], TOK, cfg, counting_generator(), search, 3, random.Random(0))
    assert chains.owner == [0, 0, 0] and len(chains.trajectories) == 3
    trees = grow("tree", {"m": 2, "n": 2, "l": 1, "k": 3}, [[1000]], TOK, cfg,
                 counting_generator(), search, 5, random.Random(0))
    assert len(trees.trajectories) == 6 and trees.owner == [0] * 6


def _scripted_state(kinds: list[str], prethink: bool) -> AgentState:
    """A rollout replaying ``kinds`` (search / invalid / answer) with invalid_action: message."""
    texts = {"search": "<think> s </think><search> q{} </search>", "invalid": "<think> x{} </think> hm",
             "answer": "<think> a </think><answer> z{} </answer>"}
    queue = [texts[k].format(i) for i, k in enumerate(kinds)]

    def generate(requests: Sequence[GenerationRequest]) -> list[Generation]:
        out = []
        for _ in requests:
            text = queue.pop(0) if queue else texts["answer"].format("end")
            ids = TOK.encode(text)
            out.append(Generation(ids, [-0.1 * len(queue)] * len(ids), text,
                                  "stop" if text.endswith(">") else "eos"))
        return out

    state = AgentState([1000], TOK, AgentConfig(max_turns=3, invalid_action="message",
                                                prethink=prethink))
    run_batch([state], generate, search)
    return state


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(["search", "invalid"]), max_size=4), st.booleans())
def test_every_branch_point_of_any_rollout_keeps_the_parents_prefix(kinds, prethink):
    parent = _scripted_state([*kinds, "answer"], prethink)
    p = parent.trajectory()
    for n in parent.branch_points():
        child = parent.fork(n)
        cut = p.turn_spans[n][0]
        c = child.traj
        assert (c.response_ids, c.loss_mask, c.logprobs) == (p.response_ids[:cut],
                                                              p.loss_mask[:cut], p.logprobs[:cut])
        assert (c.turn_spans, c.queries, c.doc_ids, c.thinks) == (
            p.turn_spans[:n], p.queries[:n], p.doc_ids[:n], p.thinks[:n])
        assert child.trajectory().response_text == TOK.decode(p.response_ids[:cut])
