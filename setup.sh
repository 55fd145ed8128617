#!/usr/bin/env bash
# Set up dltricks in ./.venv: idempotent, needs only python3 (>= 3.11) and a package index.
# constraints.txt pins torch to the 2.13.0 CPU build so that set-up never pulls CUDA wheels here.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -c constraints.txt -e '.[dev,docs]'
.venv/bin/python -c "import torch, dltricks; print(f'dltricks {dltricks.__version__} ready (torch {torch.__version__})')"
