"""Every config value is checked before any job runs: a bad value fails `snakemake -n` with
the dotted key, the value and the allowed range (issue 20). One row per rule of the schema or
of the cross-field checks in calibadv.workflow.validation."""

from __future__ import annotations

import re

import pytest
import yaml
from wf_helpers import REPO, load_yaml, snakemake

from calibadv.workflow.schema import allowed_values
from calibadv.workflow.validation import group_relative, validate_config
from calibadv.errors import ConfigError


def setting(config: dict, dotted: str, value) -> None:
    """Set ``a.b.c`` in a nested config, creating mappings on the way."""
    *path, last = dotted.split(".")
    node = config
    for key in path:
        node = node.setdefault(key, {})
    node[last] = value


# (dotted key, bad value, what the message must say) on config/tiny.yaml (batch_size 6,
# mini_batch_size 3, group_size 8, topk_retrieval 3)
BAD_VALUES = [
    ("training.lr", -1, r"training\.lr: -1 is less than or equal to the minimum of 0; allowed: a number > 0"),
    ("training.lr", "fast", r"training\.lr: 'fast' is not of type 'number'; allowed: a number > 0"),
    ("training.batch_size", 0, r"training\.batch_size: 0 .*; allowed: an integer >= 1"),
    ("training.mini_batch_size", 4,
     r"training\.mini_batch_size: 4 is not allowed \(mini-batches must split the batch evenly\); "
     r"allowed: a divisor of training\.batch_size = 6: 1, 2, 3, 6"),
    ("models.tiny.training.mini_batch_size", 5,
     r"models\.tiny\.training\.mini_batch_size: 5 is not allowed .*a divisor of training\.batch_size = 6"),
    ("training.micro_batch_size", 0, r"training\.micro_batch_size: 0 .*; allowed: an integer >= 1"),
    ("training.group_size", 1,
     r"training\.group_size: 1 is not allowed \(method 'search-r1' of model 'tiny' computes advantages "
     r"within a question's group.*; allowed: an integer >= 2"),
    ("training.top_p", 1.5, r"training\.top_p: 1\.5 .*; allowed: a number in \(0, 1\]"),
    ("training.temperature", 0, r"training\.temperature: 0 .*; allowed: a number > 0"),
    ("training.clip_ratio", 0, r"training\.clip_ratio: 0 .*; allowed: a number in \(0, 1\]"),
    ("training.weight_decay", -0.1, r"training\.weight_decay: -0\.1 .*; allowed: a number >= 0"),
    ("training.kl_coef", -1, r"training\.kl_coef: -1 .*; allowed: a number >= 0"),
    ("training.collapse_delta", 2, r"training\.collapse_delta: 2 .*; allowed: a number in \[0, 1\]"),
    ("training.val_every", 0, r"training\.val_every: 0 .*; allowed: an integer >= 1"),
    ("training.steps", 0, r"training\.steps: 0 .*; allowed: an integer >= 1 \(or null\)"),
    ("training.dump_rollouts_at", [0, 6], r"training\.dump_rollouts_at\.0: 0 .*; allowed: an integer >= 1"),
    ("agent.max_turns", 0, r"agent\.max_turns: 0 .*; allowed: an integer >= 1"),
    ("agent.invalid_action", "retry", r"agent\.invalid_action: 'retry' .*; allowed: one of 'end', 'message'"),
    ("retrieval.topk", 5,
     r"retrieval\.topk: 5 is not allowed .*; allowed: an integer in \[1, retrieval\.topk_retrieval = 3\]"),
    ("retrieval.topk_retrieval", 0, r"retrieval\.topk_retrieval: 0 .*; allowed: an integer >= 1"),
    ("resources.train.gpus", -1, r"resources\.train\.gpus: -1 .*; allowed: an integer >= 0"),
    ("resources.default.mem_mb", 0, r"resources\.default\.mem_mb: 0 .*; allowed: an integer >= 1"),
    ("resources.evaluate.runtime", -5, r"resources\.evaluate\.runtime: -5 .*; allowed: an integer >= 1"),
    ("models.tiny.resources.train.cpus", 0, r"models\.tiny\.resources\.train\.cpus: 0 .*; allowed: an integer >= 1"),
    ("data.eval_limit", 0, r"data\.eval_limit: 0 .*; allowed: an integer >= 1 \(or null\)"),
    ("index.num_shards", 0, r"index\.num_shards: 0 .*; allowed: an integer >= 1"),
    ("seeds", [0, -1], r"seeds\.1: -1 is less than the minimum of 0; allowed: an integer >= 0"),
    ("seeds", [1, 1], r"seeds: \[1, 1\] has non-unique elements; allowed: a list .*without repeats"),
    ("seeds", [], r"seeds: \[\] should be non-empty; allowed: a list .*of at least 1 item"),
    ("seeds", 3, r"seeds: 3 is not of type 'array', 'null'; allowed: a list of at least 1 item\(s\) without repeats \(or null\)"),
    ("seeds", ["a"], r"seeds\.0: 'a' is not of type 'integer'; allowed: an integer >= 0"),
    ("models.tiny.seeds", [2, 2], r"models\.tiny\.seeds: \[2, 2\] has non-unique elements"),
    ("models.tiny.start_from", "big",
     r"models\.tiny\.start_from: 'big' is not allowed; allowed: another model of this config: none"),
    ("evaluation.batch_size", 0, r"evaluation\.batch_size: 0 .*; allowed: an integer >= 1"),
    ("models.tiny.sft_options.lr", 0, r"models\.tiny\.sft_options\.lr: 0 .*; allowed: a number > 0"),
    ("models.tiny.build_options.hidden_size", 100,
     r"models\.tiny\.build_options\.hidden_size: 100 .*; allowed: a multiple of heads = 6"),
    ("models.tiny.build_options.kv_heads", 4,
     r"models\.tiny\.build_options\.kv_heads: 4 .*; allowed: a divisor of heads = 6"),
    ("models.tiny.sft_options.quote_evidence", "yes",
     r"models\.tiny\.sft_options\.quote_evidence: 'yes' is not of type 'boolean'"),
    ("seed", -1, r"seed: -1 .*; allowed: an integer >= 0"),
    ("downloads.max_parallel", 0, r"downloads\.max_parallel: 0 .*; allowed: an integer >= 1"),
    ("downloads.where", "nodes", r"downloads\.where: 'nodes' is not one of .*; allowed: one of 'local', 'cluster'"),
    ("report.alpha_sweep.calibadv", 0, r"report\.alpha_sweep\.calibadv: 0 .*; allowed: a number > 0"),
    ("report.smooth_steps", 0, r"report\.smooth_steps: 0 .*; allowed: an integer >= 1"),
    ("world", "mars", r"world: 'mars' is not one of .*; allowed: one of 'synthetic', 'real'"),
    ("models.tiny.repo_id", "gpt2", r"models\.tiny\.repo_id: 'gpt2' does not match .*; allowed: a string matching"),
    ("resources_dir", "", r"resources_dir: '' should be non-empty; allowed: a string of at least 1 character"),
    # issue 30: values every schema bound lets through
    ("training.lr", float("nan"), r"training\.lr: nan is not allowed \(YAML \.nan/\.inf .*\); allowed: a finite number"),
    ("training.temperature", float("inf"), r"training\.temperature: inf is not allowed .*; allowed: a finite number"),
    ("resources_dir", "results", r"resources_dir: 'results' is not allowed \(deleting results_dir .*\); "
     r"allowed: a folder outside results_dir = 'results'"),
    ("resources_dir", "results/resources", r"resources_dir: 'results/resources' is not allowed"),
    ("retrieval.precision", "half", r"retrieval\.precision: 'half' is not one of .*; allowed: one of 'auto', 'fp32', 'bf16', 'fp16'"),
    ("agent.max_response_tokens", 40,
     r"agent\.max_response_tokens: 40 is not allowed \(a whole response must hold at least one turn\); "
     r"allowed: an integer >= agent\.max_tokens_per_turn = 48"),
]
IDS = [f"{key}={value!r}" for key, value, _ in BAD_VALUES]


@pytest.mark.parametrize("key, value, message", BAD_VALUES, ids=IDS)
def test_a_bad_value_is_rejected_by_the_validation_naming_key_value_and_range(key, value, message):
    config = load_yaml(REPO / "config/tiny.yaml")
    setting(config, key, value)
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


def test_fp16_encoding_on_a_cpu_server_is_rejected_naming_both_keys():
    config = load_yaml(REPO / "config/tiny.yaml")
    setting(config, "retrieval.device", "cpu")
    setting(config, "retrieval.precision", "fp16")
    with pytest.raises(ConfigError, match=r"retrieval\.precision: 'fp16' is not allowed "
                       r"\(retrieval\.device is 'cpu'; fp16 encoding needs a GPU .*bf16"):
        validate_config(config)
    setting(config, "retrieval.precision", "bf16")
    validate_config(config)


@pytest.mark.slow  # ~1.4 s of CPU per row: one Snakemake start each
@pytest.mark.parametrize("key, value, message", BAD_VALUES, ids=IDS)
def test_a_bad_value_fails_the_dry_run_naming_key_value_and_range(tmp_path, key, value, message):
    config = load_yaml(REPO / "config/tiny.yaml")
    setting(config, key, value)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    proc = snakemake("-n", "--configfile", str(path), "-d", str(tmp_path), check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert re.search(message, output), output[-3000:]
    assert "Job stats" not in output  # nothing was scheduled


def test_a_method_preset_with_a_probability_out_of_range_fails_validation(tiny_config):
    tiny_config["methods"] = {"calibadv-tau15": {"base": "calibadv", "calibration": {"tau": 1.5}}}
    tiny_config["models"]["tiny"]["methods"] = ["calibadv-tau15"]
    with pytest.raises(ConfigError, match=r"models\.tiny\.methods: 'calibadv-tau15'.*tau"):
        validate_config(tiny_config)


def test_only_group_relative_estimators_need_groups_of_two():
    """The group-size rule follows the method's estimator, not a list of method names."""
    assert group_relative({"name": "calibadv"})
    assert not group_relative({"estimator": "gae"})
    assert group_relative({"estimator": {"name": "grpo"}})


def test_allowed_values_reads_every_kind_of_bound():
    assert allowed_values({"type": "number", "exclusiveMinimum": 0}) == "a number > 0"
    assert allowed_values({"type": "number", "minimum": 0, "maximum": 1}) == "a number in [0, 1]"
    assert allowed_values({"type": "number", "exclusiveMinimum": 0, "maximum": 1}) == "a number in (0, 1]"
    assert allowed_values({"type": ["integer", "null"], "minimum": 1}) == "an integer >= 1 (or null)"
    assert allowed_values({"enum": ["flat", "hnsw"]}) == "one of 'flat', 'hnsw'"
    assert allowed_values({"type": "number", "exclusiveMaximum": 2.5}) == "a number < 2.5"


def test_the_shipped_configs_pass_every_check(tiny_config, paper_config):
    validate_config(tiny_config)
    validate_config(paper_config)
