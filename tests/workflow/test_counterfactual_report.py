"""Table 10 and the counterfactual figure from a summary.json written by hand."""

from __future__ import annotations

import json

from calibadv.cli import main
from calibadv.evaluate.counterfactual import ALL, CLASSES


def _boot(mean, low, high, p=0.5):
    return {"mean": mean, "low": low, "high": high, "p": p, "n_groups": 3}


def summary() -> dict:
    rows = []
    for k in (1, 4):
        for split in ("held-out", "in-batch"):
            for method in ("search-r1", "calibadv"):
                for cls in (ALL, *CLASSES):
                    empty = cls == "no gold, right"
                    ref = method == "search-r1"
                    rows.append({
                        "updates": k, "split": split, "method": method, "cls": cls,
                        "n_steps": 0 if empty else 12, "n_groups": 0 if empty else 3,
                        "delta": None if empty else _boot(-0.0123, -0.02, -0.004),
                        "vs_ref": None if empty or ref else _boot(0.01, 0.002, 0.018, 0.01),
                        "p_holm": None if empty or ref else 0.04,
                        "survives": None if empty or ref else True,
                    })
    counts = {"rollouts": 8, "steps": 12, "questions": 3, "right_rollouts": 2, "gold_steps": 5}
    return {"config": {"questions": 64, "group_size": 8, "mini_batches": 2, "dev_questions": 64,
                       "dev_samples": 2, "updates": [1, 4], "seed": 0, "reference": "search-r1",
                       "sample_method": "calibadv", "reps": 200},
            "methods": ["search-r1", "calibadv"],
            "counts": {"held-out": counts, "in-batch": counts}, "rows": rows,
            "advantages": {}, "times": {}, "wall_s": 1.0}


def test_table_cells_intervals_holm_marks_and_structural_zeros(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary()))
    fig = tmp_path / "fig.png"
    assert main(["report", "counterfactual", "--summary", str(path), "--out-dir", str(tmp_path),
                 "--figure", str(fig), "--formats", "md", "--label", "search-r1=Search-R1"]) == 0
    text = (tmp_path / "table10_counterfactual.md").read_text()
    lines = [x for x in text.splitlines() if x.startswith("| 1 | held-out")]
    ours_all = next(x for x in lines if "| calibadv | all steps |" in x)
    assert "-0.012 [-0.020, -0.004]" in ours_all  # Δ and its bootstrap interval
    assert "+0.010 [+0.002, +0.018]" in ours_all and "0.040" in ours_all and "✓" in ours_all
    ref_all = next(x for x in lines if "| Search-R1 | all steps |" in x)
    assert ref_all.count("—") == 3  # no difference from itself, no p, no mark
    empty = next(x for x in lines if "| calibadv | no gold, right |" in x)
    assert empty.count("—") == 5  # a class with no step: every number "—"
    assert "mechanism check" in text and "Holm" in text
    assert fig.stat().st_size > 1000


def test_label_flag_error_names_the_value(tmp_path, capsys):
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary()))
    code = main(["report", "counterfactual", "--summary", str(path), "--out-dir", str(tmp_path),
                 "--figure", str(tmp_path / "f.png"), "--label", "nolabel"])
    assert code != 0 and "nolabel" in capsys.readouterr().err
