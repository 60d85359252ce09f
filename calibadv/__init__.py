"""calibadv: the CalibAdv reproduction pipeline (library + CLI behind the Snakemake workflow)."""

__version__ = "0.1.0"
