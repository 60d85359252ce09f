"""Exceptions whose message is meant for the user: the CLI prints them without a traceback."""


class CalibAdvError(Exception):
    """A user-facing error: the message names the bad value and how to fix it."""


class ConfigError(CalibAdvError):
    """A configuration value is missing or invalid."""
