"""Fetch a policy model from the Hugging Face hub (or copy a local one) into a directory.

The snapshot goes through the ordinary hub cache (so ``HF_HUB_OFFLINE=1`` with a filled
cache works on air-gapped nodes) and is then hard-linked (copied across filesystems) into
``out``. A local directory given as the repo id is copied, which is how an offline cluster
points the workflow at a model it already has. The result must hold a ``config.json``.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import tempfile
from pathlib import Path

from calibadv.errors import CalibAdvError
from calibadv.io import link_or_copy  # follows the cache symlink to its blob: no second copy

# weights and tokenizer files only: no other framework's checkpoints, no README images
ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja", "*.py"]


def _not_allowed(folder: str, names: list[str]) -> set[str]:
    return {n for n in names if not os.path.isdir(os.path.join(folder, n))
            and not any(fnmatch.fnmatch(n, pat) for pat in ALLOW_PATTERNS)}


def download_model(repo_id: str, out: str | os.PathLike, revision: str | None = None) -> Path:
    """Snapshot ``repo_id`` into ``out``; the directory appears only when complete."""
    from calibadv.models.tiny import replace_dir

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        src = Path(repo_id).expanduser()
        if src.is_dir():
            shutil.copytree(src, tmp, dirs_exist_ok=True)
        else:
            from huggingface_hub import snapshot_download
            from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

            try:
                snapshot = snapshot_download(repo_id=repo_id, revision=revision,
                                             allow_patterns=ALLOW_PATTERNS)
            except (HfHubHTTPError, LocalEntryNotFoundError, ValueError) as err:
                raise CalibAdvError(
                    f"could not download model {repo_id!r} from the Hugging Face hub ({err}); "
                    "check the repo id, your network/HF_TOKEN, or pass a local directory"
                ) from err
            # the cache may hold more than this call asked for (an earlier full download)
            shutil.copytree(snapshot, tmp, dirs_exist_ok=True, copy_function=link_or_copy,
                            ignore=_not_allowed)
        if not (tmp / "config.json").is_file():
            raise CalibAdvError(f"{repo_id!r} has no config.json: not a transformers model "
                                "directory (pass a repo id or folder holding config.json)")
        tmp.chmod(0o755)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
