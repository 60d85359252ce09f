"""Repeatable ``--flag NAME=VALUE`` options, parsed one way for every command that takes them
(``evaluate --suite``, ``counterfactual --spec``). Not a command: the leading underscore keeps
:mod:`calibadv.cli`'s discovery from registering it."""

from __future__ import annotations


def name_value_pairs(items: list[str], flag: str, expected: str, example: str) -> dict[str, str]:
    """``{name: value}`` from ``items`` (each ``NAME=VALUE``), in the order given.

    A ConfigError names the flag, the item and an example when an item has no ``=`` or an
    empty side, and when a name repeats: a repeated name would silently replace the first
    (one benchmark, one method's spec lost)."""
    from calibadv.errors import ConfigError

    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise ConfigError(f"{flag} {item!r}: expected {expected}, e.g. {example}")
        if name in out:
            raise ConfigError(f"{flag} {name!r} is given twice")
        out[name] = value
    return out
