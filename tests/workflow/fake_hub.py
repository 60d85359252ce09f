"""A Hugging Face hub on 127.0.0.1 for download tests (nothing may reach the real hub in tests).

It answers the two HTTP calls calibadv's downloader makes, shaped exactly as the real hub
answers them (read from huggingface_hub 1.x: ``HfApi.repo_info(files_metadata=True)`` and the
``resolve`` URLs of ``hf_hub_url``):

* ``GET /api/{models|datasets}/ORG/NAME[/revision/REV]?blobs=True`` — ``sha`` and ``siblings``
  with ``rfilename``, ``size``, ``blobId`` and, for LFS files, ``lfs: {size, sha256,
  pointerSize}``;
* ``GET [/datasets]/ORG/NAME/resolve/REV/PATH`` — the file, honouring ``Range: bytes=N-``
  with ``206 Partial Content``.

Test hooks: ``stall_after[path] = n`` sends n bytes of the next GET of ``path`` and then holds
the connection open (a download killed mid-file); ``lie_sha256[path]`` reports a wrong hash.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

COMMIT = "1f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c"
LFS_SUFFIXES = (".safetensors", ".bin", ".gz", "part_aa", "part_ab")


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], dict[str, bytes]] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range)
        self.stall_after: dict[str, int] = {}
        self.lie_sha256: dict[str, str] = {}
        self.release = threading.Event()
        self.stalled = threading.Event()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 - the http.server interface
                hub._get(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def add(self, repo_type: str, repo_id: str, files: dict[str, bytes]) -> None:
        self.repos[(repo_type, repo_id)] = dict(files)

    # -- HTTP ------------------------------------------------------------------------------
    def _sibling(self, path: str, data: bytes) -> dict:
        if path.endswith(LFS_SUFFIXES):
            sha = self.lie_sha256.get(path, hashlib.sha256(data).hexdigest())
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(data)}\n"
            return {"rfilename": path, "size": len(data), "blobId": git_blob_id(pointer.encode()),
                    "lfs": {"size": len(data), "sha256": sha, "pointerSize": len(pointer)}}
        return {"rfilename": path, "size": len(data), "blobId": git_blob_id(data)}

    def _get(self, req: BaseHTTPRequestHandler) -> None:
        url = urlparse(req.path)
        path = unquote(url.path)
        self.requests.append(("GET", path, req.headers.get("Range")))
        parts = path.strip("/").split("/")
        if parts[0] == "api" and parts[1] in ("models", "datasets"):
            repo_type = parts[1][:-1]
            repo = self.repos.get((repo_type, "/".join(parts[2:4])))
            if repo is None:
                return self._send(req, 404, b'{"error": "Repository not found"}',
                                  {"X-Error-Code": "RepoNotFound"})
            body = {"id": "/".join(parts[2:4]), "sha": COMMIT,
                    "siblings": [self._sibling(p, d) for p, d in repo.items()]}
            return self._send(req, 200, json.dumps(body).encode(), {"Content-Type": "application/json"})
        repo_type = "model"
        if parts[0] == "datasets":
            repo_type, parts = "dataset", parts[1:]
        if len(parts) < 5 or parts[2] != "resolve":
            return self._send(req, 404, b"not found", {})
        repo = self.repos.get((repo_type, "/".join(parts[:2])), {})
        name = "/".join(parts[4:])
        if name not in repo:
            return self._send(req, 404, b"Entry not found", {"X-Error-Code": "EntryNotFound"})
        data = repo[name]
        start = 0
        if (rng := req.headers.get("Range")) and rng.startswith("bytes="):
            start = int(rng[len("bytes="):].split("-")[0])
        body = data[start:]
        headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{git_blob_id(data)}"', "Accept-Ranges": "bytes"}
        status = 200
        if start:
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        stall = self.stall_after.pop(name, None)
        req.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            req.send_header(key, value)
        req.end_headers()
        if stall is not None:
            req.wfile.write(body[:stall])
            req.wfile.flush()
            self.stalled.set()
            self.release.wait(60)  # the client is killed meanwhile
            return
        req.wfile.write(body)

    @staticmethod
    def _send(req: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict) -> None:
        req.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            req.send_header(key, value)
        req.end_headers()
        req.wfile.write(body)
