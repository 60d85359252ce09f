"""Build the tiny policy: a BPE tokenizer and a randomly initialised ``Qwen2ForCausalLM``.

The embedded default trains this model on CPU in minutes, so it is small (about 2.5M
parameters) but otherwise an ordinary HF directory: every code path that loads a real Qwen
model (``AutoTokenizer``, ``AutoModelForCausalLM``, verl) loads it unchanged.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from calibadv.data.prompt import PROMPT_TEMPLATE, TAGS, build_messages
from calibadv.errors import CalibAdvError
from calibadv.io import atomic_write_json, iter_jsonl


@dataclass(frozen=True)
class TinyConfig:
    vocab_size: int = 4096
    hidden_size: int = 192
    intermediate_size: int = 512
    num_hidden_layers: int = 4
    num_attention_heads: int = 6
    num_key_value_heads: int = 2
    max_position_embeddings: int = 4096
    seed: int = 0


def _title_text(contents: str) -> tuple[str, str]:
    title, _, text = contents.partition("\n")
    return title.strip('"'), text


def training_texts(corpus: str | os.PathLike, qa_files: Iterable[str | os.PathLike]
                   ) -> Iterator[str]:
    """Everything the policy will read or write: passages as they appear in observations,
    questions and hop queries, the prompt, tags and the chat layout."""
    for row in iter_jsonl(corpus):
        contents = row.get("contents")
        if not isinstance(contents, str):
            raise CalibAdvError(f"{corpus}: row {row.get('id')!r} has no string 'contents'; "
                                "expected wiki-18 JSONL {\"id\", \"contents\"}")
        title, text = _title_text(contents)
        yield f"Doc 1(Title: {title}) {text}"
    for path in qa_files:
        for row in iter_jsonl(path):
            q = row.get("question", "")
            answers = " ".join(f"<answer> {a} </answer>" for a in row.get("golden_answers", []))
            hops = (row.get("metadata") or {}).get("hops") or []
            queries = " ".join(f"<search> {h.get('question', '')} </search>" for h in hops)
            yield f"{q}\n<think> {q} </think>\n{queries}\n{answers}"
            yield "<|im_start|>user\n" + build_messages(q)[0]["content"] + "<|im_end|>\n"
    scaffold = (PROMPT_TEMPLATE + "<|im_start|>assistant\n<think> </think>\n<search> </search>\n\n"
                "<information>Doc 1(Title: ) \nDoc 2(Title: ) \nDoc 3(Title: ) </information>\n\n"
                "<answer> </answer><|im_end|>\n")
    for _ in range(50):  # weight the fixed scaffold like a frequent text
        yield scaffold + " ".join(TAGS)


def build_tiny_model(corpus: str | os.PathLike, qa_files: list[str | os.PathLike],
                     out: str | os.PathLike, config: TinyConfig = TinyConfig()) -> dict[str, Any]:
    """Train the tokenizer, initialise the model and save both to ``out`` (atomically)."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from calibadv.models.tokenizer import EOS_TOKEN, PAD_TOKEN, train_tokenizer

    for path in [corpus, *qa_files]:
        if not Path(path).is_file():
            raise CalibAdvError(f"input file {str(path)!r} does not exist; run `calibadv synth` "
                                "first or pass the right --corpus/--qa path")
    tokenizer = train_tokenizer(training_texts(corpus, qa_files), vocab_size=config.vocab_size,
                                model_max_length=config.max_position_embeddings)
    eos_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    pad_id = tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    vocab = ((len(tokenizer) + 63) // 64) * 64  # pad the embedding for efficient matmuls
    model_config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    torch.manual_seed(config.seed)
    model = Qwen2ForCausalLM(model_config)
    model.generation_config = GenerationConfig(eos_token_id=[eos_id, pad_id], pad_token_id=pad_id,
                                               bos_token_id=None)
    n_params = sum(p.numel() for p in model.parameters())
    info = {"parameters": n_params, "vocab_size": len(tokenizer), "embedding_rows": vocab,
            "config": asdict(config)}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tokenizer.save_pretrained(tmp)
        model.save_pretrained(tmp, safe_serialization=True)
        atomic_write_json(tmp / "tiny_model.json", info)
        tmp.chmod(0o755)  # mkdtemp makes it private; a model directory is shared
        for f in tmp.iterdir():
            f.chmod(0o644)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


def replace_dir(src: Path, dst: Path) -> None:
    """Move a finished directory into place; an old ``dst`` is removed only once ``src`` is whole."""
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)
