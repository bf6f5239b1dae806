"""``python -m trainer_core.tiny_checkpoint`` from any folder: the tiny LTX-2 model (and its
latent cache) for the install-check workflows, paths relative to where you run it.

    python custom_nodes/comfyui-ltx2-lora-trainer/scripts/tiny_checkpoint.py \\
        --out models/checkpoints/ltx2-tiny-2.0.safetensors --cache output/ltx2_cache/ltx2_install_check

(run from the ComfyUI folder, with ComfyUI's Python; ``--help`` lists the options.)
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the pack's folder: trainer_core

from trainer_core.tiny_checkpoint import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
