"""Methods as compositions of five parts (issue 27): every preset's resolved parts against a
table written by hand, the one `<part>: {name, knobs}` shape, parts that refuse each other at
config validation naming both, and `calibadv methods show`."""

from __future__ import annotations

import json

import pytest

from calibadv import cli
from calibadv.errors import ConfigError
from calibadv.methods.presets import base_chain, get_method, list_methods

VANILLA = ("vanilla", None)
GIGPO = {"gamma": 0.95, "omega": 1.0, "mode": "mean_std_norm", "similarity": 0.9,
         "invalid_penalty": 0.01, "eps": 1e-6}
MT_GRPO = {"lam": 1.0, "tool_weight": 0.2, "retrieval_weight": 0.5, "outcome": "official",
           "matching": "official", "eps": 1e-4}
GAE = {"gamma": 1.0, "lam": 1.0, "kl_coef": 0.001, "kl_penalty": "kl", "critic_lr": 5e-7,
       "cliprange_value": 0.5}

#: preset → (loss (loss_mode, knobs), filter, estimator, rollout, reward); None = the default
#: entry (no filter; ``calibadv`` estimator; ``chains``; ``task``). Written from the official
#: scripts (docs/baselines.md), not read back from config/methods.yaml.
TABLE = {
    **{name: (VANILLA, None, None, None, None) for name in (
        "search-r1", "prethink", "prethink-softpen", "calibadv", "uniform-neg",
        "calibadv-alpha0.5", "calibadv-alpha0.75", "calibadv-alpha1", "calibadv-alpha1.5",
        "calibadv-alpha2", "calibadv-judge")},
    "sapo-search": (("search_sapo", {"t": 0.99, "w": 0.1}), None, None, None, None),
    "llds": (("llds", {"lam": 0.2, "gate": "turn", "answer_lam": 0.0, "mask_answer": False}),
             None, None, None, None),
    "llds-calibadv": (("llds_calibadv", {"lam": 0.1}), None, None, None, None),
    "simpletir": (VANILLA, ("void_turns", {"void_mode": "drop", "void_start_step": 50}),
                  None, None, None),
    # official SimpleTIR masks from the first step (the old preset inherited 50)
    "simpletir-mask": (VANILLA, ("void_turns", {"void_mode": "mask", "void_start_step": 0}),
                       None, None, None),
    "gigpo": (VANILLA, None, ("gigpo", GIGPO), None, None),
    "mt-grpo": (VANILLA, None, ("mt_grpo", MT_GRPO), None, None),
    "tree-grpo": (VANILLA, None, ("tree_grpo", {"eps": 1e-6}), ("tree", {"m": 2, "n": 2, "l": 1, "k": 3}),
                  None),
    # step_scale 1.6: what StepSearch's released main_ppo.py applies (docs/baselines.md)
    "stepsearch": (VANILLA, None, ("gae", GAE), None, ("stepsearch", {"step_scale": 1.6})),
}


def test_the_table_covers_every_preset():
    assert sorted(TABLE) == sorted(list_methods())


@pytest.mark.parametrize("name", sorted(TABLE))
def test_each_preset_resolves_to_its_table_row(name):
    (loss_mode, loss_knobs), filt, estimator, rollout, reward = TABLE[name]
    method = get_method(name)
    assert method["loss"]["loss_mode"] == loss_mode
    assert method["loss"].get("knobs") == loss_knobs
    for key, want in (("filter", filt), ("estimator", estimator), ("rollout", rollout),
                      ("reward", reward)):
        got = method.get(key)
        assert (got["name"], got["knobs"]) == want if want else got is None, key


def test_loss_is_written_as_every_part_and_loss_mode_stays_an_alias():
    extra = {"new": {"base": "search-r1", "loss": {"name": "llds", "knobs": {"lam": 0.3}}},
             "old": {"base": "search-r1", "loss": {"loss_mode": "llds", "knobs": {"lam": 0.3}}}}
    assert get_method("new", extra)["loss"] == get_method("old", extra)["loss"]
    assert get_method("new", extra)["loss"]["knobs"]["lam"] == 0.3
    both = {"x": {"base": "search-r1", "loss": {"name": "llds", "loss_mode": "search_sapo"}}}
    with pytest.raises(ConfigError, match=r"methods\.x\.loss names two losses.*'llds'.*'search_sapo'"):
        get_method("x", both)


@pytest.mark.parametrize(
    ("preset", "message"),
    [
        # StepSearch's token rewards under a GRPO-style estimator would do nothing
        ({"base": "search-r1", "reward": {"name": "stepsearch"}, "estimator": {"name": "grpo"}},
         r"reward 'stepsearch' works only with estimator 'gae'.*estimator is 'grpo'"),
        ({"base": "stepsearch", "estimator": {"name": "calibadv"}},
         r"reward 'stepsearch' works only with estimator 'gae'.*estimator is 'calibadv'"),
        ({"base": "search-r1", "estimator": {"name": "tree_grpo"}},
         r"estimator 'tree_grpo' works only with rollout 'tree'.*rollout is 'chains'"),
        ({"base": "tree-grpo", "estimator": {"name": "grpo"}},
         r"rollout 'tree' works only with estimator 'tree_grpo'.*estimator is 'grpo'"),
        # a calibration switch under an estimator that never reads the calibration
        ({"base": "gigpo", "calibration": {"soft_penalty": "soft"}},
         r"calibration\.soft_penalty = 'soft' acts only through estimator 'calibadv'.*'gigpo'"),
        ({"base": "calibadv", "estimator": {"name": "mt_grpo"}},
         r"calibration\.soft_penalty = 'soft' acts only through estimator 'calibadv'.*'mt_grpo'"),
    ],
)
def test_parts_that_do_not_work_together_fail_naming_both(preset, message):
    with pytest.raises(ConfigError, match=message):
        get_method("bad", {"bad": preset})


def test_gigpo_and_tree_grpo_have_their_own_epsilon():
    """They no longer read calibration.eps: their epsilon is a knob, like MT-GRPO's."""
    extra = {"g": {"base": "gigpo", "calibration": {"eps": 0.5}}}
    assert get_method("g", extra)["estimator"]["knobs"]["eps"] == 1e-6
    assert get_method("tree-grpo")["estimator"]["knobs"] == {"eps": 1e-6}


def test_methods_show_prints_the_resolved_preset_and_its_chain(capsys):
    assert cli.main(["methods", "show", "simpletir-mask"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "# simpletir-mask <- simpletir <- search-r1"
    assert "void_start_step: 0" in out and "void_mode: mask" in out
    assert cli.main(["methods", "show", "stepsearch", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["base_chain"] == base_chain("stepsearch") == ["stepsearch", "search-r1"]
    assert shown["reward"] == {"name": "stepsearch", "knobs": {"step_scale": 1.6}}


def test_methods_show_unknown_name_is_a_config_error(capsys):
    assert cli.main(["methods", "show", "gipgo"]) == 2
    assert "gipgo" in capsys.readouterr().err
