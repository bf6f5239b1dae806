"""Where a streamed step spends its time: the 19B layout at 768×512×121 under a VRAM budget,
for plan variants on one machine: ``offload`` (resident blocks keep their activations in host
memory), ``offs`` (some streamed blocks too), ``nooff`` (recomputed); ``-fp8`` streams as
fp8. Per variant: every step's time and its forward/backward split (CUDA events), the time
Python's garbage collector took in it, and a torch.profiler pass over one step that sums the
copies by direction and the host-side CUDA calls that can stall the GPU (synchronizations,
mallocs).
With ``--cap`` the caching allocator is held to the budget as on a card of that size.

    python bench/profile_offload.py --budget 24 --variants offload,nooff --cap --out $OUT
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_train_step import (_GC, _lora_and_opt, _step, build_full, make_plan, split_step, step_inputs,  # noqa: E402
                              timed_step)

from trainer_core.engine import QuietGC  # noqa: E402
from trainer_core.ltx2 import make_predict  # noqa: E402
from trainer_core.tiny_checkpoint import text_context_width  # noqa: E402

_CALLS = ("cudaStreamSynchronize", "cudaEventSynchronize", "cudaDeviceSynchronize", "cudaMalloc", "cudaFree",
          "cudaHostAlloc", "cudaMemcpyAsync", "cudaStreamWaitEvent")


def profile_one(predict, root, inp, lora, opt) -> dict:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        _step(predict, root, inp, lora, opt)
        torch.cuda.synchronize()
    out: dict = {"cpu_calls": {}, "gpu": {}}
    for e in prof.key_averages():
        if e.key in _CALLS:
            out["cpu_calls"][e.key] = {"count": e.count, "ms": round(e.cpu_time_total / 1e3, 2)}
        if e.key.startswith("Memcpy") or e.key.startswith("Memset"):
            out["gpu"][e.key] = {"count": e.count, "ms": round(e.device_time_total / 1e3, 2)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=24.0)
    ap.add_argument("--shape", default="768x512x121")
    ap.add_argument("--variants", default="offload,nooff")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--cap", action="store_true")
    ap.add_argument("--default-gc", action="store_true",
                    help="leave Python's collector as it is (the engine keeps it out of the steps)")
    ap.add_argument("--out", default="/tmp/po")
    a = ap.parse_args()
    dev = torch.device("cuda")
    root, cfg = build_full("ltx-2.0", dev)
    W, H, F = (int(v) for v in a.shape.split("x"))
    inp = step_inputs(text_context_width(cfg, processed=False), W, H, F, 24.0, dev,
                      torch.Generator(device=dev).manual_seed(0))
    total = torch.cuda.get_device_properties(dev).total_memory
    recs = []
    for var in a.variants.split(","):
        lora, opt = _lora_and_opt(root, dev)
        plan = make_plan(root, inp, a.budget, True, lora, "fp8" if var.endswith("fp8") else "bf16",
                         offload=not var.startswith("nooff"), offload_streamed=var.startswith("offs"))
        predict = make_predict(memory_plan=plan, compile_blocks=True)
        rec = {"variant": var, "plan": plan.summary(), "budget_gib": a.budget, "cap": a.cap,
               "gc": "default" if a.default_gc else "kept out of the steps (QuietGC)"}
        quiet = QuietGC()
        try:
            t0 = time.perf_counter()
            _step(predict, root, inp, lora, opt)
            torch.cuda.synchronize()
            rec["first_step_s"] = round(time.perf_counter() - t0, 1)
            if not a.default_gc:
                quiet.settle()
            torch.cuda.empty_cache()
            if a.cap:  # weights of streamed blocks have left the device: hold the allocator to the budget
                torch.cuda.set_per_process_memory_fraction(min(1.0, a.budget * 2**30 / total), torch.cuda.current_device())
            for _ in range(2):
                _step(predict, root, inp, lora, opt)
                quiet.tick()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            times, phases, gc_ms = [], [], []
            for _ in range(a.steps):
                torch.cuda.synchronize()
                g0 = _GC["ms"]
                t0 = time.perf_counter()
                phases.append(timed_step(predict, root, inp, lora, opt))
                torch.cuda.synchronize()
                quiet.tick()
                times.append(round(time.perf_counter() - t0, 4))
                gc_ms.append(round(_GC["ms"] - g0, 1))
            rec["steps_s"] = times
            rec["steps_fwd_bwd_s"] = [[round(f, 4), round(b, 4)] for f, b in (ev() for ev in phases)]
            rec["gc_ms_per_step"] = gc_ms
            rec["allocator"] = torch.cuda.get_allocator_backend()
            rec["median_s"] = sorted(times)[len(times) // 2]
            rec["forward_s"], rec["backward_s"] = (round(x, 4) for x in split_step(predict, root, inp, lora, opt, n=3))
            rec["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            rec["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
            rec["profile"] = profile_one(predict, root, inp, lora, opt)
        except torch.OutOfMemoryError as e:
            rec["error"] = f"out of memory: {str(e)[:200]}"
        finally:
            quiet.release()
            torch.cuda.set_per_process_memory_fraction(1.0, torch.cuda.current_device())
        predict.release()
        lora.detach()
        del lora, opt, predict
        import torch._dynamo as dynamo

        dynamo.reset()
        torch.cuda.empty_cache()
        print(json.dumps(rec), flush=True)
        recs.append(rec)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "profile_offload.json").write_text(json.dumps(recs, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
