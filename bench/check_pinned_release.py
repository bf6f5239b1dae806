"""Does training give its pinned host memory back? PyTorch's pinned-memory allocator caches
freed blocks; ``predict.release()`` must hand them back to the system. Pins a plain buffer,
then runs a tiny streamed + offloaded LoRA step on the GPU, and reads the pinned allocator's
bytes before and after release (JSON to --out).

    python bench/check_pinned_release.py --out $OUT/pinned.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer_core.ltx2 import make_predict  # noqa: E402
from trainer_core.ltx2.memory import MemoryPlan, free_pinned_cache  # noqa: E402


def pinned_gib() -> float:
    if not torch.cuda.is_available():  # a dry run of the script on CPU
        return 0.0
    return torch.cuda.host_memory_stats().get("allocated_bytes.all.current", 0) / 2**30


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/pinned.json")
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args()
    dev = a.device
    from bench_train_step import step_inputs, step_loss
    from trainer_core.lora import LoRASet, LoRASpec
    from trainer_core.ltx2 import LTX2Config, build_tree
    from trainer_core.tiny_checkpoint import text_context_width, tiny_config

    cuda = dev == "cuda"
    if cuda:
        torch.cuda.init()
    rec: dict = {"gpu": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__}
    x = torch.empty(2 * 2**30 if cuda else 1, dtype=torch.uint8)
    x = x.pin_memory() if cuda else x
    rec["plain_pinned_gib"] = round(pinned_gib(), 3)
    del x
    rec["plain_after_del_gib"] = round(pinned_gib(), 3)  # cached by PyTorch
    free_pinned_cache()
    rec["plain_after_free_gib"] = round(pinned_gib(), 3)

    cfg = tiny_config("2.0")
    cfg["transformer"]["num_layers"] = 6
    root = build_tree(LTX2Config.from_metadata({"config": cfg}), init="random", seed=3).to(dev)
    root.requires_grad_(False)
    lora = LoRASet.for_model(root, LoRASpec(rank=4, alpha=4, preset="all attention"), seed=1).to(dev)
    lora.attach(root)
    plan = MemoryPlan(["offload", "offload", "full", "keep", "offload", "full"], streamed=[1, 4, 5])
    predict = make_predict(memory_plan=plan, offload_min_bytes=0)
    moved = step_inputs(text_context_width(cfg, processed=False), 64, 64, 9, 24.0, dev,
                        torch.Generator(device=dev).manual_seed(0))
    v, a_ = predict(root, moved)
    loss = step_loss(v, a_, moved)
    loss.backward()
    if cuda:
        torch.cuda.synchronize()
    rec["step_pinned_mib"] = round(pinned_gib() * 1024, 3)
    predict.release()
    rec["after_release_mib"] = round(pinned_gib() * 1024, 3)
    rec["weights_back_on_device"] = all(p.device.type == dev for p in root.parameters())
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rec, indent=1))
    print(json.dumps(rec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
