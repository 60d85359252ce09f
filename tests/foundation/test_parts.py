"""A method is a preset naming registered parts; the registries check every knob."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from calibadv.errors import ConfigError
from calibadv.methods.presets import get_method
from calibadv.methods.catalog import names
from calibadv.methods.registry import FILTERS, LOSSES, VERL_BUILTIN_LOSSES, Knob, Registry

BASELINES = {
    # preset: (loss_mode, knobs, filter)
    "sapo-search": ("search_sapo", {"t": 0.99, "w": 0.1}, None),
    "llds": ("llds", {"lam": 0.2, "gate": "turn", "answer_lam": 0.0, "mask_answer": False}, None),
    "llds-calibadv": ("llds_calibadv", {"lam": 0.1}, None),
    "simpletir": ("vanilla", None, {"name": "void_turns",
                                    "knobs": {"void_mode": "drop", "void_start_step": 50}}),
    # official SimpleTIR masks void turns from the first step (simpletir_ray_trainer.py
    # ~L1146-1166 has no start step); CalibAdv's own variant waits for step 50
    "simpletir-mask": ("vanilla", None, {"name": "void_turns",
                                         "knobs": {"void_mode": "mask", "void_start_step": 0}}),
}


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baseline_presets_resolve_to_their_parts(name):
    loss_mode, knobs, filt = BASELINES[name]
    method = get_method(name)
    assert method["loss"]["loss_mode"] == loss_mode
    assert method["loss"].get("knobs") == knobs
    assert method.get("filter") == filt
    search_r1 = get_method("search-r1")  # everything else is Search-R1's GRPO
    assert method["calibration"] == search_r1["calibration"]
    assert method["prethink"] is False and method["require_search"] is False


def test_ladder_presets_resolve_as_before_the_registries():
    """No ``knobs``/``filter`` keys for methods without them: their run specs are unchanged."""
    method = get_method("calibadv")
    assert method["loss"] == {"loss_mode": "vanilla", "loss_agg_mode": "token-mean"}
    assert "filter" not in method


def test_our_loss_names_never_shadow_verls():
    assert not set(names(LOSSES)) & set(VERL_BUILTIN_LOSSES)
    assert "sapo" in VERL_BUILTIN_LOSSES and "search_sapo" in names(LOSSES)


@pytest.mark.parametrize(
    ("preset", "message"),
    [
        ({"loss": {"loss_mode": "search_sapo", "knobs": {"tt": 0.5}}}, r"methods\.m\.loss\.knobs\.tt"),
        ({"loss": {"loss_mode": "search_sapo", "knobs": {"w": "big"}}}, r"methods\.m\.loss\.knobs\.w must be a float"),
        ({"loss": {"loss_mode": "search_sapo", "knobs": {"w": -1}}}, r"methods\.m\.loss\.knobs\.w.*minimum"),
        ({"loss": {"loss_mode": "llds", "knobs": {"gate": "token"}}}, r"methods\.m\.loss\.knobs\.gate = 'token'"),
        ({"loss": {"loss_mode": "llds", "knobs": {"mask_answer": 1}}}, r"mask_answer must be true or false"),
        ({"loss": {"loss_mode": "search-sapo"}}, r"loss_mode = 'search-sapo'.*search_sapo"),
        ({"loss": {"loss_mode": "vanilla", "knobs": {"t": 1}}}, r"methods\.m\.loss\.knobs\.t.*allowed: none"),
        ({"loss": {"loss_mode": "llds", "knobs": [1]}}, r"methods\.m\.loss\.knobs must be a mapping"),
        ({"filter": {"name": "void"}}, r"filter.*'void'.*void_turns"),
        ({"filter": {"name": "void_turns", "knobs": {"start_step": 3}}}, r"methods\.m\.filter\.knobs\.start_step"),
        ({"filter": {"nmae": "void_turns"}}, r"methods\.m\.filter\.nmae"),
        ({"filter": "void_turns"}, r"methods\.m\.filter must be a mapping"),
    ],
)
def test_a_typo_in_a_part_is_an_error_naming_the_key(preset, message):
    with pytest.raises(ConfigError, match=message):
        get_method("m", extra_presets={"m": {"base": "search-r1", **preset}})


def test_knobs_inherit_key_by_key_and_reset_with_another_loss():
    extra = {
        "sapo-w1": {"base": "sapo-search", "loss": {"knobs": {"w": 1.0}}},
        "sapo-then-llds": {"base": "sapo-search", "loss": {"loss_mode": "llds"}},
        "simpletir-early": {"base": "simpletir", "filter": {"knobs": {"void_start_step": 3}}},
    }
    assert get_method("sapo-w1", extra)["loss"]["knobs"] == {"t": 0.99, "w": 1.0}
    assert get_method("sapo-then-llds", extra)["loss"]["knobs"]["lam"] == 0.2  # SAPO's t/w dropped
    assert get_method("simpletir-early", extra)["filter"]["knobs"] == {
        "void_mode": "drop", "void_start_step": 3}


def test_registry_rejects_a_second_function_under_one_name():
    reg = Registry("thing", "x.name")
    reg.register("a", {"k": Knob(int, 1, "a knob")})(lambda: None)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(test_registry_rejects_a_second_function_under_one_name)
    assert reg.resolve("a", {}, "x") == {"k": 1}
    assert reg.resolve("a", {"k": 2}, "x") == {"k": 2}


def test_every_part_documents_itself():
    for registry in (LOSSES, FILTERS):
        for name in names(registry):
            part = registry.get(name)
            assert part.description, name
            assert all(knob.doc for knob in part.knobs.values()), name


def test_checking_a_preset_imports_no_torch():
    """The workflow validates presets while Snakemake parses the DAG."""
    code = ("import sys; import calibadv.methods.catalog as p; p._load_parts(); "
            "p.loss_knobs('llds', {}, 'x'); p.part_knobs('filter', 'void_turns', {}, 'x'); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_no_code_branches_on_a_method_name():
    root = Path(__file__).resolve().parents[2] / "calibadv"
    pattern = re.compile(r"""(method|loss_mode|name)\s*==\s*["'](search-r1|calibadv|sapo|search_sapo|llds|simpletir|gigpo|mt_grpo|mt-grpo|tree_grpo|tree-grpo|tree|chains|grpo)""")
    hits = [f"{p}:{i}" for p in root.rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []
