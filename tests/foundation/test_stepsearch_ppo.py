"""StepSearch's PPO half: GAE by hand (and against verl's), the step rewards' token positions,
the clipped value loss against verl's, the preset's composition and the data check."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from verl.trainer.ppo.core_algos import compute_gae_advantage_return, compute_value_loss

from calibadv.errors import ConfigError
from calibadv.methods.estimators import EstimatorBatch, estimate, gae
from calibadv.methods.presets import get_method
from calibadv.methods.catalog import method_needs
from calibadv.methods.token_rewards import token_scores
from calibadv.methods.catalog import check_run_data
from calibadv.methods.stepsearch_reward import final_reward, step_rewards, token_rewards
from calibadv.train.value import value_loss

T = torch.tensor

# (rewards, values, mask, gamma, lam, expected advantages before whitening), worked by hand:
# A_t = r_t + γ V_next − V_t + γλ A_next over mask-1 tokens; mask-0 tokens are skipped.
GAE_TABLE = [
    # γ = λ = 1, V = 0: the reward-to-go
    ([0.0, 0.3, 0.0, 1.0], [0, 0, 0, 0], [1, 1, 1, 1], 1.0, 1.0, [1.3, 1.3, 1.0, 1.0]),
    # γ = λ = 1 with values: A_t = Σ_{k≥t} r_k − V_t (the values telescope)
    ([0.0, 0.3, 0.0, 1.0], [0.5, 0.2, 0.1, 0.4], [1, 1, 1, 1], 1.0, 1.0, [0.8, 1.1, 0.9, 0.6]),
    # γ = 0.5, λ = 0.5, V = [0.4, 0.2, 0.8]:
    #   A_2 = 1 − 0.8 = 0.2; A_1 = 0 + 0.5·0.8 − 0.2 + 0.25·0.2 = 0.25;
    #   A_0 = 0.6 + 0.5·0.2 − 0.4 + 0.25·0.25 = 0.3625
    ([0.6, 0.0, 1.0], [0.4, 0.2, 0.8], [1, 1, 1], 0.5, 0.5, [0.3625, 0.25, 0.2]),
    # an observation token (mask 0) between two turns is skipped: A_0 sees A_2 and V_2 directly
    #   A_2 = 1 − 0.5 = 0.5; A_0 = 0.2 + 1·0.5 − 0.1 + 1·0.5 = 1.1
    ([0.2, 0.0, 1.0], [0.1, 9.0, 0.5], [1, 0, 1], 1.0, 1.0, [1.1, None, 0.5]),
]


@pytest.mark.parametrize("rewards,values,mask,gamma,lam,want", GAE_TABLE)
def test_gae_by_hand(rewards, values, mask, gamma, lam, want):
    adv, ret = gae(T([rewards]), T([values], dtype=torch.float32), T([mask]), gamma, lam)
    for t, w in enumerate(want):
        if w is not None:
            assert float(adv[0, t]) == pytest.approx(w, abs=1e-6)
            assert float(ret[0, t]) == pytest.approx(w + values[t], abs=1e-6)


@pytest.mark.parametrize("rewards,values,mask,gamma,lam,want", GAE_TABLE)
def test_gae_returns_equal_verls(rewards, values, mask, gamma, lam, want):
    m = T([mask], dtype=torch.float32)
    _, ret = gae(T([rewards]), T([values], dtype=torch.float32), m, gamma, lam)
    _, verl_ret = compute_gae_advantage_return(T([rewards]), T([values], dtype=torch.float32), m,
                                               gamma, lam)
    assert torch.allclose(ret * m, verl_ret * m, atol=1e-6)


_floats = st.floats(-2.0, 2.0, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 8).flatmap(lambda n: st.tuples(
    st.lists(_floats, min_size=n, max_size=n), st.lists(_floats, min_size=n, max_size=n),
    st.lists(st.integers(0, 1), min_size=n, max_size=n))),
    st.sampled_from([0.0, 0.5, 0.9, 1.0]), st.sampled_from([0.0, 0.5, 0.95, 1.0]))
def test_gae_equals_verls_on_any_batch_and_is_reward_to_go_at_gamma_lambda_one(row, gamma, lam):
    assume(sum(row[2]) >= 2)  # verl's function whitens: it needs two mask-1 tokens
    rewards, values, mask = (T([x], dtype=torch.float32) for x in row)
    adv, ret = gae(rewards, values, mask, gamma, lam)
    _, verl_ret = compute_gae_advantage_return(rewards, values, mask, gamma, lam)
    assert torch.allclose(ret * mask, verl_ret * mask, atol=1e-4)
    if gamma == lam == 1.0:  # A_t + V_t = the rewards of t and of the mask-1 tokens after it
        m = row[2]
        for t in (t for t in range(len(m)) if m[t]):
            want = rewards[0, t] + sum(rewards[0, k] for k in range(t + 1, len(m)) if m[k])
            assert float(ret[0, t]) == pytest.approx(float(want), abs=1e-4)


def _rollout(answer_tail: str = "<answer>Oslo</answer>") -> dict:
    """Two searches (turns 0 and 1) then an answer; turn t's tokens are turn_spans[t]."""
    info1 = "Doc 1(Title: Oslo) Oslo is the capital of Norway.\nDoc 2(Title: Bergen) Bergen rain."
    info2 = "Doc 1(Title: Oslo) Oslo is the capital of Norway.\nDoc 2(Title: Fjord) A fjord."
    return {
        "turn_spans": [[0, 5], [9, 14], [18, 22]],
        "queries": ["capital of norway", "norway capital city", ""],
        "doc_ids": [["1", "2"], ["1", "3"], []],
        "response_text": (f"<search>capital of norway</search><information>{info1}</information>"
                          f"<search>norway capital city</search><information>{info2}</information>"
                          f"{answer_tail}"),
        "golden_answers": ["Oslo"],
        "gold_docs": ["Oslo is the capital of Norway."],
        "sub_query_keys": [["capital of Norway"]],
    }


def test_step_rewards_sit_on_the_last_token_of_each_search_and_the_final_on_the_last():
    """Official: main_ppo.py L94 + L119-131 (StepSearch@43215bab9118): the step score lands on
    the token that ends ``</search>`` and is then scaled by 1 + step_reward_scale (1 + 0.6)."""
    r = _rollout()
    got = token_rewards(r)
    steps = step_rewards([[("1", "Oslo is the capital of Norway."), ("2", "Bergen rain.")],
                          [("1", "Oslo is the capital of Norway."), ("3", "A fjord.")]],
                         r["gold_docs"])
    final = final_reward(r["response_text"], ["Oslo"], r["queries"][:2], r["sub_query_keys"])
    # turn 0 ends at token 4, turn 1 at token 13 (each with </search>), the answer at 21
    assert [p for p, _ in got] == [4, 13, 21]
    assert [v for _, v in got] == pytest.approx([1.6 * steps[0].score, 1.6 * steps[1].score, final])
    assert steps[1].redundancy == 0.5 and steps[1].gain == 0.0  # doc 1 seen before, nothing new
    scores, _ = token_scores("stepsearch", None, [0.0], [r], 24)
    assert scores[0].nonzero().flatten().tolist() == [4, 13, 21]
    paper, _ = token_scores("stepsearch", {"step_scale": 0.6}, [0.0], [r], 24)
    assert float(paper[0, 4]) == pytest.approx(0.6 * steps[0].score)


def test_malformed_rollout_gets_minus_one_on_its_last_token_and_no_step_rewards():
    assert token_rewards(_rollout(answer_tail="no answer here")) == [(21, -1.0)]


def test_task_reward_is_the_score_on_the_last_generated_token():
    scores, _ = token_scores("task", None, [0.7], [_rollout()], 30)
    assert scores[0].nonzero().flatten().tolist() == [21] and float(scores[0, 21]) == pytest.approx(0.7)


# (vpreds, returns, old values, clip) → 0.5 · mean over tokens of max((v−R)², (clip(v)−R)²)
VALUE_TABLE = [
    # no clipping: 0.5·mean(0.25, 1) = 0.3125
    ([0.5, 1.0], [1.0, 0.0], [0.5, 1.0], 0.5, 0.3125),
    # v moved 1.0 from old 0 (clip 0.2 → 0.2): max((1−0)², (0.2−0)²) = 1 on token 0;
    # token 1: v = −1, old 0, R = −2: (1)² vs (−0.2+2)² = 3.24 → 3.24; 0.5·mean = 1.06
    ([1.0, -1.0], [0.0, -2.0], [0.0, 0.0], 0.2, 1.06),
]


@pytest.mark.parametrize("vpreds,returns,old,clip,want", VALUE_TABLE)
def test_value_loss_is_verls_clipped_loss(vpreds, returns, old, clip, want):
    mask = torch.ones(1, len(vpreds))
    ours, _ = value_loss(T([vpreds]), T([returns]), T([old]), mask, clip, batch_num_tokens=len(vpreds))
    theirs, _ = compute_value_loss(T([vpreds]), T([returns]), T([old]), mask, clip)
    assert float(ours) == pytest.approx(want) and float(theirs) == pytest.approx(want)


def test_the_preset_is_gae_on_stepsearch_rewards_with_official_defaults():
    m = get_method("stepsearch")
    assert m["estimator"] == {"name": "gae", "knobs": {
        "gamma": 1.0, "lam": 1.0, "kl_coef": 0.001, "kl_penalty": "kl", "critic_lr": 5e-7,
        "cliprange_value": 0.5}}
    assert m["reward"] == {"name": "stepsearch", "knobs": {"step_scale": 1.6}}
    assert m["loss"]["loss_mode"] == "vanilla"
    assert method_needs(m) == {"values", "gold_docs"}
    assert method_needs(get_method("search-r1")) == set()


def test_gae_estimator_whitens_and_subtracts_the_kl_penalty():
    """Two one-turn rollouts, rewards 1 and 0 on their last tokens, V = 0, γ = λ = 1: the raw
    advantages are [1,1,1] and [0,0,0] minus the KL penalty's reward-to-go, then whitened."""
    mask = torch.ones(2, 3)
    rolls = [{"turn_spans": [[0, 3]]}, {"turn_spans": [[0, 3]]}]
    old = torch.zeros(2, 3)
    ref = torch.full((2, 3), -1.0)  # k1 KL = old − ref = 1 per token
    batch = EstimatorBatch(T([1.0, 0.0]), mask, [0, 0], rolls, None, values=torch.zeros(2, 3),
                           old_logp=old, ref_logp=ref, reward=("task", {}))
    adv, stats = estimate("gae", {"kl_coef": 0.1}, batch)
    raw = T([[0.7, 0.8, 0.9], [-0.3, -0.2, -0.1]])  # reward-to-go of r − 0.1 per token
    from verl.utils.torch_functional import masked_whiten

    assert torch.allclose(adv, masked_whiten(raw, mask), atol=1e-6)
    assert torch.allclose(stats["returns"], raw, atol=1e-6)
    assert stats["reward_kl_penalty"] == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="value model"):
        estimate("gae", None, EstimatorBatch(T([1.0]), torch.ones(1, 3), [0], rolls[:1], None))


def _qa(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_prepare_data_writes_stepsearch_fields_for_the_synthetic_world_only(tmp_path):
    from calibadv.data.questions import load_questions
    from calibadv.data.prepare import prepare

    corpus = _qa(tmp_path / "corpus.jsonl", [{"id": "7", "contents": "\"A\"\nA wrote B."},
                                              {"id": "8", "contents": "\"B\"\nB is in C."}])
    synth = _qa(tmp_path / "synth.jsonl", [{
        "question": "Where is what A wrote?", "golden_answers": ["C"],
        "metadata": {"hops": [{"question": "What did A write?", "doc_ids": ["7"], "answer": "B"},
                              {"question": "Where is B?", "doc_ids": ["8"], "answer": "C"}],
                     "supporting_ids": ["7", "8"]}}])
    real = _qa(tmp_path / "nq.jsonl", [{"question": "Who wrote B?", "golden_answers": ["A"]}])
    prepare([f"hotpotqa={synth}"], tmp_path / "s.parquet", corpus=corpus)
    prepare([f"nq={real}"], tmp_path / "r.parquet")
    (q,) = load_questions(tmp_path / "s.parquet")
    assert q.gold_docs == ["\"A\"\nA wrote B.", "\"B\"\nB is in C."]
    assert q.sub_query_keys == [["What did A write?"], ["Where is B?"]]
    method = get_method("stepsearch")
    check_run_data(method, str(tmp_path / "s.parquet"))
    with pytest.raises(ConfigError, match="row 0 has no gold_docs or sub_query_keys.*released "
                                          "training set"):
        check_run_data(method, str(tmp_path / "r.parquet"))
    check_run_data(get_method("search-r1"), str(tmp_path / "r.parquet"))  # others do not care
