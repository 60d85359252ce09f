"""The paper's tables as plain rows: for every entry, our value (mean over seeds with a 95%
t-interval), the paper's, and what can be compared.

Where our runs are in the paper's setting (the real world and a model the paper ran), a block
shows the absolute difference ours − paper *and* the effect sizes. Anywhere else (the synthetic
world, or a model the paper never trained) an absolute difference means nothing, so a block
shows effect sizes only: our difference between methods (each method − Search-R1 in Table 1,
each ablation row − the row above) beside the paper's same difference. Every row label says
whose number it is, on which model and world. A value nobody measured is ``None`` and renders as
"—". See docs/synthetic-study.md for the statistics (calibadv.report.stats).

Where each table is built: :mod:`~calibadv.report.blocks` (the shared cells, rows and blocks),
:mod:`~calibadv.report.scores` (our numbers), :mod:`~calibadv.report.f1_tables` (Tables 1–4),
:mod:`~calibadv.report.judge_datasets` (Tables 5 and 7), :mod:`~calibadv.report.figure2_gold`
(Table 8), :mod:`~calibadv.report.stress` (Table 9).
"""

from __future__ import annotations

from typing import Any

from calibadv.report.blocks import Table
from calibadv.report.collect import Results
from calibadv.report.f1_tables import table1_main, table2_ablation, table3_proxy, table4_uniform
from calibadv.report.figure2_gold import table8_figure2_gold
from calibadv.report.judge_datasets import table5_judge, table7_datasets
from calibadv.report.stress import table9_stress, table9_survival

TABLES = {
    "table1_main": table1_main,
    "table2_ablation": table2_ablation,
    "table3_proxy": table3_proxy,
    "table4_uniform": table4_uniform,
    "table5_judge": table5_judge,
    "table7_datasets": table7_datasets,
    "table8_figure2_gold": table8_figure2_gold,
    "table9_stress": table9_stress,
    "table9_survival": table9_survival,
}


def build_tables(config: dict[str, Any], results: Results, paper: dict[str, Any]) -> list[Table]:
    return [fn(config, results, paper) for fn in TABLES.values()]
