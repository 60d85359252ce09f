"""Tables and figures from small synthetic result files of two seeds: ours (mean ± 95% CI)
beside the paper's numbers, effect sizes beside the paper's, ours − paper only in its setting."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from wf_helpers import REPO, dump, load_yaml

from calibadv.workflow.layout import Layout
from calibadv.workflow.validation import load_config, validate_config
from calibadv.cli import main
from calibadv.io import atomic_write_jsonl
from calibadv.report.blocks import MISSING, NOT_IN_PAPER
from calibadv.report.collect import collect, load_paper
from calibadv.report.render import render, tex_escape
from calibadv.report.tables import build_tables

BENCHES = ["nq", "triviaqa", "popqa", "hotpotqa", "2wikimultihopqa", "musique", "bamboogle"]


@pytest.fixture(params=["synthetic", "real"])
def world(request):
    return request.param


@pytest.fixture
def config(tmp_path, tiny_config, world):
    """The tiny config with two seeds, writing under tmp_path, the model labelled as the paper's
    7B; on the synthetic world (effects only) or the real one (the paper's own setting)."""
    tiny_config["results_dir"] = str(tmp_path / "results")
    tiny_config["models"]["tiny"]["label"] = "Qwen2.5-7B"
    tiny_config["report"]["alpha_sweep"] = {"calibadv": 1.0}
    tiny_config["seeds"] = [0, 1]
    tiny_config["world"] = world
    return validate_config(tiny_config)


#: F1 per (method, seed): CalibAdv 60/70 and Search-R1 50/40 -> means 65 and 45, paired
#: differences 10 and 30 (mean 20).
SCORES = {("search-r1", 0): 0.5, ("search-r1", 1): 0.4, ("calibadv", 0): 0.6, ("calibadv", 1): 0.7}


@pytest.fixture
def results(config):
    """search-r1 (seed 0 collapsed at step 4) and calibadv evaluated everywhere with two seeds;
    prethink only on nq, seed 0; proxy statistics for calibadv; Parquet tables for Table 7."""
    layout = Layout.of(config)
    for (method, seed), f1 in SCORES.items():
        for bench in BENCHES:
            dump(f"{layout.eval_dir('tiny', method, seed, bench)}/metrics.json",
                 {"f1": f1, "em": f1 / 2, "high_ppl_ratio": 0.1 * (seed + 1), "benchmark": bench,
                  "n": 10})  # fmt: skip
        run = layout.run_dir("tiny", method, seed)
        collapsed = method == "search-r1" and seed == 0
        dump(f"{run}/done.json", {"steps": 6, "wall_s": 10, "backend": "local"})
        dump(f"{run}/selection.json", {"step": 3 if collapsed else 6,
                                       "collapse_step": 4 if collapsed else None, "reason": "x"})  # fmt: skip
        atomic_write_jsonl(f"{run}/metrics.jsonl", [
            {"step": s, "time_s": 2.0 * s, "entropy": 1.0 / s, "c_mean": 0.3, "f1_mean": 0.1 * s,
             "penalised_c1_frac": 0.4, "empty_silver_frac": 0.25, "softpen_frac": 0.2,
             "c_hist": {"0": 0.5, "1/3": 0.2, "2/3": 0.1, "1": 0.2}}
            for s in (1, 2, 3)
        ])  # fmt: skip
        atomic_write_jsonl(f"{run}/val.jsonl", [{"step": s, "f1": 0.1 * s} for s in (0, 3, 6)])
    dump(f"{layout.eval_dir('tiny', 'prethink', 0, 'nq')}/metrics.json", {"f1": 0.55, "high_ppl_ratio": 0.0})
    for seed, (first, later) in enumerate([(0.9, 0.8), (0.7, 0.6)]):
        dump(layout.proxy("tiny", "calibadv", seed), {
            "steps": [1, 3],
            "per_step": {"1": {"c_pos_precision": first, "has_gold": True,
                               "counts": {"c_pos_precision": [round(10 * first), 10]}},
                         "3": {"c_pos_precision": later, "has_gold": True,
                               "counts": {"c_pos_precision": [round(10 * later), 10]}}},
            "overall": {"c_pos_precision": (first + later) / 2, "has_gold": True,
                        "counts": {"c_pos_precision": [round(10 * (first + later)), 20]}},
            "figure2": {"1": {"gold_frac_all": 0.5 + 0.1 * seed, "c1_frac": 0.4,
                              "negpos_ratio_before": 1.0, "negpos_ratio_after": 0.8,
                              "counts": {"gold_frac_all": [5 + seed, 10], "c1_frac": [4, 10]}}},
        })  # fmt: skip
    Path(layout.test_data("nq")).parent.mkdir(parents=True)
    pd.DataFrame({"data_source": ["synthetic"] * 5 + ["hotpotqa"] * 2}).to_parquet(layout.train_data)
    for bench in BENCHES:
        pd.DataFrame({"data_source": [bench] * 3}).to_parquet(layout.test_data(bench))
    return collect(config)


@pytest.fixture
def tables(config, results):
    paper = load_paper(REPO / "config/paper_results.yaml")
    return {t.key: t for t in build_tables(config, results, paper)}


def block_of(table, first):
    """The rows of the block whose first row starts with ``first``: label -> row."""
    i = next(i for i, row in enumerate(table.rows) if row[: len(first)] == first)
    out = {}
    for j, row in enumerate(table.rows[i:]):
        if j and row[0]:
            break
        out[row[len(first)].split(":")[0].split(" (")[0]] = row
    return out


#: 95% t critical value with 1 degree of freedom (two seeds).
T1 = 12.706204736174698
#: two-sided 95% normal quantile (Wilson's interval)
Z = 1.959963984540054


def test_collect_reads_what_exists_and_skips_what_does_not(results):
    assert ("tiny", "calibadv", 1, "nq") in results.evals
    assert ("tiny", "prethink", 0, "triviaqa") not in results.evals
    assert results.seeds("tiny", "calibadv") == [0, 1]
    assert results.test_counts == {b: 3 for b in BENCHES}
    assert results.train_counts == {"synthetic": 5, "hotpotqa": 2}


def test_table1_ours_is_the_mean_over_seeds_with_a_t_interval(tables):
    rows = block_of(tables["table1_main"], ["Qwen2.5-7B", "CalibAdv"])
    ours = rows["ours"]
    assert "(n=2)" in ours[2]
    half = T1 * 5.0  # s = 7.07, s / √2 = 5
    assert ours[3] == f"65.00 ± {half:.2f}" and ours[10] == f"65.00 ± {half:.2f}"  # nq, average
    assert rows["paper"][3] == "53.20" and rows["paper"][10] == "56.70"
    # pooled over every question: the splits are equal-sized here, so it is the average
    assert ours[11] == f"65.00 ± {half:.2f}" and rows["paper"][11] == MISSING  # not in the paper
    assert ours[12] == "0/2 collapsed" and rows["paper"][12] == "none"


def test_table1_effects_are_paired_by_seed_beside_the_papers_effect(tables):
    rows = block_of(tables["table1_main"], ["Qwen2.5-7B", "CalibAdv"])
    half = T1 * 10.0  # differences 10, 30: s = 14.14, s / √2 = 10
    assert rows["effect ours"][10] == f"+20.00 ± {half:.2f}"
    assert rows["effect paper"][10] == "+7.55"  # 56.70 − 49.15


def test_an_absolute_difference_only_in_the_papers_own_setting(tables, world):
    rows = block_of(tables["table1_main"], ["Qwen2.5-7B", "CalibAdv"])
    if world == "real":
        assert rows["Δ ours − paper"][10] == "+8.30"  # 65.00 − 56.70
        assert "wiki-18" in rows["ours"][2]
    else:
        assert "Δ ours − paper" not in rows and "synthetic world" in rows["ours"][2]
        for t in tables.values():  # no absolute ours − paper anywhere across worlds
            assert not any(r[t.label_cols - 1].startswith("Δ") for r in t.rows), t.key


def test_a_method_the_paper_never_ran_says_so_in_the_paper_cells(config, results):
    # sapo-search: a row of ours (config/tiny-baselines.yaml and the study run it)
    config["default_methods"] = [*config["default_methods"], "sapo-search"]
    paper = load_paper(REPO / "config/paper_results.yaml")
    tables = {t.key: t for t in build_tables(config, results, paper)}
    rows = block_of(tables["table1_main"], ["Qwen2.5-7B", "SAPO (ours)"])
    assert set(rows["paper"][3:]) == {NOT_IN_PAPER} and set(rows["ours"][3:]) == {MISSING}


def test_collapse_over_seeds_counts_the_collapsed_runs_and_their_steps(tables):
    rows = block_of(tables["table1_main"], ["Qwen2.5-7B", "Search-R1"])
    assert rows["ours"][12] == "1/2 collapsed: 4 of 6" and rows["paper"][12] == "58/205"


def test_table1_opens_each_model_with_its_start_point_when_it_was_evaluated(config, results):
    paper = load_paper(REPO / "config/paper_results.yaml")
    table1 = {t.key: t for t in build_tables(config, results, paper)}["table1_main"]
    assert not any(r[1] == "start point (no RL)" for r in table1.rows)  # not evaluated: no row
    layout = Layout.of(config)
    for i, bench in enumerate(BENCHES):  # 30, 31, …, 36: average 33
        dump(f"{layout.start_eval_dir('tiny', bench)}/metrics.json", {"f1": 0.30 + i / 100, "em": 0.1})
    table1 = {t.key: t for t in build_tables(config, collect(config), paper)}["table1_main"]
    first = next(i for i, r in enumerate(table1.rows) if r[0] == "Qwen2.5-7B")
    assert table1.rows[first][1] == "start point (no RL)"  # before every method of the model
    rows = block_of(table1, ["Qwen2.5-7B", "start point (no RL)"])
    assert rows["ours"][3] == "30.00" and rows["ours"][9] == "36.00" and rows["ours"][10] == "33.00"
    assert "(n=" not in rows["ours"][2]  # one evaluation, not seeds
    assert set(rows["paper"][3:]) == {NOT_IN_PAPER} and "effect ours" not in rows
    assert any("start point (no RL)" in note and "did not raise" in note for note in table1.notes)
    # the methods' blocks are unchanged beside it
    assert block_of(table1, ["Qwen2.5-7B", "CalibAdv"])["ours"][10].startswith("65.00 ± ")


def test_paper_rows_without_a_run_are_the_papers_numbers_only(tables):
    row = next(r for r in tables["table1_main"].rows if r[:2] == ["Qwen2.5-3B", "CalibAdv"])
    assert row[2] == "paper: Qwen2.5-3B, wiki-18" and row[3] == "50.95"


def test_ablation_effects_are_each_row_minus_the_row_above(tables):
    t = tables["table2_ablation"]
    rows = block_of(t, ["+PreThink", "F1"])
    assert rows["ours"][3] == "55.00" and "n=1, no interval" in rows["ours"][2]
    assert rows["ours"][4] == MISSING and rows["ours"][10] == MISSING  # no average of 1/7
    assert rows["effect ours"][3] == "+5.00"  # seed 0 only: 55 − 50, one pair, no interval
    assert rows["effect paper"][3] == "+4.17"  # 49.87 − 45.70
    rows = block_of(t, ["Standard GRPO", "HighPPLRatio"])
    # a share: 1 of 10 and 2 of 10 High-PPL answers pooled over the seeds, 3 of 20, Wilson
    p, n = 0.15, 20
    centre, half = (p + Z * Z / (2 * n)) / (1 + Z * Z / n), \
        Z * (p * (1 - p) / n + Z * Z / (4 * n * n)) ** 0.5 / (1 + Z * Z / n)
    wil = f"15.00 [{100 * (centre - half):.2f}, {100 * (centre + half):.2f}]"
    assert rows["ours"][3] == wil == "15.00 [5.24, 36.04]" and rows["paper"][3] == "collapse"
    assert "Wilson" in rows["ours"][2] and "±" not in "".join(rows["ours"])  # never t on a share
    assert rows["ours"][10] == "15.00"  # the split average of shares is not a count: no interval
    # pooled over the 7 splits and 2 seeds: 21 of 140 = 15%, Wilson
    assert rows["ours"][11].startswith("15.00 [") and rows["ours"][11] != wil
    assert "effect ours" not in rows  # the first row has nothing above it


def test_table3_reports_time_per_step_and_hardware(tables):
    rows = block_of(tables["table3_proxy"], ["CalibAdv (silver doc)", "F1"])
    assert rows["ours"][-3] == "4.00 ± 0.00" and rows["paper"][-3] == "809.00"
    assert rows["ours"][-2] == "CPU x1" and rows["paper"][-2] == "8xH20"
    assert tables["table3_proxy"].columns[-1] == "silver fallback"
    assert rows["ours"][-1] == MISSING  # a silver run sends nothing to the judge


def test_table5_has_our_gold_precision_over_seeds_and_the_papers_raters(tables):
    t = tables["table5_judge"]
    assert t.columns[2:4] == ["step 1", "step 3"] and "step 200" in t.columns
    ours = t.rows[0]
    assert ours[0] == "Silver proxy vs gold (calibadv, n=2)" and ours[1] == "ours"
    # a precision is a share: 9/10 and 7/10 pooled = 16/20, Wilson; never "± t" over seeds
    p, n = 0.8, 20
    centre, half = (p + Z * Z / (2 * n)) / (1 + Z * Z / n), \
        Z * (p * (1 - p) / n + Z * Z / (4 * n * n)) ** 0.5 / (1 + Z * Z / n)
    assert ours[2] == f"0.80 [{centre - half:.2f}, {centre + half:.2f}]" == "0.80 [0.58, 0.92]"
    assert ours[3] == "0.70 [0.48, 0.85]" and ours[-1] == "0.75 [0.60, 0.86]"  # 14/20, 30/40
    human = next(r for r in t.rows if r[0] == "Human")
    assert human[-1] == "0.89" and human[2] == MISSING


def test_table7_differences_counts_only_in_the_papers_world(tables, world):
    rows = block_of(tables["table7_datasets"], ["HotpotQA"])
    assert rows["ours"][2:] == ["2", "3"] and rows["paper"][2:] == ["90447", "7405"]
    assert (rows["Δ ours − paper"][3] == "-7402") if world == "real" else ("Δ ours − paper" not in rows)
    rows = block_of(tables["table7_datasets"], ["NaturalQuestions"])
    assert rows["ours"][2] == MISSING and rows["paper"][2] == MISSING
    assert any("synthetic 5" in note for note in tables["table7_datasets"].notes)


def test_table8_puts_gold_beside_the_proxy_per_dumped_step(tables):
    t = tables["table8_figure2_gold"]
    assert t.columns[3:] == ["step 1", "mean over steps", "pooled % [Wilson 95%]"]
    gold = next(r for r in t.rows if r[1].startswith("penalised steps that retrieved gold, all"))
    assert gold[0] == "Qwen2.5-7B / calibadv" and "(n=2)" in gold[2]
    # a share, never mean ± t: step 1's 5 of 10 and 6 of 10 counted together, 11 of 20,
    # Wilson (0.55 + z²/40 ± z·√(0.55·0.45/20 + z²/1600)) / (1 + z²/20); one step: pooled alike
    assert gold[3] == "55.0 [34.2, 74.2]" and gold[4] == "55.0"
    assert gold[5] == "55.0 [34.2, 74.2]"
    c1 = next(r for r in t.rows if r[1].startswith("penalised steps the proxy calls c = 1"))
    assert c1[3] == "40.0 [21.9, 61.3]"  # 8 of 20, where mean ± t read "40.00 ± 0.00"
    ratio = next(r for r in t.rows if r[1].endswith("after rebalancing"))
    assert ratio[3] == "0.80 ± 0.00" and ratio[5] == MISSING  # a ratio, not a share
    assert any("43.97" in n for n in t.notes)


def test_table9_without_stress_runs_says_so(tables):
    assert tables["table9_stress"].rows == []
    assert tables["table9_stress"].notes == ["No stress runs configured (report.stress.model)."]


def test_table9_survival_by_hand(config, results):
    """search-r1: seed 0 collapsed at step 4, seed 1 censored at 6; calibadv: both censored at 6.
    KM of search-r1: S(4) = 1 − 1/2 → median 4. Log-rank at t = 4: calibadv at risk 2 of 4, no
    event of 1: O − E = −1/2, V = 2·2·1·3 / (4²·3) = 1/4, χ² = 1, p = P(χ²₁ > 1) = 0.317.
    Exact intervals: 1 of 2 → [1, 99]%, 0 of 2 → [0, 84]%."""
    config["report"]["stress"] = {"model": "tiny", "reference": "search-r1"}
    paper = load_paper(REPO / "config/paper_results.yaml")
    t = {x.key: x for x in build_tables(config, results, paper)}["table9_survival"]
    rows = {r[1]: r for r in t.rows}
    assert rows["Search-R1"][2:] == ["2", "1", "50 [1, 99]", "4", MISSING, MISSING]
    assert rows["CalibAdv"][2:] == ["2", "0", "0 [0, 84]", "not reached", "1.00", "0.317"]
    assert "censored" in t.notes[0]


def test_renders_markdown_booktabs_latex_and_html(tables):
    t = tables["table1_main"]
    md = render(t, "md")
    assert md.splitlines()[2].startswith("| Model | Method |") and "| +7.55 |" in md
    tex = render(t, "tex")
    assert "\\toprule" in tex and "\\bottomrule" in tex and "---" in tex and "$\\pm$" in tex
    html = render(t, "html")
    assert "<table>" in html and "<td class=\"num\">+7.55</td>" in html
    assert tex_escape("a_b & 50%") == "a\\_b \\& 50\\%"


def test_report_commands_write_every_table_and_figure(tmp_path, config, results):
    cfg = json.dumps(config)
    assert main(["report", "tables", "--config-json", cfg, "--out-dir", str(tmp_path / "t")]) == 0
    names = sorted(p.name for p in (tmp_path / "t").iterdir())
    assert len(names) == 27 and "table1_main.tex" in names
    assert main(["report", "figures", "--config-json", cfg, "--out-dir", str(tmp_path / "f")]) == 0
    pngs = sorted(p.name for p in (tmp_path / "f").iterdir())
    assert pngs == sorted(f"{n}.png" for n in
                          ["training_dynamics", "penalised_c1", "alpha_sweep", "c_distribution",
                           "empty_silver", "softpen_share", "figure2_gold", "collapse_km"])  # fmt: skip
    for png in (tmp_path / "f").iterdir():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _series(run, seed, signal, values):
    return [{"run": run, "method": run, "seed": seed, "step": i + 1, "signal": signal, "value": v}
            for i, v in enumerate(values)]  # fmt: skip


def test_the_moving_mean_averages_each_run_seed_and_signal_over_its_own_window():
    from calibadv.report.figures import smoothed

    frame = pd.DataFrame(_series("a", 0, "f1_mean", [0, 3, 0, 3, 0])
                         + _series("a", 1, "f1_mean", [6, 6, 6, 6, 6])
                         + _series("b", 0, "f1_mean", [1, 2, 3, 4, 5])
                         + _series("a", 0, "entropy", [9, 0, 9, 0, 9]))  # fmt: skip
    out = smoothed(frame, 3)

    def values(run, seed, signal):
        sel = out[(out.run == run) & (out.seed == seed) & (out.signal == signal)]
        return sel.sort_values("step")["value"].round(6).tolist()

    # centred window of 3, fewer points at the ends; no series borrows from another
    assert values("a", 0, "f1_mean") == [1.5, 1.0, 2.0, 1.0, 1.5]
    assert values("a", 1, "f1_mean") == [6.0] * 5
    assert values("b", 0, "f1_mean") == [1.5, 2.0, 3.0, 4.0, 4.5]
    assert values("a", 0, "entropy") == [4.5, 6.0, 3.0, 6.0, 4.5]
    assert list(out.index) == list(frame.index) and (out.step == frame.step).all()
    assert smoothed(frame, 1) is frame  # a window of one draws the per-step line alone


def test_training_figures_render_with_and_without_the_moving_mean(tmp_path, config, results):
    for smooth in (1, 7):
        config["report"]["smooth_steps"] = smooth
        out = tmp_path / str(smooth)
        assert main(["report", "figures", "--config-json", json.dumps(config), "--out-dir", str(out)]) == 0
        assert (out / "training_dynamics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_figures_render_when_nothing_has_run_yet(tmp_path, config):
    assert main(["report", "figures", "--config-json", json.dumps(config), "--out-dir", str(tmp_path)]) == 0
    assert len(list(tmp_path.glob("*.png"))) == 8


def test_shipped_paper_config_labels_match_the_papers_rows():
    paper = load_yaml(REPO / "config/paper_results.yaml")
    config = load_config(REPO / "config/config.yaml")
    methods = {r["method"] for r in paper["table1_main"]}
    models = {r["model"] for r in paper["table1_main"]}
    ours_only = {"LLDS (official code)", "SAPO (ours)"}  # rows of ours: "not in paper"
    assert set(config["report"]["method_labels"].values()) - methods == ours_only
    assert {m["label"] for m in config["models"].values()} == models
    variants = {r["variant"] for r in paper["table2_ablation"]}
    assert set(config["report"]["ablation"]["rows"].values()) == variants


def test_figure_titles_say_what_the_band_is(config, results):
    from calibadv.report.collect import Results
    from calibadv.report.figures import band_caption

    assert band_caption(results) == "band = 95% t-interval over seeds"  # two seeds everywhere
    one = Results({}, {k: v for k, v in results.runs.items() if k[2] == 0}, {}, {}, {})
    assert band_caption(one) == "one seed: no band"


def _predictions(config, method, seed, bench, f1s):
    """predictions.jsonl of one evaluation: question q<i> scored f1s[i] (format-valid, ppl 1)."""
    atomic_write_jsonl(f"{Layout.of(config).eval_dir('tiny', method, seed, bench)}/predictions.jsonl",
                       [{"id": f"q{i}", "f1": f, "em": 0.0, "format_ok": True, "ppl": 1.0}
                        for i, f in enumerate(f1s)])  # fmt: skip


def test_effects_from_predictions_are_a_two_level_bootstrap_with_holm(config, results, monkeypatch):
    """Every question of a seed scores the seed's F1 (CalibAdv 60/70, Search-R1 50/40), so the
    paired per-question differences are +10 at seed 0 and +30 at seed 1: the questions add no
    spread, and the mean over two seeds drawn with replacement is 10, 20 or 30 (1/4, 1/2, 1/4):
    [10, 30] around 20. No draw is <= 0: p = 2/2001; one effect in the family (PreThink has no
    average), so Holm keeps p and it survives (†). That is the bootstrap alone (the guard for
    few seeds lowered to 2 here); by default two seeds report the weaker t-interval over the
    seeds: 20 -+ 12.706 x 10 = [-107.06, +147.06], p = 0.295, no survivor."""
    from calibadv.evaluate import intervals

    for (method, seed), f1 in SCORES.items():
        for bench in BENCHES:
            _predictions(config, method, seed, bench, [f1] * 3)
    paper = load_paper(REPO / "config/paper_results.yaml")
    guarded = {t.key: t for t in build_tables(config, collect(config), paper)}
    eff = block_of(guarded["table1_main"], ["Qwen2.5-7B", "CalibAdv"])["effect ours"]
    assert eff[3] == eff[10] == eff[11] == "+20.00 [-107.06, +147.06]"
    assert "Avg. p = 0.295, Holm 0.295" in eff[2]
    monkeypatch.setattr(intervals, "MIN_BOOTSTRAP_SEEDS", 2)
    tables = {t.key: t for t in build_tables(config, collect(config), paper)}
    t1 = tables["table1_main"]
    rows = block_of(t1, ["Qwen2.5-7B", "CalibAdv"])
    eff = rows["effect ours"]
    assert eff[3] == "+20.00 [+10.00, +30.00]" and eff[10] == "+20.00 [+10.00, +30.00]†"
    assert eff[11] == "+20.00 [+10.00, +30.00]"  # pooled: not in the family, no mark
    assert "2-level bootstrap" in eff[2] and "Avg. p = 0.001, Holm 0.001" in eff[2]
    assert rows["ours"][3] == f"65.00 ± {T1 * 5.0:.2f}"  # levels at n = 2: t over seeds
    assert any("resample the seeds, then the questions" in n for n in t1.notes)
    assert any("Holm: the Avg. effects of this table's 1 bootstrap" in n for n in t1.notes)
    assert "95% CI" in t1.title and "bootstrap over seeds, then questions" in t1.title


def test_one_seed_shows_the_question_bootstrap_not_no_interval(config, results):
    """+PreThink ran seed 0 on nq alone: questions at 10 and 100 (F1 55). A resample of the two
    is 10, 55 or 100 (1/4, 1/2, 1/4): [10, 100]. Its effect against Standard GRPO (50 on
    every question) pairs q0 and q1: −40 and +50, draws −40, +5, +50: [−40, +50]."""
    for (method, seed), f1 in SCORES.items():
        for bench in BENCHES:
            _predictions(config, method, seed, bench, [f1] * 3)
    _predictions(config, "prethink", 0, "nq", [0.1, 1.0])
    paper = load_paper(REPO / "config/paper_results.yaml")
    t2 = {t.key: t for t in build_tables(config, collect(config), paper)}["table2_ablation"]
    rows = block_of(t2, ["+PreThink", "F1"])
    assert rows["ours"][3] == "55.00 [10.00, 100.00]" and "n=1; question bootstrap" in rows["ours"][2]
    assert "no interval" not in rows["ours"][2]
    assert rows["effect ours"][3] == "+5.00 [-40.00, +50.00]"
    assert rows["ours"][10] == MISSING and rows["ours"][11] == MISSING  # one split: no average


def test_pooled_f1_weighs_each_split_by_its_questions():
    from calibadv.report.scores import bench_scores

    # splits of 1, 2, …, 7 questions scoring 10, 20, …, 70: the split average is 40, the pooled
    # mean (1·10 + 2·20 + … + 7·70) / 28 = 1400 / 28 = 50
    metrics = {b: {"f1": (i + 1) / 10, "n": i + 1} for i, b in enumerate(BENCHES)}
    out = bench_scores(metrics)
    assert out["average"] == pytest.approx(40.0) and out["pooled"] == pytest.approx(50.0)
    # sizes unknown: no pooled value (never a silent unweighted one)
    assert "pooled" not in bench_scores({b: {"f1": 0.5} for b in BENCHES})


def test_table9_last_step_shares_are_wilson_not_t(config, results):
    from calibadv.report.stress import _last_share

    res = results
    for seed, (rate, n) in enumerate([(0.75, 8), (1.0, 8)]):  # 6 + 8 of 16 format-valid
        res.runs[("tiny", "calibadv", seed)].metrics.append(
            {"step": 9, "format_rate": rate, "rollouts": n})
    cell = _last_share(res, "tiny", "calibadv", "format_rate")
    from calibadv.shares import wilson

    low, high = wilson(14, 16)
    assert (cell.mean, cell.low, cell.high) == pytest.approx((87.5, 100 * low, 100 * high))
    assert cell.high <= 100.0 and cell.how == "wilson"
    # without counts (the verl backend): the mean alone, no interval; nothing logged: None
    assert _last_share(res, "tiny", "search-r1", "format_rate") is None
    res.runs[("tiny", "search-r1", 0)].metrics.append({"step": 9, "format_rate": 0.5})
    alone = _last_share(res, "tiny", "search-r1", "format_rate")
    assert (alone.mean, alone.low, alone.high, alone.n) == (50.0, None, None, 1)


def test_the_start_point_row_has_the_question_bootstrap_of_its_predictions(config, results):
    """The start point is one evaluation: like any n = 1 row, its interval resamples its test
    questions. nq: questions at 10 and 50 (F1 30); a resample of the two is 10, 30 or 50 (1/4,
    1/2, 1/4): [10, 50]. Split i > 0: three questions at 30 + i, no spread. Avg. = (nq + 201)/7:
    33, in [211/7, 251/7] = [30.14, 35.86]; Pooled weighs nq's 2 questions against 3 a split:
    (2·30 + 3·201)/20 = 33.15, in [(2·10 + 603)/20, (2·50 + 603)/20] = [31.15, 35.15]."""
    layout = Layout.of(config)
    for i, bench in enumerate(BENCHES):
        where = layout.start_eval_dir("tiny", bench)
        dump(f"{where}/metrics.json", {"f1": 0.30 + i / 100, "em": 0.1})
        f1s = [0.1, 0.5] if bench == "nq" else [0.30 + i / 100] * 3
        atomic_write_jsonl(f"{where}/predictions.jsonl",
                           [{"id": f"q{j}", "f1": f, "format_ok": True, "ppl": 1.0} for j, f in enumerate(f1s)])
    collected = collect(config)
    assert len(collected.start_questions[("tiny", "nq")]) == 2
    paper = load_paper(REPO / "config/paper_results.yaml")
    table1 = {t.key: t for t in build_tables(config, collected, paper)}["table1_main"]
    rows = block_of(table1, ["Qwen2.5-7B", "start point (no RL)"])
    assert "(n=1; question bootstrap)" in rows["ours"][2]
    assert rows["ours"][3] == "30.00 [10.00, 50.00]" and rows["ours"][4] == "31.00 [31.00, 31.00]"
    assert rows["ours"][10] == "33.00 [30.14, 35.86]" and rows["ours"][11] == "33.15 [31.15, 35.15]"
    assert "effect ours" not in rows  # Table 1's effects are against Search-R1, not the start point
    assert any("its interval is the question bootstrap" in note for note in table1.notes)


def _stress_val(results, last):
    """Each run's validation F1: 10 at step 0, then ``last[(method, seed)]`` at step 6 (None:
    the run validated nothing)."""
    for (method, seed), f1 in last.items():
        results.runs[("tiny", method, seed)].val = [] if f1 is None else [
            {"step": 0, "f1": 0.1}, {"step": 6, "f1": f1}]


def test_table9_effects_are_bootstraps_with_holm_over_the_last_validation_f1(
    config, results, monkeypatch
):
    """Val F1 last: CalibAdv 70/90 and prethink 50/70 against Search-R1 60/60 — differences
    10/30 (the seed bootstrap: [10, 30], p = 2/2001) and −10/+10 (draws −10, 0, +10: p capped
    at 1). Holm over the family of two: 2·2/2001 = 0.002 (survives, †) and max(0.002, 1) = 1.
    Val F1 peak is the same number here, but outside the family: no mark. Test F1 from the
    predictions (every question at its seed's F1): the 2-level bootstrap, +20 [10, 30];
    test High-PPL 0 on every question of both: a structural zero. (The bootstrap alone: the
    guard for few seeds is lowered to 2 here; test_effects_from_predictions_... checks it.)"""
    from calibadv.evaluate import intervals

    monkeypatch.setattr(intervals, "MIN_BOOTSTRAP_SEEDS", 2)
    for (method, seed), f1 in SCORES.items():
        for bench in BENCHES:
            _predictions(config, method, seed, bench, [f1] * 3)
    config["report"]["stress"] = {"model": "tiny", "reference": "search-r1"}
    res = collect(config)
    _stress_val(res, {("search-r1", 0): 0.6, ("search-r1", 1): 0.6, ("calibadv", 0): 0.7,
                      ("calibadv", 1): 0.9, ("prethink", 0): 0.5, ("prethink", 1): 0.7})
    paper = load_paper(REPO / "config/paper_results.yaml")
    t9 = {t.key: t for t in build_tables(config, res, paper)}["table9_stress"]
    ours = block_of(t9, ["Qwen2.5-7B", "CalibAdv"])["effect ours"]
    assert ours[5] == "+20.00 [+10.00, +30.00]†" and ours[4] == "+20.00 [+10.00, +30.00]"
    assert ours[7] == "+20.00 [+10.00, +30.00]" and ours[8] == MISSING
    assert "2-level bootstrap + seed bootstrap" in ours[2]
    assert "Val F1 last p = 0.001, Holm 0.002" in ours[2]
    other = block_of(t9, ["Qwen2.5-7B", "prethink"])["effect ours"]
    assert other[5] == "+0.00 [-10.00, +10.00]" and "Val F1 last p = 1.000, Holm 1.000" in other[2]
    assert "effect ours" not in block_of(t9, ["Qwen2.5-7B", "Search-R1"])  # the reference
    assert any("Holm: the Val F1 last effects of this table's 2 effect rows" in n for n in t9.notes)
    assert any("the seed bootstrap, which resamples the per-seed differences" in n for n in t9.notes)


def test_table9_effects_without_predictions_are_seed_bootstraps(config, results, monkeypatch):
    """No predictions: the test F1 average too is one number per run, so its effect is the
    seed bootstrap of the per-seed differences (10 and 30: [10, 30]); a lone seed gives the
    difference alone, with no interval and outside the family. (Guard for few seeds lowered
    to 2: the bootstrap alone.)"""
    from calibadv.evaluate import intervals

    monkeypatch.setattr(intervals, "MIN_BOOTSTRAP_SEEDS", 2)
    config["report"]["stress"] = {"model": "tiny", "reference": "search-r1"}
    _stress_val(results, {("search-r1", 0): 0.6, ("calibadv", 0): 0.7, ("search-r1", 1): None,
                          ("calibadv", 1): None})
    paper = load_paper(REPO / "config/paper_results.yaml")
    t9 = {t.key: t for t in build_tables(config, results, paper)}["table9_stress"]
    eff = block_of(t9, ["Qwen2.5-7B", "CalibAdv"])["effect ours"]
    assert eff[7] == "+20.00 [+10.00, +30.00]" and "n=1–2; seed bootstrap" in eff[2]
    assert eff[5] == "+10.00" and "Holm" not in eff[2] and "†" not in "".join(eff)
    assert not any(n.startswith("Holm") for n in t9.notes)
