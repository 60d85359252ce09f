"""Tables and figures of the paper, from the workflow's results, beside the paper's numbers.

``collect`` reads result files (missing ones stay missing), ``tables`` builds each table as
plain rows (ours / paper / difference) from ``blocks`` (the shared cells and blocks of rows),
``scores`` (our numbers), ``f1_tables`` (Tables 1–4), ``judge_datasets`` (Tables 5 and 7),
``figure2_gold`` (Table 8) and ``stress`` (Table 9); ``render`` writes Markdown, LaTeX
(booktabs) and HTML through jinja2 templates, ``figures`` draws the training-dynamics figures
with seaborn.
"""
