"""Cluster readiness (issue 19): compute nodes without internet. Downloads are DAG jobs on the
submit host (local rules, a limited `downloads` resource), every other job runs with the
Hugging Face offline variables and gets local paths only, and a job handed a missing model
directory fails at once naming the rule that writes it."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from wf_helpers import BIN, REPO, load_yaml, snakemake, write_config

from calibadv.workflow.layout import Layout
from calibadv.workflow.run_specs import run_spec_dict
from calibadv.workflow.sources import hub_downloads, localized_config, retrieval_model_dirs
from calibadv.workflow.validation import validate_config
from calibadv.data.download import FLASHRAG_REPO
from calibadv.offline import NO_TELEMETRY_ENV, OFFLINE_ENV
from calibadv.retrieval.download import CORPUS_REPO, INDEX_REPO

ONLINE_PREFIX = "env -u HF_HUB_OFFLINE -u TRANSFORMERS_OFFLINE -u HF_DATASETS_OFFLINE calibadv download-"
SERVES_RETRIEVAL = ("sft", "train", "evaluate", "encode_shard")


def dry_run_jobs(*args: str) -> list[dict]:
    """Every job of a `snakemake -n -p` run: rule, input line and shell command."""
    text = snakemake("-n", "-p", *args).stdout
    jobs, job = [], None
    for line in text.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):$", line):
            job = {"rule": m.group(1), "input": "", "shell": None}
            jobs.append(job)
        elif job is not None and line.startswith("    input: "):
            job["input"] = line.split(": ", 1)[1]
        elif job is not None and line.startswith("Shell command: "):
            job["shell"] = line.split(": ", 1)[1]
    return jobs


def strings_of(command: str) -> list[str]:
    """Every word of a command line, and every string inside its JSON arguments."""
    out: list[str] = []

    def walk(node) -> None:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, dict):
            for key, value in node.items():
                walk(key)
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for word in shlex.split(command):
        out.append(word)
        if word.startswith(("{", "[")):
            walk(json.loads(word))
    return out


def test_paper_dry_run_command_lines_hold_no_hub_id_outside_the_download_rules(tmp_path, paper_config):
    jobs = dry_run_jobs("--configfile", str(REPO / "config/config.yaml"), "-d", str(tmp_path))
    config = validate_config(paper_config)
    hub_ids = set(hub_downloads(config)) | {INDEX_REPO, CORPUS_REPO, FLASHRAG_REPO}
    assert {"Qwen/Qwen2.5-7B", "intfloat/e5-base-v2", "cross-encoder/ms-marco-MiniLM-L12-v2"} <= hub_ids

    commands = [j for j in jobs if j["shell"]]
    downloads = [j for j in commands if j["rule"].startswith("download_")]
    others = [j for j in commands if not j["rule"].startswith("download_")]
    assert {j["rule"] for j in downloads} == {"download_corpus", "download_index", "download_model", "download_qa"}
    assert len(others) > 100
    for job in others:  # neither as a word, nor inside a JSON argument, nor within a path
        words = strings_of(job["shell"])
        leaked = {h for h in hub_ids if any(h in w for w in words)}
        assert not leaked, f"rule {job['rule']} names {leaked}: {job['shell'][:300]}"
    for job in downloads:  # the one kind of job that goes online
        assert job["shell"].startswith(ONLINE_PREFIX), job["shell"]

    # every job that serves retrieval gets the encoder and the reranker as local inputs
    encoder = "resources/models/intfloat--e5-base-v2"
    reranker = "resources/models/cross-encoder--ms-marco-MiniLM-L12-v2"
    for job in jobs:
        if job["rule"] in SERVES_RETRIEVAL:
            assert encoder in job["input"] and reranker in job["input"], job
    # ... and the downloads (policies, encoder, reranker, corpus, index, QA) go to resources/
    model_dirs = {re.search(r"--out (\S+)", j["shell"]).group(1) for j in downloads if j["rule"] == "download_model"}
    assert model_dirs == {"resources/models/Qwen--Qwen2.5-7B", "resources/models/Qwen--Qwen2.5-3B",
                          "resources/models/meta-llama--Llama-3.2-3B-Instruct", encoder, reranker}  # fmt: skip
    assert all(re.search(r"--out resources/", j["shell"]) for j in downloads)


PROBE = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

    snakefile, workdir, configfile = map(Path, sys.argv[1:4])
    with SnakemakeApi(OutputSettings()) as api:
        wf = api.workflow(snakefile=snakefile, workdir=workdir,
                          config_settings=ConfigSettings(configfiles=[configfile]),
                          resource_settings=ResourceSettings())
        w = wf._workflow
        print(json.dumps({"localrules": sorted(w._localrules),
                          "downloads": w.global_resources["downloads"].value}))
    """
)


def loaded_workflow(tmp_path: Path, config: Path) -> dict:
    """Local rules and the `downloads` limit of the workflow as Snakemake loaded it."""
    proc = subprocess.run([sys.executable, "-c", PROBE, str(REPO / "Snakefile"), str(tmp_path), str(config)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_download_rules_run_on_the_submit_host_unless_downloads_where_is_cluster(tmp_path, paper_config):
    downloads = {"download_corpus", "download_index", "download_model", "download_qa"}
    default = loaded_workflow(tmp_path, REPO / "config/config.yaml")
    assert downloads <= set(default["localrules"])
    assert default["downloads"] == 2  # downloads.max_parallel: two at a time

    cfg = write_config(tmp_path / "cluster.yaml", base="config/config.yaml",
                       downloads={"where": "cluster", "max_parallel": 3})  # fmt: skip
    cluster = loaded_workflow(tmp_path, cfg)
    assert not downloads & set(cluster["localrules"])
    assert cluster["downloads"] == 3


def test_cluster_downloads_take_the_download_stage_resources(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", base="config/config.yaml", downloads={"where": "cluster"})
    text = snakemake("-n", "--configfile", str(cfg), "-d", str(tmp_path), "resources/index/wiki18-e5-flat.faiss").stdout
    resources = next(line for line in text.splitlines() if "resources:" in line and "downloads=1" in line)
    assert "runtime=1440" in resources and "mem_mb=8000" in resources


def test_every_job_runs_with_the_offline_variables(tmp_path):
    """A real job (the tiny config's `spec`), observed through a wrapper that records the
    environment and then runs the real `calibadv`; the caller's own environment is online."""
    wrapper_dir = tmp_path / "bin"
    wrapper_dir.mkdir()
    probe = tmp_path / "job-env.txt"
    wrapper = wrapper_dir / "calibadv"
    wrapper.write_text(f"#!/bin/sh\nenv > {probe}\nexec {BIN / 'calibadv'} \"$@\"\n")
    wrapper.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_ENV}
    env["PATH"] = f"{wrapper_dir}{os.pathsep}{BIN}{os.pathsep}{env.get('PATH', '')}"
    target = "results/synthetic/runs/tiny/calibadv/seed_0/spec.yaml"
    proc = subprocess.run([str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "-c1", "-d", str(tmp_path), target],
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    job_env = dict(line.split("=", 1) for line in probe.read_text().splitlines() if "=" in line)
    assert {k: job_env.get(k) for k in OFFLINE_ENV} == OFFLINE_ENV
    assert {k: job_env.get(k) for k in NO_TELEMETRY_ENV} == NO_TELEMETRY_ENV  # vLLM, Ray, hub
    assert (tmp_path / target).is_file()


def offline_cli(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **OFFLINE_ENV, "HF_HOME": str(tmp_path / "empty_hf_home")}
    return subprocess.run([sys.executable, "-m", "calibadv.cli", *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_an_offline_job_with_a_missing_model_dir_fails_at_once_naming_the_rule(tmp_path):
    model = "resources/models/Qwen--Qwen2.5-3B"
    for name in ("qa.jsonl", "c.jsonl", "i.faiss"):
        (tmp_path / name).write_text("")
    proc = offline_cli(["sft", "--model", model, "--qa", "qa.jsonl", "--corpus", "c.jsonl",
                        "--index", "i.faiss", "--out", "out"], tmp_path)  # fmt: skip
    assert proc.returncode == 2
    assert f"--model {model}: no such model directory" in proc.stderr
    assert "runs offline (HF_HUB_OFFLINE=1)" in proc.stderr and "rule download_model" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "path, rule",
    [
        ("resources/models/Qwen--Qwen2.5-7B", "download_model"),
        ("results/real/models/qwen2.5-7b/sft", "sft"),
        ("results/synthetic/models/tiny/base", "build_tiny_model"),
    ],
)
def test_a_run_spec_pointing_at_a_missing_model_names_its_rule(tmp_path, paper_config, path, rule):
    config = validate_config(paper_config)
    spec = run_spec_dict(config, "qwen2.5-7b", "calibadv")
    spec["model"]["path"] = path
    (tmp_path / "spec.yaml").write_text(json.dumps(spec))
    proc = offline_cli(["train", "--spec", "spec.yaml", "--out", "run"], tmp_path)
    assert proc.returncode == 2
    assert f"spec.yaml: model.path {path}: no such model directory" in proc.stderr
    assert f"written by rule {rule}" in proc.stderr


@pytest.mark.parametrize(
    "args, flag, rule",
    [
        (["index", "encode", "--corpus", "resources/corpus/wiki18.jsonl", "--encoder", "bundled:minilm",
          "--out", "s.npy"], "--corpus resources/corpus/wiki18.jsonl", "download_corpus"),
        (["sft", "--model", "m", "--qa", "q.jsonl", "--corpus", "c.jsonl", "--index",
          "results/synthetic/index/index.faiss", "--out", "o"], "--index results/synthetic/index/index.faiss",
         "merge_index"),
        (["sft", "--model", "m", "--qa", "results/synthetic/world/train.jsonl", "--out", "o"],
         "--qa results/synthetic/world/train.jsonl", "synth_world"),
        (["evaluate", "--spec", "spec.yaml", "--checkpoint", "m", "--out-dir", "e",
          "--suite", "nq=results/real/data/test/nq.parquet"], "--suite nq results/real/data/test/nq.parquet",
         "prepare_test"),
        (["train", "--spec", "spec.yaml", "--out", "run"],
         "spec.yaml: data.train results/real/data/train.parquet", "prepare_train"),
    ],
)
def test_a_missing_input_file_names_the_rule_that_writes_it(tmp_path, paper_config, args, flag, rule):
    for name in ("c.jsonl", "i.faiss", "q.jsonl"):
        (tmp_path / name).write_text("")
    (tmp_path / "m").mkdir()
    spec = run_spec_dict(validate_config(paper_config), "qwen2.5-3b", "calibadv")
    spec["model"]["path"] = spec["retrieval"]["encoder"] = "m"
    spec["retrieval"]["reranker"] = None
    (tmp_path / "spec.yaml").write_text(json.dumps(spec))
    proc = offline_cli(args, tmp_path)
    assert proc.returncode == 2
    assert f"{flag}: no such file. It is written by rule {rule}" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_hub_id_in_an_offline_job_is_refused_not_fetched(tmp_path):
    proc = offline_cli(["index", "encode", "--corpus", "c.jsonl", "--encoder", "intfloat/e5-base-v2",
                        "--out", "s.npy"], tmp_path)  # fmt: skip
    assert proc.returncode == 2
    assert "--encoder intfloat/e5-base-v2: a hub id, but this job runs offline" in proc.stderr
    assert "RESOURCES_DIR/models/intfloat--e5-base-v2" in proc.stderr


def test_the_encoder_spec_and_report_config_carry_local_paths(paper_config):
    config = validate_config(paper_config)
    spec = run_spec_dict(config, "qwen2.5-3b", "calibadv")
    assert spec["model"]["path"] == "resources/models/Qwen--Qwen2.5-3B"
    assert spec["retrieval"]["encoder"] == "resources/models/intfloat--e5-base-v2"
    assert spec["retrieval"]["reranker"] == "resources/models/cross-encoder--ms-marco-MiniLM-L12-v2"
    local = validate_config(localized_config(config))
    assert {k: local["models"]["qwen2.5-7b"].get(k) for k in ("source", "path", "repo_id")} == {
        "source": "local", "path": "resources/models/Qwen--Qwen2.5-7B", "repo_id": None}
    assert local["retrieval"]["encoder"] == "resources/models/intfloat--e5-base-v2"
    assert Layout.of(local) == Layout.of(config)


def test_the_tiny_config_keeps_its_bundled_encoder_and_downloads_nothing(tiny_config, tmp_path):
    config = validate_config(tiny_config)
    assert hub_downloads(config) == {} and retrieval_model_dirs(config) == {}
    jobs = dry_run_jobs("-d", str(tmp_path))
    assert not [j for j in jobs if j["rule"].startswith("download_")]
    encodes = [j["shell"] for j in jobs if j["rule"] == "encode_shard"]
    assert encodes and all("--encoder bundled:minilm" in c for c in encodes)


def test_downloads_live_under_resources_dir_and_products_under_results_dir(tmp_path, paper_config):
    paper_config.update(resources_dir="/shared/calibadv-resources", results_dir="exp1")
    layout = Layout.of(validate_config(paper_config))
    assert layout.corpus == "/shared/calibadv-resources/corpus/wiki18.jsonl"
    assert layout.index == "/shared/calibadv-resources/index/wiki18-e5-flat.faiss"
    assert layout.qa("nq", "test") == "/shared/calibadv-resources/qa/nq/test.jsonl"
    assert layout.hub_model_dir("Qwen/Qwen2.5-7B") == "/shared/calibadv-resources/models/Qwen--Qwen2.5-7B"
    assert layout.train_data.startswith("exp1/real/") and layout.run_dir("m", "x", 0).startswith("exp1/")
    paper_config["index"]["source"] = "build"  # an index built here is a product
    assert Layout.of(validate_config(paper_config)).index == "exp1/real/index/index.faiss"
    tiny = Layout.of(validate_config(load_yaml(REPO / "config/tiny.yaml")))
    assert tiny.corpus.startswith("results/") and tiny.model_dir("tiny", "base").startswith("results/")


def test_a_filled_read_only_resources_dir_serves_a_new_results_dir_without_downloads(tmp_path, paper_config):
    """Downloads survive `rm -r results`: another results_dir (or user) finds them and
    schedules no download job, even when the shared folder is read-only."""
    shared = tmp_path / "shared"
    layout = Layout.of(validate_config({**paper_config, "resources_dir": str(shared)}))
    files = [layout.corpus, layout.index] + [layout.qa(b, "test") for b in paper_config["benchmarks"]]
    files += [layout.qa(b, s) for b in paper_config["train_benchmarks"] for s in ("train", "dev")]
    for path in files:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text("{}\n")
    for repo in hub_downloads(validate_config(paper_config)):
        Path(layout.hub_model_dir(repo)).mkdir(parents=True)
        Path(layout.hub_model_dir(repo), "config.json").write_text("{}")
    for path in sorted(shared.rglob("*"), reverse=True) + [shared]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        cfg = write_config(tmp_path / "c.yaml", base="config/config.yaml", resources_dir=str(shared),
                           results_dir=str(tmp_path / "exp2"))  # fmt: skip
        jobs = dry_run_jobs("--configfile", str(cfg), "-d", str(tmp_path))
    finally:
        for path in [shared, *shared.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    rules = {j["rule"] for j in jobs}
    assert not {r for r in rules if r.startswith("download_")}
    assert {"prepare_train", "train", "evaluate"} <= rules


def test_a_built_index_encodes_with_the_downloaded_encoder(tmp_path, paper_config):
    cfg = write_config(tmp_path / "c.yaml", base="config/config.yaml",
                       index={**paper_config["index"], "source": "build"})  # fmt: skip
    jobs = dry_run_jobs("--configfile", str(cfg), "-d", str(tmp_path))
    encodes = [j for j in jobs if j["rule"] == "encode_shard"]
    assert len(encodes) == paper_config["index"]["num_shards"]
    for job in encodes:
        assert "resources/models/intfloat--e5-base-v2" in job["input"]
        assert "--encoder resources/models/intfloat--e5-base-v2 " in job["shell"]
        assert "--passage-prefix 'passage: '" in job["shell"]
    assert "download_index" not in {j["rule"] for j in jobs}
