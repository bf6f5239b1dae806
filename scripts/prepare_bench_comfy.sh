#!/usr/bin/env bash
# Build .bench_comfy/ in the repo root: the carry that lets bench/bench_encode.py and
# bench/gpu_smoke_train.py import ComfyUI on the GPU machine (no internet there).
#   .bench_comfy/ComfyUI  the checkout at $COMFYUI_PATH without .git, tests, models and the
#                         tokenizer data folders comfy/text_encoders/*_tokenizer (code folders
#                         that merely contain "tokenizer", e.g. comfy/ldm/cosmos/cosmos_tokenizer, stay)
#   .bench_comfy/wheels   py3.12 wheels of what the GPU machine lacks (av comfy-aimdo torchsde
#                         trampoline truststore); install there with
#                         pip install --no-deps --target /tmp/deps .bench_comfy/wheels/*.whl
# Usage: COMFYUI_PATH=/path/to/ComfyUI scripts/prepare_bench_comfy.sh [--no-wheels]
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="${COMFYUI_PATH:-/opt/ComfyUI}"
DEST="$REPO/.bench_comfy"
PY="${PYTHON:-python3}"
if [[ ! -f "$SRC/comfy/model_management.py" || ! -f "$SRC/main.py" ]]; then
  echo "no ComfyUI checkout at $SRC: set COMFYUI_PATH to one" >&2
  exit 2
fi
mkdir -p "$DEST"
TMP="$(mktemp -d "$DEST/.ComfyUI.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
# copy the tree, then drop what the benchmarks never import
(cd "$SRC" && tar --exclude=./.git --exclude=./tests --exclude=./tests-unit --exclude=./models \
   --exclude='__pycache__' --exclude='*.pyc' -cf - .) | tar -C "$TMP" -xf -
mkdir -p "$TMP/models"  # ComfyUI's folder_paths expects it; the benchmarks point their own folders in
find "$TMP/comfy/text_encoders" -maxdepth 1 -type d -name '*_tokenizer' -exec rm -rf {} +
rm -rf "$DEST/ComfyUI"
mv "$TMP" "$DEST/ComfyUI"
trap - EXIT
if [[ "${1:-}" != "--no-wheels" ]]; then
  mkdir -p "$DEST/wheels"
  "$PY" -m pip download --only-binary=:all: --python-version 3.12 --no-deps -d "$DEST/wheels" \
    av "comfy-aimdo==0.3.0" torchsde trampoline truststore
fi
du -sh "$DEST" "$DEST"/* 2>/dev/null || true
