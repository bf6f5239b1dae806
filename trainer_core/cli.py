"""Headless runs of the same engine the Train node uses.

    python -m trainer_core.cli train <run>/settings.yaml --checkpoint ltx-2-19b-dev.safetensors \
        [--device cuda] [--steps N] [--lora out.safetensors] [--resume latest|none|step_000500]

The settings file is the one the Train node wrote beside the LoRA (or in its run folder): it
names the latent cache and every training setting, so the run repeats without ComfyUI. The
transformer is read straight from the checkpoint (safetensors) into trainer_core's plain-torch
LTX-2 tree. For several GPUs, run one process per GPU with different seeds/caches.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _train(args) -> int:
    import torch

    from .engine import Callbacks, TrainConfig, TrainingStopped
    from .ltx2 import load_tree_from_checkpoint, make_predict, read_checkpoint_config
    from .run import read_settings, run_training

    doc = read_settings(args.settings)
    cfg_d = dict(doc["train"])
    if args.steps:
        cfg_d["steps"] = args.steps
    cfg = TrainConfig.from_dict(cfg_d)
    device = torch.device(args.device)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    mcfg = read_checkpoint_config(args.checkpoint)
    root = load_tree_from_checkpoint(args.checkpoint, device=device, dtype=dtype)
    predict = make_predict(checkpointing=cfg.grad_checkpointing)
    run_dir = Path(args.run_dir or doc.get("run_dir") or Path(args.settings).parent)
    lora = args.lora or doc.get("lora")

    def on_step(rec):
        if rec["step"] % args.log_every == 0 or rec["step"] == rec["steps"]:
            print(f"step {rec['step']}/{rec['steps']} loss {rec['loss']:.4f} smoothed {rec['smoothed']:.4f} "
                  f"lr {rec['lr']:.2e} {rec['s_per_step']:.2f}s/step", flush=True)

    try:
        out = run_training(root, predict, doc["cache"], cfg, run_dir, lora, device=device,
                           callbacks=Callbacks(on_step=on_step), resume=args.resume,
                           base={"variant": getattr(mcfg, "variant", "unknown"), "checkpoint": Path(args.checkpoint).name})
    except TrainingStopped as e:
        print(f"stopped: {e}", file=sys.stderr)
        return 3
    print(json.dumps({"lora": out.lora_path, "steps": out.result.steps_done,
                      "final_loss": out.result.history[-1]["loss"] if out.result.history else None,
                      "notes": out.notes}))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer_core.cli", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a LoRA from a settings.yaml written by the Train node")
    t.add_argument("settings")
    t.add_argument("--checkpoint", required=True, help="LTX-2 checkpoint (.safetensors)")
    t.add_argument("--device", default="cuda" if _cuda() else "cpu")
    t.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"], help="frozen weights' dtype")
    t.add_argument("--steps", type=int, default=0, help="override the number of steps")
    t.add_argument("--lora", default=None, help="output LoRA path (default: the settings file's)")
    t.add_argument("--run-dir", default=None)
    t.add_argument("--resume", default="latest")
    t.add_argument("--log-every", type=int, default=10)
    args = p.parse_args(argv)
    if args.cmd == "train":
        return _train(args)
    return 2


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


if __name__ == "__main__":
    sys.exit(main())
