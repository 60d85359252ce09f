"""Corpus: O(1) row access through a cached offsets sidecar, title/text split, id → row."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from calibadv.errors import CalibAdvError
from calibadv.retrieval.corpus import Corpus, join_contents, split_contents

from .conftest import write_corpus


def test_rows_come_back_in_file_order(corpus_path, rows):
    corpus = Corpus(corpus_path)
    assert len(corpus) == len(rows)
    assert corpus[0].to_dict() == rows[0]
    assert corpus[-1].to_dict() == rows[-1]
    assert [d.id for d in corpus.get_many(np.array([5, 2]))] == [
        rows[5]["id"],
        rows[2]["id"],
    ]
    assert corpus.contents_range(3, 5) == [rows[3]["contents"], rows[4]["contents"]]
    with pytest.raises(IndexError, match="out of range"):
        corpus[len(rows)]


def test_title_and_text_split(corpus_path):
    doc = Corpus(corpus_path)[0]
    assert doc.title == "Paris river"
    assert doc.text.startswith("The Paris river floods")


@given(
    st.text(alphabet=st.characters(blacklist_characters='\n"'), max_size=30),
    st.text(max_size=80),
)
def test_split_inverts_join(title, text):
    assert split_contents(join_contents(title, text)) == (title, text)


def test_offsets_sidecar_is_reused_and_rebuilt_when_the_file_changes(tmp_path):
    path = write_corpus(tmp_path / "c.jsonl", [{"id": "a", "contents": '"A"\nx'}])
    assert len(Corpus(path)) == 1
    sidecar = tmp_path / "c.jsonl.offsets.npy"
    assert sidecar.is_file()
    stamp = sidecar.stat().st_mtime_ns
    assert len(Corpus(path)) == 1 and sidecar.stat().st_mtime_ns == stamp  # reused
    write_corpus(
        path, [{"id": "a", "contents": '"A"\nx'}, {"id": "b", "contents": '"B"\nyy'}]
    )
    os.utime(path, ns=(stamp + 10**9, stamp + 10**9))
    corpus = Corpus(path)
    assert len(corpus) == 2 and corpus[1].id == "b"


def test_blank_lines_unicode_and_missing_final_newline(tmp_path):
    path = tmp_path / "c.jsonl"
    lines = [
        json.dumps(
            {"id": "0", "contents": '"Zürich"\nÉtude — ünïcode'}, ensure_ascii=False
        ),
        "",
        json.dumps({"id": "1", "contents": '"B"\nb'}),
    ]
    path.write_text("\n".join(lines), encoding="utf-8")  # no trailing newline
    corpus = Corpus(path, cache=False)
    assert len(corpus) == 2
    assert corpus[0].title == "Zürich" and corpus[1].text == "b"


def test_id_lookup_for_row_numbered_and_arbitrary_ids(tmp_path, corpus_path, rows):
    corpus = Corpus(corpus_path)
    assert corpus.row_of(rows[17]["id"]) == 17
    with pytest.raises(KeyError):
        corpus.row_of("nope")
    numbered = write_corpus(
        tmp_path / "n.jsonl",
        [{"id": str(i), "contents": f'"T{i}"\nt'} for i in range(5)],
    )
    assert Corpus(numbered).row_of("3") == 3
    shifted = write_corpus(
        tmp_path / "s.jsonl",
        [{"id": str(i + 1), "contents": f'"T{i}"\nt'} for i in range(5)],
    )
    assert Corpus(shifted).row_of("3") == 2  # ids that are not rows are still found


def test_bad_record_and_missing_file_are_clear_errors(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"id": "0"}\n')
    with pytest.raises(CalibAdvError, match="row 0 is not a corpus record"):
        Corpus(path)[0]
    with pytest.raises(CalibAdvError, match="does not exist"):
        Corpus(tmp_path / "none.jsonl")


def test_unwritable_sidecar_keeps_offsets_in_memory(tmp_path):
    path = write_corpus(tmp_path / "c.jsonl", [{"id": "a", "contents": '"A"\nx'}])
    (tmp_path / "c.jsonl.offsets.npy").mkdir()  # the sidecar cannot be written there
    assert Corpus(path)[0].id == "a"
