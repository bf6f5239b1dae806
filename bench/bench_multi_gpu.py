"""Several-GPU benchmark: the engine's real training loop (trainer_core.engine.Trainer with
trainer_core.distributed) on 1 and N processes, per strategy.

Each configuration runs under torchrun (NCCL on GPUs, gloo with ``--cpu``): the full-size
LTX-2 layout with random bf16 weights (``--tiny``: the tiny checkpoint's layout, fp32), a
rank-32 attention LoRA, synthetic latents of ``--shape`` with audio. Data parallel (ddp,
fsdp2): one sample per process per step (global batch = processes). Sequence parallel (sp,
fsdp2+sp): one sample per step, its video tokens split over the processes (all of them one
group, data-parallel degree 1). Records (a JSON list, ``bench/results/multi_gpu_<gpu>.json``
or ``--out``):

    gpus, strategy (single / ddp / fsdp2 / sp / fsdp2+sp), s_per_step (median after warm-up),
    samples_per_s, scaling (samples_per_s over gpus × the 1-process figure; for sequence
    parallel, whose point is a clip one GPU cannot hold, also ``speedup``: the 1-process
    s_per_step over this one), video_tokens and video_tokens_per_gpu, peak_vram_gib (per GPU:
    the allocator's peak from the model on, warm-up included), peak_rss_gib (per process),
    stack, model, shape, gpu

    python bench/bench_multi_gpu.py --gpus 2 --strategies ddp,fsdp2,fsdp2+sp --shape 768x512x121
    python bench/bench_multi_gpu.py --cpu --tiny --gpus 2 --steps 3     # the smoke test
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def synthetic_latents(n: int, shape: str, width: int, seed: int = 0):
    """``n`` random samples of one ``WxHxF`` bucket (video + audio + text), fixed by seed."""
    import torch

    from trainer_core.engine import ItemSource, LatentItem

    W, H, F = (int(v) for v in shape.lower().split("x"))
    Fl, Hl, Wl, T = 1 + (F - 1) // 8, H // 32, W // 32, int(round(F / 24.0 * 25))
    g = torch.Generator().manual_seed(seed)
    items = [LatentItem(key=f"s{i}", video=torch.randn(128, Fl, Hl, Wl, generator=g),
                        audio=torch.randn(8, T, 16, generator=g),
                        text={"context": torch.randn(64, width, generator=g)}, bucket=shape)
             for i in range(n)]
    return ItemSource(items, {"context": torch.zeros(64, width)})


def worker(args) -> int:
    import resource

    import torch

    from trainer_core import distributed as D
    from trainer_core.engine import Callbacks, TrainConfig, Trainer
    from trainer_core.ltx2 import LTX2Config, build_tree, make_predict
    from trainer_core.tiny_checkpoint import full_config, text_context_width, tiny_config

    strategy = args.strategy
    sp = strategy in ("sp", "fsdp2+sp")
    d = D.init(backend="gloo" if args.cpu else None, timeout_s=600)
    d.sp = sp and d.active
    batch = 1 if sp else d.world
    dev = D.device_for(d, "cpu" if args.cpu else "cuda")
    if d.backend != "nccl" and not args.cpu:
        torch.cuda.set_device(0)
    cfgd = tiny_config(args.variant) if args.tiny else full_config(args.variant)
    c = LTX2Config.from_metadata({"config": cfgd})
    dtype = torch.float32 if args.tiny else torch.bfloat16
    torch.manual_seed(0)
    # FSDP2 starts from the host copy and keeps its shard on the device; DDP loads it whole
    fsdp = strategy in ("fsdp2", "fsdp2+sp")
    root = build_tree(c, device="cpu" if fsdp else dev, dtype=dtype, init="random", seed=0)
    root.requires_grad_(False)
    if fsdp:
        D.shard_base(root, d)
        root.to(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    width = text_context_width(cfgd, processed=False, tiny=args.tiny)
    data = synthetic_latents(batch * (args.warmup + args.steps), args.shape, width)
    tokens = math.prod(data.items[0].video.shape[1:])
    cfg = TrainConfig(steps=args.warmup + args.steps, rank=32 if not args.tiny else 4, checkpoint_every=0,
                      mixed_precision="fp32" if args.tiny else "bf16", sigma_sampler="uniform",
                      divergence_factor=0.0)
    times = []

    def on_step(rec):
        times.append(rec["s_per_step"])

    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(root, make_predict(checkpointing=True, sp=d if d.sp else None), data, cfg, tmp, device=dev,
                     callbacks=Callbacks(on_step=on_step), batch_size=batch, dist=d)
        tr.train()
    peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    import torch.distributed as td

    allp = [None] * d.world
    if d.active:
        td.all_gather_object(allp, (peak, rss))
    else:
        allp = [(peak, rss)]
    if d.is_main:
        timed = times[args.warmup:] or times
        s = statistics.median(timed)
        rec = {"gpus": d.world, "strategy": strategy if d.world > 1 else "single", "s_per_step": round(s, 4),
               "samples_per_s": round(batch / s, 4), "video_tokens": tokens,
               "video_tokens_per_gpu": tokens // d.world if d.sp else tokens,
               "peak_vram_gib": [None if p is None else round(p, 3) for p, _ in allp],
               "peak_rss_gib": [round(r, 3) for _, r in allp], "stack": "ours", "model": args.variant
               + (" (tiny)" if args.tiny else ""), "shape": args.shape,
               "gpu": "cpu" if args.cpu else torch.cuda.get_device_name(dev), "steps": args.steps,
               "warmup": args.warmup, "backend": d.backend or "none"}
        Path(args.record).write_text(json.dumps(rec))
    d.close()
    return 0


def launch(args, gpus: int, strategy: str) -> dict:
    rec_path = Path(tempfile.mkstemp(suffix=".json")[1])
    # one process runs without torchrun (the plain single-process engine)
    head = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(gpus)] \
        if gpus > 1 else [sys.executable]
    cmd = head + [str(Path(__file__).resolve()), "--worker", "--strategy", strategy, "--record", str(rec_path),
           "--variant", args.variant, "--shape", args.shape, "--steps", str(args.steps), "--warmup", str(args.warmup)]
    cmd += ["--cpu"] if args.cpu else []
    cmd += ["--tiny"] if args.tiny else []
    env = dict(os.environ, PYTHONPATH=str(REPO))
    if args.cpu:
        env["OMP_NUM_THREADS"] = "1"
    t0 = time.time()
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=args.timeout)
    try:
        rec = json.loads(rec_path.read_text()) if rec_path.stat().st_size else None
    finally:
        rec_path.unlink(missing_ok=True)
    if p.returncode != 0 or rec is None:
        tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
        return {"gpus": gpus, "strategy": strategy, "error": " | ".join(tail)[-600:], "model": args.variant,
                "shape": args.shape}
    rec["wall_s"] = round(time.time() - t0, 1)
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpus", type=int, default=2)
    ap.add_argument("--strategies", default="ddp,fsdp2,fsdp2+sp")
    ap.add_argument("--variant", default="ltx-2.0")
    ap.add_argument("--shape", default="768x512x121")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--cpu", action="store_true", help="gloo processes on the CPU (a smoke test)")
    ap.add_argument("--tiny", action="store_true", help="the tiny checkpoint's layout instead of the full size")
    ap.add_argument("--out", default=None)
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--strategy", default="ddp", help=argparse.SUPPRESS)
    ap.add_argument("--record", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    base = launch(args, 1, "ddp")
    records = [base]
    print(json.dumps(base), flush=True)
    for strategy in [s.strip() for s in args.strategies.split(",") if s.strip()]:
        rec = launch(args, args.gpus, strategy)
        if "samples_per_s" in rec and "samples_per_s" in base:
            rec["scaling"] = round(rec["samples_per_s"] / (args.gpus * base["samples_per_s"]), 3)
            if strategy in ("sp", "fsdp2+sp"):
                rec["speedup"] = round(base["s_per_step"] / rec["s_per_step"], 3)
        records.append(rec)
        print(json.dumps(rec), flush=True)
    gpu = "cpu" if args.cpu else (base.get("gpu") or "gpu").split()[-1]
    out = Path(args.out) if args.out else REPO / "bench" / "results" / f"multi_gpu_{gpu}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(records, indent=1))
    return 0 if all("error" not in r for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
