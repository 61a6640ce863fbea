#!/usr/bin/env bash
# Creates .venv beside this file and installs the pinned requirements (idempotent: a second run is fast).
#
# torch/torchvision go in with pip, which takes them from this machine's wheel files where they lie on disk
# (and otherwise from PyPI); everything else with uv (from PyPI; parallel downloads, about 3x faster than pip
# here: 9 s instead of 25 s), falling back to pip when uv cannot be installed or fails. --no-compile: Python
# compiles the modules it imports on first use instead of all of torch's at install time (saves ~40 s).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(sha256sum requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  pip=(.venv/bin/python -m pip install -q --no-compile)
  # DeepSpeed's setup imports torch: install torch first, then the rest without build isolation.
  "${pip[@]}" "$(grep '^torch==' requirements.txt)" "$(grep '^torchvision==' requirements.txt)"
  export DS_BUILD_OPS=0
  if "${pip[@]}" 'uv>=0.5' && .venv/bin/uv pip install -q --python .venv/bin/python --no-build-isolation \
       -r requirements.txt; then
    .venv/bin/uv pip install -q --python .venv/bin/python --no-deps --no-build-isolation -e .
  else
    echo "environments.sh: uv unavailable or failed; installing with pip" >&2
    "${pip[@]}" --no-build-isolation -r requirements.txt
    "${pip[@]}" --no-deps --no-build-isolation -e .
  fi
  echo "$want" > "$stamp"
fi
