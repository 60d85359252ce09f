"""Encoder: model-name resolution (offline), per-model prefixes, normalised embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from calibadv.errors import CalibAdvError
from calibadv.retrieval.encoder import (
    Encoder,
    EncoderConvention,
    convention_for,
    resolve_model_path,
)


def test_bundled_minilm_resolves_to_the_packaged_model_dir():
    path = Path(resolve_model_path("bundled:minilm"))
    assert (path / "config.json").is_file() and (path / "modules.json").is_file()


def test_local_dir_unknown_bundle_and_missing_paths(tmp_path):
    assert resolve_model_path(str(tmp_path)) == str(tmp_path.resolve())
    with pytest.raises(CalibAdvError, match="bundled:minilm"):
        resolve_model_path("bundled:nope")
    with pytest.raises(CalibAdvError, match="not a directory"):
        resolve_model_path(str(tmp_path / "absent"))


def test_hub_id_offline_without_cache_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(CalibAdvError, match="not in the local Hugging Face cache"):
        resolve_model_path("intfloat/e5-base-v2-not-cached")


def test_conventions_follow_the_model_family():
    e5 = convention_for("intfloat/e5-base-v2")
    assert (e5.query_prefix, e5.passage_prefix, e5.max_length) == (
        "query: ",
        "passage: ",
        256,
    )
    assert convention_for("bundled:minilm") == EncoderConvention()


def test_embeddings_are_unit_norm_float32(encoder):
    emb = encoder.encode_queries(["Where is Oslo?", "a much longer question " * 40])
    assert emb.dtype == np.float32 and emb.shape == (2, encoder.dim)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    assert encoder.encode_passages([]).shape == (0, encoder.dim)


def test_prefixes_are_prepended(encoder):
    from dataclasses import replace

    plain = encoder.encode_queries(["query: capital of Norway"])
    original = encoder.convention
    encoder.convention = replace(original, query_prefix="query: ")
    try:
        prefixed = encoder.encode_queries(["capital of Norway"])
    finally:
        encoder.convention = original
    np.testing.assert_allclose(prefixed, plain, atol=1e-6)


def test_package_exports_resolve_lazily():
    from calibadv import retrieval

    assert sorted(retrieval.__all__) == sorted(retrieval._EXPORTS)
    assert all(getattr(retrieval, name) for name in retrieval.__all__)


def test_server_threads_take_a_share_of_the_jobs_cpus(monkeypatch):
    """`serve` on a shared node: a quarter of the CPUs it may use, 1 to 4; OMP_NUM_THREADS wins."""
    from calibadv.retrieval import encoder as enc

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    for cpus, want in [(1, 1), (2, 1), (7, 1), (8, 2), (16, 4), (192, 4)]:
        monkeypatch.setattr(enc, "available_cpus", lambda c=cpus: c)
        assert enc.server_threads() == want
    monkeypatch.setenv("OMP_NUM_THREADS", "6")
    assert enc.server_threads() == 6


def test_a_server_in_a_thread_leaves_the_jobs_thread_count_alone():
    from calibadv.cli import build_parser
    from calibadv.retrieval.encoder import server_threads
    from calibadv.retrieval.server_config import ServerOptions, server_parts

    def options(argv):
        return ServerOptions.from_args(build_parser().parse_args(argv))

    argv = ["serve", "--corpus", "c", "--index", "i", "--encoder", "e"]
    own, _ = server_parts(options(argv))
    inside, _ = server_parts(options(argv), own_process=False)
    explicit, _ = server_parts(options([*argv, "--threads", "3"]), False)
    assert own.keywords["threads"] == server_threads()
    assert inside.keywords["threads"] is None and explicit.keywords["threads"] == 3


def test_precision_auto_is_fp16_on_gpu_and_exact_fp32_on_cpu():
    from calibadv.retrieval.precision import resolve_precision

    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("auto", "cuda:1") == "fp16"
    assert resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(CalibAdvError, match=r"fp16 needs a GPU, the device here is 'cpu'.*bf16"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(CalibAdvError, match=r"'half' is not one of auto, fp32, bf16, fp16"):
        resolve_precision("half", "cpu")


def test_bf16_on_cpu_stays_close_to_fp32_and_keeps_the_output_float32():
    """The real MiniLM under CPU autocast: float32 unit vectors, cosine to the exact fp32
    embedding above 0.999 (bf16 keeps 8 bits of mantissa; measured minimum 0.99997 on 2,560
    queries in benchmarks/bench_retrieval.py)."""
    texts = ["when was the bridge of Oslo built", "capital of Peru", "who wrote Hamlet"]
    exact = Encoder("bundled:minilm", device="cpu").encode_queries(texts)
    fast = Encoder("bundled:minilm", device="cpu", precision="bf16")
    assert fast.precision == "bf16"
    emb = fast.encode_queries(texts)
    assert emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert float((emb * exact).sum(axis=1).min()) > 0.999
