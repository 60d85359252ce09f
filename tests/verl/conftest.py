"""Fixtures of the verl-backend tests: verl's real config, the paper's RunSpec, a real tokenizer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from calibadv.methods.presets import get_method
from calibadv.spec import RunSpec, run_spec_from_dict

URL = "http://127.0.0.1:8123"


def paper_spec(method: str = "calibadv", **overrides) -> RunSpec:
    """The paper's CalibAdv run on Qwen2.5-7B, 8 GPUs, as the workflow would write it."""
    data = {
        "name": f"qwen2.5-7b-{method}",
        "backend": "verl",
        "model": {"path": "/models/Qwen2.5-7B", "dtype": "bfloat16"},
        "method": get_method(method),
        "data": {"train": "/data/train.parquet", "val": "/data/dev.parquet"},
        "retrieval": {"url": URL},
        "training": {"dump_rollouts_at": [10, 50]},
        "resources": {"gpus": 8, "nodes": 1, "cpus": 64},
    }
    for key, value in overrides.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return run_spec_from_dict(data)


def verl_config_dir() -> str:
    import verl

    return os.path.join(os.path.dirname(verl.__file__), "trainer", "config")


def compose(overrides: list[str]):
    """verl's ``ppo_trainer`` config with ``overrides``, composed as ``main_ppo`` does."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=verl_config_dir(), version_base=None):
        return hydra_compose(config_name="ppo_trainer", overrides=overrides)


@pytest.fixture(scope="session")
def tokenizer():
    """The tiny world's byte-level BPE tokenizer (real HF fast tokenizer, tags = one id)."""
    from calibadv.models.tokenizer import train_tokenizer

    texts = [
        "<think> who wrote it </think><search> author of the book </search>",
        "<information>Doc 1(Title: Book) The book was written by Ann Lee.</information>",
        "<think> it is Ann </think><answer> Ann Lee </answer>",
        "Answer the question below. Question: who wrote the book?",
    ] * 20
    return train_tokenizer(texts, vocab_size=600)


@pytest.fixture(scope="session")
def composed_paper_config():
    from calibadv.train.verl.overrides import build_overrides

    return compose(build_overrides(paper_spec(), Path("/runs/q7"), URL))


@pytest.fixture(scope="session")
def make_spec():
    return paper_spec


@pytest.fixture(scope="session")
def compose_config():
    return compose


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Path:
    """A real HF directory (tiny random Qwen2 + the tiny tokenizer) for verl's model config,
    its dataset, its reward workers and the attention check."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    d = tmp_path_factory.mktemp("tiny-qwen2")
    tokenizer.save_pretrained(d)
    cfg = Qwen2Config(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                      max_position_embeddings=4096, tie_word_embeddings=True,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    Qwen2ForCausalLM(cfg).save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def ray_tq():
    """One local Ray cluster and TransferQueue for every test here that needs them."""
    import ray
    import transfer_queue as tq
    from omegaconf import OmegaConf

    ray.init(num_cpus=4, include_dashboard=False, logging_level="ERROR",
             runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
    conf = OmegaConf.load(Path(verl_config_dir()) / "transfer_queue" / "transfer_queue.yaml")
    conf.backend.SimpleStorage.num_data_storage_units = 1
    tq.init(conf)
    yield tq
    tq.close()
    ray.shutdown()
