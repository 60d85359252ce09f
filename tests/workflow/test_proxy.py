"""Silver-proxy statistics (calibadv proxy-stats) on hand-checked rollout dumps."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from calibadv.cli import main
from calibadv.errors import CalibAdvError
from calibadv.io import atomic_write_jsonl
from calibadv.proxy import c_label, proxy_stats, read_dumps, step_stats


def rollout(group, advantage, doc_ids, c, silver, gold):
    return {"group": group, "advantage": advantage, "doc_ids": doc_ids, "c": c,
            "silver_ids": silver, "supporting_ids": gold}  # fmt: skip


@pytest.fixture
def dump_rows():
    silver, gold = ["a", "b", "d"], ["a", "c"]
    return [
        rollout(0, 1.0, [["a", "b", "d"]], [1.0], silver, gold),
        rollout(0, -1.0, [["a", "b", "d"], ["x", "y", "z"]], [1.0, 0.0], silver, gold),
        rollout(0, -1.0, [["c", "x", "y"]], [0.0], silver, gold),
        rollout(1, 0.0, [["e", "f", "g"]], None, [], ["e"]),  # empty silver set: unscored
    ]


def test_step_statistics_match_a_hand_count(dump_rows):
    s = step_stats(dump_rows)
    assert (s["rollouts"], s["groups"], s["scored_steps"]) == (4, 2, 4)
    assert s["empty_silver_frac"] == 0.5 and s["silver_size_mean"] == 1.5
    assert s["c_mean"] == 0.5 and s["c_hist"] == {"0": 0.5, "1": 0.5}
    # negative rollouts' scored steps: two with c = 0, one with c = 1
    assert s["penalised_c1_frac"] == pytest.approx(1 / 3)
    assert s["softened_frac"] == pytest.approx(1 / 3)
    # silver {a,b,d} vs gold {a,c}; group 1 has gold {e} and no silver
    assert s["silver_precision"] == pytest.approx(1 / 3)
    assert s["silver_recall"] == pytest.approx(1 / 3)
    # steps that retrieved gold: R1, R2 step 1 (c = 1) and R3 (c = 0)
    assert s["c_pos_precision"] == 1.0 and s["c_pos_recall"] == pytest.approx(2 / 3)
    assert s["c1_precision"] == 1.0
    assert s["c_gold_mae"] == pytest.approx(5 / 12)


def test_without_gold_passages_no_precision_is_claimed(dump_rows):
    for row in dump_rows:
        row["supporting_ids"] = []
    s = step_stats(dump_rows)
    assert s["has_gold"] is False and "silver_precision" not in s


def test_command_reads_step_files_and_pools_groups_per_step(tmp_path, dump_rows):
    atomic_write_jsonl(tmp_path / "rollouts/step_000001.jsonl", dump_rows)
    atomic_write_jsonl(tmp_path / "rollouts/step_000003.jsonl", dump_rows[:2])
    (tmp_path / "rollouts/notes.txt").write_text("ignored")
    assert main(["proxy-stats", "--rollouts", str(tmp_path / "rollouts"), "--out", str(tmp_path / "p.json")]) == 0
    stats = json.loads((tmp_path / "p.json").read_text())
    assert stats["steps"] == [1, 3]
    # group 0 of step 1 and group 0 of step 3 are different groups when pooled
    assert stats["overall"]["groups"] == 3
    assert stats["per_step"]["3"]["empty_silver_frac"] == 0.0


def test_missing_dump_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["proxy-stats", "--rollouts", str(tmp_path / "nope"), "--out", str(tmp_path / "p.json")]) == 2
    assert "dump_rollouts_at" in capsys.readouterr().err
    with pytest.raises(CalibAdvError):
        proxy_stats({})
    assert read_dumps(tmp_path) == {}


@given(st.integers(1, 8).flatmap(lambda k: st.tuples(st.just(k), st.integers(0, k))))
def test_c_label_names_the_bucket_a_over_k(ka):
    k, a = ka
    label = c_label(a / k, k)
    expected = Fraction(a, k)
    assert Fraction(label) == expected


@given(
    st.lists(
        st.tuples(
            st.integers(0, 3),
            st.floats(-2, 2, allow_nan=False),
            st.lists(st.sampled_from([0.0, 1 / 3, 2 / 3, 1.0]), max_size=3),
            st.lists(st.sampled_from("abcdef"), max_size=3),
        ),
        max_size=12,
    )
)
def test_every_statistic_is_a_fraction(rows):
    dumped = [
        rollout(g, adv, [["a", "b", "c"]] * len(cs), cs, silver, ["a", "e"])
        for g, adv, cs, silver in rows
    ]
    s = step_stats(dumped)
    for key in ("empty_silver_frac", "c_mean", "penalised_c1_frac", "softened_frac",
                "silver_precision", "silver_recall", "c_pos_precision", "c_pos_recall", "c1_precision"):  # fmt: skip
        value = s.get(key)
        assert value is None or 0.0 <= value <= 1.0
    assert sum(s["c_hist"].values()) == pytest.approx(1.0 if s["scored_steps"] else 0.0)


# --------------------------------------------------------------------------- Figure 2 vs gold


def test_figure2_against_gold_by_hand():
    """Gold {a, c}. Negative rollouts' steps (penalised), with their c and gold hit:
    group 0 (silver): [a b d] c=1 hit, [x y z] c=0 miss, [c x y] c=0 hit, [a q r] c=1 hit;
    group 1 (no silver set, c null): [c e f] hit, [] (an invalid turn) miss.
    The positive rollout's step and the rollout without gold count nowhere."""
    silver, gold = ["a", "b", "d"], ["a", "c"]
    rows = [
        rollout(0, 1.0, [["a", "b", "d"]], [1.0], silver, gold),
        rollout(0, -1.0, [["a", "b", "d"], ["x", "y", "z"]], [1.0, 0.0], silver, gold),
        rollout(0, -0.5, [["c", "x", "y"], ["a", "q", "r"]], [0.0, 1.0], silver, gold),
        rollout(1, -1.0, [["c", "e", "f"], []], None, [], gold),
        rollout(2, -1.0, [["e", "f", "g"]], [1.0], ["e"], []),  # no gold: real-world row
    ]
    from calibadv.proxy import figure2_gold

    f = figure2_gold(rows, {"negpos_ratio_before": 1.5, "negpos_ratio_after": 0.9})
    assert f["penalised_steps"] == 6 and f["gold_frac_all"] == pytest.approx(4 / 6)
    assert f["scored_penalised_steps"] == 4 and f["gold_frac"] == pytest.approx(3 / 4)
    assert f["c1_frac"] == pytest.approx(2 / 4)
    assert f["c1_precision"] == 1.0  # both c = 1 steps hit gold
    assert f["c1_recall"] == pytest.approx(2 / 3)  # the c = 0 step [c x y] hit gold too
    assert (f["negpos_ratio_before"], f["negpos_ratio_after"]) == (1.5, 0.9)
    # the counts behind each share, for the report's pooled Wilson intervals
    assert f["counts"] == {"gold_frac_all": [4, 6], "gold_frac": [3, 4], "c1_frac": [2, 4],
                           "c1_precision": [2, 2], "c1_recall": [2, 3]}


def test_figure2_without_gold_or_penalised_steps_is_empty_not_zero():
    from calibadv.proxy import figure2_gold

    f = figure2_gold([rollout(0, 1.0, [["a"]], [1.0], ["a"], ["a"])])
    assert f["penalised_steps"] == 0 and f["gold_frac_all"] is None and f["c1_precision"] is None
    assert f["negpos_ratio_before"] is None


def test_proxy_stats_command_adds_figure2_per_dumped_step_with_the_ratios(tmp_path, dump_rows):
    atomic_write_jsonl(tmp_path / "rollouts" / "step_000004.jsonl", dump_rows)
    atomic_write_jsonl(tmp_path / "metrics.jsonl", [{"step": 3, "negpos_ratio_before": 9.0},
                                                    {"step": 4, "negpos_ratio_before": 2.0,
                                                     "negpos_ratio_after": 1.0}])  # fmt: skip
    out = tmp_path / "proxy.json"
    assert main(["proxy-stats", "--rollouts", str(tmp_path / "rollouts"),
                 "--metrics", str(tmp_path / "metrics.jsonl"), "--out", str(out)]) == 0  # fmt: skip
    fig = json.loads(out.read_text())["figure2"]["4"]
    assert fig["negpos_ratio_before"] == 2.0 and fig["negpos_ratio_after"] == 1.0
    assert fig["c1_frac"] == pytest.approx(1 / 3)  # = step_stats' penalised_c1_frac
    assert main(["proxy-stats", "--rollouts", str(tmp_path / "rollouts"),
                 "--metrics", str(tmp_path / "nope.jsonl"), "--out", str(out)]) == 2  # fmt: skip
