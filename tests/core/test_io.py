"""Outputs are replaced atomically: a failed write leaves the old file and no temp files."""

import json

import pytest

from calibadv import io


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "sub" / "out.json"
    io.atomic_write_json(path, {"a": 1})
    io.atomic_write_json(path, {"b": 2})
    assert json.loads(path.read_text()) == {"b": 2}
    assert [p.name for p in path.parent.iterdir()] == ["out.json"]


def test_failed_write_keeps_previous_content(tmp_path):
    path = tmp_path / "out.json"
    io.atomic_write_json(path, {"ok": True})
    with pytest.raises(TypeError):
        io.atomic_write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": True}
    assert len(list(tmp_path.iterdir())) == 1


def test_jsonl_round_trip_and_append(tmp_path):
    path = tmp_path / "rows.jsonl"
    io.atomic_write_jsonl(path, [{"i": 0}, {"i": 1}])
    io.append_jsonl(path, {"i": 2, "s": "é"})
    assert io.read_jsonl(path) == [{"i": 0}, {"i": 1}, {"i": 2, "s": "é"}]


def test_broken_jsonl_line_is_reported_with_its_number(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"i": 0}\n\n{"i": \n')
    with pytest.raises(ValueError, match=r"rows\.jsonl:3"):
        io.read_jsonl(path)


def test_atomic_files_get_the_umask_mode_not_0600(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        path = io.atomic_write_text(tmp_path / "x.txt", "hi")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
