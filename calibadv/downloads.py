"""Resumable, verified, logged downloads from the Hugging Face hub (models and dataset files).

Every download of the workflow goes through :func:`fetch_files`:

* **resumable** — files land in a fixed staging folder next to the target (``.NAME.download``)
  as ``FILE.partial``, continued with an HTTP range request when the job runs again after a
  kill (huggingface_hub's own downloader drops partial files between processes); files already
  fetched and verified are not fetched (or hashed) again;
* **verified** — each file is checked against what the hub reports for it: its size, and (with
  ``verify="hash"``) the sha256 of LFS files or the git blob id of small files; a mismatch
  deletes the file and fails, naming it;
* **logged** — one line per file (size, time, rate, running total), so a job log shows progress
  without a terminal.

The target appears only when complete (the caller renames the staging folder, or writes the
final file from it atomically), so Snakemake never sees a half download as done.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from calibadv.errors import CalibAdvError

VERIFY_MODES = ("hash", "size")
#: record of the files verified in a staging folder (skips re-hashing on resume)
VERIFIED_FILE = ".calibadv-verified.json"
_CHUNK = 8 << 20


@dataclass(frozen=True)
class RemoteFile:
    """One file of a hub repo as the hub describes it."""

    path: str
    size: int | None
    sha256: str | None = None  # LFS files
    git_sha1: str | None = None  # git blob id (of the LFS pointer for LFS files)


@dataclass(frozen=True)
class RepoListing:
    repo_id: str
    repo_type: str  # "model" or "dataset"
    commit: str
    files: tuple[RemoteFile, ...]

    def select(self, patterns: Sequence[str]) -> list[RemoteFile]:
        return [f for f in self.files if any(fnmatch.fnmatch(f.path, p) for p in patterns)]

    def get(self, path: str) -> RemoteFile | None:
        return next((f for f in self.files if f.path == path), None)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def list_repo(repo_id: str, repo_type: str = "model", revision: str | None = None) -> RepoListing:
    """The files of ``repo_id`` at ``revision`` with the sizes and hashes the hub reports."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    try:
        info = HfApi().repo_info(repo_id, repo_type=repo_type, revision=revision,
                                 files_metadata=True)  # fmt: skip
    except OfflineModeIsEnabled as err:
        raise CalibAdvError(
            f"cannot download {repo_id}: HF_HUB_OFFLINE is set in this job. Downloads run "
            "in the workflow's download rules (which unset it); by hand, unset HF_HUB_OFFLINE"
        ) from err
    except HfHubHTTPError as err:
        raise CalibAdvError(
            f"cannot list {repo_type} repo {repo_id} on the Hugging Face hub ({err}); check the "
            "repo id, the network and HF_TOKEN (gated models need an accepted licence)"
        ) from err
    except OSError as err:  # connection refused, DNS
        raise CalibAdvError(f"cannot reach the Hugging Face hub for {repo_id}: {err}") from err
    files = tuple(
        RemoteFile(
            path=s.rfilename,
            size=(s.lfs.size if s.lfs else s.size),
            sha256=(s.lfs.sha256 if s.lfs else None),
            git_sha1=None if s.lfs else s.blob_id,
        )
        for s in (info.siblings or [])
    )
    return RepoListing(repo_id, repo_type, info.sha or (revision or "main"), files)


def git_blob_sha1(path: str | os.PathLike) -> str:
    """The git object id of a file's contents (what the hub reports as a small file's id)."""
    size = os.path.getsize(path)
    h = hashlib.sha1(f"blob {size}\0".encode())
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def verify_file(path: str | os.PathLike, remote: RemoteFile, mode: str = "hash") -> str:
    """Check ``path`` against the hub's size (and hash, ``mode="hash"``); returns what was
    checked. A mismatch raises :class:`CalibAdvError` naming the file and both values."""
    if mode not in VERIFY_MODES:
        raise CalibAdvError(f"verify mode {mode!r}: choose one of {', '.join(VERIFY_MODES)}")
    path = Path(path)
    size = path.stat().st_size
    if remote.size is not None and size != remote.size:
        raise CalibAdvError(
            f"{remote.path}: {size} bytes on disk, the hub reports {remote.size}"
        )
    if mode == "size":
        return "size"
    if remote.sha256:
        got = sha256_file(path)
        if got != remote.sha256:
            raise CalibAdvError(f"{remote.path}: sha256 {got}, the hub reports {remote.sha256}")
        return "size+sha256"
    if remote.git_sha1:
        got = git_blob_sha1(path)
        if got != remote.git_sha1:
            raise CalibAdvError(f"{remote.path}: git blob id {got}, the hub reports {remote.git_sha1}")
        return "size+git-sha1"
    return "size"


def _verified(staging: Path) -> dict[str, dict]:
    try:
        return json.loads((staging / VERIFIED_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _mark_verified(staging: Path, record: dict[str, dict]) -> None:
    tmp = staging / f"{VERIFIED_FILE}.tmp"
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, staging / VERIFIED_FILE)


def _http_download(url: str, partial: Path, size: int | None, say: Callable[[str], None],
                   tag: str, retries: int = 5) -> None:
    """GET ``url`` into ``partial``, continuing an existing partial file with an HTTP range
    request (also after a killed job); retries transient network errors the same way."""
    import httpx
    from huggingface_hub.utils import build_hf_headers, get_session

    partial.parent.mkdir(parents=True, exist_ok=True)
    attempt, last_note = 0, time.monotonic()
    while True:
        have = partial.stat().st_size if partial.exists() else 0
        if size is not None and have == size:
            return
        if size is not None and have > size:  # not a prefix of this file: start over
            partial.unlink()
            have = 0
        headers = build_hf_headers()
        headers["Accept-Encoding"] = "identity"
        if have:
            headers["Range"] = f"bytes={have}-"
            say(f"{tag}: resuming at {human_bytes(have)}")
        try:
            with get_session().stream("GET", url, headers=headers, follow_redirects=True,
                                      timeout=60) as response:  # fmt: skip
                if response.status_code == 416 and have:  # range past the end: refetch
                    partial.unlink()
                    continue
                if response.status_code >= 400:
                    response.read()
                    raise CalibAdvError(f"{tag}: HTTP {response.status_code} from {url}: "
                                        f"{response.text[:200]}")  # fmt: skip
                mode = "ab" if have and response.status_code == 206 else "wb"
                got = have if mode == "ab" else 0
                with open(partial, mode) as fh:
                    for chunk in response.iter_bytes():  # as it arrives: a kill loses little
                        fh.write(chunk)
                        fh.flush()
                        got += len(chunk)
                        if time.monotonic() - last_note > 30:
                            last_note = time.monotonic()
                            share = f" ({100 * got / size:.0f}%)" if size else ""
                            say(f"{tag}: {human_bytes(got)}{share}")
                    fh.flush()
                    os.fsync(fh.fileno())
            if size is None or partial.stat().st_size == size:
                return
            raise OSError(f"connection closed at {partial.stat().st_size} of {size} bytes")
        except (OSError, httpx.TransportError) as err:  # connection lost, timeout, refused
            attempt += 1
            if attempt > retries:
                raise CalibAdvError(
                    f"{tag}: download interrupted ({err}); run the job again: it resumes from "
                    f"{partial}"
                ) from err
            say(f"{tag}: {err}; retrying ({attempt}/{retries})")
            time.sleep(min(2**attempt, 30))


def fetch_files(
    listing: RepoListing,
    files: Iterable[RemoteFile],
    staging: str | os.PathLike,
    verify: str = "hash",
    say: Callable[[str], None] = _say,
) -> list[Path]:
    """Download ``files`` of ``listing`` into ``staging`` (resumable), verify each, log each.

    Pinned to the listing's commit, so every file comes from one revision of the repo. A file
    is downloaded to ``NAME.partial`` and renamed once whole; a rerun continues the partial
    file and skips files already verified."""
    from huggingface_hub import hf_hub_url

    if verify not in VERIFY_MODES:
        raise CalibAdvError(f"--verify {verify!r}: choose one of {', '.join(VERIFY_MODES)}")
    staging = Path(staging)
    staging.mkdir(parents=True, exist_ok=True)
    files = list(files)
    total = sum(f.size or 0 for f in files)
    done_record = _verified(staging)
    say(f"{listing.repo_type} {listing.repo_id} @ {listing.commit[:12]}: {len(files)} file(s), "
        f"{human_bytes(total)}, into {staging} (resumable; verify: {verify})")  # fmt: skip
    paths, so_far, start = [], 0, time.monotonic()
    for i, remote in enumerate(files, 1):
        target = staging / remote.path
        tag = f"[{i}/{len(files)}] {remote.path} ({human_bytes(remote.size or 0)})"
        if target.is_file() and done_record.get(remote.path) == asdict(remote):
            say(f"{tag}: already downloaded and verified")
        else:
            t0 = time.monotonic()
            partial = target.with_name(target.name + ".partial")
            url = hf_hub_url(listing.repo_id, remote.path, repo_type=listing.repo_type,
                             revision=listing.commit)  # fmt: skip
            _http_download(url, partial, remote.size, say, tag)
            took = max(time.monotonic() - t0, 1e-6)
            try:
                checked = verify_file(partial, remote, verify)
            except CalibAdvError as err:
                partial.unlink(missing_ok=True)
                raise CalibAdvError(
                    f"{listing.repo_id}: {err}. The file is deleted; run the job again to "
                    "download it anew"
                ) from None
            os.replace(partial, target)
            done_record[remote.path] = asdict(remote)
            _mark_verified(staging, done_record)
            say(f"{tag}: done in {took:.0f} s ({human_bytes((remote.size or 0) / took)}/s), "
                f"verified {checked}")  # fmt: skip
        so_far += remote.size or 0
        elapsed = time.monotonic() - start
        say(f"progress: {human_bytes(so_far)} of {human_bytes(total)}"
            + (f" ({100 * so_far / total:.0f}%)" if total else "") + f", {elapsed:.0f} s")  # fmt: skip
        paths.append(target)
    return paths


class HubDataset:
    """Files of one hub *dataset* repo, online (listed once, fetched with :func:`fetch_files`
    into ``staging``) or, under ``HF_HUB_OFFLINE``, from a pre-filled hub cache (an air-gapped
    site's copy; nothing to verify against then)."""

    def __init__(self, repo_id: str, staging: str | os.PathLike, verify: str = "hash",
                 revision: str | None = None, cache_dir: str | os.PathLike | None = None) -> None:
        from calibadv.offline import is_offline

        if verify not in VERIFY_MODES:
            raise CalibAdvError(f"--verify {verify!r}: choose one of {', '.join(VERIFY_MODES)}")
        self.repo_id, self.revision, self.verify = repo_id, revision, verify
        self.staging, self.cache_dir = Path(staging), cache_dir
        self.offline = is_offline()
        self._listing: RepoListing | None = None

    @property
    def listing(self) -> RepoListing:
        if self._listing is None:
            self._listing = list_repo(self.repo_id, "dataset", self.revision)
        return self._listing

    def _cached(self, filename: str) -> Path | None:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

        try:
            return Path(hf_hub_download(self.repo_id, filename, repo_type="dataset",
                                        revision=self.revision, cache_dir=self.cache_dir))  # fmt: skip
        except (EntryNotFoundError, LocalEntryNotFoundError):
            return None

    def has(self, filename: str) -> bool:
        if self.offline:
            return self._cached(filename) is not None
        return self.listing.get(filename) is not None

    def fetch(self, filenames: Sequence[str]) -> list[Path]:
        """Local paths of ``filenames``, in order; a missing one is an error naming it."""
        if self.offline:
            paths = [self._cached(name) for name in filenames]
            missing = [n for n, p in zip(filenames, paths, strict=True) if p is None]
            if missing:
                raise CalibAdvError(
                    f"{self.repo_id}/{missing[0]} is not in the Hugging Face cache and this job "
                    "runs offline (HF_HUB_OFFLINE=1): run the download where there is internet "
                    "(the workflow's download rules unset HF_HUB_OFFLINE), or fill the cache"
                )
            return [p for p in paths if p is not None]
        remotes = [self.listing.get(name) for name in filenames]
        missing = [n for n, r in zip(filenames, remotes, strict=True) if r is None]
        if missing:
            have = ", ".join(f.path for f in self.listing.files[:8])
            raise CalibAdvError(f"{self.repo_id} has no file {missing[0]} (it has: {have}, …)")
        return fetch_files(self.listing, [r for r in remotes if r is not None], self.staging,
                           verify=self.verify)  # fmt: skip

    def cleanup(self) -> None:
        """Remove the staging folder once its contents are turned into the final file."""
        import shutil

        shutil.rmtree(self.staging, ignore_errors=True)
