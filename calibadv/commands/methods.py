"""``calibadv methods``: the method presets as they resolve.

A preset inherits with ``base:``, so the knobs a run uses may be written several presets
away (that is how ``simpletir-mask`` once carried ``void_start_step: 50`` from ``simpletir``).
``methods show NAME`` prints the preset exactly as both backends read it, with the chain of
presets it inherits from; ``methods list`` names every preset.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "methods",
        help="list the method presets or show one as resolved",
        description=(
            "Method presets (config/methods.yaml, plus a workflow config's own `methods:`). "
            "`methods show NAME` prints the resolved preset (every part with every knob, "
            "defaults filled in, inheritance applied) and the `base:` chain it came from; "
            "`methods list` prints the names."
        ),
    )
    sub = p.add_subparsers(dest="action", required=True)
    show = sub.add_parser(
        "show",
        help="print one preset as resolved",
        description=(
            "Print method NAME as both backends read it: description, prethink, "
            "require_search, calibration, loss, and filter / estimator / rollout / reward when "
            "not the default entry, each with every knob. The first line names the presets it "
            "inherits from (nearest first)."
        ),
    )
    show.add_argument("name", help="method preset name (e.g. simpletir-mask)")
    _source_args(show)
    show.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    show.set_defaults(func=run_show)
    lst = sub.add_parser("list", help="print every preset name with its description")
    _source_args(lst)
    lst.set_defaults(func=run_list)


def _source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--methods-file", help="methods YAML (default: $CALIBADV_METHODS or config/methods.yaml)")
    p.add_argument("--config", help="a workflow config whose `methods:` adds or overrides presets")


def _extra(args: argparse.Namespace) -> dict:
    if not args.config:
        return {}
    from calibadv.workflow.validation import load_config

    return dict(load_config(args.config).get("methods") or {})


def run_show(args: argparse.Namespace) -> int:
    import json

    import yaml

    from calibadv.methods.presets import base_chain, get_method

    extra = _extra(args)
    method = get_method(args.name, extra, args.methods_file)
    chain = base_chain(args.name, extra, args.methods_file)
    if args.json:
        print(json.dumps({"base_chain": chain, **method}, indent=2))
    else:
        print(f"# {' <- '.join(chain)}")
        print(yaml.safe_dump(method, sort_keys=False, allow_unicode=True, width=100), end="")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from calibadv.methods.presets import get_method, list_methods

    extra = _extra(args)
    for name in list_methods(extra, args.methods_file):
        print(f"{name}\t{get_method(name, extra, args.methods_file)['description']}")
    return 0
