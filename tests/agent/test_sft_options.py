"""SFT warm-start options: the hop curriculum, the observation LM loss, search memoisation."""

from __future__ import annotations

import random

import pytest
import torch

from calibadv.train.sft import Demo, SFTConfig, epoch_order, hop_rows, memo_search, sft_train

ROW = {"id": "hotpotqa_3", "question": "Where was the author of The Salt Bell born?",
       "golden_answers": ["Veliondport"],
       "metadata": {"hops": [
           {"question": "Who wrote The Salt Bell?", "doc_ids": ["8"], "answer": "Stou Thisgreas"},
           {"question": "Where was Stou Thisgreas born?", "doc_ids": ["7"],
            "answer": "Veliondport"}]}}


def test_each_gold_hop_becomes_a_single_hop_question_with_the_hop_answer():
    rows = hop_rows([ROW])
    assert [r["question"] for r in rows] == ["Who wrote The Salt Bell?",
                                              "Where was Stou Thisgreas born?"]
    assert [r["golden_answers"] for r in rows] == [["Stou Thisgreas"], ["Veliondport"]]
    assert [r["id"] for r in rows] == ["hotpotqa_3#hop0", "hotpotqa_3#hop1"]
    assert all(len(r["metadata"]["hops"]) == 1 for r in rows)


@pytest.mark.parametrize("n, epochs, length", [(5, 2.0, 10), (5, 0.4, 2), (4, 1.5, 6), (3, 0, 0)])
def test_epoch_order_is_whole_shuffled_passes_then_a_prefix(n, epochs, length):
    order = epoch_order(n, epochs, random.Random(0))
    assert len(order) == length
    for start in range(0, int(epochs) * n, n):
        assert sorted(order[start : start + n]) == list(range(n))


def test_memo_search_sends_each_distinct_query_once():
    calls = []

    def search(queries):
        calls.append(list(queries))
        return [f"docs of {q}" for q in queries]

    memo = memo_search(search)
    assert memo(["a", "b", "a"]) == ["docs of a", "docs of b", "docs of a"]
    assert memo(["b", "c"]) == ["docs of b", "docs of c"]
    assert calls == [["a", "b"], ["c"]]


class Unigram(torch.nn.Module):
    """A model whose logits do not depend on the context: the loss is a pure function of the
    targets, so weights on them can be checked by hand."""

    def __init__(self, vocab: int = 6) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(vocab))
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None, use_cache=False):
        return type("Out", (), {"logits": self.bias.expand(*input_ids.shape, -1)})()


def test_observation_tokens_are_trained_only_with_a_weight():
    demo = Demo(prompt_ids=[1, 1], response_ids=[2, 3, 3, 3], loss_mask=[1, 0, 0, 0])
    # one step at lr 0 gives the loss at initialisation: uniform logits, ln 6 per token either way
    for weight in (0.0, 1.0):
        losses = sft_train(Unigram(), [demo], 0, SFTConfig(epochs=1, batch_size=1, lr=0.0,
                                                          obs_loss_weight=weight), progress=False)
        assert losses == [pytest.approx(torch.log(torch.tensor(6.0)).item())]
    # trained: generated-only learns token 2; with observations it learns mostly token 3
    for weight, favourite in ((0.0, 2), (1.0, 3)):
        model = Unigram()
        sft_train(model, [demo], 0, SFTConfig(epochs=30, batch_size=1, lr=0.1, warmup_frac=0,
                                               obs_loss_weight=weight), progress=False)
        assert int(model.bias.argmax()) == favourite


def test_hop_demonstrations_come_first():
    seen = []

    class Recorder(Unigram):
        def forward(self, input_ids, attention_mask=None, use_cache=False):
            seen.append(int(input_ids[0, 0]))
            return super().forward(input_ids)

    first = [Demo([9], [1], [1]) for _ in range(3)]
    demos = [Demo([8], [1], [1]) for _ in range(2)]
    sft_train(Recorder(10), demos, 0, SFTConfig(epochs=1, hop_epochs=2, batch_size=1), False,
              first=first)
    assert seen == [9] * 6 + [8] * 2


# --- quoting the evidence (sft_options.quote_evidence) ---------------------------------------

def _passage(pid: str, title: str, text: str):
    from calibadv.retrieval.client import Passage

    return Passage(id=pid, title=title, text=text)


BELL = _passage("8", "The Salt Bell", "The Salt Bell is a novel written by Stou Thisgreas. "
                "It was published in 1790.")
STOU = _passage("7", "Stou Thisgreas", "Stou Thisgreas was born in Veliondport in 1713. "
                "Stou Thisgreas was a poet.")
NEAR = _passage("9", "Stou Thimore", "Stou Thimore was born in Veliondport in 1702.")


@pytest.mark.parametrize("passages, gold, answer, quote", [
    ([BELL], ["8"], "Stou Thisgreas", "The Salt Bell is a novel written by Stou Thisgreas."),
    ([STOU], ["7"], "poet", "Stou Thisgreas was a poet."),
    ([STOU], ["7"], "1713", "Stou Thisgreas was born in Veliondport in 1713."),
    # the near miss states the answer too, but it is not the hop's gold passage
    ([NEAR, STOU], ["7"], "Veliondport", "Stou Thisgreas was born in Veliondport in 1713."),
    ([NEAR], ["7"], "Veliondport", None),          # the search missed the gold passage
    ([BELL], ["8"], "", None),
])
def test_the_evidence_is_the_gold_passage_sentence_that_states_the_answer(
        passages, gold, answer, quote):
    from calibadv.train.sft import evidence_sentence

    assert evidence_sentence(passages, gold, answer) == quote


def test_quoted_demonstrations_open_each_turn_after_a_search_with_its_evidence():
    from calibadv.train.sft import build_demos

    class CharTokenizer:
        """One id per character, so the trained (loss-masked) text reads back exactly."""

        def encode(self, text, add_special_tokens=False):
            return [ord(c) for c in text]

        def apply_chat_template(self, messages, add_generation_prompt, tokenize):
            return messages[-1]["content"]

    def search(queries):
        return [[BELL] if "Salt Bell" in q else [NEAR, STOU] for q in queries]

    tok = CharTokenizer()
    for quote in (False, True):
        (demo,) = build_demos([ROW], tok, search, prethink=False, quote_evidence=quote)
        text = "".join(chr(i) for i, m in zip(demo.response_ids, demo.loss_mask) if m)
        expected = (
            "<think> I need to find out: Who wrote The Salt Bell? </think>\n"
            "<search> Who wrote The Salt Bell? </search>"
            + ("<think> The Salt Bell is a novel written by Stou Thisgreas. " if quote
               else "<think> ")
            + "Next I need to find out: Where was Stou Thisgreas born? </think>\n"
            "<search> Where was Stou Thisgreas born? </search>"
            + ("<think> Stou Thisgreas was born in Veliondport in 1713. " if quote
               else "<think> ")
            + "I have enough information to answer. </think>\n<answer> Veliondport </answer>"
        )
        assert text == expected
