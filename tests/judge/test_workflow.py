"""The judge in the workflow: config section, RunSpecs of judge-scored runs, the DAG, Table 5."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest

from calibadv.errors import ConfigError
from calibadv.judge.config import BUNDLED_SMOLLM2
from calibadv.workflow.judge import (
    judge_runs,
    labels_path,
    validate_on_submit_host,
    workflow_judge,
)
from calibadv.workflow.layout import REPO_ROOT
from calibadv.workflow.run_specs import run_spec_dict
from calibadv.workflow.validation import load_config, validate_config

PAPER = load_config(REPO_ROOT / "config" / "config.yaml")
TINY = load_config(REPO_ROOT / "config" / "tiny.yaml")


def test_the_paper_judges_calibadv_on_the_table5_model_through_deepseek():
    assert judge_runs(PAPER) == [("qwen2.5-7b", "calibadv")]
    j = workflow_judge(PAPER)
    assert j["server"] == "external" and j["base_url"] == "https://api.deepseek.com/v1"
    assert j["api_key_env"] == "DEEPSEEK_API_KEY" and j["cache"] == "results/real/judge/cache.sqlite"
    assert PAPER["judge"]["sample"] == {"per_checkpoint": 20, "seed": 0, "min_c": 1.0, "steps": "scored"}
    assert PAPER["training"]["dump_rollouts_at"] == [10, 50, 100, 150, 200]  # 20 × 5 = 100


def test_the_calibadv_judge_run_gets_its_endpoint_and_other_runs_none():
    spec = run_spec_dict(PAPER, "qwen2.5-7b", "calibadv-judge")
    assert spec["method"]["calibration"]["score"] == "judge"
    assert spec["judge"]["base_url"] == "https://api.deepseek.com/v1"
    assert spec["judge"]["model"] == "deepseek-chat"
    assert "sk-" not in str(spec["judge"])  # the key stays in the environment
    assert run_spec_dict(PAPER, "qwen2.5-7b", "calibadv")["judge"] is None


def test_the_embedded_default_serves_the_stand_in_locally():
    j = workflow_judge(TINY)
    assert TINY["judge"]["model"] == BUNDLED_SMOLLM2 and j["stand_in"] is True
    assert TINY["judge"]["sample"]["steps"] == "scored"  # the paper's sample: c = 1 steps
    assert j["verdict_tokens"] is True  # the stand-in answers with one verdict token
    assert j["server"] == "local" and j["model_path"] == "results/synthetic/models/judge/smollm2-135m-instruct"
    assert j["threads"] == TINY["resources"]["judge"]["cpus"]
    assert judge_runs(TINY) == [("tiny", "calibadv")]


def test_an_external_judge_without_a_url_fails_when_a_run_needs_it():
    cfg = copy.deepcopy(PAPER)
    cfg["judge"]["base_url"] = None
    with pytest.raises(ConfigError, match="judge.base_url"):
        run_spec_dict(validate_config(cfg), "qwen2.5-7b", "calibadv-judge")


def test_a_typo_in_the_judge_section_names_the_key():
    cfg = copy.deepcopy(PAPER)
    cfg["judge"]["concurency"] = 4
    with pytest.raises(ConfigError, match="judge.concurency"):
        validate_config(cfg)


def test_human_labels_live_in_their_own_file_per_run():
    assert labels_path(PAPER, "qwen2.5-7b", "calibadv", 0) == "labels/judge/qwen2.5-7b/calibadv/seed_0.csv"


@pytest.mark.parametrize("where", ["results", "results/real/judge", "./results/labels"])
def test_a_labels_dir_inside_the_results_tree_is_refused_naming_it(where):
    cfg = copy.deepcopy(PAPER)
    cfg["judge"]["labels_dir"] = where
    with pytest.raises(ConfigError, match=f"judge.labels_dir: {where} lies inside results_dir"):
        workflow_judge(validate_config(cfg))


def _local_vllm(gpus=0, **judge):
    cfg = copy.deepcopy(PAPER)
    cfg["judge"].update(server="local", engine="vllm", **judge)
    cfg["resources"]["judge"]["gpus"] = gpus
    return validate_config(cfg)


def test_a_local_vllm_judge_without_gpus_is_a_config_error_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match="judge.gpus: 0 with judge.server: local, engine: vllm"):
        workflow_judge(_local_vllm(model_path=str(tmp_path)))


def test_a_local_vllm_judge_without_a_model_directory_is_a_config_error_naming_the_key():
    cfg = _local_vllm(gpus=2)
    with pytest.raises(ConfigError, match="judge.model_path: None with judge.server: local"):
        workflow_judge(cfg)
    cfg["judge"]["model_path"] = "deepseek-ai/DeepSeek-V3.2"  # a hub id: no download offline
    with pytest.raises(ConfigError, match="judge.model_path: 'deepseek-ai/DeepSeek-V3.2'"):
        workflow_judge(cfg)


def test_a_local_vllm_judge_needs_no_api_key(tmp_path, monkeypatch):
    from calibadv.judge.config import JudgeConfig

    monkeypatch.delenv("DEEPSEEK_API_KEY", raising=False)
    j = workflow_judge(_local_vllm(gpus=2, model_path=str(tmp_path)))
    assert j["api_key_env"] == "DEEPSEEK_API_KEY"  # kept from the paper config …
    settings = JudgeConfig.from_dict(j).settings("http://127.0.0.1:1/v1", "judge")
    assert settings.api_key() == "EMPTY"  # … but a server the job starts is not asked for it


def test_the_external_judge_validates_on_the_submit_host_by_default():
    assert PAPER["judge"]["where"] == "local" and validate_on_submit_host(PAPER)
    cfg = copy.deepcopy(PAPER)
    cfg["judge"]["where"] = "cluster"
    assert not validate_on_submit_host(validate_config(cfg))
    assert not validate_on_submit_host(TINY)  # a local server is a job


def test_a_changed_sample_reruns_judge_validate(tmp_path):
    """Snakemake's params trigger sees judge.sample and judge.helpful_min (a param that reads
    input/output is not compared, which is how a changed sample used to go unnoticed)."""
    run = tmp_path / "results/real/runs/qwen2.5-7b/calibadv/seed_0"
    out = tmp_path / "results/real/judge/qwen2.5-7b/calibadv/seed_0"
    run.mkdir(parents=True)
    out.mkdir(parents=True)
    (run / "done.json").write_text("{}")
    for name in ("summary.json", "verdicts.jsonl", "sheet.html"):
        (out / name).write_text("")
    target = "results/real/judge/qwen2.5-7b/calibadv/seed_0/summary.json"
    # record the job's metadata (params included) as a finished run would
    touch = _snakemake(tmp_path, target, "--touch", "-R", "judge_validate", "--allowed-rules",
                       "judge_validate", "-c1")
    assert touch.returncode == 0, touch.stderr[-2000:]
    assert "Nothing to be done" in _snakemake(tmp_path, target, "-n").stdout
    for change in ("  sample: {per_checkpoint: 5}", "  helpful_min: 0.5"):
        (tmp_path / "over.yaml").write_text("judge:\n" + change + "\n")
        dry = _snakemake(tmp_path, target, "-n", extra_config=tmp_path / "over.yaml")
        assert dry.returncode == 0, dry.stderr[-2000:]
        assert "rule judge_validate:" in dry.stdout
        assert "Params have changed since last execution" in dry.stdout


def _snakemake(workdir, target, *args, extra_config=None):
    configs = [str(REPO_ROOT / "config" / "config.yaml")]
    if extra_config:
        configs.append(str(extra_config))
    return subprocess.run(
        [sys.executable, "-m", "snakemake", target, *args, "-d", str(workdir), "-s",
         str(REPO_ROOT / "Snakefile"), "--configfile", *configs],
        capture_output=True, text=True, cwd=REPO_ROOT,
    )


def test_the_paper_dry_run_has_the_judge_stage_and_the_judge_train_job(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-p", "--configfile",
         str(REPO_ROOT / "config" / "config.yaml"), "-d", str(tmp_path), "-s",
         str(REPO_ROOT / "Snakefile")],
        capture_output=True, text=True, cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    validate = [line for line in out.splitlines() if "calibadv judge validate" in line]
    assert len(validate) == 1
    assert "--rollouts results/real/runs/qwen2.5-7b/calibadv/seed_0/rollouts" in validate[0]
    assert '"base_url": "https://api.deepseek.com/v1"' in validate[0]
    assert "--per-checkpoint 20" in validate[0]
    specs = [line for line in out.splitlines()
             if "calibadv spec --json" in line and "runs/qwen2.5-7b/calibadv-judge/" in line]
    assert len(specs) == 1 and '"judge": {"api_key_env": "DEEPSEEK_API_KEY"' in specs[0]
    assert "results/real/runs/qwen2.5-7b/calibadv-judge/seed_0/done.json" in out


def test_a_fully_cached_rerun_starts_no_local_server(tmp_path):
    from calibadv.judge.cache import CachedVerdict, VerdictCache, cache_key
    from calibadv.judge.config import JudgeConfig, endpoint_for, request_model
    from calibadv.judge.prompt import TEMPLATE_VERSION
    from calibadv.judge.server import LocalServer

    cfg = JudgeConfig(server="local", model="judge", model_path=str(tmp_path / "no-such-model"),
                      cache=str(tmp_path / "c.sqlite"))
    assert request_model(cfg) == LocalServer("transformers", cfg.model_path).request_model
    prompts = [[{"role": "user", "content": f"Question: q{i}"}] for i in range(3)]
    with VerdictCache(cfg.cache) as cache:
        for p in prompts:
            cache.put(cache_key(request_model(cfg), TEMPLATE_VERSION, p), request_model(cfg),
                      TEMPLATE_VERSION, p, CachedVerdict(1.0, "ok", ["VERDICT: 1"], 1, 1))
    # the model directory does not exist: a server start would fail
    with endpoint_for(cfg, prompts) as (url, model):
        assert model == request_model(cfg)
