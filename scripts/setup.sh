#!/usr/bin/env bash
# Sets up a Python environment for this pack in ./.venv: ComfyUI's matched torch set
# (torch 2.11.0, torchvision 0.26.0, torchaudio 2.11.0), this pack's requirements, the test
# requirements, and ComfyUI's own requirements when a ComfyUI checkout is found
# ($COMFYUI_PATH, else /opt/ComfyUI), and — for the tests only — Lightricks' ltx-core and
# ltx-trainer from a Lightricks/LTX-2 source copy ($LTX2_SRC, see below).
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
# Test-only: Lightricks' ltx-core (and ltx-trainer, for its σ sampler), the official stack the
# parity tests (tests/core/test_ltxcore_parity.py) and the benchmark compare with. Never
# imported by the pack; installed without their dependencies (they pin an older torch).
# Wanted: Lightricks/LTX-2 at commit $LTX2_COMMIT (default 203d484) or later — the first with
# the audio-video cross-attention AdaLN fix; PyPI's ltx-core 1.0.0 predates it. Taken from
#   $LTX2_SRC      a checkout or extracted tree of github.com/Lightricks/LTX-2 (has packages/ltx-core)
#   $LTX2_MIRROR   else a git copy of that repository (default /work/.mirror/Lightricks+LTX-2/repo):
#                  the commit's packages/ltx-core and packages/ltx-trainer are extracted to
#                  $LTX2_SRC_CACHE (default ~/.cache/ltx2-src/<commit>), outside this repository
# and else PyPI's ltx-core 1.0.0 (the parity tests then skip, saying why).
LTX2_COMMIT=${LTX2_COMMIT:-203d484}
LTX2_MIRROR=${LTX2_MIRROR:-/work/.mirror/Lightricks+LTX-2/repo}
LTX2_TREE=""
if [ -n "${LTX2_SRC:-}" ]; then
  if [ -f "$LTX2_SRC/packages/ltx-core/pyproject.toml" ]; then
    LTX2_TREE=$LTX2_SRC
  else
    echo "LTX2_SRC=$LTX2_SRC has no packages/ltx-core/pyproject.toml (point it at a Lightricks/LTX-2 checkout)" >&2
  fi
elif [ -d "$LTX2_MIRROR" ] && git -C "$LTX2_MIRROR" cat-file -e "$LTX2_COMMIT^{commit}" 2>/dev/null; then
  dest=${LTX2_SRC_CACHE:-${HOME:-/tmp}/.cache/ltx2-src/$LTX2_COMMIT}
  if [ ! -f "$dest/packages/ltx-core/pyproject.toml" ] || [ ! -f "$dest/packages/ltx-trainer/pyproject.toml" ]; then
    tmp="$dest.part.$$"
    rm -rf "$tmp" && mkdir -p "$tmp"
    if git -C "$LTX2_MIRROR" archive "$LTX2_COMMIT" packages/ltx-core packages/ltx-trainer | tar -x -C "$tmp"; then
      rm -rf "$dest" && mv "$tmp" "$dest"  # whole or not at all
    else
      rm -rf "$tmp"
      echo "could not extract Lightricks/LTX-2 $LTX2_COMMIT from $LTX2_MIRROR" >&2
    fi
  fi
  [ -f "$dest/packages/ltx-core/pyproject.toml" ] && LTX2_TREE=$dest
fi
# Test-only, not installed: ltx-trainer's `flexible` training strategy (every training mode;
# tests/core/test_modes.py compares our mode losses with it) appeared after $LTX2_COMMIT. Its
# packages/ltx-trainer at $LTX2_MODES_COMMIT (default 400fd31) is extracted next to the other,
# to ${HOME}/.cache/ltx2-src/<commit>; the test loads flexible.py from there by file path.
LTX2_MODES_COMMIT=${LTX2_MODES_COMMIT:-400fd31}
if [ -z "${LTX2_SRC:-}" ] && [ -d "$LTX2_MIRROR" ] && git -C "$LTX2_MIRROR" cat-file -e "$LTX2_MODES_COMMIT^{commit}" 2>/dev/null; then
  mdest=${HOME:-/tmp}/.cache/ltx2-src/$LTX2_MODES_COMMIT
  if [ ! -f "$mdest/packages/ltx-trainer/src/ltx_trainer/training_strategies/flexible.py" ]; then
    tmp="$mdest.part.$$"
    rm -rf "$tmp" && mkdir -p "$tmp"
    if git -C "$LTX2_MIRROR" archive "$LTX2_MODES_COMMIT" packages/ltx-trainer | tar -x -C "$tmp"; then
      rm -rf "$mdest" && mv "$tmp" "$mdest"
    else
      rm -rf "$tmp"
      echo "could not extract ltx-trainer $LTX2_MODES_COMMIT: the training-mode parity tests will be skipped" >&2
    fi
  fi
fi
LTX_FIXED='import inspect; from ltx_core.model.transformer.transformer_args import MultiModalTransformerArgsPreprocessor as M; assert "modality_timesteps" in inspect.signature(M._prepare_cross_attention_timestep).parameters'
if [ -n "$LTX2_TREE" ]; then
  pkgs=("$LTX2_TREE/packages/ltx-core")
  [ -f "$LTX2_TREE/packages/ltx-trainer/pyproject.toml" ] && pkgs+=("$LTX2_TREE/packages/ltx-trainer")
  if $PIP install -q --no-deps --force-reinstall "${pkgs[@]}" 2> >(grep -v "^WARNING: Location" >&2); then
    echo "installed ltx-core$([ ${#pkgs[@]} -gt 1 ] && echo ' + ltx-trainer') from $LTX2_TREE (official stack for the parity tests)"
  else
    echo "could not install ltx-core from $LTX2_TREE: the official-stack tests will be skipped" >&2
  fi
elif .venv/bin/python -c "$LTX_FIXED" 2>/dev/null; then
  echo "no Lightricks/LTX-2 source found; keeping the installed ltx-core (it has the $LTX2_COMMIT fix)"
else
  echo "no Lightricks/LTX-2 source (set LTX2_SRC to a checkout of github.com/Lightricks/LTX-2 at $LTX2_COMMIT or later):"
  echo "  installing PyPI's ltx-core 1.0.0, which predates the audio-video cross-attention AdaLN fix —"
  echo "  the ltx-core parity and σ-sampler reference tests will be skipped"
  $PIP install -q --no-deps ltx-core==1.0.0 2> >(grep -v "^WARNING: Location" >&2) || \
    echo "could not install ltx-core: the official-stack tests will be skipped"
fi
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
