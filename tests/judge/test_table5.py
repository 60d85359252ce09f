"""Table 5 with our proxy validation: the judge (labelled when a stand-in), humans where
given, gold truth on the synthetic world — beside the paper's raters, never differenced."""

from __future__ import annotations

from calibadv.report.collect import Results, load_paper
from calibadv.report.judge_datasets import table5_judge
from calibadv.report.render import render
from calibadv.workflow.layout import REPO_ROOT
from calibadv.workflow.validation import load_config

TINY = load_config(REPO_ROOT / "config" / "tiny.yaml")
PAPER_NUMBERS = load_paper(REPO_ROOT / "config" / "paper_results.yaml")


def block(llm, human=None, gold=True, **extra):
    out = {"n": 4, "llm_judged": 4, "llm_unparsable": 0, "llm_failed": 0,
           "llm_verdicts": {"1": 4}, "llm_helpful": llm, "human_labelled": 4 if human is not None else 0,
           "human_helpful": human, "has_gold": gold}
    if gold:
        out.update(gold_hit=0.75, gold_advanced=0.5, proxy_agree_advanced=0.5,
                   llm_agree_hit=0.75, llm_agree_advanced=0.5)
    return {**out, **extra}


def summary(stand_in=True, human=None, gold=True):
    return {
        "steps": [1, 6], "helpful_min": 1.0, "judge_label": "SmolLM2-135M-Instruct",
        "stand_in": stand_in, "judge_model": "results/…/smollm2", "template_version": "v-test",
        "per_checkpoint": 4, "seed": 0, "min_c": 1.0,
        "per_step": {"1": block(1.0, human, gold), "6": block(0.5, human, gold)},
        "overall": block(0.75, human, gold),
    }


def results(judge):
    return Results(evals={}, runs={}, proxy={}, train_counts={}, test_counts={}, judge=judge)


def test_stand_in_judge_and_gold_rows_sit_beside_the_papers_raters():
    s = summary()
    s["overall"].update(llm_unparsable=1, llm_unparsable_frac=0.25)
    s["per_step"]["6"].update(llm_unparsable=1, llm_unparsable_frac=0.5)
    t = table5_judge(TINY, results({("tiny", "calibadv", 0): s}), PAPER_NUMBERS)
    names = [r[0] for r in t.rows]
    unparsable = t.rows[names.index("LLM: share of answers without a verdict (unparsable)")]
    assert unparsable[-1] == "0.25" and unparsable[t.columns.index("step 6")] == "0.50"
    names.remove("LLM: share of answers without a verdict (unparsable)")
    assert names[:5] == [
        "LLM: SmolLM2-135M-Instruct — stand-in, not a competent judge",
        "Gold: retrieved a gold passage",
        "Gold: advanced a hop",
        "LLM agrees with gold (advanced a hop)",
        "Silver proxy (c = 1) agrees with gold",
    ]
    assert names[-2:] == ["LLM (DeepSeek-V3.2)", "Human"]
    llm = t.rows[0]
    cols = t.columns
    assert llm[1] == "ours" and llm[cols.index("step 1")] == "1.00" and llm[cols.index("step 6")] == "0.50"
    assert llm[-1] == "0.75" and llm[cols.index("step 10")] == "—"
    assert all(r[1] in ("ours", "paper") for r in t.rows)  # no difference rows
    assert any("4 sampled steps" in n and "4 verdicts (1: 4)" in n for n in t.notes)
    assert "stand-in" in render(t, "md")


def test_human_labels_add_a_row_and_a_real_world_run_has_no_gold_rows():
    s = summary(stand_in=False, human=0.5, gold=False)
    t = table5_judge(TINY, results({("tiny", "calibadv", 0): s}), PAPER_NUMBERS)
    names = [r[0] for r in t.rows]
    assert names[:2] == ["LLM: SmolLM2-135M-Instruct", "Human (ours)"]
    assert not any(n.startswith("Gold") for n in names)


def test_shares_carry_wilson_intervals_and_kappa_sits_beside_the_constant_baseline():
    s = summary()
    s["overall"].update(counts={"llm_helpful": [3, 4], "gold_advanced": [2, 4],
                                "llm_agree_advanced": [2, 4], "const_agree_advanced": [2, 4]},
                        const_agree_advanced=0.5, const_verdict="helpful", llm_kappa_advanced=0.0)
    t = table5_judge(TINY, results({("tiny", "calibadv", 0): s}), PAPER_NUMBERS)
    rows = {r[0]: r for r in t.rows}
    llm = rows["LLM: SmolLM2-135M-Instruct — stand-in, not a competent judge"]
    assert llm[-1] == "0.75 [0.30, 0.95]"  # Wilson 95 % of 3 / 4
    assert llm[t.columns.index("step 1")] == "1.00"  # no counts in that block: the bare share
    assert rows["Baseline: one constant verdict agrees with gold"][-1] == "0.50 [0.15, 0.85]"
    assert rows["LLM vs gold (advanced a hop): Cohen's κ"][-1] == "0.00"
    assert any("Wilson interval" in n and "'helpful' every time" in n for n in t.notes)
