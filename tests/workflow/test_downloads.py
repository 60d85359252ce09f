"""Downloads against a hub on 127.0.0.1 (fake_hub.py, the real HTTP interface): the `calibadv
download-*` commands as the download rules call them. A download is pinned to one commit,
checked against the sizes and hashes the hub reports, logged per file, continued after a kill,
and its target appears only when whole."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time

import pytest
from fake_hub import COMMIT, FakeHub

from calibadv.offline import OFFLINE_ENV
from calibadv.retrieval.download import write_join_state, join_parts_consuming, joined_parts

WEIGHTS = os.urandom(400_000)
MODEL_FILES = {
    "config.json": b'{"model_type": "bert", "hidden_size": 8}',
    "tokenizer.json": b'{"version": "1.0"}',
    "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}',
    "model.safetensors": WEIGHTS,
    "README.md": b"# card",
    "onnx/model.onnx": b"onnx weights we do not want",
}


def command(args: list[str], hub: FakeHub, tmp_path) -> list[str]:
    return [sys.executable, "-m", "calibadv.cli", *args]


def online_env(hub: FakeHub, tmp_path) -> dict[str, str]:
    """What a download rule's job sees: the offline variables unset, the hub at HF_ENDPOINT."""
    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_ENV}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf_home"), CALIBADV_NO_PROGRESS="1",
               HF_HUB_DISABLE_TELEMETRY="1")  # fmt: skip
    return env


def run(args: list[str], hub: FakeHub, tmp_path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(args, hub, tmp_path), env=online_env(hub, tmp_path),
                          capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.fixture
def hub():
    with FakeHub() as server:
        server.add("model", "org/enc", MODEL_FILES)
        yield server


def test_a_model_download_is_pinned_verified_logged_and_keeps_only_model_files(hub, tmp_path):
    out = tmp_path / "resources/models/org--enc"
    proc = run(["download-model", "--repo-id", "org/enc", "--out", str(out)], hub, tmp_path)
    assert proc.returncode == 0, proc.stderr
    kept = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert kept == ["1_Pooling/config.json", "calibadv-download.json", "config.json",
                    "model.safetensors", "tokenizer.json"]  # fmt: skip
    assert (out / "model.safetensors").read_bytes() == WEIGHTS
    manifest = json.loads((out / "calibadv-download.json").read_text())
    assert manifest["repo_id"] == "org/enc" and manifest["revision"] == COMMIT
    # every file came from the listed commit, and each was checked and logged
    assert all(f"/resolve/{COMMIT}/" in p for m, p, _ in hub.requests if "/resolve/" in p)
    assert "model.safetensors (400.0 KB): done" in proc.stderr
    assert "verified size+sha256" in proc.stderr and "verified size+git-sha1" in proc.stderr
    assert "progress: " in proc.stderr
    assert not list(tmp_path.glob("resources/models/.*"))  # no staging folder left behind

    fetched = len(hub.requests)
    again = run(["download-model", "--repo-id", "org/enc", "--out", str(out)], hub, tmp_path)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert not [p for _, p, _ in hub.requests[fetched:] if "/resolve/" in p]  # listed, not fetched


def test_a_killed_download_continues_from_its_partial_file(hub, tmp_path):
    out = tmp_path / "m"
    args = ["download-model", "--repo-id", "org/enc", "--out", str(out)]
    hub.stall_after["model.safetensors"] = 150_000
    first = subprocess.Popen(command(args, hub, tmp_path), env=online_env(hub, tmp_path),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    partial = tmp_path / ".m.download" / "model.safetensors.partial"
    try:
        assert hub.stalled.wait(60), "the download never reached the weights"
        deadline = time.monotonic() + 30
        while (not partial.exists() or partial.stat().st_size < 150_000) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        first.kill()  # the job is killed mid-file (a node failure, scancel, time limit)
        first.communicate()
    hub.release.set()
    assert not out.exists()  # the target only appears when whole
    assert partial.stat().st_size == 150_000

    second = run(args, hub, tmp_path)
    assert second.returncode == 0, second.stderr
    assert (out / "model.safetensors").read_bytes() == WEIGHTS
    ranges = [r for _, p, r in hub.requests if p.endswith("model.safetensors")]
    assert ranges[-1] == "bytes=150000-"  # only the missing part was fetched again
    assert "resuming at 150.0 KB" in second.stderr


def test_a_file_that_differs_from_what_the_hub_reports_is_deleted_and_named(hub, tmp_path):
    hub.lie_sha256["model.safetensors"] = "0" * 64
    out = tmp_path / "m"
    proc = run(["download-model", "--repo-id", "org/enc", "--out", str(out)], hub, tmp_path)
    assert proc.returncode == 2
    assert "model.safetensors: sha256" in proc.stderr and "0" * 64 in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()
    assert not list((tmp_path / ".m.download").glob("model.safetensors*"))


def test_verify_size_skips_the_hash(hub, tmp_path):
    hub.lie_sha256["model.safetensors"] = "0" * 64  # a size check cannot see this
    proc = run(["download-model", "--repo-id", "org/enc", "--out", str(tmp_path / "m"),
                "--verify", "size"], hub, tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "verified size" in proc.stderr and "sha256" not in proc.stderr


def test_corpus_index_and_qa_downloads_leave_only_their_final_files(hub, tmp_path):
    rows = b"".join(b'{"id": "%d", "contents": "\\"T%d\\"\\nbody"}\n' % (i, i) for i in range(50))
    blob = os.urandom(64_000)
    hub.add("dataset", "PeterJinGo/wiki-18-corpus", {"wiki-18.jsonl.gz": gzip.compress(rows)})
    hub.add("dataset", "PeterJinGo/wiki-18-e5-index", {"part_aa": blob[:40_000], "part_ab": blob[40_000:]})
    qa = b"".join(b'{"id": "d%d", "question": "q%d?", "golden_answers": ["a"]}\n' % (i, i) for i in range(3))
    hub.add("dataset", "RUC-NLPIR/FlashRAG_datasets", {"hotpotqa/dev.jsonl": qa, "hotpotqa/train.jsonl": qa})
    res = tmp_path / "resources"
    for args in (
        ["download-corpus", "--out", str(res / "corpus/wiki18.jsonl")],
        ["download-index", "--out", str(res / "index/wiki18-e5-flat.faiss")],
        ["download-data", "--dataset", "hotpotqa", "--split", "test", "--out", str(res / "qa/hotpotqa/test.jsonl")],
    ):
        proc = run(args, hub, tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert "verified size+sha256" in proc.stderr or "verified size+git-sha1" in proc.stderr
    assert (res / "corpus/wiki18.jsonl").read_bytes() == rows
    assert (res / "index/wiki18-e5-flat.faiss").read_bytes() == blob
    assert [json.loads(line)["id"] for line in (res / "qa/hotpotqa/test.jsonl").read_text().splitlines()] == [
        "d0", "d1", "d2"]  # no test split on the hub: dev stands in  # fmt: skip
    left = sorted(str(p.relative_to(res)) for p in res.rglob("*"))
    assert left == ["corpus", "corpus/wiki18.jsonl", "index", "index/wiki18-e5-flat.faiss",
                    "qa", "qa/hotpotqa", "qa/hotpotqa/test.jsonl"]  # fmt: skip


def test_an_unknown_repo_is_a_clear_error(hub, tmp_path):
    proc = run(["download-model", "--repo-id", "org/nosuch", "--out", str(tmp_path / "m")], hub, tmp_path)
    assert proc.returncode == 2
    assert "cannot list model repo org/nosuch" in proc.stderr and "Traceback" not in proc.stderr


def _parts(staging, blobs: dict[str, bytes]):
    staging.mkdir(parents=True, exist_ok=True)
    for name, data in blobs.items():
        (staging / name).write_bytes(data)
    return [(name, staging / name) for name in blobs]


BLOBS = {"part_aa": b"A" * 1000, "part_ab": b"B" * 700, "part_ac": b"C" * 300}


def test_joining_index_parts_consumes_them(tmp_path):
    staging = tmp_path / ".idx.download"
    out = join_parts_consuming(_parts(staging, BLOBS), tmp_path / "idx", staging)
    assert out.read_bytes() == b"".join(BLOBS.values())
    assert not list(staging.iterdir())  # parts and the join record are gone


@pytest.mark.parametrize("cut", ["mid-append", "before-rename", "after-last-append"])
def test_an_interrupted_join_is_cut_back_and_continued(tmp_path, cut):
    staging = tmp_path / ".idx.download"
    parts = _parts(staging, BLOBS)
    tmp = tmp_path / ".idx.part"
    if cut == "mid-append":  # part_aa inside, half of part_ab appended, then killed
        (staging / "part_aa").rename(tmp)
        with open(tmp, "ab") as fh:
            fh.write(BLOBS["part_ab"][:350])
        write_join_state(staging, ["part_aa"], 1000)
    elif cut == "before-rename":  # the record says part_aa, the rename never happened
        write_join_state(staging, ["part_aa"], 1000)
    else:  # everything appended, killed before the final rename
        tmp.write_bytes(b"".join(BLOBS.values()))
        for name in BLOBS:
            (staging / name).unlink()
        write_join_state(staging, list(BLOBS), 2000)
    out = join_parts_consuming(parts, tmp_path / "idx", staging)
    assert out.read_bytes() == b"".join(BLOBS.values())
    assert joined_parts(staging) == ([], 0)
