"""The synthetic encyclopedia: entities, typed relations and the passages that state them.

A :class:`World` is a pure function of ``(seed, size)``. Every fact is written in exactly one
passage and :attr:`World.fact_passage` records which, so questions can name their gold
supporting passage per hop. Extra "event" passages mention the same names, places and years
without stating any asked fact: they are the distractors a retriever has to rank below gold.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from calibadv.synth.names import COUNTRY_FORMS, OCCUPATIONS, WORK_KINDS, NameBook

ENTITY_TYPES = ("country", "city", "person", "organisation", "work")


@dataclass(frozen=True)
class WorldSize:
    """Entity counts and split sizes of one named world size."""

    countries: int
    cities: int
    people: int
    organisations: int
    works: int
    events: int
    train: int
    dev: int
    test: int  # questions per test benchmark
    bamboogle: int  # the real Bamboogle is small too (125 questions)


SIZES: dict[str, WorldSize] = {
    "tiny": WorldSize(countries=12, cities=72, people=800, organisations=90, works=500,
                      events=150, train=2000, dev=200, test=100, bamboogle=60),
    "small": WorldSize(countries=40, cities=300, people=4000, organisations=450, works=2500,
                       events=2500, train=10000, dev=500, test=500, bamboogle=125),
}


@dataclass
class Entity:
    key: str  # "<type>:<n>", stable within a world
    type: str
    name: str
    attrs: dict[str, Any] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)


@dataclass
class Passage:
    id: str
    title: str
    text: str
    kind: str  # the entity type it describes, or "event"

    def contents(self) -> str:
        return f'"{self.title}"\n{self.text}'


@dataclass
class World:
    seed: int
    size: str
    entities: dict[str, Entity]
    passages: list[Passage]
    fact_passage: dict[tuple[str, str], str]  # (entity key, relation) -> passage id

    def of_type(self, type_: str) -> list[Entity]:
        return [e for e in self.entities.values() if e.type == type_]

    def name(self, key: str) -> str:
        return self.entities[key].name


def _article(name: str) -> str:
    """Organisations read as "the Kesh Society"; everything else takes no article."""
    return f"the {name}"


def _a(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def _build_entities(rng: random.Random, size: WorldSize) -> dict[str, Entity]:
    names = NameBook(rng)
    ents: dict[str, Entity] = {}

    def add(type_: str, n: int, name: str, **attrs: Any) -> Entity:
        ent = Entity(key=f"{type_}:{n}", type=type_, name=name, attrs=attrs)
        ents[ent.key] = ent
        return ent

    countries = [add("country", i, names.country(), form=rng.choice(COUNTRY_FORMS))
                 for i in range(size.countries)]
    for c in countries:
        c.aliases = [f"{c.attrs['form']} of {c.name}"]
    cities = []
    for i in range(size.cities):
        country = countries[i % len(countries)]  # every country gets cities
        cities.append(add("city", i, names.city(), country=country.key,
                          founded=rng.randint(800, 1690)))
    for c in countries:  # the first city of each country is its capital
        c.attrs["capital"] = next(x.key for x in cities if x.attrs["country"] == c.key)
    people: list[Entity] = []
    for i in range(size.people):
        parent = None
        if i >= size.people // 4 and rng.random() < 0.6:
            parent = rng.choice(people[: max(1, i - 5)])
        year = (parent.attrs["born"] + rng.randint(20, 40)) if parent else rng.randint(1700, 1800)
        surname = parent.name.split(" ", 1)[1] if parent else None
        attrs: dict[str, Any] = dict(born=year, birthplace=rng.choice(cities).key,
                                     occupation=rng.choice(OCCUPATIONS))
        if parent:
            attrs["parent"] = parent.key
        people.append(add("person", i, names.person(surname), **attrs))
    orgs = []
    for i in range(size.organisations):
        founder = rng.choice(people)
        orgs.append(add("organisation", i, names.organisation(), founder=founder.key,
                        founded=founder.attrs["born"] + rng.randint(22, 50),
                        based_in=rng.choice(cities).key))
    for p in people:
        if rng.random() < 0.5:
            p.attrs["member_of"] = rng.choice(orgs).key
    for i in range(size.works):
        author = rng.choice(people)
        add("work", i, names.work(), author=author.key, kind=rng.choice(WORK_KINDS),
            year=author.attrs["born"] + rng.randint(18, 60))
    return ents


def _entity_passages(e: Entity, ents: dict[str, Entity]) -> list[tuple[str, list[str], str]]:
    """(title, relations stated, text) for each passage describing ``e``.

    One fixed phrasing per relation and short sentences: a ~1M-parameter policy learns to find
    "written by X" once, not five ways of saying it (docs/synthetic-world.md, "Why it is easy
    to read").
    """
    n = lambda key: ents[key].name  # noqa: E731
    a = e.attrs
    if e.type == "country":
        text = (f"{e.name}, officially the {a['form']} of {e.name}, is a country. "
                f"Its capital is {n(a['capital'])}.")
        return [(e.name, ["capital"], text)]
    if e.type == "city":
        country = n(a["country"])
        text = f"{e.name} is a city in {country}. It was founded in {a['founded']}."
        return [(e.name, ["country", "founded"], text)]
    if e.type == "person":
        city, year, occ = n(a["birthplace"]), a["born"], a["occupation"]
        bio = f"{e.name} was born in {city} in {year}. {e.name} was {_a(occ)}."
        out = [(e.name, ["birthplace", "born", "occupation"], bio)]
        life, rels = [], []
        if "parent" in a:
            life.append(f"{e.name} was the child of {n(a['parent'])}.")
            rels.append("parent")
        if "member_of" in a:
            life.append(f"{e.name} was a member of {_article(n(a['member_of']))}.")
            rels.append("member_of")
        if life:
            out.append((e.name, rels, " ".join(life)))
        return out
    if e.type == "organisation":
        text = (f"The {e.name} was founded by {n(a['founder'])} in {a['founded']}. "
                f"It is based in {n(a['based_in'])}.")
        return [(e.name, ["founder", "founded", "based_in"], text)]
    if e.type == "work":
        text = (f"{e.name} is {_a(a['kind'])} written by {n(a['author'])}. "
                f"It was published in {a['year']}.")
        return [(e.name, ["author", "year"], text)]
    raise ValueError(f"unknown entity type {e.type!r}")


def _event_passage(rng: random.Random, ents: dict[str, Entity], by_type: dict[str, list[Entity]]
                   ) -> tuple[str, str]:
    """A distractor: real names, places and years, but no fact any question asks for."""
    p, q = rng.sample(by_type["person"], 2)
    city = rng.choice(by_type["city"]).name
    org = rng.choice(by_type["organisation"]).name
    work = rng.choice(by_type["work"]).name
    year = p.attrs["born"] + rng.randint(15, 50)
    text = rng.choice([
        f"In {year}, {p.name} travelled to {city}, where {p.name} met {q.name}.",
        f"In {year}, the {org} held a meeting in {city}. {p.name} gave a talk there.",
        f"{work} was performed in {city} in {year}. {p.name} attended the first performance.",
        f"{p.name} and {q.name} lived in {city} for several years after {year}.",
        f"In {year}, {p.name} wrote a letter to {q.name} about {work}.",
    ])
    return f"{city} ({year})", text


def build_world(seed: int, size: str | WorldSize = "tiny") -> World:
    """Generate the whole world deterministically from ``seed``."""
    dims = SIZES[size] if isinstance(size, str) else size
    rng = random.Random(f"calibadv-world-{seed}")
    ents = _build_entities(rng, dims)
    by_type = {t: [e for e in ents.values() if e.type == t] for t in ENTITY_TYPES}
    drafts: list[tuple[str, str, str, list[tuple[str, str]]]] = []
    for e in ents.values():
        for title, rels, text in _entity_passages(e, ents):
            drafts.append((title, text, e.type, [(e.key, r) for r in rels]))
    for _ in range(dims.events):
        title, text = _event_passage(rng, ents, by_type)
        drafts.append((title, text, "event", []))
    rng.shuffle(drafts)  # ids carry no hint of the passage kind
    passages, fact_passage = [], {}
    for i, (title, text, kind, facts) in enumerate(drafts):
        pid = str(i)
        passages.append(Passage(id=pid, title=title, text=text, kind=kind))
        for fact in facts:
            fact_passage[fact] = pid
    return World(seed=seed, size=size if isinstance(size, str) else "custom",
                 entities=ents, passages=passages, fact_passage=fact_passage)
