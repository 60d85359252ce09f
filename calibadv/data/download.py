"""Download a FlashRAG benchmark split (``RUC-NLPIR/FlashRAG_datasets``) as QA JSONL.

The paper evaluates on each benchmark's test split where FlashRAG has one and on dev otherwise
(HotpotQA, 2Wiki and MuSiQue publish no test answers). Files are fetched with
``hf_hub_download`` so the hub cache (and ``HF_HUB_OFFLINE``) work as usual; a local folder
laid out like the dataset repo can stand in for it (``--repo``).
"""

from __future__ import annotations

import os
from pathlib import Path

from calibadv.errors import CalibAdvError
from calibadv.io import atomic_write_jsonl, iter_jsonl

FLASHRAG_REPO = "RUC-NLPIR/FlashRAG_datasets"


def _fetch(repo: str, filename: str) -> Path | None:
    """Local path of ``filename`` in ``repo`` (a folder or a hub dataset); None if absent."""
    local = Path(repo).expanduser()
    if local.is_dir():
        path = local / filename
        return path if path.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(repo_id=repo, filename=filename, repo_type="dataset"))
    except EntryNotFoundError:
        return None
    except LocalEntryNotFoundError as err:
        if os.environ.get("HF_HUB_OFFLINE"):  # offline: a file missing from the cache
            return None
        raise CalibAdvError(f"could not reach the HF hub for {repo}/{filename} ({err}); "
                            "check the network or set HF_HUB_OFFLINE=1 with a filled cache") from err


def download_dataset(dataset: str, out: str | os.PathLike, split: str = "test",
                     repo: str = FLASHRAG_REPO) -> tuple[str, int]:
    """Write ``dataset``'s ``split`` (falling back to dev) to ``out``; returns (split, rows)."""
    if not dataset or "/" in dataset:
        raise CalibAdvError(f"--dataset {dataset!r} is not a FlashRAG dataset name "
                            "(e.g. nq, hotpotqa, 2wikimultihopqa)")
    tried = [split] + (["dev"] if split != "dev" else [])
    for name in tried:
        path = _fetch(repo, f"{dataset}/{name}.jsonl")
        if path is None:
            continue
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
        return name, len(rows)
    raise CalibAdvError(f"{repo} has no {' or '.join(f'{dataset}/{t}.jsonl' for t in tried)}; "
                        "check the dataset name (see the FlashRAG_datasets repo for the list)")
