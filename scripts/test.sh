#!/usr/bin/env bash
# The test suite from a fresh machine: installs the venv, starts a local single-node SLURM when
# running as root (for the `--profile slurm` tests), then runs pytest. Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/bootstrap.sh
export PATH="$ROOT/.venv/bin:$PATH" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 CALIBADV_NO_PROGRESS=1
if [ "$(id -u)" = 0 ] && [ -x scripts/slurm-local-setup.sh ] && [ "${CALIBADV_SKIP_SLURM:-0}" != 1 ]; then
  bash scripts/slurm-local-setup.sh
fi
set +e
python -m pytest "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "test.sh: pytest collected no tests - treating as failure" >&2
  exit 1
fi
exit "$rc"
