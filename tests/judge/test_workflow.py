"""The judge in the workflow: config section, RunSpecs of judge-scored runs, the DAG, Table 5."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest

from calibadv.errors import ConfigError
from calibadv.judge.config import BUNDLED_SMOLLM2
from calibadv.workflow.judge import human_labels_for, judge_runs, workflow_judge
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
    assert TINY["judge"]["sample"]["steps"] == "searched"  # no c = 1 steps at tiny scale
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


def test_human_labels_as_a_path_or_per_method():
    cfg = copy.deepcopy(PAPER)
    cfg["judge"]["human_labels"] = "filled.csv"
    assert human_labels_for(cfg, "calibadv") == "filled.csv"
    assert human_labels_for(cfg, "other") is None
    cfg["judge"]["human_labels"] = {"other": "o.csv"}
    assert human_labels_for(cfg, "other") == "o.csv" and human_labels_for(cfg, "calibadv") is None


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
