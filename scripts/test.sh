#!/usr/bin/env bash
# Runs every test layer. The ComfyUI layers (tests/comfy, tests/e2e) run when a ComfyUI
# checkout is found at $COMFYUI_PATH, else at /opt/ComfyUI, and are skipped with the reason
# printed in the header otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
[ -x .venv/bin/python ] && PY=.venv/bin/python
exec "$PY" -m pytest tests "$@"
