"""Human annotation sheets: a CSV to fill in and a readable HTML page to read from.

The annotator reads the HTML page (question, reference answers, the step's reasoning, query
and returned passages, under the same instructions the LLM judge gets) and writes a label in
the ``label`` column of the CSV: 1 (helpful) or 0 (not helpful); 0.5 is accepted for "partly".

A person's labels are the most expensive data of the pipeline, so they live in their own file
(``judge.labels_dir``/<model>/<method>/seed_<N>.csv, outside every output folder) that no job
writes: :func:`read_labels` merges it by ``case_id``. The blank sheet a job writes into its
output folder is never written over a sheet someone has started to fill
(:func:`write_sheet` writes ``sheet.new.csv`` beside it instead).
"""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Sequence
from pathlib import Path

from calibadv.errors import CalibAdvError
from calibadv.io import atomic_write_text
from calibadv.judge.prompt import INSTRUCTIONS, TEMPLATE_VERSION
from calibadv.judge.steps import Case

COLUMNS = ["case_id", "step", "question", "golden_answers", "think", "query", "passages",
           "label", "comment"]
LABELS = {"1": 1.0, "1.0": 1.0, "0.5": 0.5, ".5": 0.5, "0": 0.0, "0.0": 0.0}


def sheet_csv(cases: Sequence[Case]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for case in cases:
        writer.writerow({
            "case_id": case.case_id, "step": case.step, "question": case.question,
            "golden_answers": " | ".join(case.golden_answers), "think": case.think,
            "query": case.query, "passages": case.passages, "label": "", "comment": "",
        })
    return buf.getvalue()


def sheet_html(cases: Sequence[Case], title: str) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{e(title)}</title><style>",
        "body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.4}",
        ".case{border:1px solid #bbb;border-radius:6px;padding:1em;margin:1.2em 0}",
        ".id{font-family:monospace;background:#eef;padding:0 .3em}",
        "pre{white-space:pre-wrap;background:#f6f6f6;padding:.6em;border-radius:4px}",
        "</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f"<p>Instructions ({e(TEMPLATE_VERSION)}), the same the LLM judge gets:</p>",
        f"<pre>{e(INSTRUCTIONS)}</pre>",
        "<p>Write <b>1</b> (helpful) or <b>0</b> (not helpful) in the <code>label</code> column "
        "of the CSV sheet, on the row with the case id shown here (0.5 = partly helpful is "
        "accepted). Leave it empty to skip a case.</p>",
        f"<p>{len(cases)} cases.</p>",
    ]
    for n, case in enumerate(cases, 1):
        earlier = "".join(f"<li>{e(q or '(no valid query)')}</li>" for q in case.earlier_queries)
        parts += [
            "<div class='case'>",
            f"<p>#{n} <span class='id'>{e(case.case_id)}</span> — training step {case.step}, "
            f"intermediate step {case.turn + 1}</p>",
            f"<p><b>Question:</b> {e(case.question)}<br>",
            f"<b>Reference answer(s):</b> {e(' | '.join(case.golden_answers))}</p>",
            f"<p><b>Earlier queries:</b></p><ol>{earlier or '<li>(none)</li>'}</ol>",
            f"<p><b>Reasoning:</b></p><pre>{e(case.think or '(empty)')}</pre>",
            f"<p><b>Search query:</b> {e(case.query)}</p>",
            f"<p><b>Passages returned:</b></p><pre>{e(case.passages or '(none)')}</pre>",
            "</div>",
        ]
    parts.append("</body></html>")
    return "\n".join(parts)


def has_labels(path: str | Path) -> bool:
    """Whether the CSV at ``path`` exists and holds at least one non-empty label or comment."""
    path = Path(path)
    if not path.is_file():
        return False
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return any((row.get("label") or "").strip() or (row.get("comment") or "").strip()
                   for row in csv.DictReader(fh))


def write_sheet(cases: Sequence[Case], csv_path: str | Path, html_path: str | Path,
                title: str) -> Path:
    """Write the blank CSV sheet and its HTML page; returns where the CSV went.

    A CSV at ``csv_path`` that someone has started to fill is left byte for byte as it is:
    the new blank sheet goes to ``<stem>.new.csv`` beside it (why: the filled sheet may be
    hours of a person's work, and labels belong in ``judge.labels_dir`` anyway).
    """
    csv_path = Path(csv_path)
    if has_labels(csv_path):
        csv_path = csv_path.with_name(csv_path.stem + ".new.csv")
    atomic_write_text(csv_path, sheet_csv(cases))
    atomic_write_text(html_path, sheet_html(cases, title))
    return csv_path


def read_labels(path: str | Path, cases: Sequence[Case]) -> tuple[dict[str, float], int]:
    """``({case_id: label}, labels of cases not in this sample)`` from a labels file.

    Merged by ``case_id``: rows may come in any order, empty labels are left out, and labels
    of cases outside this sample (a larger earlier sample) are counted, not used. Raises
    :class:`CalibAdvError` naming the line for a label other than 1 / 0.5 / 0, and when no
    labelled row matches this sample (a file of another run or another judge.sample seed).
    """
    path = Path(path)
    if not path.is_file():
        raise CalibAdvError(f"human labels: {path} does not exist")
    known = {c.case_id for c in cases}
    out: dict[str, float] = {}
    unmatched: list[tuple[int, str]] = []
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = {"case_id", "label"} - set(reader.fieldnames or [])
        if missing:
            raise CalibAdvError(f"{path}: the sheet lacks the column(s) {sorted(missing)}")
        for line, row in enumerate(reader, 2):
            cid = (row.get("case_id") or "").strip()
            raw = (row.get("label") or "").strip()
            if not raw:
                continue
            if raw not in LABELS:
                raise CalibAdvError(
                    f"{path}, line {line} (case {cid}): label {raw!r} is not 1, 0.5 or 0"
                )
            if cid not in known:
                unmatched.append((line, cid))
                continue
            out[cid] = LABELS[raw]
    if unmatched and not out:
        line, cid = unmatched[0]
        raise CalibAdvError(
            f"{path}, line {line}: case {cid!r} is not in this run's sample, nor is any other "
            "labelled case (a labels file of another run, or of another judge.sample seed?)"
        )
    return out, len(unmatched)
