"""The counterfactual update's own log-prob reads (calibadv.train.counterfactual): rows sorted by
length in larger chunks give each row what the trainer's chunks in rollout order give, and the
old log-probs laid out per micro-batch are those ``LocalTrainer._recompute`` lays out."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from calibadv.train.counterfactual import _fill_old, as_lists, policy_logps
from calibadv.train.local_batch import StepBatch, micro_batches
from calibadv.train.policy import response_logprobs

from .test_policy_logprobs import qwen2, traj  # noqa: F401  (the fixture)

# prompts and turns of unequal lengths, so a chunk in rollout order pads and a sorted one less
SHAPES = [(5, [(7, 4), (3, 0)]), (18, [(2, 9)]), (3, [(12, 15), (6, 2), (1, 0)]),
          (9, [(0, 3), (5, 0)]), (1, [(4, 0)]), (14, [(11, 1), (2, 6)]), (6, [(9, 9)])]


def _trainer(model) -> SimpleNamespace:
    return SimpleNamespace(model=model, pad_id=0, t=SimpleNamespace(temperature=0.7))


def test_sorted_chunks_give_each_row_what_rollout_order_gives(qwen2):  # noqa: F811
    trajs = [traj(p, turns, seed) for seed, (p, turns) in enumerate(SHAPES)]
    with torch.no_grad():
        ref = response_logprobs(qwen2, trajs, 0, 0.7)[0]
    got = policy_logps(_trainer(qwen2), trajs, chunk=3)
    assert sorted(got) == list(range(len(trajs)))
    for r, t in enumerate(trajs):
        assert got[r].shape == (len(t.response_ids),)
        torch.testing.assert_close(got[r], ref[r, :len(t.response_ids)], atol=1e-5, rtol=1e-5)
    assert [len(x) for x in as_lists(got)] == [len(t.response_ids) for t in trajs]
    assert sorted(policy_logps(_trainer(qwen2), trajs, rows=[4, 1])) == [1, 4]


def test_old_logprobs_are_laid_out_per_micro_batch_as_the_trainer_recomputes_them(qwen2):  # noqa: F811
    trajs = [traj(p, turns, seed) for seed, (p, turns) in enumerate(SHAPES)]
    chunks = micro_batches(len(trajs), 4, 2)
    batch = StepBatch(1, 0, trajs, [None] * len(trajs), [{}] * len(trajs), 4, chunks)
    _fill_old(batch, policy_logps(_trainer(qwen2), trajs))
    assert sorted(batch.old_logp) == [i for i, _ in chunks]
    for i, j in chunks:
        with torch.no_grad():
            want = response_logprobs(qwen2, trajs[i:j], 0, 0.7)[0]
        assert batch.old_logp[i].shape == want.shape
        torch.testing.assert_close(batch.old_logp[i], want, atol=1e-5, rtol=1e-5)
    # rows the loss forward gives (the first mini-batch) leave their micro-batches out
    batch.old_logp.clear()
    _fill_old(batch, policy_logps(_trainer(qwen2), trajs, rows=range(4, len(trajs))))
    assert sorted(batch.old_logp) == [i for i, _ in chunks if i >= 4]
