"""Render :class:`~calibadv.report.blocks.Table` objects as Markdown, LaTeX (booktabs) or
HTML through the jinja2 templates next to this module."""

from __future__ import annotations

from pathlib import Path

import jinja2

from calibadv.io import atomic_write_text
from calibadv.report.blocks import Table

FORMATS = {"md": "table.md.j2", "tex": "table.tex.j2", "html": "table.html.j2"}

_TEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "—": "---",
    "Δ": r"$\Delta$",
    "×": r"$\times$",
    "≥": r"$\geq$",
    "−": "-",
    "±": r"$\pm$",
    "–": "--",
    "†": r"\textdagger{}",
}


def tex_escape(text: object) -> str:
    return "".join(_TEX.get(ch, ch) for ch in str(text))


def md_escape(text: object) -> str:
    return str(text).replace("|", r"\|")


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=jinja2.select_autoescape(["html.j2"]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters["tex"] = tex_escape
    env.filters["md"] = md_escape
    return env


def render(table: Table, fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown table format {fmt!r} (formats: {', '.join(FORMATS)})")
    template = _env().get_template(FORMATS[fmt])
    return template.render(table=table, label_cols=table.label_cols)


def write_tables(tables: list[Table], out_dir: str | Path, formats: list[str]) -> list[Path]:
    written = []
    for table in tables:
        for fmt in formats:
            written.append(atomic_write_text(Path(out_dir) / f"{table.key}.{fmt}", render(table, fmt)))
    return written
