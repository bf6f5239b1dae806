"""GPU benchmark: one LoRA training step of the full-size LTX-2 layout (random weights).

Measures our engine's step — trainer_core's checkpoint-safe forward + backward + AdamW on a
rank-32 attention LoRA, bf16 frozen weights, bf16 autocast, fp32 LoRA — at LTX-2's real
shapes with audio, batch 1, and writes a list of records to
``bench/results/train_step_<gpu>.json`` (or ``--out``):

    stack, model, shape, audio, budget_gib, s_per_step, peak_vram_gib, mfu, gpu, ...

MFU counts the useful model FLOPs of a LoRA step — forward matmul/attention FLOPs (counted
by torch's FlopCounterMode) times 2 (forward + input-gradient backward; frozen weights get no
weight gradient; the recompute of checkpointing is not useful work) — over the step time and
the GPU's dense bf16 peak.

    python bench/bench_train_step.py [--variants ltx-2.0,ltx-2.3] [--shapes 768x512x121,512x512x33]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer_core import objective as ob  # noqa: E402
from trainer_core.engine import ModalityInput, StepInputs  # noqa: E402
from trainer_core.lora import LoRASet, LoRASpec  # noqa: E402
from trainer_core.ltx2 import LTX2Config, build_tree, make_predict  # noqa: E402
from trainer_core.tiny_checkpoint import full_config, text_context_width  # noqa: E402

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def gpu_peak(name: str) -> float:
    for k, v in PEAK_BF16.items():
        if k in name:
            return v
    return float("nan")


def step_inputs(c_width: int, W: int, H: int, F: int, fps: float, device, gen) -> StepInputs:
    Fl, Hl, Wl = 1 + (F - 1) // 8, H // 32, W // 32
    T = int(round(F / fps * 25))
    n = Fl * Hl * Wl
    mode = ob.get_mode("text_to_audio_video")
    x0 = torch.randn(1, n, 128, device=device, generator=gen)
    a0 = torch.randn(1, T, 128, device=device, generator=gen)
    nv = ob.noise_modality(x0, ob.GENERATED, gen, "uniform")
    na = ob.noise_modality(a0, ob.GENERATED, gen, "uniform")
    ctx = torch.randn(1, 256, c_width, device=device, generator=gen)
    return StepInputs(ModalityInput(nv.x_t, nv.sigma, nv, (Fl, Hl, Wl)), ModalityInput(na.x_t, na.sigma, na, (T,)),
                      {"context": ctx}, fps, mode)


def bench(variant: str, shapes: list[str], steps: int, warmup: int) -> list[dict]:
    dev = torch.device("cuda")
    cfg = full_config(variant)
    c = LTX2Config.from_metadata({"config": cfg})
    torch.manual_seed(0)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        root = build_tree(c, device=dev, dtype=torch.bfloat16, init="random", seed=0)
    finally:
        torch.set_default_dtype(prev)
    root.requires_grad_(False)
    n_params = sum(p.numel() for p in root.parameters())
    lora = LoRASet.for_model(root, LoRASpec(rank=32, alpha=32, preset="all attention"), seed=0).to(dev)
    lora.attach(root)
    opt = torch.optim.AdamW(list(lora.parameters()), lr=1e-4, fused=True)
    predict = make_predict(checkpointing=True)
    width = text_context_width(cfg, processed=False)
    gen = torch.Generator(device=dev).manual_seed(0)
    out = []
    for shape in shapes:
        W, H, F = (int(v) for v in shape.split("x"))
        inp = step_inputs(width, W, H, F, 24.0, dev, gen)
        # useful FLOPs: one forward, counted
        from torch.utils.flop_counter import FlopCounterMode

        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            fc = FlopCounterMode(display=False)
            with fc:
                predict(root, inp)
        fwd_flops = fc.get_total_flops()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        times = []
        for i in range(warmup + steps):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                v, a = predict(root, inp)
            loss = ob.masked_mse(v, inp.video.noised.target, inp.video.noised.loss_mask).mean() + \
                ob.masked_mse(a, inp.audio.noised.target, inp.audio.noised.loss_mask).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(lora.parameters()), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        s = sorted(times)[len(times) // 2]
        name = torch.cuda.get_device_name()
        rec = {"stack": "ours", "model": "ltx-2.0-19b" if variant == "ltx-2.0" else "ltx-2.3-22b", "shape": shape,
               "audio": True, "budget_gib": None, "s_per_step": round(s, 4),
               "peak_vram_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
               "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2),
               "mfu": round(2 * fwd_flops / s / gpu_peak(name), 4) if not math.isnan(gpu_peak(name)) else None,
               "fwd_tflop": round(fwd_flops / 1e12, 2), "gpu": name, "params_b": round(n_params / 1e9, 2),
               "video_tokens": inp.video.tokens.shape[1], "audio_tokens": inp.audio.tokens.shape[1],
               "lora": "rank 32, all attention", "checkpointing": True, "steps_timed": steps,
               "torch": torch.__version__}
        print(json.dumps(rec), flush=True)
        out.append(rec)
    lora.detach()
    del root, lora, opt
    torch.cuda.empty_cache()
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default="ltx-2.0,ltx-2.3")
    ap.add_argument("--shapes", default="768x512x121,512x512x33")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: this benchmark runs on a GPU")
        return 0
    recs = []
    for v in a.variants.split(","):
        shapes = a.shapes.split(",") if v == "ltx-2.0" else a.shapes.split(",")[:1]
        recs += bench(v, shapes, a.steps, a.warmup)
    gpu = torch.cuda.get_device_name().replace(" ", "_")
    out = Path(a.out) if a.out else Path(__file__).parent / "results" / f"train_step_{gpu}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(recs, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
