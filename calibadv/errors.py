"""Exceptions whose message is meant for the user: the CLI prints them without a traceback."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class CalibAdvError(Exception):
    """A user-facing error: the message names the bad value and how to fix it."""


class ConfigError(CalibAdvError):
    """A configuration value is missing or invalid."""


def check_known_keys(data: Mapping[str, Any], known: Iterable[str], where: str) -> None:
    """Refuse keys outside ``known`` with every unknown ``where.key`` and the allowed keys
    named, so a config section's typo is caught before a dataclass sees it."""
    known = sorted(known)
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(f'{where}.{k}' for k in unknown)}; "
                          f"allowed keys: {known}")
