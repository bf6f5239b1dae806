#!/usr/bin/env bash
# Sets up a Python environment for this pack in ./.venv: ComfyUI's matched torch set
# (torch 2.11.0, torchvision 0.26.0, torchaudio 2.11.0), this pack's requirements, the test
# requirements, and ComfyUI's own requirements when a ComfyUI checkout is found
# ($COMFYUI_PATH, else /opt/ComfyUI).
#   --deps-only   install only (CI uses this)
# Inside an existing ComfyUI environment you only need: pip install -r requirements.txt
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
COMFY=${COMFYUI_PATH:-/opt/ComfyUI}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip >/dev/null 2>&1 || true
if ! .venv/bin/python -c "import torch, torchaudio, torchvision; assert torch.__version__.startswith('2.11.0')" 2>/dev/null; then
  echo "installing torch 2.11.0 / torchvision 0.26.0 / torchaudio 2.11.0 (matched set ComfyUI imports with)"
  $PIP install -q torch==2.11.0 torchvision==0.26.0 torchaudio==2.11.0 2> >(grep -v "^WARNING: Location" >&2)
fi
REQS=(-r requirements.txt -r requirements-dev.txt)
if [ -f "$COMFY/comfy/model_management.py" ]; then
  echo "ComfyUI found at $COMFY: installing its requirements too"
  REQS+=(-r "$COMFY/requirements.txt")
else
  echo "no ComfyUI at $COMFY (set COMFYUI_PATH): the ComfyUI test layers will be skipped"
fi
$PIP install -q "${REQS[@]}" 2> >(grep -v "^WARNING: Location" >&2)
# Test-only: Lightricks' ltx-core, the official stack the benchmark compares with (its own
# requirements pin an older torch, so it goes in without them; it is never imported by the pack)
$PIP install -q --no-deps ltx-core==1.0.0 2> >(grep -v "^WARNING: Location" >&2) || \
  echo "could not install ltx-core: the official-stack test will be skipped"
.venv/bin/python -c "import torch, av, scenedetect, safetensors; print('environment ready: torch', torch.__version__, '| av', av.__version__)"
# The browser test (tests/e2e/test_browser.py) drives headless Chromium through Playwright;
# Playwright's own browser download is not needed: a system Chromium is used. Best effort —
# without it that one test is skipped with the reason.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && \
      apt-get install -y -q chromium >/dev/null 2>&1)) && echo "installed chromium for the browser test" || \
      echo "could not install chromium: the browser test will be skipped"
  else
    echo "no chromium: the browser test will be skipped (apt-get install chromium)"
  fi
fi
