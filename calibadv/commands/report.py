"""``calibadv report tables|figures``: the paper's tables and figures from workflow results."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report",
        help="render the paper's tables and figures from results",
        description=(
            "Read the results a workflow config produces (eval metrics.json, run metrics.jsonl, "
            "val.jsonl, selection.json, proxy statistics, datasets) and write the tables "
            "(ours beside the paper's numbers, with the difference; '—' where missing) or the "
            "figures (PNG). Partial results are fine: what is missing shows as missing."
        ),
    )
    sub = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    for name, help_text in (
        ("tables", "Tables 1-5 and 7 as Markdown, LaTeX (booktabs) and HTML"),
        ("figures", "training-dynamics figures (PNG)"),
    ):
        q = sub.add_parser(name, help=help_text, description=help_text)
        src = q.add_mutually_exclusive_group(required=True)
        src.add_argument("--config", help="workflow config YAML (e.g. config/tiny.yaml)")
        src.add_argument("--config-json", help="the validated workflow config as JSON (from the workflow)")
        q.add_argument("--out-dir", required=True, help="folder to write into")
        if name == "tables":
            q.add_argument("--paper", help="paper numbers YAML (default: config report.paper_results)")
            q.add_argument(
                "--formats", nargs="+", choices=["md", "tex", "html"],
                help="formats to write (default: config report.formats)",
            )  # fmt: skip
        q.set_defaults(func=run)
    _register_counterfactual(sub)


def _register_counterfactual(sub: argparse._SubParsersAction) -> None:
    """``report counterfactual``: Table 10 and its figure from one summary.json (no config)."""
    text = "Table 10 and the counterfactual-update figure from calibadv counterfactual's summary"
    q = sub.add_parser("counterfactual", help=text, description=text)
    q.add_argument("--summary", required=True, help="summary.json of calibadv counterfactual")
    q.add_argument("--out-dir", required=True, help="folder of the table files")
    q.add_argument("--figure", required=True, help="the figure's PNG path")
    q.add_argument("--formats", nargs="+", choices=["md", "tex", "html"],
                   default=["md", "tex", "html"])
    q.add_argument("--label", action="append", default=[], metavar="METHOD=LABEL",
                   help="a method's display name (repeatable)")
    q.set_defaults(func=_run_counterfactual)


def _run_counterfactual(args: argparse.Namespace) -> int:
    from calibadv.errors import ConfigError
    from calibadv.report.counterfactual import write_counterfactual

    labels = {}
    for item in args.label:
        name, sep, label = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--label {item!r}: expected METHOD=LABEL, e.g. search-r1=Search-R1")
        labels[name] = label
    written = write_counterfactual(args.summary, args.out_dir, args.figure, args.formats, labels)
    print(f"wrote {len(written)} files")
    return 0


def _config(args: argparse.Namespace) -> dict:
    import json

    from calibadv.errors import ConfigError
    from calibadv.workflow.validation import load_config, validate_config

    if args.config:
        return load_config(args.config)
    try:
        return validate_config(json.loads(args.config_json))
    except json.JSONDecodeError as err:
        raise ConfigError(f"--config-json: not valid JSON ({err.msg})") from None


def run(args: argparse.Namespace) -> int:
    from calibadv.report.collect import collect, load_paper

    config = _config(args)
    results = collect(config)
    if args.what == "tables":
        from calibadv.report.render import write_tables
        from calibadv.report.tables import build_tables
        from calibadv.workflow.layout import repo_path

        paper = load_paper(args.paper or repo_path(config["report"]["paper_results"]))
        written = write_tables(
            build_tables(config, results, paper), args.out_dir, args.formats or config["report"]["formats"]
        )
    else:
        from calibadv.report.figures import write_figures

        written = write_figures(results, config, args.out_dir)
    print(f"wrote {len(written)} files to {args.out_dir}")
    return 0
