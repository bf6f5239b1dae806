#!/usr/bin/env bash
# Set up and run the pack's main job: ComfyUI with this pack loaded, ready to train.
#   - prepares ./.venv (scripts/setup.sh)
#   - makes a ComfyUI base folder ./.quickstart with custom_nodes/ -> this repo, a tiny
#     LTX-2 checkpoint in models/checkpoints (to try the graph without the 40 GB weights),
#     with a tiny latent cache for it (the "validate my install" workflow trains on them in
#     about a minute on a CPU), and a demo dataset in input/my_dataset, the folder the shipped
#     workflows read (4 clips with cuts, tones, captions; every shot fits the default buckets)
#   - starts ComfyUI ($COMFYUI_PATH, else /opt/ComfyUI) on http://127.0.0.1:8188
#     (--cpu when no CUDA GPU is visible). Put real weights in .quickstart/models/... or point
#     ComfyUI at your own models with --extra-model-paths-config.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
COMFY=${COMFYUI_PATH:-/opt/ComfyUI}
# this project's own machines keep the reference ComfyUI beside the repository
if [ -z "${COMFYUI_PATH:-}" ] && [ ! -f "$COMFY/main.py" ] && [ -f ../shared/ComfyUI/main.py ]; then
  COMFY=$(cd ../shared/ComfyUI && pwd)
fi
if [ ! -f "$COMFY/main.py" ]; then
  echo "ComfyUI not found at $COMFY: set COMFYUI_PATH to your ComfyUI checkout" >&2
  exit 1
fi
bash scripts/setup.sh
PY=.venv/bin/python
BASE=${QUICKSTART_DIR:-$REPO/.quickstart}
mkdir -p "$BASE"/{custom_nodes,models/checkpoints,models/loras,input,output,temp,user}
ln -sfn "$REPO" "$BASE/custom_nodes/comfyui-ltx2-lora-trainer"
[ -f "$BASE/models/checkpoints/ltx2-tiny-2.0.safetensors" ] || \
  "$PY" -m trainer_core.tiny_checkpoint --variant ltx-2.0 --out "$BASE/models/checkpoints/ltx2-tiny-2.0.safetensors" \
    --cache "$BASE/output/ltx2_cache/ltx2_install_check"
[ -f "$BASE/models/diffusion_models/ltx2-tiny-2.5-transformer.safetensors" ] || \
  "$PY" -m trainer_core.tiny_checkpoint --variant ltx-2.5 --tiny-names --out "$BASE/models" \
    --cache "$BASE/output/ltx2_cache/ltx25_install_check"
# the demo clips in the folder the shipped workflows read (input/my_dataset): 4 clips of two
# 6-second shots with sound and captions, long enough for the Bucket node's default buckets
[ -d "$BASE/input/my_dataset" ] || "$PY" scripts/make_demo_dataset.py "$BASE/input/my_dataset"
CPU=""
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || CPU="--cpu"
echo "starting ComfyUI with the LTX-2 LoRA Trainer: http://127.0.0.1:${PORT:-8188}  (base folder: $BASE)"
cd "$COMFY"
exec "$REPO/$PY" main.py $CPU --base-directory "$BASE" --listen 127.0.0.1 --port "${PORT:-8188}" \
  --disable-auto-launch --database-url "sqlite:///$BASE/user/comfyui.db" "$@"
