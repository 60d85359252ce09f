"""Download a FlashRAG benchmark split (``RUC-NLPIR/FlashRAG_datasets``) as QA JSONL.

The paper evaluates on each benchmark's test split where FlashRAG has one and on dev otherwise
(HotpotQA, 2Wiki and MuSiQue publish no test answers). Files are fetched with
:class:`calibadv.downloads.HubDataset` (resumable, verified, logged; the hub cache under
``HF_HUB_OFFLINE``); a local folder laid out like the dataset repo can stand in for it
(``--repo``).
"""

from __future__ import annotations

import os
from pathlib import Path

from calibadv.errors import CalibAdvError
from calibadv.io import atomic_write_jsonl, iter_jsonl

FLASHRAG_REPO = "RUC-NLPIR/FlashRAG_datasets"


class _LocalFolder:
    """A folder laid out like the dataset repo (``--repo DIR``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def has(self, filename: str) -> bool:
        return (self.root / filename).is_file()

    def fetch(self, filenames: list[str]) -> list[Path]:
        return [self.root / f for f in filenames]

    def cleanup(self) -> None:
        pass


def download_dataset(dataset: str, out: str | os.PathLike, split: str = "test",
                     repo: str = FLASHRAG_REPO, verify: str = "hash") -> tuple[str, int]:
    """Write ``dataset``'s ``split`` (falling back to dev) to ``out``; returns (split, rows).

    From the hub the file is fetched resumably and checked against the hub's size and hash
    (:class:`calibadv.downloads.HubDataset`); with ``HF_HUB_OFFLINE`` it is read from the hub
    cache."""
    from calibadv.downloads import HubDataset

    if not dataset or "/" in dataset:
        raise CalibAdvError(f"--dataset {dataset!r} is not a FlashRAG dataset name "
                            "(e.g. nq, hotpotqa, 2wikimultihopqa)")
    out = Path(out)
    local = Path(repo).expanduser()
    source = (_LocalFolder(local) if local.is_dir()
              else HubDataset(repo, out.with_name(f".{out.name}.download"), verify=verify))
    tried = [split] + (["dev"] if split != "dev" else [])
    for name in tried:
        if not source.has(f"{dataset}/{name}.jsonl"):
            continue
        (path,) = source.fetch([f"{dataset}/{name}.jsonl"])
        rows = []
        for n, row in enumerate(iter_jsonl(path)):
            if not isinstance(row.get("question"), str) or "golden_answers" not in row:
                raise CalibAdvError(f"{dataset}/{name}.jsonl row {n} lacks 'question' or "
                                    "'golden_answers': not FlashRAG QA format")
            answers = row["golden_answers"]
            rows.append({"id": str(row.get("id", f"{name}_{n}")), "question": row["question"],
                         "golden_answers": [str(a) for a in (answers if isinstance(answers, list)
                                                             else [answers])],
                         "metadata": row.get("metadata") or {}})
        atomic_write_jsonl(out, rows)
        source.cleanup()
        return name, len(rows)
    raise CalibAdvError(f"{repo} has no {' or '.join(f'{dataset}/{t}.jsonl' for t in tried)}; "
                        "check the dataset name (see the FlashRAG_datasets repo for the list)")
