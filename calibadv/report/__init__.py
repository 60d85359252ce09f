"""Tables and figures of the paper, from the workflow's results, beside the paper's numbers.

``collect`` reads result files (missing ones stay missing), ``tables`` builds each table as
plain rows (ours / paper / difference), ``render`` writes Markdown, LaTeX (booktabs) and HTML
through jinja2 templates, ``figures`` draws the training-dynamics figures with seaborn.
"""
