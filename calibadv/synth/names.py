"""Fictional names built from syllables.

Names are drawn from a seeded ``random.Random`` so a world is a pure function of its seed. The
syllable pool is small on purpose: names share syllables and surnames, which gives retrieval
near-miss distractors ("Talo Brenik" vs "Talo Brenmar") without any real-world entity.
"""

from __future__ import annotations

import random

ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr",
          "kr", "st", "th", "sh", "gr", "tr"]
VOWELS = ["a", "e", "i", "o", "u", "a", "e", "o", "ai", "ea", "y"]
CODAS = ["n", "r", "s", "l", "m", "k", "th", "nd", "rn", "sk", "v", "x"]

PLACE_ENDINGS = ["ton", "ford", "holm", "ia", "mere", "vik", "grad", "burg", "dale", "port"]
COUNTRY_ENDINGS = ["ia", "land", "avia", "eria", "ovia", "istan", "onia", "ara"]
COUNTRY_FORMS = ["Republic", "Kingdom", "Federation", "Commonwealth", "Principality"]
ORG_KINDS = ["Society", "Institute", "Guild", "Academy", "Company", "League", "Circle", "Union"]
WORK_ADJECTIVES = ["Silver", "Hollow", "Quiet", "Broken", "Golden", "Northern", "Crimson",
                   "Distant", "Winter", "Hidden", "Burning", "Pale", "Last", "Salt", "Iron"]
WORK_NOUNS = ["Kestrel", "Harbour", "Lantern", "River", "Garden", "Crown", "Mirror", "Orchard",
              "Bell", "Tower", "Meadow", "Voyage", "Letter", "Compass", "Feather", "Bridge"]
WORK_KINDS = ["novel", "poem", "play", "song", "essay", "symphony"]
OCCUPATIONS = ["painter", "poet", "novelist", "architect", "composer", "astronomer", "sculptor",
               "chemist", "explorer", "philosopher", "engineer", "historian"]


def syllable(rng: random.Random) -> str:
    return rng.choice(ONSETS) + rng.choice(VOWELS)


def word(rng: random.Random, n_syllables: int, ending: str = "") -> str:
    """A capitalised pseudo-word: open syllables, then a closing consonant or a fixed ending.

    Short, pronounceable words ("Talo", "Brenik") keep names to a few BPE tokens, which a
    tiny policy can copy from a passage into its next query.
    """
    text = "".join(syllable(rng) for _ in range(n_syllables))
    text += ending or (rng.choice(CODAS) if rng.random() < 0.7 else "")
    return text[:1].upper() + text[1:]


class NameBook:
    """Hands out unique names; a name once given is never reused for another entity."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def _unique(self, make) -> str:
        for _ in range(10_000):
            name = make()
            if name not in self.used and len(name) <= 28:
                self.used.add(name)
                return name
        raise RuntimeError("name space exhausted: raise the syllable pool or lower the world size")

    def given_name(self) -> str:
        """A first name; not registered as used since people share first names."""
        return word(self.rng, self.rng.choice([1, 2]))

    def surname(self) -> str:
        return word(self.rng, 2)

    def person(self, surname: str | None = None) -> str:
        return self._unique(lambda: f"{self.given_name()} {surname or self.surname()}")

    def city(self) -> str:
        return self._unique(lambda: word(self.rng, self.rng.choice([1, 2]),
                                         self.rng.choice(PLACE_ENDINGS)))

    def country(self) -> str:
        return self._unique(lambda: word(self.rng, self.rng.choice([1, 2]),
                                         self.rng.choice(COUNTRY_ENDINGS)))

    def organisation(self) -> str:
        return self._unique(lambda: f"{word(self.rng, 2)} {self.rng.choice(ORG_KINDS)}")

    def work(self) -> str:
        def make() -> str:
            title = f"The {self.rng.choice(WORK_ADJECTIVES)} {self.rng.choice(WORK_NOUNS)}"
            if self.rng.random() < 0.5:
                title += f" of {word(self.rng, 2)}"
            return title
        return self._unique(make)
