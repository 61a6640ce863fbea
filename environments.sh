#!/usr/bin/env bash
# Creates .venv beside this file and installs the pinned requirements (idempotent: a second run is fast).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(sha256sum requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # DeepSpeed's setup imports torch: install torch first, then the rest without build isolation.
  .venv/bin/python -m pip install -q "$(grep '^torch==' requirements.txt)" "$(grep '^torchvision==' requirements.txt)"
  DS_BUILD_OPS=0 .venv/bin/python -m pip install -q --no-build-isolation -r requirements.txt
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
  echo "$want" > "$stamp"
fi
