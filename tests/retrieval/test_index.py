"""Index build: shard arithmetic, resumable shard encoding, merge into FAISS, loading."""

from __future__ import annotations

import itertools
import json

import faiss
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from calibadv.errors import CalibAdvError
from calibadv.retrieval.corpus import Corpus
from calibadv.retrieval.index import encode_shard, load_index, merge_shards, shard_range


@given(st.integers(0, 10_000), st.integers(1, 64))
def test_shards_tile_the_corpus_evenly(n, num):
    ranges = [shard_range(n, i, num) for i in range(num)]
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    sizes = [e - s for s, e in ranges]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize(("shard", "num"), [(2, 2), (-1, 2), (0, 0)])
def test_bad_shard_numbers(shard, num):
    with pytest.raises(CalibAdvError, match="--"):
        shard_range(10, shard, num)


class CountingEncoder:
    """The real encoder, counting the passages it is asked to encode."""

    def __init__(self, inner):
        self.inner = inner
        self.name = inner.name
        self.encoded = 0

    def encode_passages(self, passages):
        self.encoded += len(passages)
        return self.inner.encode_passages(passages)


class Interrupted(Exception):
    pass


def test_shard_encoding_resumes_after_a_kill(
    tmp_path, corpus_path, encoder, embeddings
):
    corpus = Corpus(corpus_path)
    out = tmp_path / "shard.npy"
    first = CountingEncoder(encoder)

    def die_after_two(k):
        if k == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        encode_shard(corpus, first, 1, 2, out, chunk_size=8, on_chunk=die_after_two)
    assert not out.exists()  # no half output that a workflow would take for done
    assert first.encoded == 16
    assert len(list((tmp_path / "shard.npy.parts").glob("chunk_*.npy"))) == 2

    second = CountingEncoder(encoder)
    encode_shard(corpus, second, 1, 2, out, chunk_size=8)
    assert second.encoded == 28 - 16  # only the missing chunks
    np.testing.assert_allclose(np.load(out), embeddings[28:], atol=1e-5)
    assert not (tmp_path / "shard.npy.parts").exists()
    meta = json.loads((tmp_path / "shard.npy.json").read_text())
    assert (meta["start"], meta["end"], meta["dim"]) == (28, 56, encoder.dim)


def test_resume_refuses_chunks_of_another_job(tmp_path, corpus_path, encoder):
    corpus = Corpus(corpus_path)
    out = tmp_path / "shard.npy"
    with pytest.raises(Interrupted):
        encode_shard(
            corpus,
            encoder,
            0,
            2,
            out,
            chunk_size=8,
            on_chunk=lambda k: (_ for _ in ()).throw(Interrupted),
        )
    with pytest.raises(CalibAdvError, match="different job"):
        encode_shard(corpus, encoder, 0, 2, out, chunk_size=16)


def test_merged_flat_index_holds_the_shards_in_corpus_order(index_path, embeddings):
    index = load_index(index_path)
    assert isinstance(index, faiss.IndexFlatIP) and index.ntotal == len(embeddings)
    np.testing.assert_array_equal(index.reconstruct_n(0, index.ntotal), embeddings)


def test_merge_orders_shards_by_their_rows_and_spots_gaps(
    tmp_path, data_dir, embeddings
):
    shards = [data_dir / "emb-1.npy", data_dir / "emb-0.npy"]  # given out of order
    out = merge_shards(shards, tmp_path / "i.faiss")
    np.testing.assert_array_equal(
        load_index(out).reconstruct_n(0, len(embeddings)), embeddings
    )
    with pytest.raises(CalibAdvError, match="some shards are missing"):
        merge_shards([data_dir / "emb-0.npy"], tmp_path / "j.faiss")
    with pytest.raises(CalibAdvError, match="row 0 was expected"):
        merge_shards([data_dir / "emb-1.npy"], tmp_path / "j.faiss")
    assert not (tmp_path / "j.faiss").exists()


def test_hnsw_index_finds_the_exact_neighbours_on_a_small_corpus(
    tmp_path, data_dir, embeddings
):
    out = merge_shards(
        [data_dir / "emb-0.npy", data_dir / "emb-1.npy"],
        tmp_path / "h.faiss",
        kind="hnsw",
        hnsw_m=16,
    )
    index = load_index(out)
    assert isinstance(index, faiss.IndexHNSWFlat)
    _, got = index.search(embeddings[:5], 3)
    _, exact = load_index(data_dir / "index.faiss").search(embeddings[:5], 3)
    np.testing.assert_array_equal(got, exact)


def test_bad_inputs_to_merge_and_load(tmp_path, data_dir):
    with pytest.raises(CalibAdvError, match="unknown index kind"):
        merge_shards([data_dir / "emb-0.npy"], tmp_path / "x.faiss", kind="ivf")
    with pytest.raises(CalibAdvError, match="does not exist"):
        merge_shards([tmp_path / "none.npy"], tmp_path / "x.faiss")
    with pytest.raises(CalibAdvError, match="does not exist"):
        load_index(tmp_path / "none.faiss")
    (tmp_path / "junk.faiss").write_bytes(b"not an index")
    with pytest.raises(CalibAdvError, match="not a FAISS index"):
        load_index(tmp_path / "junk.faiss")


def test_cli_encode_and_merge(tmp_path, corpus_path, index_path):
    from calibadv.cli import main

    for i in range(2):
        assert (
            main(
                [
                    "index",
                    "encode",
                    "--corpus",
                    str(corpus_path),
                    "--encoder",
                    "bundled:minilm",
                    "--shard",
                    str(i),
                    "--num-shards",
                    "2",
                    "--device",
                    "cpu",
                    "--out",
                    str(tmp_path / f"s{i}.npy"),
                ]
            )
            == 0
        )
    assert (
        main(
            [
                "index",
                "merge",
                "--shards",
                str(tmp_path / "s0.npy"),
                str(tmp_path / "s1.npy"),
                "--out",
                str(tmp_path / "cli.faiss"),
            ]
        )
        == 0
    )
    a = load_index(tmp_path / "cli.faiss").reconstruct_n(0, 56)
    b = load_index(index_path).reconstruct_n(0, 56)
    np.testing.assert_allclose(
        a, b, atol=1e-5
    )  # batch composition may change the last bits
    assert (
        main(
            [
                "index",
                "merge",
                "--shards",
                str(tmp_path / "s0.npy"),
                "--out",
                str(tmp_path / "bad.faiss"),
            ]
        )
        == 2
    )  # user error: exit 2, no traceback
