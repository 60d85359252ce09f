"""A short real local run of each loss- and filter-level baseline on the tiny world: the
preset's registered part acts and its signal lands in metrics.jsonl."""

from __future__ import annotations

import pytest
import yaml

from calibadv.methods.filters import RolloutInfo, is_void
from calibadv.io import read_jsonl

from .conftest import cli
from .test_end_to_end import write_spec

pytestmark = pytest.mark.slow

#: preset → the loss signal it writes (None: a filter-level method)
PRESETS = {"sapo-search": "sapo_kl", "llds": "llds_loss", "llds-calibadv": "llds_loss",
           "simpletir": None}


@pytest.mark.parametrize("method", sorted(PRESETS))
def test_baseline_preset_trains_locally(world, server, tmp_path, method):
    spec_path = write_spec(tmp_path / "spec.yaml", world, server, method, steps=2,
                           val_before_train=False)
    spec = yaml.safe_load(spec_path.read_text())
    if spec["method"].get("filter"):  # act from the first step (the paper's start is 50)
        spec["method"]["filter"]["knobs"]["void_start_step"] = 1
        spec_path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "run"
    cli("train", "--spec", spec_path, "--out", out)
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2]
    signal = PRESETS[method]
    if signal is not None:
        # two mini-batches per step: 0 on the first (r = 1), >= 0 on the second
        assert all(m[signal] >= 0.0 for m in metrics)
        assert "void_frac" not in metrics[0]
    else:
        dump = read_jsonl(out / "rollouts" / "step_000001.jsonl")
        void = [is_void(RolloutInfo.of(d)) for d in dump]
        assert metrics[0]["void_frac"] == pytest.approx(sum(void) / len(void))
        assert metrics[0]["void_dropped"] == sum(void) and metrics[0]["void_masked"] == 0
        assert all(d["advantage_mean"] == 0.0 for d, v in zip(dump, void) if v)
