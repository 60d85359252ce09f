"""Trainer mode ``calibadv``: extra_fields travel from the TransferQueue to the estimator.

Runs verl's real ``_compute_advantage`` on a real TransferQueue (Ray, local, CPU); only the
trainer's constructor (which would start GPU workers) is skipped.
"""

from __future__ import annotations

import json

import pytest
import torch

from calibadv.methods.advantage import CalibConfig, calibrate
from calibadv.train.verl.overrides import build_overrides
from calibadv.train.verl.signals import step_metrics
from calibadv.train.verl.trainer import dump_rows

URL = "http://127.0.0.1:8123"

ROLLOUTS = [  # (reward, format_ok, turn_spans, doc_ids, thinks)
    (1.0, True, [[0, 4], [8, 12]], [["d1", "d2", "x"]], ["find", "done"]),
    (0.0, True, [[0, 4], [8, 12]], [["d1", "d2", "y"]], ["find a", "guess"]),
    (0.0, True, [[0, 4], [8, 12]], [["p", "q", "r"]], ["look", "no"]),
    (0.5, True, [[0, 4], [8, 12]], [["d2", "s", "t"]], ["maybe", "hmm"]),
    (0.0, False, [[0, 6]], [[]], ["broken"]),
]


def extras_of(i: int, r: float, ok: bool, spans, docs, thinks) -> dict:
    return {"turn_spans": spans, "doc_ids": docs, "thinks": thinks, "question_index": 4,
            "num_searches": len(docs), "response_len": spans[-1][1], "ppl": 2.0 + i,
            "num_generated": 8, "token_prob_sum": 4.0,
            "reward_extra_info": {"score": r, "f1": r, "em": float(r == 1.0), "format_ok": ok}}


def rows():
    from verl.experimental.agent_loop.agent_loop import AgentLoopOutput

    out = []
    for i, (r, ok, spans, docs, thinks) in enumerate(ROLLOUTS):
        n = spans[-1][1]
        mask = [1] * n
        for a, b in zip(spans[:-1], spans[1:]):
            mask[a[1]:b[0]] = [0] * (b[0] - a[1])
        o = AgentLoopOutput(prompt_ids=[5, 6, 7], response_ids=list(range(10, 10 + n)),
                            response_mask=mask, reward_score=r, num_turns=3, metrics={},
                            extra_fields=extras_of(i, r, ok, spans, docs, thinks))
        field = o.as_dict()
        field.update(uid="u4", session_id=i)
        out.append(field)
    return out


@pytest.mark.slow
def test_compute_advantage_hands_extra_fields_to_the_estimator(ray_tq, tmp_path,
                                                               compose_config, make_spec):
    import verl.trainer.ppo.v1  # noqa: F401  (fires the plugin's trainer registration)
    from verl.trainer.ppo.v1.trainer_base import get_trainer_cls
    from verl.utils.tensordict_utils import list_of_dict_to_tensordict

    tq = ray_tq
    keys = [f"u4_{i}_0" for i in range(len(ROLLOUTS))]
    data = rows()
    meta = tq.kv_batch_put(keys=keys, partition_id="train", fields=list_of_dict_to_tensordict(data),
                           tags=[{"status": "success"} for _ in keys])

    trainer_cls = get_trainer_cls("calibadv")
    trainer = object.__new__(trainer_cls)  # no GPU workers: only the advantage step runs
    trainer.config = compose_config(build_overrides(make_spec("calibadv"), tmp_path, URL))
    trainer.global_steps = 10  # a dump step of the paper spec
    metrics: dict = {}
    meta = trainer._compute_advantage(meta, metrics)

    got = tq.kv_batch_get(keys=keys, partition_id="train", select_fields=["advantages"])
    got = got["advantages"].to_padded_tensor(padding=0.0)
    width = got.shape[1]
    mask = torch.zeros(len(data), width, dtype=torch.long)
    for i, d in enumerate(data):
        mask[i, : len(d["response_mask"])] = d["response_mask"]
    cfg = CalibConfig.from_dict(make_spec("calibadv").method["calibration"])
    expected, stats = calibrate(torch.tensor([r[0] for r in ROLLOUTS]),
                                torch.tensor([r[1] for r in ROLLOUTS]), mask, ["u4"] * 5,
                                [r[2] for r in ROLLOUTS], [r[3] for r in ROLLOUTS],
                                [r[4] for r in ROLLOUTS], cfg)
    torch.testing.assert_close(got, expected.float())

    extras = [d["extra_fields"] for d in data]
    for key, value in step_metrics(extras, stats).items():
        assert metrics[key] == pytest.approx(value), key
    dump = [json.loads(line) for line in (tmp_path / "rollouts" / "step_000010.jsonl").open()]
    assert [row["c"] for row in dump] == [stats["per_step_c"][i] for i in range(5)]
    assert dump[0]["silver_ids"] == ["d1", "d2", "x"]
    tq.kv_clear(keys=keys, partition_id="train")


def test_dump_rows_follow_the_rollout_dump_format():
    extras = [extras_of(i, r, ok, s, d, t) for i, (r, ok, s, d, t) in enumerate(ROLLOUTS[:2])]
    stats = {"per_step_c": [[1.0], torch.tensor([2 / 3])], "silver_sets": {"u4": ["d2", "d1"]},
             "rollout_advantage": torch.tensor([0.7, -0.7])}
    rows_ = dump_rows(3, ["u4_0_0", "u4_1_0"], extras, stats)
    assert rows_[1]["c"] == [pytest.approx(2 / 3)] and rows_[1]["advantage"] == pytest.approx(-0.7)
    assert rows_[0]["group"] == 4 and rows_[0]["silver_ids"] == ["d2", "d1"]
    assert rows_[0]["reward"] == 1.0 and rows_[1]["format_ok"] is True
    assert all("reward_extra_info" not in r for r in rows_)
    json.dumps(rows_)  # plain JSON, no tensors


def test_step_metrics_use_our_names():
    extras = [extras_of(i, r, ok, s, d, t) for i, (r, ok, s, d, t) in enumerate(ROLLOUTS)]
    extras[4]["ppl"] = 60.0
    m = step_metrics(extras, {"c_mean": 0.5, "c_hist": {"0": 0.25, "1": 0.75},
                              "penalised_c1_frac": None, "per_step_c": [[1.0]]})
    assert m["calibadv/reward_mean"] == pytest.approx(0.3)
    assert m["calibadv/format_rate"] == pytest.approx(0.8)
    assert m["calibadv/high_ppl_ratio"] == pytest.approx(0.2)
    assert m["calibadv/token_prob_mean"] == pytest.approx(0.5)
    assert m["calibadv/c_hist/1"] == 0.75 and m["calibadv/c_mean"] == 0.5
    assert "calibadv/penalised_c1_frac" not in m and "calibadv/per_step_c" not in m


def test_one_failed_group_fails_the_step_and_says_why():
    """verl's sync buffer would train on the surviving groups; ours names the failure."""
    from calibadv.train.verl.trainer import FailFastReplayBuffer, RolloutGroupsFailed

    buffer = object.__new__(FailFastReplayBuffer)  # only the failure check, no TransferQueue
    buffer.failure_keys = {"train": {"uid-b"}}
    buffer.finished_keys = {"train": {"uid-a", "uid-c"}}
    with pytest.raises(RolloutGroupsFailed, match="1 of 3 prompt groups of the 'train' batch"):
        buffer._raise_on_failures("train")
    buffer._raise_on_failures("val")  # nothing failed there
