"""KVCacheGenerator: the same tokens as model.generate, faster; its cache never leaks state.

The reference is ``HFGenerator`` (``model.generate`` with stop strings) and ``model.generate``
itself; the model is a randomly initialised tiny Qwen2 with the synthetic world's tokenizer.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from calibadv.agent.engines import local_generator
from calibadv.agent.hf import HFGenerator
from calibadv.agent import kvcache
from calibadv.agent.kvcache import KVCacheGenerator, nucleus_draw, sample_next
from calibadv.agent.types import GenerationRequest
from calibadv.errors import ConfigError

STOPS = ("</search>", "</answer>")


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory):
    from calibadv.models.policy import load_policy
    from calibadv.models.tiny import TinyConfig, build_tiny_model
    from calibadv.synth import write_world

    root: Path = tmp_path_factory.mktemp("kv")
    write_world(root / "world", seed=1, size="tiny")
    build_tiny_model(root / "world" / "corpus.jsonl", [root / "world" / "dev.jsonl"],
                     root / "model", TinyConfig(hidden_size=48, intermediate_size=96,
                                                num_hidden_layers=2, num_attention_heads=6,
                                                num_key_value_heads=2))
    return load_policy(root / "model", device="cpu")


def prompts(n: int, lengths=(5, 17, 30, 41), seed: int = 0) -> list[tuple[int, ...]]:
    g = torch.Generator().manual_seed(seed)
    return [tuple(torch.randint(10, 3000, (lengths[i % len(lengths)],), generator=g).tolist())
            for i in range(n)]


def greedy_pair(model, tok):
    return HFGenerator(model, tok, greedy=True), KVCacheGenerator(model, tok, greedy=True)


def test_greedy_tokens_equal_model_generate(policy):
    model, tok = policy
    kv = KVCacheGenerator(model, tok, greedy=True)
    for p in prompts(3):
        out = kv([GenerationRequest(p, 24, ())])[0]
        ref = model.generate(input_ids=torch.tensor([p]), attention_mask=torch.ones(1, len(p)),
                             max_new_tokens=24, do_sample=False, pad_token_id=tok.pad_token_id,
                             temperature=None, top_p=None, top_k=None)
        assert out.token_ids == ref[0, len(p):].tolist()[: len(out.token_ids)]


def test_batched_greedy_turns_equal_hf_generator_with_and_without_prefix_reuse(policy):
    model, tok = policy
    hf, kv = greedy_pair(model, tok)
    no_reuse = KVCacheGenerator(model, tok, greedy=True, reuse_prefix=False)
    reqs = [GenerationRequest(p, m, STOPS) for p, m in zip(prompts(6), (20, 7, 20, 13, 20, 1),
                                                           strict=True)]
    reqs.append(reqs[0])  # a repeated prompt (the G rollouts of one question) is read once
    for turn in range(3):
        a, b, c = hf(reqs), kv(reqs), no_reuse(reqs)
        for x, y, z in zip(a, b, c, strict=True):
            assert x.token_ids == y.token_ids == z.token_ids
            assert x.text == y.text and x.finish_reason == y.finish_reason
            assert y.logprobs == pytest.approx(x.logprobs, abs=1e-4)
        # next turn: the turn's tokens plus an "observation", as the protocol builds it
        reqs = [GenerationRequest(r.prompt_ids + tuple(g.token_ids) + (11, 12 + turn), 16, STOPS)
                for r, g in zip(reqs, b, strict=True)]
    assert kv.stats["reused_tokens"] > 0 and no_reuse.stats["reused_tokens"] == 0


def test_prompts_sharing_their_instructions_read_them_once_with_the_same_output(policy):
    model, tok = policy
    hf, kv = greedy_pair(model, tok)
    shared = prompts(1, lengths=(24,), seed=3)[0]  # the instructions turn-1 prompts start with
    reqs = [GenerationRequest(shared + tail, 12, STOPS) for tail in prompts(4, seed=4)]
    a, b = hf(reqs), kv(reqs)
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    for x, y in zip(a, b, strict=True):
        assert y.logprobs == pytest.approx(x.logprobs, abs=1e-4)
    assert kv.stats["reused_tokens"] == 4 * len(shared)  # read once, reused by each prompt


def test_rows_stop_at_their_own_stop_string_eos_or_limit_like_hf(policy):
    model, tok = policy
    hf, kv = greedy_pair(model, tok)
    p, q = prompts(2)
    free = kv([GenerationRequest(p, 12, ())])[0]
    stop = (tok.decode(free.token_ids[2:3]),)  # a piece the greedy continuation produces
    reqs = [GenerationRequest(p, 12, stop), GenerationRequest(p, 1, stop),
            GenerationRequest(q, 12, stop)]
    a, b = hf(reqs), kv(reqs)
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    assert [g.finish_reason for g in a] == [g.finish_reason for g in b]
    assert b[0].finish_reason == "stop" and len(b[0].token_ids) <= 3
    assert stop[0] in b[0].text
    assert len(b[1].token_ids) == 1


def test_sampled_logprobs_are_the_raw_model_distribution(policy):
    model, tok = policy
    p = prompts(1)[0]
    torch.manual_seed(0)
    out = KVCacheGenerator(model, tok, temperature=0.7, top_p=0.9)(
        [GenerationRequest(p, 10, ())])[0]
    seq = torch.tensor([list(p) + out.token_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=seq).logits[0].float(), dim=-1)
    want = [logp[len(p) - 1 + i, t].item() for i, t in enumerate(out.token_ids)]
    assert out.logprobs == pytest.approx(want, abs=1e-4)


def test_sampling_follows_temperature_and_top_p():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).repeat(4000, 1)
    torch.manual_seed(0)
    tok, lp = sample_next(logits, False, 1.0, 1.0)
    freq = torch.bincount(tok, minlength=4).float() / len(tok)
    assert freq.tolist() == pytest.approx(torch.softmax(logits[0], -1).tolist(), abs=0.03)
    assert lp.tolist() == pytest.approx(torch.log_softmax(logits[0], -1)[tok].tolist())
    tok, _ = sample_next(logits, False, 1.0, 0.5)  # nucleus = the top token (p = 0.64)
    assert set(tok.tolist()) == {0}
    tok, _ = sample_next(logits, False, 0.25, 1.0)  # sharper: the top token ~98% of draws
    assert (tok == 0).float().mean() > 0.95
    assert sample_next(logits[:2], True, 1.0, 1.0)[0].tolist() == [0, 0]


def nucleus_reference(w: torch.Tensor, top_p: float) -> torch.Tensor:
    """The nucleus by a full sort (the engine's earlier code): each row's weights renormalised
    over the smallest heaviest-first set whose mass reaches top_p of the total."""
    sorted_w, order = w.sort(dim=-1, descending=True)
    mass = sorted_w.cumsum(dim=-1)
    drop = mass - sorted_w > top_p * mass[:, -1:]
    kept = torch.zeros_like(w).scatter_(-1, order, sorted_w.masked_fill(drop, 0.0))
    return kept / kept.sum(dim=-1, keepdim=True)


@pytest.mark.parametrize("window", [2, 3, 64])
def test_nucleus_draws_follow_the_full_sort_nucleus_whether_the_window_holds_it_or_not(
        monkeypatch, window):
    # row 0: nucleus of 1 token; row 1: of 3 (past a window of 2); row 2: nearly flat, 5 of
    # 6 tokens (past a window of 3); row 3: the zero weights past the nucleus are never drawn
    # (no ties at a nucleus' edge: which of two equal weights a sort puts first is arbitrary)
    rows = torch.tensor([[0.90, 0.04, 0.03, 0.02, 0.01, 0.00],
                         [0.30, 0.30, 0.25, 0.10, 0.05, 0.00],
                         [0.20, 0.19, 0.18, 0.17, 0.16, 0.10],
                         [0.5, 0.5, 0.0, 0.0, 0.0, 0.0]])
    monkeypatch.setattr(kvcache, "NUCLEUS_WINDOW", window)
    n = 6000
    w = rows.repeat_interleave(n, dim=0) * 7.0  # unnormalised weights, as the engine passes them
    torch.manual_seed(0)
    tok = nucleus_draw(w, 0.8).view(len(rows), n)
    want = nucleus_reference(rows, 0.8)
    for r in range(len(rows)):
        freq = torch.bincount(tok[r], minlength=rows.shape[1]).float() / n
        assert set(tok[r].tolist()) == set(want[r].nonzero().flatten().tolist())
        assert freq.tolist() == pytest.approx(want[r].tolist(), abs=0.025)


def test_cached_prefixes_are_dropped_when_the_weights_change(policy):
    model, tok = policy
    kv = KVCacheGenerator(model, tok, greedy=True)
    p = prompts(1)[0]
    first = kv([GenerationRequest(p, 8, ())])[0]
    nxt = GenerationRequest(p + tuple(first.token_ids) + (11,), 8, ())
    original = [t.detach().clone() for t in model.parameters()]
    try:
        with torch.no_grad():
            for t in model.parameters():
                t.mul_(1.5)  # in place, as an optimiser step
        reused_before = kv.stats["reused_tokens"]
        after = kv([nxt])[0]
        assert kv.stats["reused_tokens"] == reused_before  # nothing stale was reused
        fresh = KVCacheGenerator(model, tok, greedy=True)([nxt])[0]
        assert after.token_ids == fresh.token_ids
    finally:
        with torch.no_grad():
            for t, o in zip(model.parameters(), original, strict=True):
                t.copy_(o)


def test_engines_by_name_and_unknown_names(policy):
    model, tok = policy
    assert isinstance(local_generator("kv", model, tok, greedy=True), KVCacheGenerator)
    assert isinstance(local_generator("hf", model, tok), HFGenerator)
    with pytest.raises(ConfigError, match="'vllm' is not one of kv, hf"):
        local_generator("vllm", model, tok)


def test_an_architecture_it_does_not_run_is_refused_with_the_alternative(policy):
    model, tok = policy

    class Other:
        config = type("C", (), {"model_type": "gpt2"})()

    with pytest.raises(ConfigError, match="use the hf generator"):
        KVCacheGenerator(Other(), tok)


def test_run_specs_choose_the_local_engine_kv_by_default():
    from calibadv.spec import run_spec_from_dict

    assert run_spec_from_dict({}).agent.generator == "kv"
    assert run_spec_from_dict({"agent": {"generator": "hf"}}).agent.generator == "hf"
    with pytest.raises(ConfigError, match="agent.generator: 'vllm' is not one of 'kv', 'hf'"):
        run_spec_from_dict({"agent": {"generator": "vllm"}})
