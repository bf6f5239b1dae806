"""GPU profile of the training step on a slice of the full-size LTX-2 layout.

Builds the 19B layout with ``--layers`` blocks (random bf16 weights), a rank-32
all-attention LoRA, and times one training step per (shape, variant); for the eager
checkpointed variant it also records a torch.profiler trace summary (top CUDA kernels, top
CPU ops, GPU busy share). Writes ``profile.json`` and ``profile_<shape>.txt`` to ``--out``.

    python bench/profile_step.py --layers 8 --out /tmp/prof
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train_step import build_full, step_inputs, step_loss, timed_steps  # noqa: E402
from trainer_core.lora import LoRASet, LoRASpec  # noqa: E402
from trainer_core.ltx2 import make_predict  # noqa: E402
from trainer_core.tiny_checkpoint import text_context_width  # noqa: E402


def one_step(predict, root, inp, params, opt):
    with torch.autocast("cuda", dtype=torch.bfloat16):
        v, a = predict(root, inp)
    loss = step_loss(v, a, inp)
    loss.backward()
    if params:
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)


def kernel_kind(name: str, avg_us: float) -> str:
    """A CUDA kernel's kind by its name: matrix products (large, or small: under 20 µs on
    average — LoRA's rank-r products and the audio stream's), attention, fused Triton
    (inductor's elementwise / norm work), copies, other ATen kernels."""
    n = name.lower()
    if "memcpy" in n or "memset" in n:
        return "copy"
    if any(k in n for k in ("sdpa", "fmha", "flash", "attention", "attn")):
        return "attention"
    if any(k in n for k in ("nvjet", "gemm", "cutlass", "xmma", "splitk", "sm90_", "cublas")):
        return "matmul_large" if avg_us >= 20 else "matmul_small"
    if n.startswith("triton"):
        return "triton"
    return "other"


def is_annotation(name: str) -> bool:
    """A profiler range shown on the GPU timeline (the optimizer's step, a compiled region, the
    engine's ``ltx2.*`` ranges), which spans kernels counted on their own."""
    return "#" in name or name.startswith(("Torch-Compiled Region", "CompiledFunction", "autograd::", "ltx2."))


def kernel_categories(ka) -> dict:
    """GPU time of the profiled step by kernel kind: {kind: {"ms", "n", "top": [(name, ms, n)]}}."""
    out: dict = {}
    for e in ka:
        if e.device_type != torch.autograd.DeviceType.CUDA or not e.self_device_time_total or is_annotation(e.key):
            continue
        us = e.self_device_time_total
        kind = kernel_kind(e.key, us / max(e.count, 1))
        c = out.setdefault(kind, {"ms": 0.0, "n": 0, "top": []})
        c["ms"] += us / 1000
        c["n"] += e.count
        c["top"].append((e.key[:90], round(us / 1000, 2), e.count))
    for c in out.values():
        c["ms"] = round(c["ms"], 2)
        c["top"] = sorted(c["top"], key=lambda t: -t[1])[:6]
    return out


def timed(fn, n=4, warmup=2):
    ts = timed_steps(fn, n, warmup)
    return sorted(ts)[len(ts) // 2]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--variant", default="ltx-2.0")
    ap.add_argument("--shapes", default="768x512x121,512x512x33")
    ap.add_argument("--variants", default="eager_ckpt,eager_nockpt,eager_ckpt_nolora,compiled_ckpt",
                    help="eager|compiled|cg (compiled + CUDA graphs) _ckpt|_nockpt [_nolora] [_fp8] [_amb<NN>] [_sa: save attention outputs under a budget]")
    ap.add_argument("--out", default="/tmp/prof")
    ap.add_argument("--profile", default="eager_ckpt")
    ap.add_argument("--no-trace", action="store_true", help="skip the Chrome trace (large at full size)")
    ap.add_argument("--steps", type=int, default=4, help="timed steps per variant (after 2 warm-up steps)")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda")
    root, cfg = build_full(a.variant, dev, num_layers=a.layers)
    lora = LoRASet.for_model(root, LoRASpec(rank=32, alpha=32, preset="all attention"), seed=0).to(dev)
    params = list(lora.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4, fused=True)
    width = text_context_width(cfg, processed=False)
    gen = torch.Generator(device=dev).manual_seed(0)
    results = []
    profiled = set(a.profile.split(","))
    for shape in a.shapes.split(","):
        W, H, F = (int(v) for v in shape.split("x"))
        inp = step_inputs(width, W, H, F, 24.0, dev, gen)
        for var in a.variants.split(","):
            use_lora = "nolora" not in var
            if use_lora:
                lora.attach(root)
            else:
                lora.detach()
            import torch._dynamo as dynamo
            import torch._inductor.config as icfg

            dynamo.reset()
            icfg.cpp_wrapper = "cppwrap" in var
            # _amb<NN>: the compiled blocks' activation memory budget NN/100 (make_predict's
            # own default otherwise; _amb100: the partitioner's default, save what it must)
            m_amb = re.search(r"_amb(\d+)", var)
            amb = {"activation_budget": int(m_amb.group(1)) / 100} if m_amb else {}
            parts = var.split("_")
            comp = var.startswith("compiled") or parts[0] == "cg"
            # cg_*: compiled blocks replayed as CUDA graphs, as make_predict does for small buckets
            cg = parts[0] == "cg"
            from trainer_core.ltx2.fp8 import disable_fp8_compute, enable_fp8_compute

            disable_fp8_compute(root)
            if "fp8" in var:  # fp8 compute of the frozen block linears
                enable_fp8_compute(root)
            pred = make_predict(checkpointing=("nockpt" not in var and "keep" not in var), compile_blocks=comp,
                                cudagraphs=cg if comp else None, save_attention="_sa" in var, **amb)
            if not use_lora:
                root.patchify_proj.weight.requires_grad_(False)
                inp.video.tokens.requires_grad_(True)  # something must need a gradient
            torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            try:
                s = timed(lambda: one_step(pred, root, inp, params if use_lora else [], opt), n=a.steps)
            except torch.OutOfMemoryError as e:
                results.append({"shape": shape, "variant": var, "error": f"OOM {e}"[:200]})
                torch.cuda.empty_cache()
                continue
            finally:
                inp.video.tokens.requires_grad_(False)
            rec = {"shape": shape, "variant": var, "layers": a.layers, "s_per_step": round(s, 4),
                   "activation_budget": amb.get("activation_budget"),
                   "s_per_step_per_block": round(s / a.layers, 5), "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
                   "wall_incl_warmup": round(time.perf_counter() - t0, 1)}
            if var in profiled:
                from torch.profiler import ProfilerActivity, profile

                torch.cuda.synchronize()
                with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                    t1 = time.perf_counter()
                    one_step(pred, root, inp, params if use_lora else [], opt)
                    torch.cuda.synchronize()
                    rec["profiled_wall_ms"] = round((time.perf_counter() - t1) * 1e3, 1)
                ka = prof.key_averages()
                txt = ka.table(sort_by="cuda_time_total", row_limit=45)
                txt += "\n\n" + ka.table(sort_by="self_cpu_time_total", row_limit=30)
                (out / f"profile_{shape}_{var}.txt").write_text(txt)
                if not a.no_trace:
                    prof.export_chrome_trace(str(out / f"trace_{shape}_{var}.json"))
                rec["kernels"] = kernel_categories(ka)
                # the GPU's busy time: its kernels and copies, each counted once (they run on one stream)
                rec["gpu_busy_ms"] = round(sum(c["ms"] for c in rec["kernels"].values()), 1)
                rec["n_kernels"] = sum(c["n"] for c in rec["kernels"].values())
            print(json.dumps(rec), flush=True)
            results.append(rec)
    (out / "profile.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
