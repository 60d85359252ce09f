"""Questions over a :class:`~calibadv.synth.world.World`, with gold passages per hop.

A question is a chain of relations walked from a start entity. Each hop has a short natural
sub-query ("Who wrote The Silver Kestrel?") and the one passage that states the fact, so a
policy can be taught (by SFT) to search hop by hop and a run can measure how often its silver
documents match the gold ones. Question *types* mirror the paper's benchmarks: single-hop
factoids (NQ, TriviaQA, PopQA), bridge and comparison (HotpotQA), compositional, inference and
comparison (2Wiki), 2-3 hop compositional (MuSiQue) and held-out 2-hop chains (Bamboogle).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Any

from calibadv.synth.world import Entity, World

ENTITY_RANGES = {"country", "city", "person", "organisation", "work"}


@dataclass(frozen=True)
class Relation:
    """One attribute of an entity type, with the ways a question can ask for it.

    ``asks`` are whole questions about ``{x}`` (the first is the hop sub-query), ``phrase`` and
    ``clause`` are noun phrases naming the value, used to nest this hop inside a longer question.
    """

    name: str
    domain: str
    attr: str
    range: str  # an entity type, or "year" / "occupation" for literal values
    asks: tuple[str, ...]
    popqa: str
    phrase: str = ""
    clause: str = ""


RELATIONS: dict[str, Relation] = {r.name: r for r in [
    Relation("author", "work", "author", "person",
             ("Who wrote {x}?", "Who is the author of {x}?", "{X} was written by whom?"),
             "Who is the author of {x}?", "the author of {x}", "the person who wrote {x}"),
    Relation("birthplace", "person", "birthplace", "city",
             ("Where was {x} born?", "In which city was {x} born?", "What is the birthplace of {x}?"),
             "In what city was {x} born?", "the birthplace of {x}", "the city where {x} was born"),
    Relation("born", "person", "born", "year",
             ("When was {x} born?", "In what year was {x} born?", "What year was {x} born in?"),
             "In what year was {x} born?"),
    Relation("occupation", "person", "occupation", "occupation",
             ("What was the occupation of {x}?", "What did {x} work as?", "What was {x}'s job?"),
             "What is {x}'s occupation?"),
    Relation("parent", "person", "parent", "person",
             ("Who was the parent of {x}?", "Who is the parent of {x}?", "Whose child was {x}?"),
             "Who is the parent of {x}?", "the parent of {x}", "the person whose child was {x}"),
    Relation("member_of", "person", "member_of", "organisation",
             ("Which organisation was {x} a member of?", "What group did {x} join?",
              "Which organisation did {x} belong to?"),
             "What organisation was {x} a member of?", "the organisation of {x}",
             "the organisation that {x} joined"),
    Relation("founder", "organisation", "founder", "person",
             ("Who founded {x}?", "Who was the founder of {x}?", "By whom was {x} founded?"),
             "Who was the founder of {x}?", "the founder of {x}", "the person who founded {x}"),
    Relation("org_founded", "organisation", "founded", "year",
             ("When was {x} founded?", "In what year was {x} founded?", "What year was {x} set up?"),
             "In what year was {x} founded?"),
    Relation("based_in", "organisation", "based_in", "city",
             ("Where is {x} based?", "In which city is {x} based?", "Which city is home to {x}?"),
             "In what city is {x} based?", "the home city of {x}", "the city where {x} is based"),
    Relation("country", "city", "country", "country",
             ("In which country is {x}?", "Which country is {x} in?", "{X} is a city in which country?"),
             "In what country is {x}?", "the country of {x}", "the country where {x} lies"),
    Relation("city_founded", "city", "founded", "year",
             ("When was {x} founded?", "In what year was {x} established?",
              "What year was {x} founded in?"),
             "In what year was {x} founded?"),
    Relation("capital", "country", "capital", "city",
             ("What is the capital of {x}?", "Which city is the capital of {x}?",
              "What city is the capital of {x}?"),
             "What is the capital of {x}?", "the capital of {x}", "the city that is the capital of {x}"),
    Relation("published", "work", "year", "year",
             ("When was {x} published?", "In what year was {x} published?",
              "What year did {x} come out?"),
             "In what year was {x} published?"),
]}

# Chains kept out of training and the in-distribution tests: the Bamboogle role (questions
# composed in ways the training set never shows).
HELDOUT_CHAINS = {("member_of", "based_in"), ("capital", "city_founded"),
                  ("author", "occupation"), ("based_in", "capital")}

# Inference questions (2Wiki's type): a named composite relation the question never spells out.
INFERENCE = {
    ("parent", "parent"): ("Who was the grandparent of {x}?", "Who is {x}'s grandparent?"),
    ("birthplace", "country"): ("In which country was {x} born?", "What country is {x} from?"),
    ("based_in", "country"): ("In which country is {x} based?", "What country is {x} based in?"),
    ("author", "parent"): ("Whose child wrote {x}?",),
}

COMPARISONS = {  # entity type -> (year relation, question variants for "earlier", "later")
    "person": ("born", ("Who was born first, {a} or {b}?", "Which person is older, {a} or {b}?"),
               ("Who was born later, {a} or {b}?", "Which person is younger, {a} or {b}?")),
    "organisation": ("org_founded", ("Which was founded first, {a} or {b}?",),
                     ("Which was founded more recently, {a} or {b}?",)),
    "city": ("city_founded", ("Which city is older, {a} or {b}?",),
             ("Which city was founded later, {a} or {b}?",)),
    "work": ("published", ("Which came out first, {a} or {b}?",),
             ("Which was published later, {a} or {b}?",)),
}


def mention(e: Entity) -> str:
    """How text refers to an entity: organisations take "the"."""
    return f"the {e.name}" if e.type == "organisation" else e.name


def fill(template: str, x: str) -> str:
    text = template.replace("{X}", x[:1].upper() + x[1:]).replace("{x}", x)
    return text[:1].upper() + text[1:]


def chains(length: int) -> list[tuple[str, ...]]:
    """Every well-typed relation chain of ``length`` hops (intermediates are entities)."""
    out = []
    for combo in itertools.product(RELATIONS.values(), repeat=length):
        if all(a.range == b.domain for a, b in zip(combo, combo[1:])):
            out.append(tuple(r.name for r in combo))
    return out


@dataclass
class Walk:
    """The entities visited by a chain: ``nodes[0]`` is the start, the last is the answer."""

    chain: tuple[str, ...]
    nodes: list[Entity | str]
    doc_ids: list[str]


def walk(world: World, chain: tuple[str, ...], start: Entity) -> Walk | None:
    """Follow ``chain`` from ``start``; ``None`` where an attribute is missing or a loop occurs."""
    nodes: list[Entity | str] = [start]
    docs = []
    cur: Entity = start
    for i, rel_name in enumerate(chain):
        rel = RELATIONS[rel_name]
        if rel.attr not in cur.attrs:
            return None
        docs.append(world.fact_passage[(cur.key, rel.attr)])
        value = cur.attrs[rel.attr]
        if rel.range in ENTITY_RANGES:
            nxt = world.entities[value]
            if any(isinstance(n, Entity) and n.key == nxt.key for n in nodes):
                return None  # "the country of the capital of X" is X itself
            nodes.append(nxt)
            cur = nxt
        else:
            if i != len(chain) - 1:
                return None
            nodes.append(str(value))
    return Walk(chain, nodes, docs)


def answers(node: Entity | str) -> list[str]:
    if isinstance(node, Entity):
        return [node.name, *node.aliases]
    return [node]


def hops_of(w: Walk) -> list[dict[str, Any]]:
    out = []
    for i, rel_name in enumerate(w.chain):
        subject = w.nodes[i]
        assert isinstance(subject, Entity)
        obj = w.nodes[i + 1]
        out.append({"question": fill(RELATIONS[rel_name].asks[0], mention(subject)),
                    "doc_ids": [w.doc_ids[i]],
                    "answer": obj.name if isinstance(obj, Entity) else obj})
    return out


def nested_phrase(w: Walk, upto: int, style: str) -> str:
    """Noun phrase naming node ``upto`` through the chain: "the author of The Silver Kestrel"."""
    start = w.nodes[0]
    assert isinstance(start, Entity)
    text = mention(start)
    for rel_name in w.chain[:upto]:
        rel = RELATIONS[rel_name]
        text = (rel.clause if style == "clause" else rel.phrase).replace("{x}", text)
    return text


def record(qtype: str, question: str, w_hops: list[dict[str, Any]], golden: list[str],
           source: str, chain: tuple[str, ...] | list[str]) -> dict[str, Any]:
    supporting = list(dict.fromkeys(d for h in w_hops for d in h["doc_ids"]))
    return {"question": question, "golden_answers": golden,
            "metadata": {"type": qtype, "hops": w_hops, "supporting_ids": supporting,
                         "source": source, "chain": list(chain)}}


class QuestionMaker:
    """Draws questions of one kind at a time; callers reject duplicates via ``key``."""

    def __init__(self, world: World, rng: random.Random) -> None:
        self.world = world
        self.rng = rng
        self.by_type = {t: world.of_type(t) for t in ENTITY_RANGES}
        self.chains2 = chains(2)
        self.chains3 = chains(3)

    def _walk(self, candidates: list[tuple[str, ...]]) -> Walk:
        for _ in range(1000):
            chain = self.rng.choice(candidates)
            start = self.rng.choice(self.by_type[RELATIONS[chain[0]].domain])
            w = walk(self.world, chain, start)
            if w is not None:
                return w
        raise RuntimeError(f"no entity supports the chains {candidates[:3]}…; world too small")

    def single(self, style: str) -> tuple[tuple, dict[str, Any]]:
        rel = self.rng.choice(list(RELATIONS.values()))
        w = self._walk([(rel.name,)])
        subj = mention(w.nodes[0])  # type: ignore[arg-type]
        if style == "nq":  # NQ: search-engine style, lower case, no question mark
            q = fill(rel.asks[0], subj)
            q = q[:1].lower() + q[1:-1]
        elif style == "popqa":
            q = fill(rel.popqa, subj)
        else:  # triviaqa: quiz phrasings
            q = fill(self.rng.choice(rel.asks[1:]), subj)
        return ("single",) + w.chain + (w.nodes[0].key,), record(  # type: ignore[union-attr]
            "single", q, hops_of(w), answers(w.nodes[-1]), style, w.chain)

    def composed(self, qtype: str, source: str, length: int,
                 heldout: bool = False) -> tuple[tuple, dict[str, Any]]:
        """Bridge (relative clauses) or compositional (nested "of" phrases) questions."""
        pool = self.chains2 if length == 2 else self.chains3
        pool = [c for c in pool if (c in HELDOUT_CHAINS) == heldout and c not in INFERENCE]
        w = self._walk(pool)
        last = RELATIONS[w.chain[-1]]
        style = "clause" if qtype == "bridge" else "phrase"
        np_ = nested_phrase(w, length - 1, style)
        asks = [a for a in (last.asks[1:] if heldout else last.asks) if "{x}'s" not in a]
        template = self.rng.choice(asks or last.asks)  # no "{long phrase}'s job"
        return (qtype,) + w.chain + (w.nodes[0].key,), record(  # type: ignore[union-attr]
            qtype, fill(template, np_), hops_of(w), answers(w.nodes[-1]), source, w.chain)

    def inference(self, source: str) -> tuple[tuple, dict[str, Any]]:
        w = self._walk(list(INFERENCE))
        q = fill(self.rng.choice(INFERENCE[w.chain]), mention(w.nodes[0]))  # type: ignore[arg-type]
        return ("inference",) + w.chain + (w.nodes[0].key,), record(  # type: ignore[union-attr]
            "inference", q, hops_of(w), answers(w.nodes[-1]), source, w.chain)

    def comparison(self, source: str) -> tuple[tuple, dict[str, Any]]:
        etype = self.rng.choice(sorted(COMPARISONS))
        rel_name, earlier, later = COMPARISONS[etype]
        rel = RELATIONS[rel_name]
        for _ in range(1000):
            a, b = self.rng.sample(self.by_type[etype], 2)
            if a.attrs[rel.attr] != b.attrs[rel.attr]:
                break
        else:
            raise RuntimeError("no comparable pair found; world too small")
        first = self.rng.random() < 0.5
        template = self.rng.choice(earlier if first else later)
        older = a if a.attrs[rel.attr] < b.attrs[rel.attr] else b
        winner = older if first else (b if older is a else a)
        hops = hops_of(walk(self.world, (rel_name,), a)) + hops_of(  # type: ignore[arg-type]
            walk(self.world, (rel_name,), b))  # type: ignore[arg-type]
        q = template.replace("{a}", mention(a)).replace("{b}", mention(b))
        q = q[:1].upper() + q[1:]
        key = ("comparison", rel_name) + tuple(sorted((a.key, b.key)))
        return key, record("comparison", q, hops, answers(winner), source, [rel_name, rel_name])
