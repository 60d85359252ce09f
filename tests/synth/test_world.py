"""The synthetic world: deterministic, well-formed, and every question answerable from gold."""

from __future__ import annotations

import filecmp
import json
import re

import pytest

from calibadv.cli import main
from calibadv.answer_score import normalize_answer
from calibadv.synth import BENCHMARKS, SIZES, write_world
from calibadv.synth.names import NameBook

REAL_WORLD_WORDS = {"paris", "london", "france", "china", "beijing", "obama", "shakespeare"}


def _files(root):
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_same_seed_gives_byte_identical_files(world_dir, tmp_path):
    write_world(tmp_path, seed=0, size="tiny")
    assert _files(tmp_path) == _files(world_dir)
    for rel in _files(world_dir):
        assert filecmp.cmp(world_dir / rel, tmp_path / rel, shallow=False), rel


def test_different_seed_gives_a_different_world(world_dir, tmp_path):
    write_world(tmp_path, seed=1, size="tiny")
    assert (tmp_path / "corpus.jsonl").read_bytes() != (world_dir / "corpus.jsonl").read_bytes()
    assert (tmp_path / "train.jsonl").read_bytes() != (world_dir / "train.jsonl").read_bytes()


def test_layout_and_sizes_match_the_tiny_preset(world_dir, all_questions, corpus):
    size = SIZES["tiny"]
    assert {f"test/{b}.jsonl" for b in BENCHMARKS} <= {str(p) for p in _files(world_dir)}
    assert len(all_questions["train"]) == size.train
    assert len(all_questions["dev"]) == size.dev
    for bench in BENCHMARKS:
        want = size.bamboogle if bench == "bamboogle" else size.test
        assert len(all_questions[bench]) == want, bench
    stats = json.loads((world_dir / "world.json").read_text())
    assert stats["passages"] == len(corpus)
    assert 2000 <= len(corpus) <= 5000  # "a few thousand passages"
    assert stats["splits"]["train"]["n"] == size.train


def test_corpus_rows_are_wiki18_format_with_unique_ids(world_dir):
    ids = []
    for line in (world_dir / "corpus.jsonl").read_text().splitlines():
        row = json.loads(line)
        assert set(row) == {"id", "contents"}
        assert re.fullmatch(r'"[^"\n]+"\n.+', row["contents"], flags=re.S), row
        ids.append(row["id"])
    assert len(ids) == len(set(ids))


def test_question_ids_are_unique_across_all_splits(all_questions):
    ids = [q["id"] for rows in all_questions.values() for q in rows]
    assert len(ids) == len(set(ids))


def test_no_question_text_is_shared_between_splits(all_questions):
    seen: dict[str, str] = {}
    for name, rows in all_questions.items():
        for q in rows:
            assert q["question"] not in seen, (q["question"], name, seen.get(q["question"]))
            seen[q["question"]] = name


def test_gold_ids_exist_and_supporting_ids_cover_every_hop(all_questions, corpus):
    for rows in all_questions.values():
        for q in rows:
            meta = q["metadata"]
            hop_ids = [d for h in meta["hops"] for d in h["doc_ids"]]
            assert hop_ids and all(d in corpus for d in hop_ids), q["id"]
            assert meta["supporting_ids"] == list(dict.fromkeys(hop_ids))


def test_every_question_is_answerable_from_its_gold_passages(all_questions, corpus):
    for rows in all_questions.values():
        for q in rows:
            hops = q["metadata"]["hops"]
            for i, hop in enumerate(hops):
                text = corpus[hop["doc_ids"][0]]
                assert hop["answer"] in text, (q["id"], i, hop, text)
                assert hop["question"].endswith("?") and len(hop["question"].split()) <= 14
            if q["metadata"]["type"] == "comparison":
                # the answer is one of the compared entities, each named in its hop's passage
                compared = [corpus[h["doc_ids"][0]].split("\n")[0].strip('"') for h in hops]
                assert q["golden_answers"][0] in compared, q
            else:
                assert q["golden_answers"][0] == hops[-1]["answer"]
                assert q["golden_answers"][0] in corpus[hops[-1]["doc_ids"][0]]
                for earlier, later in zip(hops, hops[1:]):  # bridge entity leads the next hop
                    assert earlier["answer"] in later["question"], q


def test_multi_hop_questions_do_not_name_their_bridge_entity(all_questions):
    for name in ["hotpotqa", "2wikimultihopqa", "musique", "bamboogle", "train"]:
        for q in all_questions[name]:
            if q["metadata"]["type"] in {"bridge", "compositional", "inference"}:
                for hop in q["metadata"]["hops"][:-1]:
                    assert hop["answer"] not in q["question"], q


def test_answers_normalise_to_non_empty_strings(all_questions):
    for rows in all_questions.values():
        for q in rows:
            assert q["golden_answers"], q
            assert all(normalize_answer(a) for a in q["golden_answers"]), q


def test_question_types_match_each_benchmark_role(all_questions):
    def types(name):
        return {q["metadata"]["type"] for q in all_questions[name]}

    assert types("nq") == types("triviaqa") == types("popqa") == {"single"}
    assert types("hotpotqa") == {"bridge", "comparison"}
    assert types("2wikimultihopqa") == {"compositional", "inference", "comparison"}
    assert types("bamboogle") == {"compositional"}
    assert {len(q["metadata"]["hops"]) for q in all_questions["musique"]} == {2, 3}
    assert types("train") == types("dev") == {"bridge", "compositional", "inference",
                                              "comparison"}
    assert {q["metadata"]["source"] for q in all_questions["train"]} == {"hotpotqa",
                                                                         "2wikimultihopqa"}


def test_bamboogle_chains_never_appear_in_training(all_questions):
    held = {tuple(q["metadata"]["chain"]) for q in all_questions["bamboogle"]}
    train = {tuple(q["metadata"]["chain"]) for q in all_questions["train"]}
    assert held and not held & train


def test_names_are_fictional(corpus):
    words = {w.lower() for text in corpus.values() for w in re.findall(r"[A-Za-z]+", text)}
    assert not words & REAL_WORLD_WORDS


def test_distractor_passages_share_names_with_gold_passages(world_dir, corpus, all_questions):
    stats = json.loads((world_dir / "world.json").read_text())
    assert stats["passages_by_kind"]["event"] > 0
    # the entity a hop asks about is usually also named in passages that are not its gold one
    shared = total = 0
    for q in all_questions["train"][:300]:
        for hop in q["metadata"]["hops"]:
            title = corpus[hop["doc_ids"][0]].split("\n")[0].strip('"')
            others = [pid for pid, c in corpus.items() if title in c and pid not in hop["doc_ids"]]
            total += 1
            shared += bool(others)
    assert shared / total > 0.5


def test_namebook_never_repeats_a_name():
    import random

    book = NameBook(random.Random(3))
    names = [book.person() for _ in range(500)] + [book.city() for _ in range(200)]
    assert len(names) == len(set(names))


def test_cli_writes_the_world_and_rejects_an_unknown_size(tmp_path, capsys):
    assert main(["synth", "--out-dir", str(tmp_path / "w"), "--seed", "2"]) == 0
    assert (tmp_path / "w" / "world.json").is_file()
    assert main(["synth", "--out-dir", str(tmp_path / "x"), "--size", "huge"]) == 2
    assert "huge" in capsys.readouterr().err
    assert not (tmp_path / "x" / "world.json").exists()


@pytest.mark.parametrize("seed", [5, 11])
def test_other_seeds_also_build(tmp_path, seed):
    stats = write_world(tmp_path, seed=seed)
    assert stats["splits"]["train"]["n"] == SIZES["tiny"].train
