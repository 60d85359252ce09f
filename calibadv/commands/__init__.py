"""CLI subcommands, discovered by :mod:`calibadv.cli` (one module per command group)."""
