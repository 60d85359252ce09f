"""Loading a HF causal LM as a policy (tokenizer padded on the left for generation)."""

from __future__ import annotations

import os
from pathlib import Path

from calibadv.errors import ConfigError

__all__ = ["load_policy"]


def load_policy(path: str | os.PathLike, dtype: str = "float32", device: str | None = None):
    """Load a HF causal LM and its tokenizer (pad token set, left padding for generation)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not Path(path).exists():
        raise ConfigError(f"model directory {path} does not exist")
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device), tokenizer
