"""Local generation engines by name, for code that holds an HF model in this process.

``kv`` (:class:`~calibadv.agent.kvcache.KVCacheGenerator`) is the default of the local backend:
a small decode loop that keeps each rollout's keys/values across turns. ``hf``
(:class:`~calibadv.agent.hf.HFGenerator`, ``model.generate``) is the reference it is tested
against, and the engine for architectures the kv loop does not run. Both return the same
tokens for the same model under greedy decoding.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from calibadv.agent.types import GenerateFn
from calibadv.errors import ConfigError


def _hf(model: Any, tokenizer: Any, **kw: Any) -> GenerateFn:
    from calibadv.agent.hf import HFGenerator

    return HFGenerator(model, tokenizer, **kw)


def _kv(model: Any, tokenizer: Any, **kw: Any) -> GenerateFn:
    from calibadv.agent.kvcache import KVCacheGenerator

    return KVCacheGenerator(model, tokenizer, **kw)


LOCAL_ENGINES: dict[str, Callable[..., GenerateFn]] = {"kv": _kv, "hf": _hf}


def local_generator(kind: str, model: Any, tokenizer: Any, *, temperature: float = 1.0,
                    top_p: float = 1.0, greedy: bool = False) -> GenerateFn:
    """The ``GenerateFn`` named ``kind`` over an in-process HF model."""
    try:
        make = LOCAL_ENGINES[kind]
    except KeyError:
        raise ConfigError(f"generator {kind!r} is not one of {', '.join(LOCAL_ENGINES)} "
                          "(agent.generator / --generator)") from None
    return make(model, tokenizer, temperature=temperature, top_p=top_p, greedy=greedy)
