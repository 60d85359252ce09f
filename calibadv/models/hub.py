"""Fetch a model from the Hugging Face hub (or copy a local one) into a directory.

Used for the policy models and for the retrieval encoder and reranker. The files come
through :mod:`calibadv.downloads`: pinned to one commit, resumable (a fixed staging folder
``.NAME.download`` next to ``out``), each checked against the size and hash the hub reports,
one log line per file. ``out`` appears only when complete, with ``calibadv-download.json``
recording the repo, the commit and every file's size and hash. A local directory given as
the repo id is copied, which is how a site without internet points the workflow at a model
it already has. The result must hold a ``config.json``.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from calibadv.downloads import RemoteFile, RepoListing
from calibadv.errors import CalibAdvError
from calibadv.io import link_or_copy  # follows the cache symlink to its blob: no second copy

# weights and tokenizer files only: no other framework's checkpoints, no README images
ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja", "*.py"]
# PyTorch pickles only where a repo has no safetensors weights (some older encoders)
FALLBACK_WEIGHTS = ["pytorch_model*.bin"]
MANIFEST = "calibadv-download.json"


def _not_allowed(folder: str, names: list[str]) -> set[str]:
    return {n for n in names if not os.path.isdir(os.path.join(folder, n))
            and not any(fnmatch.fnmatch(n, pat) for pat in ALLOW_PATTERNS + FALLBACK_WEIGHTS)}


def model_files(listing: RepoListing) -> list[RemoteFile]:
    """The files of a model repo the workflow needs: config, tokenizer, safetensors weights
    (PyTorch ``.bin`` weights only when the repo has no safetensors)."""
    files = listing.select(ALLOW_PATTERNS)
    if not any(f.path.endswith(".safetensors") for f in files):
        files += listing.select(FALLBACK_WEIGHTS)
    return files


def _copy_local(src: Path, out: Path) -> Path:
    from calibadv.models.tiny import replace_dir

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        # the hub cache's files are symlinks to blobs: link (or copy) the blobs themselves
        shutil.copytree(src, tmp, dirs_exist_ok=True, copy_function=link_or_copy,
                        ignore=_not_allowed)
        if not (tmp / "config.json").is_file():
            raise CalibAdvError(f"{src} has no config.json: not a transformers model directory")
        tmp.chmod(0o755)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _cached_snapshot(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id=repo_id, revision=revision,
                                      allow_patterns=ALLOW_PATTERNS + FALLBACK_WEIGHTS))
    except LocalEntryNotFoundError as err:
        raise CalibAdvError(
            f"model {repo_id!r} is not in the Hugging Face cache and HF_HUB_OFFLINE is set: "
            "download it where there is internet (the workflow's download_model rule unsets "
            "HF_HUB_OFFLINE), or pass a local directory"
        ) from err


def _up_to_date(out: Path, commit: str, files: list[RemoteFile]) -> bool:
    """Whether ``out`` is a finished download of this commit with every file at its size."""
    try:
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return manifest.get("revision") == commit and all(
        (out / f.path).is_file() and (f.size is None or (out / f.path).stat().st_size == f.size)
        for f in files
    )


def download_model(repo_id: str, out: str | os.PathLike, revision: str | None = None,
                   verify: str = "hash") -> Path:
    """Fetch ``repo_id`` into ``out`` (resumable, verified); the directory appears only when
    complete. A local directory as ``repo_id`` is copied instead."""
    from calibadv.downloads import fetch_files, list_repo

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    src = Path(repo_id).expanduser()
    if src.is_dir():
        return _copy_local(src, out)
    from calibadv.offline import is_offline

    if is_offline():  # an air-gapped site's pre-filled hub cache: copy it, nothing to verify
        return _copy_local(_cached_snapshot(repo_id, revision), out)
    listing = list_repo(repo_id, "model", revision)
    files = model_files(listing)
    if not any(f.path == "config.json" for f in files):
        raise CalibAdvError(f"{repo_id!r} has no config.json: not a transformers model "
                            "(pass a repo id or folder holding config.json)")
    if _up_to_date(out, listing.commit, files):
        print(f"{out} already holds {repo_id} @ {listing.commit[:12]}: nothing to do")
        return out
    staging = out.with_name(f".{out.name}.download")
    fetch_files(listing, files, staging, verify=verify)
    (staging / ".calibadv-verified.json").unlink(missing_ok=True)
    manifest = {"repo_id": repo_id, "revision": listing.commit, "verify": verify,
                "files": [asdict(f) for f in files]}
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    staging.chmod(0o755)
    from calibadv.models.tiny import replace_dir

    replace_dir(staging, out)
    print(f"{repo_id} @ {listing.commit[:12]}: {len(files)} files in {out}")
    return out
