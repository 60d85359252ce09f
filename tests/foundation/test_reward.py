"""Reward: SQuAD normalisation, EM/F1, answer extraction, format check, verl compute_score."""

from __future__ import annotations

import numpy as np
import pytest

from calibadv.errors import ConfigError
from calibadv.answer_score import compute_score, exact_match, extract_answer, f1_score, is_valid_format, normalize_answer

PROMPT_EXAMPLE = "For example, <answer> Beijing </answer>."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The  Eiffel Tower!", "eiffel tower"),
        ("an apple, a pear", "apple pear"),
        ("Théâtre   du Châtelet", "théâtre du châtelet"),  # non-ASCII letters stay
        ("«Paris»", "«paris»"),  # only ASCII punctuation is dropped
        ("theatre", "theatre"),  # articles only as whole words
        ("", ""),
    ],
)
def test_normalisation_follows_squad(text, expected):
    assert normalize_answer(text) == expected


@pytest.mark.parametrize(
    ("prediction", "golds", "em", "f1"),
    [
        ("Paris", ["paris"], 1.0, 1.0),
        ("the city of Paris", ["Paris"], 0.0, 0.5),
        ("Paris France", ["Paris", "Paris, France"], 1.0, 1.0),  # max over golds
        ("London", ["Paris"], 0.0, 0.0),
        ("yes", ["no"], 0.0, 0.0),  # HotpotQA rule
        ("yes it is", ["yes"], 0.0, 0.0),  # special gold, different prediction
        ("no answer", ["noanswer"], 0.0, 0.0),  # gold is special and differs
        ("Zürich", ["zürich"], 1.0, 1.0),
        ("", ["Paris"], 0.0, 0.0),  # blank answer never scores
        ("the", ["the"], 0.0, 0.0),  # normalises to blank
        (None, ["Paris"], 0.0, 0.0),
        ("x b c", "b c d", 0.0, 2 / 3),  # a single gold string
        ("a b c", "b c d", 0.0, 0.8),  # "a" is an article: "b c" vs "b c d"
    ],
)
def test_em_and_f1(prediction, golds, em, f1):
    assert exact_match(prediction, golds) == em
    assert f1_score(prediction, golds) == pytest.approx(f1)


@pytest.mark.parametrize(
    ("response", "answer"),
    [
        ("<think>x</think><answer> Beijing </answer>", "Beijing"),
        ("<answer>first</answer> then <answer>second</answer>", "second"),
        ("<answer><answer>inner</answer></answer>", "inner"),
        ("<answer>done</answer><answer>unclosed", "done"),
        ("<answer>\n multi\nline </answer>", "multi\nline"),
        ("<answer></answer>", ""),
        ("no tags at all", None),
        ("<answer>never closed", None),
        ("<think>I'll answer like <answer>Tokyo</answer></think>", "Tokyo"),
    ],
)
def test_extract_answer_takes_the_last_complete_pair(response, answer):
    assert extract_answer(response) == answer


def test_prompt_example_does_not_count_as_the_answer():
    response = "<think>I do not know</think><search>capital</search>"
    assert extract_answer(PROMPT_EXAMPLE + response) == "Beijing"  # why only the response is parsed
    assert extract_answer(response) is None
    result = compute_score("nq", response, {"target": ["Beijing"]}, extra_info={"question": PROMPT_EXAMPLE})
    assert result == {"score": 0.0, "f1": 0.0, "em": 0.0, "format_ok": False}


OBS = "\n\n<information>Doc 1(Title: A) text\nDoc 2(Title: B) more</information>\n\n"
GOOD = f"<think>plan</think>\n<search>q1</search>{OBS}<think>ok</think>\n<answer>Paris</answer>"


@pytest.mark.parametrize(
    ("response", "prethink", "require_search", "valid"),
    [
        (GOOD, False, False, True),
        (GOOD, False, True, True),
        (GOOD + "\n  ", False, False, True),  # trailing white space is fine
        ("<think>a</think><answer>x</answer>", False, False, True),
        ("<think>a</think><answer>x</answer>", False, True, False),  # no search
        (GOOD + " extra", False, False, False),  # text after </answer>
        (GOOD.replace("</think>\n<search>", "</think> so <search>"), False, False, False),  # text between tags
        ("<think>a</think><search>q</search><think>b</think><answer>x</answer>", False, False, False),  # no info
        ("<think>a<think>b</think></think><answer>x</answer>", False, False, False),  # nested
        ("<think>a</think><answer>x</answer><answer>y</answer>", False, False, False),  # two answers
        ("<think>a</think><answer>x", False, False, False),  # unclosed
        ("<think>a</think>", False, False, False),  # no answer
        ("", False, False, False),
        ("<think>é ü 北京</think><answer>北京</answer>", False, False, True),  # unicode content
        # PreThink: the first <think> is in the prompt, later ones in the observations
        ("plan</think>\n<search>q1</search>" + OBS + "<think>ok</think><answer>Paris</answer>", True, True, True),
        ("plan</think><answer>Paris</answer>", True, False, True),
        (GOOD, True, False, False),  # an extra opening <think> under PreThink
        ("plan</think><answer>Paris</answer>", False, False, False),
    ],
)
def test_format_check(response, prethink, require_search, valid):
    assert is_valid_format(response, prethink=prethink, require_search=require_search) is valid


def test_compute_score_gates_f1_by_format():
    bad = GOOD + " trailing"
    assert compute_score("hotpotqa", GOOD, {"target": ["Paris"]}) == {
        "score": 1.0, "f1": 1.0, "em": 1.0, "format_ok": True
    }
    result = compute_score("hotpotqa", bad, {"target": ["Paris"]})
    assert result["score"] == 0.0 and result["f1"] == 1.0 and result["format_ok"] is False


@pytest.mark.parametrize(
    "ground_truth",
    [{"target": ["Paris", "City of Paris"]}, ["Paris"], "Paris", np.array(["Paris", "x"], dtype=object),
     {"target": np.array(["Paris"])}, ("Paris",)],
)
def test_compute_score_accepts_every_ground_truth_shape(ground_truth):
    assert compute_score("nq", GOOD, ground_truth)["score"] == 1.0


@pytest.mark.parametrize("ground_truth", [{"answers": ["x"]}, 42, {"target": []}])
def test_bad_ground_truth_is_a_clear_error(ground_truth):
    with pytest.raises(ConfigError, match="ground_truth"):
        compute_score("nq", GOOD, ground_truth)


def test_options_come_from_kwargs_before_extra_info():
    no_search = "<think>a</think><answer>Paris</answer>"
    assert compute_score("nq", no_search, ["Paris"])["score"] == 1.0
    assert compute_score("nq", no_search, ["Paris"], {"require_search": True})["score"] == 0.0
    assert compute_score("nq", no_search, ["Paris"], {"require_search": True}, require_search=False)["score"] == 1.0
    prethink = "a</think><answer>Paris</answer>"
    assert compute_score("nq", prethink, ["Paris"], None, prethink=True)["format_ok"] is True
    assert compute_score("nq", prethink, ["Paris"], {"prethink": np.bool_(True)})["format_ok"] is True
    with pytest.raises(ConfigError, match="prethink"):
        compute_score("nq", prethink, ["Paris"], None, prethink="yes")
