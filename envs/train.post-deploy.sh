#!/usr/bin/env bash
# Snakemake runs this inside the freshly created env, from the workflow's working directory
# (the repository root): install calibadv itself without touching the env's pinned packages.
set -euo pipefail
python -m pip install --no-deps -e "${CALIBADV_SRC:-$PWD}"
