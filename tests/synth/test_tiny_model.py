"""The tiny policy: a real HF directory with single-token tags and a Qwen chat template."""

from __future__ import annotations

import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from calibadv.cli import main
from calibadv.data.prompt import PRETHINK_SUFFIX, TAGS, build_messages, prompt_ids, render_prompt
from calibadv.models.tokenizer import EOS_TOKEN, PAD_TOKEN


def test_directory_loads_with_auto_classes(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.model_type == "qwen2"
    n = sum(p.numel() for p in model.parameters())
    assert 1_000_000 <= n <= 5_000_000
    assert model.config.vocab_size >= len(tok)
    info = json.loads((tiny_model_dir / "tiny_model.json").read_text())
    assert info["parameters"] == n


def test_tags_are_single_tokens_that_decode_to_themselves(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    for tag in TAGS:
        ids = tok.encode(tag, add_special_tokens=False)
        assert len(ids) == 1, (tag, ids)
        assert tok.decode(ids, skip_special_tokens=True) == tag
    text = " <search> Who wrote The Salt Bell? </search>\n\n<information>Doc 1(Title: A) x</information>"
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok.convert_tokens_to_ids("<search>") in ids


def test_special_tokens_and_chat_template(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tok.eos_token == EOS_TOKEN and tok.pad_token == PAD_TOKEN
    assert tok.eos_token_id != tok.pad_token_id
    messages = build_messages("Where was Talo Brenik born")
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|im_start|>user\n") and text.endswith("<|im_start|>assistant\n")
    assert "Question: Where was Talo Brenik born?" in text
    assert len(tok.encode("<|im_start|>", add_special_tokens=False)) == 1
    assert tok.decode(tok.encode(text, add_special_tokens=False), skip_special_tokens=True) \
        == text.replace("<|im_start|>", "").replace("<|im_end|>", "")


def test_prompt_ids_append_think_only_with_prethink(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    messages = build_messages("Who wrote The Salt Bell?")
    plain = prompt_ids(tok, messages, prethink=False)
    pre = prompt_ids(tok, messages, prethink=True)
    think = tok.convert_tokens_to_ids(PRETHINK_SUFFIX)
    assert pre == plain + [think]
    assert tok.decode(pre) == render_prompt(tok, messages, prethink=True)
    assert plain[-1] != think


def test_round_trip_save_load_and_generate(tiny_model_dir, tmp_path):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.save_pretrained(tmp_path / "copy")
    tok.save_pretrained(tmp_path / "copy")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "copy")
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    ids = torch.tensor([prompt_ids(tok, build_messages("Who wrote The Salt Bell?"), True)])
    out = again.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8,
                         do_sample=False)
    assert out.shape[1] > ids.shape[1]
    assert isinstance(tok.decode(out[0, ids.shape[1]:]), str)


def test_build_is_deterministic_and_cli_reports_bad_paths(world_dir, tiny_model_dir, tmp_path,
                                                          capsys):
    rc = main(["build-tiny-model", "--corpus", str(world_dir / "corpus.jsonl"), "--qa",
               str(world_dir / "train.jsonl"), str(world_dir / "test" / "nq.jsonl"),
               "--out", str(tmp_path / "again")])
    assert rc == 0
    assert (tmp_path / "again" / "tokenizer.json").read_bytes() == \
        (tiny_model_dir / "tokenizer.json").read_bytes()
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == \
        (tiny_model_dir / "model.safetensors").read_bytes()
    rc = main(["build-tiny-model", "--corpus", str(tmp_path / "missing.jsonl"), "--qa",
               str(world_dir / "dev.jsonl"), "--out", str(tmp_path / "bad")])
    assert rc == 2
    assert "missing.jsonl" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
