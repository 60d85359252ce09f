"""Method registry: presets of config/methods.yaml, inheritance, validation, locating the file."""

from __future__ import annotations

import pytest

from calibadv.methods.advantage import CalibConfig
from calibadv.errors import ConfigError
from calibadv.methods.presets import ENV_VAR, get_method, list_methods

LADDER = ["search-r1", "prethink", "prethink-softpen", "calibadv", "uniform-neg",
          "calibadv-alpha0.5", "calibadv-alpha0.75", "calibadv-alpha1", "calibadv-alpha1.5", "calibadv-alpha2",
          "calibadv-judge"]


def test_every_paper_method_is_a_preset():
    assert set(LADDER) <= set(list_methods())


@pytest.mark.parametrize(
    ("name", "prethink", "penalty", "rebalance", "alpha", "score"),
    [
        ("search-r1", False, "none", False, 1.0, "official"),
        ("prethink", True, "none", False, 1.0, "official"),
        ("prethink-softpen", True, "soft", False, 1.0, "official"),
        ("calibadv", True, "soft", True, 1.0, "official"),
        ("uniform-neg", True, "uniform", True, 1.0, "official"),
        ("calibadv-alpha0.5", False, "none", True, 0.5, "official"),
        ("calibadv-alpha0.75", False, "none", True, 0.75, "official"),
        ("calibadv-alpha1", False, "none", True, 1.0, "official"),  # not calibadv: rebalance alone
        ("calibadv-alpha1.5", False, "none", True, 1.5, "official"),
        ("calibadv-alpha2", False, "none", True, 2.0, "official"),
        ("calibadv-judge", True, "soft", True, 1.0, "judge"),
    ],
)
def test_ladder_matches_the_paper_table(name, prethink, penalty, rebalance, alpha, score):
    method = get_method(name)
    calib = method["calibration"]
    assert method["name"] == name and method["prethink"] is prethink
    assert (calib["soft_penalty"], calib["rebalance"], calib["alpha"], calib["score"]) == (
        penalty, rebalance, alpha, score
    )
    assert method["require_search"] is (name != "search-r1")
    assert CalibConfig.from_dict(calib).to_dict() == calib  # resolved = complete and valid
    assert method["loss"] == {"loss_mode": "vanilla", "loss_agg_mode": "token-mean"}
    assert method["description"]


def test_workflow_presets_inherit_and_override():
    extra = {"calibadv-tau05": {"base": "calibadv", "calibration": {"tau": 0.5}},
             "calibadv": {"base": "prethink-softpen", "description": "override", "calibration": {"alpha": 1.0}}}
    method = get_method("calibadv-tau05", extra_presets=extra)
    assert method["calibration"]["tau"] == 0.5
    assert method["calibration"]["soft_penalty"] == "soft"
    assert method["calibration"]["rebalance"] is False  # the overriding calibadv has no rebalance
    assert method["description"] == "override"  # inherited from its base
    assert "calibadv-tau05" in list_methods(extra_presets=extra)


@pytest.mark.parametrize(
    ("extra", "name", "message"),
    [
        ({"m": {"base": "calibadv", "calibration": {"alpah": 2}}}, "m", r"methods\.m\.calibration\.alpah"),
        ({"m": {"base": "calibadv", "prethnk": True}}, "m", r"methods\.m\.prethnk"),
        ({"m": {"base": "calibadv", "loss": {"clip": 1}}}, "m", r"methods\.m\.loss\.clip"),
        ({"m": {"base": "calibadv", "loss": {"loss_agg_mode": "mean"}}}, "m", r"methods\.m\.loss\.loss_agg_mode"),
        ({"m": {"base": "calibadv", "calibration": {"alpha": -1}}}, "m", r"methods\.m\.calibration\.alpha"),
        ({"m": {"base": "calibadv", "prethink": "yes"}}, "m", r"methods\.m\.prethink"),
        ({"m": {"base": "nope"}}, "m", r"methods\.m\.base.*nope"),
        ({"a": {"base": "b"}, "b": {"base": "a"}}, "a", "loops"),
        ({"m": ["not", "a", "mapping"]}, "m", r"methods\.m"),
        ({}, "does-not-exist", "unknown method 'does-not-exist'"),
    ],
)
def test_bad_presets_are_clear_errors(extra, name, message):
    with pytest.raises(ConfigError, match=message):
        get_method(name, extra_presets=extra)


def test_methods_file_from_path_and_env(tmp_path, monkeypatch):
    path = tmp_path / "methods.yaml"
    path.write_text("only:\n  description: one\n  calibration: {score: paper}\n")
    assert list_methods(path=path) == ["only"]
    monkeypatch.setenv(ENV_VAR, str(path))
    assert get_method("only")["calibration"]["score"] == "paper"
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match=ENV_VAR):
        list_methods()
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        list_methods(path=bad)
