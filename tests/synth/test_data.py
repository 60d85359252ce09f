"""Dataset preparation: verl Parquet from QA JSONL, and the hub downloads on local fixtures."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pyarrow.parquet as pq
import pytest

from calibadv.cli import main
from calibadv.data.prepare import prepare
from calibadv.data.prompt import PROMPT_TEMPLATE, build_messages, format_question
from calibadv.errors import CalibAdvError
from calibadv.io import atomic_write_jsonl, read_jsonl

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def test_prompt_holds_the_protocol_and_the_question():
    (msg,) = build_messages("  who wrote the salt bell  ")
    assert msg["role"] == "user"
    assert msg["content"] == PROMPT_TEMPLATE.format(question="who wrote the salt bell?")
    for piece in ["<think>", "<search> query </search>", "<information>", "<answer> Beijing </answer>"]:
        assert piece in msg["content"]
    assert format_question("Is it?") == "Is it?"
    with pytest.raises(ValueError):
        format_question("   ")


def test_parquet_has_the_verl_columns_and_unique_indices(world_dir, tmp_path):
    out = tmp_path / "train.parquet"
    n = prepare([f"hotpotqa={world_dir / 'train.jsonl'}", f"nq={world_dir / 'test' / 'nq.jsonl'}"],
                out, split="train", limit=30)
    assert n == 60
    table = pq.read_table(out)
    assert table.column_names == ["data_source", "prompt", "ability", "reward_model", "extra_info"]
    df = table.to_pandas()
    assert list(df.data_source[:30]) == ["hotpotqa"] * 30 and set(df.data_source[30:]) == {"nq"}
    assert set(df.ability) == {"fact-reasoning"}
    idx = [e["index"] for e in df.extra_info]
    assert idx == list(range(60))
    source = read_jsonl(world_dir / "train.jsonl")[0]
    first = df.iloc[0]
    assert first.reward_model["style"] == "rule"
    assert list(first.reward_model["ground_truth"]["target"]) == source["golden_answers"]
    assert first.extra_info["id"] == source["id"] and first.extra_info["split"] == "train"
    assert list(first.extra_info["supporting_ids"]) == source["metadata"]["supporting_ids"]
    assert list(first.prompt) == build_messages(source["question"])


def test_rows_without_supporting_ids_get_an_empty_list(tmp_path):
    src = tmp_path / "real.jsonl"
    atomic_write_jsonl(src, [{"id": "test_0", "question": "who is it", "golden_answers": ["X"],
                              "metadata": {}}, {"question": "b?", "golden_answers": "Y"}])
    prepare([f"nq={src}"], tmp_path / "o.parquet", split="test")
    df = pd.read_parquet(tmp_path / "o.parquet")
    assert [list(e["supporting_ids"]) for e in df.extra_info] == [[], []]
    assert [e["id"] for e in df.extra_info] == ["test_0", "nq_1"]
    assert list(df.reward_model[1]["ground_truth"]["target"]) == ["Y"]


@pytest.mark.parametrize("rows, message", [
    ([{"question": "", "golden_answers": ["a"]}], "question"),
    ([{"question": "q?", "golden_answers": []}], "golden_answers"),
])
def test_bad_rows_are_named(tmp_path, rows, message):
    src = tmp_path / "bad.jsonl"
    atomic_write_jsonl(src, rows)
    with pytest.raises(CalibAdvError, match=message):
        prepare([f"nq={src}"], tmp_path / "o.parquet")
    assert not (tmp_path / "o.parquet").exists()


def test_prepare_cli_rejects_bad_input_specs(tmp_path, capsys):
    assert main(["prepare-data", "--input", "nofile", "--out", str(tmp_path / "o.parquet")]) == 2
    assert "BENCH=FILE" in capsys.readouterr().err
    assert main(["prepare-data", "--input", f"nq={tmp_path / 'none.jsonl'}",
                 "--out", str(tmp_path / "o.parquet")]) == 2
    assert "none.jsonl" in capsys.readouterr().err


# --- downloads, on fixtures laid out exactly like the hub repo and the hub cache -----------

def _hub_cache(root, kind: str, repo: str, files: dict) -> None:
    """Fill a huggingface_hub cache folder as a previous online download would have."""
    base = root / f"{kind}s--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(COMMIT)
    for name, src in files.items():
        dst = base / "snapshots" / COMMIT / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(src, str):
            dst.write_text(src)
        else:
            shutil.copy(src, dst)


def _offline_cli(args, cache, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache),
           "HF_HOME": str(tmp_path / "hf_home")}
    return subprocess.run([sys.executable, "-m", "calibadv.cli", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def _flashrag_rows(n, prefix):
    return "".join(json.dumps({"id": f"{prefix}_{i}", "question": f"q{i}?",
                               "golden_answers": [f"a{i}"], "metadata": {}}) + "\n"
                   for i in range(n))


def test_download_data_prefers_test_then_dev_from_the_hub_cache(tmp_path):
    cache = tmp_path / "cache"
    _hub_cache(cache, "dataset", "RUC-NLPIR/FlashRAG_datasets",
               {"nq/test.jsonl": _flashrag_rows(3, "test"), "nq/dev.jsonl": _flashrag_rows(5, "dev"),
                "hotpotqa/dev.jsonl": _flashrag_rows(4, "dev")})
    r = _offline_cli(["download-data", "--dataset", "nq", "--out", str(tmp_path / "nq.jsonl")],
                     cache, tmp_path)
    assert r.returncode == 0, r.stderr
    assert [q["id"] for q in read_jsonl(tmp_path / "nq.jsonl")] == ["test_0", "test_1", "test_2"]
    r = _offline_cli(["download-data", "--dataset", "hotpotqa", "--out",
                      str(tmp_path / "hp.jsonl")], cache, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "dev split" in r.stdout and len(read_jsonl(tmp_path / "hp.jsonl")) == 4
    r = _offline_cli(["download-data", "--dataset", "nosuch", "--out", str(tmp_path / "x.jsonl")],
                     cache, tmp_path)
    assert r.returncode == 2 and "nosuch/test.jsonl" in r.stderr
    assert not (tmp_path / "x.jsonl").exists()


def test_download_data_from_a_local_mirror_folder(tmp_path):
    mirror = tmp_path / "mirror" / "bamboogle"
    mirror.mkdir(parents=True)
    (mirror / "test.jsonl").write_text(_flashrag_rows(2, "test"))
    assert main(["download-data", "--dataset", "bamboogle", "--repo", str(tmp_path / "mirror"),
                 "--out", str(tmp_path / "b.jsonl")]) == 0
    assert len(read_jsonl(tmp_path / "b.jsonl")) == 2


def test_download_model_from_the_hub_cache_and_from_a_folder(tiny_model_dir, tmp_path):
    from transformers import AutoConfig

    cache = tmp_path / "cache"
    files = {p.name: p for p in tiny_model_dir.iterdir()}
    files["README.md"] = "not wanted"
    _hub_cache(cache, "model", "someone/tiny-qwen", files)
    r = _offline_cli(["download-model", "--repo-id", "someone/tiny-qwen", "--out",
                      str(tmp_path / "m")], cache, tmp_path)
    assert r.returncode == 0, r.stderr
    assert AutoConfig.from_pretrained(tmp_path / "m").model_type == "qwen2"
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == \
        (tiny_model_dir / "model.safetensors").read_bytes()
    assert not (tmp_path / "m" / "README.md").exists()
    r = _offline_cli(["download-model", "--repo-id", "someone/absent", "--out",
                      str(tmp_path / "n")], cache, tmp_path)
    assert r.returncode == 2 and "someone/absent" in r.stderr and not (tmp_path / "n").exists()
    assert main(["download-model", "--repo-id", str(tiny_model_dir), "--out",
                 str(tmp_path / "copy")]) == 0
    assert (tmp_path / "copy" / "tokenizer.json").is_file()
