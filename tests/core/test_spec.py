"""RunSpec loading is strict: every mistake names its dotted key, nothing falls back silently."""

import re

import pytest

from calibadv.errors import ConfigError
from calibadv.spec import dump_run_spec, load_run_spec, run_spec_from_dict


def test_defaults_follow_the_paper_training_setup():
    spec = run_spec_from_dict({})
    t = spec.training
    assert (t.batch_size, t.group_size, t.mini_batch_size) == (512, 5, 256)
    assert (t.lr, t.weight_decay, t.grad_clip, t.clip_ratio) == (5e-7, 0.01, 1.0, 0.2)
    assert (t.kl_coef, t.entropy_coef, t.temperature, t.top_p) == (0.0, 0.0, 1.0, 0.95)
    assert spec.agent.max_turns == 4 and spec.retrieval.topk == 3
    assert spec.retrieval.topk_retrieval == 20


@pytest.mark.parametrize(
    "data, key",
    [
        ({"trainig": {}}, "trainig"),
        ({"training": {"lr_rate": 1}}, "training.lr_rate"),
        ({"training": {"lr": "fast"}}, "training.lr"),
        ({"training": {"steps": True}}, "training.steps"),
        ({"backend": "megatron"}, "backend"),
        ({"agent": {"invalid_action": "retry"}}, "agent.invalid_action"),
        ({"training": {"dump_rollouts_at": [1, "x"]}}, "training.dump_rollouts_at[1]"),
        ({"model": "qwen"}, "model"),
    ],
)
def test_bad_values_name_the_key(data, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        run_spec_from_dict(data)


def test_batch_must_split_into_mini_batches():
    with pytest.raises(ConfigError, match="mini_batch_size"):
        run_spec_from_dict({"training": {"batch_size": 10, "mini_batch_size": 4}})


def test_ints_are_accepted_for_floats_and_optional_fields_take_none():
    spec = run_spec_from_dict({"training": {"lr": 1, "steps": None}, "retrieval": {"url": None}})
    assert spec.training.lr == 1.0 and isinstance(spec.training.lr, float)
    assert spec.training.steps is None


def test_yaml_round_trip(tmp_path):
    spec = run_spec_from_dict(
        {"name": "tiny/calibadv", "method": {"name": "calibadv", "prethink": True},
         "training": {"steps": 3, "batch_size": 4, "mini_batch_size": 2}}
    )
    path = tmp_path / "spec.yaml"
    path.write_text(dump_run_spec(spec))
    assert load_run_spec(path) == spec


def test_missing_file_and_file_errors_name_the_path(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_run_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1]\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: seed"):
        load_run_spec(bad)
