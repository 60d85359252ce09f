"""The workflow config: schema validation with the bad key named, defaults, run specs."""

from __future__ import annotations

import copy
import json
import re

import pytest
import yaml
from wf_helpers import REPO, load_yaml

from calibadv.workflow.layout import Layout
from calibadv.workflow.resources import snakemake_resources, stage_resources
from calibadv.workflow.run_specs import run_spec_dict
from calibadv.workflow.runs import model_seeds, runs, seed_runs, start_point_runs
from calibadv.workflow.sources import start_point_checkpoint
from calibadv.workflow.validation import load_config, validate_config
from calibadv.cli import main
from calibadv.errors import ConfigError
from calibadv.spec import load_run_spec


def test_both_shipped_configs_validate_and_fill_defaults(tiny_config, paper_config):
    tiny = validate_config(tiny_config)
    paper = validate_config(paper_config)
    assert tiny["world"] == "synthetic" and tiny["backend"] == "local"
    assert paper["world"] == "real" and paper["backend"] == "verl"
    # a default the file leaves out is filled in from the schema
    assert tiny["report"]["formats"] == ["md", "tex", "html"]
    assert tiny["index"]["kind"] == "flat"


@pytest.mark.parametrize(
    "patch, key",
    [
        (lambda c: c.update(modelz={}), "modelz"),
        (lambda c: c["models"]["tiny"].update(sftt=True), "models.tiny.sftt"),
        (lambda c: c["index"].update(shards=2), "index.shards"),
        (lambda c: c["report"]["ablation"].update(row={}), "report.ablation.row"),
        (lambda c: c.setdefault("resources", {}).setdefault("train", {}).update(gpu=1), "resources.train.gpu"),
    ],
)
def test_a_typoed_key_is_rejected_with_its_dotted_name(tiny_config, patch, key):
    patch(tiny_config)
    with pytest.raises(ConfigError, match=rf"unknown key {re.escape(key)}\b"):
        validate_config(tiny_config)


def test_typos_inside_training_sections_are_caught_before_any_job_runs(tiny_config):
    tiny_config["models"]["tiny"]["training"] = {"learning_rate": 1e-5}
    with pytest.raises(ConfigError, match=r"model 'tiny'.*unknown key training\.learning_rate"):
        validate_config(tiny_config)


@pytest.mark.parametrize(
    "patch, message",
    [
        (lambda c: c.update(world="mars"), r"world: 'mars' is not one of"),
        (lambda c: c.update(benchmarks=["nq", "squad"]), r"benchmarks\.1: 'squad' is not one of"),
        (lambda c: c["models"]["tiny"].update(source="hub"), r"models\.tiny\.repo_id: required"),
        (lambda c: c["index"].update(source="prebuilt"), r"index\.source: 'prebuilt' exists only"),
        (lambda c: c["report"]["ablation"].update(model="gpt"), r"report\.ablation\.model: 'gpt'"),
    ],
)
def test_bad_values_name_the_key(tiny_config, patch, message):
    patch(tiny_config)
    with pytest.raises(ConfigError, match=message):
        validate_config(tiny_config)


def test_every_run_of_both_configs_resolves_to_a_valid_run_spec(tiny_config, paper_config):
    for raw in (tiny_config, paper_config):
        config = validate_config(raw)
        for model, method in runs(config):
            spec = run_spec_dict(config, model, method)
            assert spec["method"]["name"] == method
            assert spec["backend"] == config["backend"]


def test_paper_config_carries_the_papers_training_setup(paper_config):
    config = validate_config(paper_config)
    spec = run_spec_dict(config, "qwen2.5-7b", "calibadv")
    t, a, r = spec["training"], spec["agent"], spec["retrieval"]
    assert (t["batch_size"], t["group_size"], t["mini_batch_size"]) == (512, 5, 256)
    assert (t["lr"], t["weight_decay"], t["grad_clip"], t["kl_coef"]) == (5e-7, 0.01, 1.0, 0.0)
    assert (t["temperature"], t["top_p"], t["clip_ratio"]) == (1.0, 0.95, 0.2)
    assert (a["max_turns"], a["max_tokens_per_turn"]) == (4, 1024)
    assert (r["topk_retrieval"], r["topk"]) == (20, 3)
    assert spec["resources"]["gpus"] == 8 and spec["model"]["dtype"] == "bfloat16"
    assert run_spec_dict(config, "qwen2.5-3b", "calibadv")["training"]["epochs"] == 2
    assert run_spec_dict(config, "qwen2.5-7b", "calibadv")["training"]["epochs"] == 1


def test_spec_points_at_the_layouts_files_and_one_shared_warm_start(tiny_config):
    config = validate_config(tiny_config)
    layout = Layout.of(config)
    plain = run_spec_dict(config, "tiny", "search-r1")
    pre = run_spec_dict(config, "tiny", "calibadv")
    assert config["models"]["tiny"]["sft_formats"] == "shared"
    assert plain["model"]["path"] == pre["model"]["path"] == layout.model_dir("tiny", "sft")
    assert pre["data"]["train"] == layout.train_data == "results/synthetic/data/train.parquet"
    assert pre["retrieval"]["index"] == layout.index


def test_per_format_warm_starts_give_prethink_methods_their_own(tiny_config):
    tiny_config["models"]["tiny"]["sft_formats"] = "per_format"
    config = validate_config(tiny_config)
    layout = Layout.of(config)
    assert run_spec_dict(config, "tiny", "search-r1")["model"]["path"] == layout.model_dir(
        "tiny", "sft")
    assert run_spec_dict(config, "tiny", "calibadv")["model"]["path"] == layout.model_dir(
        "tiny", "sft-prethink")


def test_an_unknown_sft_format_is_named(tiny_config):
    tiny_config["models"]["tiny"]["sft_formats"] = "both"
    with pytest.raises(ConfigError, match="models.tiny.sft_formats"):
        validate_config(tiny_config)


def test_a_method_preset_in_the_config_of_the_workflow_is_one_entry(tiny_config):
    tiny_config["methods"] = {"calibadv-tau09": {"base": "calibadv", "calibration": {"tau": 0.9}}}
    tiny_config["models"]["tiny"]["methods"] = ["calibadv", "calibadv-tau09"]
    tiny_config["counterfactual"]["enabled"] = False  # its methods are not all run here
    config = validate_config(tiny_config)
    spec = run_spec_dict(config, "tiny", "calibadv-tau09")
    assert spec["method"]["calibration"]["tau"] == 0.9
    assert spec["method"]["prethink"] is True


def test_stepsearch_runs_on_the_synthetic_world_and_is_refused_on_the_real_data(tiny_config,
                                                                                paper_config):
    """StepSearch's rewards need gold paragraphs and sub-query keys: the synthetic world's
    questions have them (a run spec with the gae estimator), the real
    training mix does not, and the paper config's DAG fails at once saying so."""
    tiny_config["models"]["tiny"]["methods"] = ["stepsearch"]
    tiny_config["counterfactual"]["enabled"] = False  # its methods are not run here
    spec = run_spec_dict(validate_config(tiny_config), "tiny", "stepsearch")
    assert spec["method"]["estimator"]["name"] == "gae"
    paper_config["models"]["qwen2.5-7b"]["methods"] = ["stepsearch"]
    config = validate_config(paper_config)
    with pytest.raises(ConfigError, match=r"run qwen2\.5-7b/stepsearch: .*gold supporting "
                                          r"paragraphs.*released training set.*world: synthetic"):
        run_spec_dict(config, "qwen2.5-7b", "stepsearch")


def test_an_unknown_method_fails_validation_naming_it(tiny_config):
    tiny_config["models"]["tiny"]["methods"] = ["calibadv-typo"]
    with pytest.raises(ConfigError, match=r"models\.tiny\.methods: 'calibadv-typo'.*known methods"):
        validate_config(tiny_config)


def test_model_overrides_win_over_shared_sections(tiny_config):
    tiny_config["models"]["tiny"]["training"] = {"lr": 3.0e-4}
    tiny_config["models"]["tiny"]["resources"] = {"train": {"gpus": 2, "gpu_model": "a100"}}
    config = validate_config(tiny_config)
    spec = run_spec_dict(config, "tiny", "calibadv")
    assert spec["training"]["lr"] == 3.0e-4
    assert spec["training"]["steps"] == tiny_config["training"]["steps"]
    assert spec["resources"]["gpus"] == 2
    res = snakemake_resources(stage_resources(config, "train", "tiny"), attempt=2)
    assert res["gpu"] == 2 and res["gpu_model"] == "a100"
    base = stage_resources(config, "train", "tiny")
    assert res["runtime"] == 2 * base["runtime"] and res["mem_mb"] == 2 * base["mem_mb"]


def test_cpu_stages_request_no_gpu(tiny_config):
    config = validate_config(tiny_config)
    res = snakemake_resources(stage_resources(config, "evaluate", "tiny"))
    assert "gpu" not in res and "gpu_model" not in res
    assert res["nodes"] == 1  # the SLURM plugin rejects nodes=0


def test_spec_command_writes_a_loadable_run_spec(tmp_path):
    out = tmp_path / "spec.yaml"
    assert main(["spec", "--config", str(REPO / "config/tiny.yaml"), "--model", "tiny",
                 "--method", "calibadv", "--out", str(out)]) == 0  # fmt: skip
    spec = load_run_spec(out)
    assert spec.name == "tiny/calibadv" and spec.method["calibration"]["rebalance"] is True


def test_spec_command_from_json_rejects_an_unknown_key(tmp_path, capsys):
    config = load_config(REPO / "config/tiny.yaml")
    data = copy.deepcopy(run_spec_dict(config, "tiny", "calibadv"))
    data["training"]["stepz"] = 3
    rc = main(["spec", "--json", json.dumps(data), "--out", str(tmp_path / "s.yaml")])
    assert rc == 2
    assert "training.stepz" in capsys.readouterr().err
    assert not (tmp_path / "s.yaml").exists()


def test_paper_results_hold_every_table_of_the_reference():
    paper = load_yaml(REPO / "config/paper_results.yaml")
    assert len(paper["table1_main"]) == 15
    calib7 = next(r for r in paper["table1_main"] if r["model"] == "Qwen2.5-7B" and r["method"] == "CalibAdv")
    assert calib7["scores"]["average"] == 56.70 and calib7["collapse_point"] == "none"
    assert len(paper["table2_ablation"]) == 8 and len(paper["table3_proxy"]) == 2
    assert paper["table3_proxy"][1]["time_per_step_s"] == 1351
    assert [r["evaluator"] for r in paper["table5_judge"]] == ["LLM (DeepSeek-V3.2)", "Human"]
    assert {r["dataset"] for r in paper["table7_datasets"]} >= {"HotpotQA", "Bamboogle"}
    assert yaml.safe_dump(paper)  # round-trips


# --------------------------------------------------------------------------- seeds


def test_a_config_without_seeds_runs_one_seed_per_run_as_before(tiny_config, paper_config):
    config = validate_config(tiny_config)
    assert config["seeds"] is None and model_seeds(config, "tiny") == [0]
    assert seed_runs(config)[:2] == [("tiny", "search-r1", 0), ("tiny", "prethink", 0)]
    spec = run_spec_dict(config, "tiny", "calibadv")
    assert spec["seed"] == 0 and spec["name"] == "tiny/calibadv"  # no seed in a lone run's name
    paper = validate_config(paper_config)  # the paper: one seed per run
    assert all(s == 0 for *_, s in seed_runs(paper)) and len(seed_runs(paper)) == len(runs(paper))
    tiny_config["models"]["tiny"]["seed"] = 7  # a model's own seed still applies
    assert model_seeds(validate_config(tiny_config), "tiny") == [7]


def test_seeds_make_one_run_per_model_method_and_seed_each_with_its_rl_seed(tiny_config):
    tiny_config["seeds"] = [3, 1]
    config = validate_config(tiny_config)
    all_runs = seed_runs(config)
    assert len(all_runs) == 2 * len(runs(config)) and all_runs[:2] == [("tiny", "search-r1", 3), ("tiny", "search-r1", 1)]
    spec = run_spec_dict(config, "tiny", "calibadv", 1)
    assert spec["seed"] == 1 and spec["name"] == "tiny/calibadv/seed_1"
    assert run_spec_dict(config, "tiny", "calibadv")["seed"] == 3  # the first seed by default
    layout = Layout.of(config)
    assert layout.run_dir("tiny", "calibadv", 1) == "results/synthetic/runs/tiny/calibadv/seed_1"
    assert layout.proxy("tiny", "calibadv", 1) == "results/synthetic/proxy/tiny/calibadv/seed_1.json"
    assert layout.eval_dir("tiny", "calibadv", 1, "nq") == "results/synthetic/eval/tiny/calibadv/seed_1/nq"
    with pytest.raises(ConfigError, match=r"seed 2 is not a seed of model 'tiny' \(its seeds: 3, 1"):
        run_spec_dict(config, "tiny", "calibadv", 2)
    tiny_config["models"]["tiny"]["seeds"] = [5]  # a model's own list wins
    assert model_seeds(validate_config(tiny_config), "tiny") == [5]


def test_start_from_reuses_another_models_warm_start_under_other_training(tiny_config):
    tiny_config["models"]["stress"] = {"source": "tiny", "start_from": "tiny", "methods": ["search-r1"],
                                       "training": {"lr": 1.0e-3}}  # fmt: skip
    config = validate_config(tiny_config)
    spec = run_spec_dict(config, "stress", "search-r1")
    assert spec["model"]["path"] == Layout.of(config).model_dir("tiny", "sft")
    assert spec["training"]["lr"] == 1.0e-3 and run_spec_dict(config, "tiny", "search-r1")["training"]["lr"] == 1.0e-4
    tiny_config["models"]["again"] = {"source": "tiny", "start_from": "stress"}
    with pytest.raises(ConfigError, match=r"models\.again\.start_from: 'stress' is not allowed \(model 'stress' "
                                          r"itself starts from 'tiny'\)"):  # fmt: skip
        validate_config(tiny_config)


def test_the_start_point_is_evaluated_once_per_start_model_through_the_reference_methods_run(tiny_config):
    # on in the tiny config: Table 1 shows what RL changed against the model it started from
    config = validate_config(copy.deepcopy(tiny_config))
    assert start_point_runs(config) == {"tiny": ("tiny", "search-r1", 0)}
    assert start_point_checkpoint(config, "tiny", "search-r1") == Layout.of(config).model_dir("tiny", "sft")
    # a model that starts from tiny's weights shares its evaluation
    tiny_config["counterfactual"]["enabled"] = False  # its methods are not all run below
    tiny_config["models"]["stress"] = {"source": "tiny", "start_from": "tiny", "methods": ["search-r1"]}
    tiny_config["default_methods"] = ["calibadv", "search-r1"]
    assert start_point_runs(validate_config(copy.deepcopy(tiny_config))) == {"tiny": ("tiny", "search-r1", 0)}
    # without the reference method, the model's first run gives spec and checkpoint
    tiny_config["default_methods"] = ["calibadv"]
    del tiny_config["models"]["stress"]
    assert start_point_runs(validate_config(copy.deepcopy(tiny_config))) == {"tiny": ("tiny", "calibadv", 0)}
    # off by default (the paper config reproduces the paper's rows only)
    tiny_config["evaluation"].pop("start_point")
    assert validate_config(tiny_config)["evaluation"]["start_point"] is False
    assert start_point_runs(validate_config(tiny_config)) == {}


def test_the_start_points_folder_cannot_be_a_runs_folder(tiny_config):
    layout = Layout.of(validate_config(tiny_config))
    name = layout.start_eval_run_dir("tiny").rsplit("/", 1)[1]
    assert not re.match(load_yaml(REPO / "workflow/schemas/config.schema.yaml")["$defs"]["method_list"]["items"]["pattern"], name)
    assert layout.start_eval_dir("tiny", "nq") == f"{layout.start_eval_run_dir('tiny')}/nq"


def test_a_counterfactual_method_that_is_not_run_is_refused_naming_it_and_the_fix(tiny_config):
    """The counterfactual update reads each method's run spec: a method the model does not run
    has none, so the config says which and how to fix it (not a missing-file error later)."""
    tiny_config["default_methods"] = ["calibadv", "prethink"]
    with pytest.raises(ConfigError, match=r"counterfactual\.methods: 'prethink-softpen', "
                                          r"'uniform-neg' not run for model 'tiny'.*"
                                          r"counterfactual\.enabled: false"):
        validate_config(tiny_config)

