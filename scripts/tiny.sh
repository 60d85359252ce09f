#!/usr/bin/env bash
# The embedded default, end to end on CPU: synthetic world -> tiny model -> index -> SFT ->
# RL per method -> evaluation -> proxy validation -> tables, figures and an HTML report.
# Extra arguments go to snakemake (e.g. --dry-run, --forceall).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/bootstrap.sh
export PATH="$ROOT/.venv/bin:$PATH" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
cores="${CALIBADV_CORES:-$(nproc)}"
snakemake --configfile config/tiny.yaml --cores "$cores" "$@"
snakemake --configfile config/tiny.yaml --cores "$cores" --report results/synthetic/report.html "$@"
echo "tiny run done: tables in results/synthetic/report/tables/, figures in results/synthetic/report/figures/, HTML report results/synthetic/report.html"
