"""The local backend checks its inputs before it starts anything slow."""

from __future__ import annotations

import pytest
import yaml

from calibadv.errors import ConfigError
from calibadv.spec import load_run_spec
from calibadv.train.local import run


@pytest.mark.parametrize("key", ["data.train", "data.val", "model.path"])
def test_a_missing_input_is_named_before_the_retrieval_server_starts(tmp_path, key):
    model = tmp_path / "model"
    model.mkdir()
    for name in ("train.parquet", "val.parquet"):
        (tmp_path / name).write_bytes(b"")
    spec = {
        "name": "t",
        "model": {"path": str(model)},
        "data": {"train": str(tmp_path / "train.parquet"), "val": str(tmp_path / "val.parquet")},
        # a server that could never start: reaching it would fail with a different error
        "retrieval": {"corpus": str(tmp_path / "nope.jsonl"), "index": str(tmp_path / "nope"),
                      "encoder": "bundled:minilm", "server": "thread"},
    }
    section, field = key.split(".")
    spec[section][field] = str(tmp_path / "missing")
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match=rf"{key}: .*missing does not exist"):
        run(load_run_spec(path), tmp_path / "out")
    assert not (tmp_path / "out").exists()
