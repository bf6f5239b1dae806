#!/usr/bin/env bash
# Build .bench_comfy/ in the repo root: the carry that lets bench/bench_encode.py and
# bench/gpu_smoke_train.py import ComfyUI on the GPU machine (no internet there).
#   .bench_comfy/ComfyUI  the checkout at $COMFYUI_PATH without .git, tests, models and the
#                         tokenizer data folders comfy/text_encoders/*_tokenizer (code folders
#                         that merely contain "tokenizer", e.g. comfy/ldm/cosmos/cosmos_tokenizer, stay)
#   .bench_comfy/wheels   py3.12 wheels of what the GPU machine lacks: comfy-kitchen (the
#                         version ComfyUI's requirements.txt pins; ComfyUI 0.33 imports it for
#                         attention; repacked without its ROCm backend, 59 MB less unpacked),
#                         comfy-aimdo torchsde trampoline truststore, and with --with-av PyAV
#                         (35 MB: the VAE benchmark never imports it, and with it the carry
#                         passes the device tool's 64 MiB); install there with
#                         pip install --no-deps --target /tmp/deps .bench_comfy/wheels/*.whl
# Usage: COMFYUI_PATH=/path/to/ComfyUI scripts/prepare_bench_comfy.sh [--no-wheels] [--with-av]
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
WHEELS=1 AV=0
for a in "$@"; do
  case "$a" in
    --no-wheels) WHEELS=0 ;;
    --with-av) AV=1 ;;
    *) echo "unknown option $a" >&2; exit 2 ;;
  esac
done
if [[ $WHEELS == 1 ]]; then
  rm -rf "$DEST/wheels"
  mkdir -p "$DEST/wheels"
  KITCHEN="$(grep -i '^comfy-kitchen' "$SRC/requirements.txt" | head -1 | tr -d ' ')"
  EXTRA=()
  [[ $AV == 1 ]] && EXTRA+=(av)
  "$PY" -m pip download --only-binary=:all: --python-version 3.12 --no-deps -d "$DEST/wheels" \
    "comfy-aimdo==0.3.0" torchsde trampoline truststore "${EXTRA[@]}"
  if [[ -n "$KITCHEN" ]]; then
    K="$(mktemp -d)"
    "$PY" -m pip download --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --no-deps -d "$K" "$KITCHEN"
    "$PY" - "$K" "$DEST/wheels" <<'PYEOF'
import pathlib, sys, zipfile
src, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
for whl in src.glob("comfy_kitchen-*.whl"):
    with zipfile.ZipFile(whl) as zin, zipfile.ZipFile(dest / whl.name, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zout:
        for item in zin.infolist():
            if "/backends/hip/" in item.filename:
                continue  # ROCm kernels: the GPU machine is NVIDIA
            data = zin.read(item.filename)
            if item.filename.endswith(".dist-info/RECORD"):
                data = b"".join(l + b"\n" for l in data.splitlines() if b"/backends/hip/" not in l)
            zout.writestr(item, data)
PYEOF
    rm -rf "$K"
  fi
fi
du -sh "$DEST" "$DEST"/* 2>/dev/null || true
