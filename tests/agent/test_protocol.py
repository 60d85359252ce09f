"""The Search-R1 protocol on scripted generations: every branch, masks and spans exact."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from calibadv.agent import (
    INVALID_ACTION_MESSAGE,
    AgentConfig,
    AgentState,
    Generation,
    GenerationRequest,
    format_observation,
    run_batch,
)


class CharTokenizer:
    """One token per character: spans and masks can be checked against string offsets."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return "".join(chr(i) for i in ids)


@dataclass
class Passage:
    id: str
    title: str
    text: str
    score: float = 0.0


TOK = CharTokenizer()
PROMPT = TOK.encode("Q: who?\n")


def scripted(turns_by_rollout: list[list[str]], finish: str = "stop"):
    """A generate callback replaying fixed turns per rollout (keyed by prompt identity)."""
    queues = [list(t) for t in turns_by_rollout]
    seen: list[list[GenerationRequest]] = [[] for _ in queues]

    def generate(requests: Sequence[GenerationRequest]) -> list[Generation]:
        out = []
        for req in requests:
            idx = req.prompt_ids[0] - 1000  # rollout index is encoded in the first prompt token
            seen[idx].append(req)
            text = queues[idx].pop(0)[: req.max_tokens]
            ids = TOK.encode(text)
            reason = finish if text.rstrip().endswith(("</search>", "</answer>")) else "length"
            out.append(Generation(ids, [-0.5] * len(ids), text, reason))
        return out

    return generate, seen


def search(queries: Sequence[str]) -> list[list[Passage]]:
    return [
        [Passage(f"{q}-1", f"T-{q}", f"about {q}"), Passage(f"{q}-2", "U", "more")]
        for q in queries
    ]


def run(turns: list[str], finish: str = "stop", **cfg) -> tuple:
    config = AgentConfig(**cfg)
    state = AgentState([1000, *PROMPT], TOK, config)
    generate, seen = scripted([turns], finish)
    (traj,) = run_batch([state], generate, search)
    return traj, seen[0], config


def test_search_then_answer_records_every_field():
    turns = ["<think> a </think><search> alpha </search>", "<think> b </think><answer> Paris </answer>"]
    traj, requests, _ = run(turns)
    obs = format_observation(search(["alpha"])[0], prethink=False)
    assert traj.response_text == turns[0] + obs + turns[1]
    assert TOK.decode(traj.response_ids) == traj.response_text
    n0, no, n1 = len(turns[0]), len(obs), len(turns[1])
    assert traj.loss_mask == [1] * n0 + [0] * no + [1] * n1
    assert traj.logprobs == [-0.5] * n0 + [0.0] * no + [-0.5] * n1
    assert traj.turn_spans == [[0, n0], [n0 + no, n0 + no + n1]]
    assert traj.queries == ["alpha"] and traj.doc_ids == [["alpha-1", "alpha-2"]]
    assert traj.thinks == ["a", "b"]
    assert traj.answer == "Paris" and traj.answered and traj.stop_reason == "answer"
    assert len(traj.turn_spans) == len(traj.doc_ids) + 1
    # the second request continues from prompt + response so far, never re-tokenised
    assert list(requests[1].prompt_ids) == [1000, *PROMPT] + traj.response_ids[: n0 + no]


def test_observation_uses_design_format():
    obs = format_observation([Passage("d1", "T1", "text1"), Passage("d2", "T2", "text2")], False)
    assert obs.startswith("\n\n<information>Doc 1(Title: T1) text1\nDoc 2(Title: T2) text2")
    assert obs.endswith("</information>\n\n")
    assert format_observation([Passage("d1", "T1", "x")], True).endswith("</information>\n\n<think>")


def test_prethink_appends_think_to_each_observation_and_reads_thinks():
    turns = ["a </think><search> q1 </search>", "b </think><answer> x </answer>"]
    traj, _, _ = run(turns, prethink=True)
    assert "</information>\n\n<think>b </think>" in traj.response_text
    assert traj.thinks == ["a", "b"]
    s1 = traj.turn_spans[1]
    assert TOK.decode(traj.response_ids[s1[0] : s1[1]]) == turns[1]
    assert traj.loss_mask[s1[0] - 1] == 0  # the observation's "<think>" is masked


def test_answer_without_search():
    traj, _, _ = run(["<think> t </think><answer> 42 </answer>"])
    assert traj.answer == "42" and traj.doc_ids == [] and traj.turn_spans == [[0, 39]]


def test_invalid_action_ends_rollout_by_default():
    traj, _, _ = run(["<think> rambling without a tag"], finish="eos")
    assert traj.stop_reason == "invalid" and not traj.answered
    assert traj.doc_ids == [[]] and traj.queries == [""]
    assert traj.loss_mask == [1] * len(traj.response_ids)


def test_invalid_action_message_lets_the_model_retry():
    turns = ["<think> oops </think>", "<think> ok </think><answer> y </answer>"]
    traj, _, _ = run(turns, invalid_action="message")
    assert INVALID_ACTION_MESSAGE in traj.response_text
    assert traj.answered and traj.answer == "y"
    assert traj.doc_ids == [[]] and len(traj.turn_spans) == 2
    start = traj.turn_spans[0][1]
    assert traj.loss_mask[start : start + len(INVALID_ACTION_MESSAGE)] == [0] * len(
        INVALID_ACTION_MESSAGE
    )


def test_empty_query_is_invalid():
    traj, _, _ = run(["<think> x </think><search>  </search>"])
    assert traj.stop_reason == "invalid" and traj.doc_ids == [[]]


def test_search_beyond_max_turns_ends_unanswered():
    turns = [f"<think> {i} </think><search> q{i} </search>" for i in range(3)]
    traj, requests, _ = run(turns, max_turns=2)
    assert len(requests) == 3  # two searches executed, the third request is cut off
    assert traj.queries == ["q0", "q1", ""]
    assert traj.doc_ids[2] == [] and traj.stop_reason == "max_turns"
    assert len(traj.turn_spans) == len(traj.doc_ids) == 3 and not traj.answered


def test_turn_token_limit_is_requested_and_enforced():
    traj, requests, _ = run(["<think> a very long thought that never ends"], max_tokens_per_turn=10)
    assert requests[0].max_tokens == 10
    assert len(traj.response_ids) == 10 and traj.stop_reason == "invalid"


def test_response_budget_stops_before_an_observation_that_does_not_fit():
    first = "<think> a </think><search> alpha </search>"
    traj, _, _ = run([first, "unused"], max_response_tokens=len(first) + 20)
    assert traj.stop_reason == "length"
    assert traj.response_ids == TOK.encode(first)  # observation not appended
    assert traj.doc_ids == [["alpha-1", "alpha-2"]]


def test_run_batch_drives_rollouts_of_different_lengths_together():
    a = ["<think> a </think><answer> 1 </answer>"]
    b = ["<think> b </think><search> q </search>", "<think> c </think><answer> 2 </answer>"]
    generate, seen = scripted([a, b])
    states = [AgentState([1000 + i, *PROMPT], TOK, AgentConfig()) for i in range(2)]
    trajs = run_batch(states, generate, search)
    assert [t.answer for t in trajs] == ["1", "2"]
    assert len(seen[0]) == 1 and len(seen[1]) == 2


def test_misuse_raises():
    state = AgentState(PROMPT, TOK, AgentConfig())
    with pytest.raises(RuntimeError):
        state.observe([])
    state.consume(Generation(TOK.encode("<search> q </search>"), [0.0] * 20, "<search> q </search>", "stop"))
    with pytest.raises(RuntimeError):
        state.next_request()
    with pytest.raises(ValueError):
        AgentConfig(invalid_action="skip")  # type: ignore[arg-type]
