"""response_logprobs: the vocabulary projection at the generated positions only, same numbers.

The old log-probs, the entropy and the update's log-probs are read at the generated tokens
(``loss_mask = 1``) only. Computing the LM head and the log-softmax there alone must give
exactly the numbers the full computation (every position, ``all_positions=True``) gives at
those positions, and zeros elsewhere; the full computation itself is checked against its
definition, one unpadded sequence at a time.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from calibadv.agent.types import Trajectory
from calibadv.train.policy import loss_positions, response_logprobs

VOCAB = 300


@pytest.fixture(scope="module")
def qwen2():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=VOCAB, hidden_size=48, intermediate_size=96,
                      num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
                      tie_word_embeddings=True)
    return Qwen2ForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def gpt2():
    """A model outside PLAIN_HEAD_MODELS: its own forward is used, read at the positions."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=VOCAB, n_embd=48, n_layer=2, n_head=4, n_positions=512)
    return GPT2LMHeadModel(cfg).eval()


def traj(prompt_len: int, turns: list[tuple[int, int]], seed: int) -> Trajectory:
    """A rollout: ``turns`` of (generated tokens, observation tokens) after a prompt."""
    g = torch.Generator().manual_seed(seed)
    n = prompt_len + sum(a + b for a, b in turns)
    ids = torch.randint(1, VOCAB, (n,), generator=g).tolist()
    mask = [m for a, b in turns for m in [1] * a + [0] * b]
    return Trajectory(prompt_ids=ids[:prompt_len], response_ids=ids[prompt_len:], loss_mask=mask)


turns_st = st.lists(st.tuples(st.integers(0, 12), st.integers(0, 15)), min_size=1, max_size=3)
batch_st = st.lists(st.tuples(st.integers(1, 20), turns_st), min_size=1, max_size=5)


@settings(max_examples=30, deadline=None)
@given(batch=batch_st, temperature=st.sampled_from([1.0, 0.7]))
def test_generated_positions_equal_the_full_computation_exactly(qwen2, batch, temperature):
    trajs = [traj(p, turns, seed) for seed, (p, turns) in enumerate(batch)]
    with torch.no_grad():
        lp, ent, mask = response_logprobs(qwen2, trajs, 0, temperature, with_entropy=True)
        ref_lp, ref_ent, ref_mask = response_logprobs(qwen2, trajs, 0, temperature,
                                                      with_entropy=True, all_positions=True)
    assert torch.equal(mask, ref_mask)
    gen = mask.bool()
    # the same numbers up to float rounding: the head reads a gathered batch of rows, whose
    # matrix product BLAS may block differently from the full one (last-bit differences)
    torch.testing.assert_close(lp[gen], ref_lp[gen], rtol=0, atol=1e-5)
    torch.testing.assert_close(ent[gen], ref_ent[gen], rtol=0, atol=1e-5)
    assert not lp[~gen].any() and not ent[~gen].any()  # observation tokens, padding: 0


def test_full_computation_is_the_definition_row_by_row(qwen2):
    """log p(token k | prompt, response[:k]) = log_softmax(logits / T) at column len(prompt)-1+k."""
    trajs = [traj(7, [(5, 9), (4, 0)], 1), traj(3, [(2, 4), (6, 3), (1, 0)], 2),
             traj(12, [(3, 0)], 3)]
    with torch.no_grad():
        lp, ent, _ = response_logprobs(qwen2, trajs, 0, 0.7, with_entropy=True, all_positions=True)
        for i, t in enumerate(trajs):
            seq = torch.tensor([t.prompt_ids + t.response_ids])
            logp = torch.log_softmax(qwen2(input_ids=seq).logits[0].float() / 0.7, dim=-1)
            for k, token in enumerate(t.response_ids):
                row = logp[len(t.prompt_ids) - 1 + k]
                assert lp[i, k].item() == pytest.approx(row[token].item(), abs=1e-5)
                assert ent[i, k].item() == pytest.approx(-(row.exp() * row).sum().item(), abs=1e-5)


def test_gradients_equal_the_full_computation(qwen2):
    trajs = [traj(6, [(5, 8), (3, 0)], 4), traj(2, [(7, 3), (2, 5), (4, 0)], 5)]
    grads = []
    for full in (False, True):
        qwen2.zero_grad(set_to_none=True)
        lp, ent, mask = response_logprobs(qwen2, trajs, 0, 0.7, with_entropy=True,
                                          all_positions=full)
        ((lp * 0.3 + ent * 0.01) * mask).sum().backward()
        grads.append([p.grad.clone() for p in qwen2.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_other_architectures_use_their_own_forward_with_the_same_numbers(gpt2):
    trajs = [traj(4, [(3, 6), (5, 0)], 6), traj(9, [(2, 2)], 7)]
    with torch.no_grad():
        lp, _, mask = response_logprobs(gpt2, trajs, 0)
        ref, _, _ = response_logprobs(gpt2, trajs, 0, all_positions=True)
    gen = mask.bool()
    assert torch.equal(lp[gen], ref[gen]) and not lp[~gen].any()


def test_loss_positions_by_hand():
    """Row 0: prompt of 3, response [g g o g]; row 1: prompt of 1, response [o g]."""
    a = Trajectory(prompt_ids=[5, 6, 7], response_ids=[1, 2, 3, 4], loss_mask=[1, 1, 0, 1])
    b = Trajectory(prompt_ids=[5], response_ids=[8, 9], loss_mask=[0, 1])
    rows, cols, slots = loss_positions([a, b])
    assert rows.tolist() == [0, 0, 0, 1]
    assert slots.tolist() == [0, 1, 3, 1]
    assert cols.tolist() == [2, 3, 5, 1]  # the column whose logits predict the token
