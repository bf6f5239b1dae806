"""GPU benchmark: encoding one training clip through ComfyUI's own LTX-2 VAEs, as the
Encode Latents node does, at full size with random weights.

Builds the full-size LTX-2 video VAE and audio VAE + vocoder state dicts (the real key
layout from ``trainer_core.tiny_checkpoint``'s full config, random weights), loads them
through ComfyUI's classes exactly as Load Checkpoint and the LTX audio VAE loader do, and
encodes a 768×512×121 clip and its 5 s of stereo audio with the calls the node makes
(``vae.encode(frames)``, ``audio_vae.encode(waveform)``). Two settings: the whole card, and
a simulated 24 GB card (the process is capped at 24 GiB and ComfyUI is told to keep the rest
reserved).

Two paths for the video (``--path``): ``comfy`` is ComfyUI's default (``vae.encode``: its own
estimate, a whole-clip attempt and its tiled retry on out-of-memory); ``planned`` is what
Encode Latents runs (``nodes/vae_encode.encode_video``: whole or tiles planned from the free
VRAM by ``trainer_core.encode_plan``, one attempt). Every record counts the out-of-memory
retries ComfyUI made (``oom_first_attempt``, from its log warning; the planned path must
have 0). Encodes run under ``torch.inference_mode()`` as ComfyUI's executor runs a node
(``--grad`` leaves it out: the VAE's weights require grad, so the encode keeps every
activation for a backward pass — how the first records of this file were taken).

Writes ``bench/results/encode_<gpu>.json`` (or ``--out``): records with what, path, shape,
card_gib, s_per_clip (median), s_min, s_max, peak_vram_gib, peak_reserved_gib, peak_extra_gib
(above the loaded VAE), tiled, tiles, plan, est_gib, budget_gib, oom_first_attempt, gpu, torch.

    COMFYUI_PATH=/path/to/ComfyUI python bench/bench_encode.py [--card 24] [--path comfy,planned]
    python bench/bench_encode.py --cpu --tiny --shape 192x128x33 --budget-gib 0.3   # CPU dry run
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import logging
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _cuda(cpu: bool = False) -> bool:
    return torch.cuda.is_available() and not cpu


def _comfy(path: str, card_gib: float | None, cpu: bool = False):
    if path not in sys.path:
        sys.path.insert(0, path)
    import comfy.options

    comfy.options.enable_args_parsing(False)
    import comfy.cli_args

    if not _cuda(cpu):
        comfy.cli_args.args.cpu = True
    if card_gib is not None and _cuda(cpu):
        total = torch.cuda.get_device_properties(0).total_memory / 2**30
        comfy.cli_args.args.reserve_vram = max(0.0, total - card_gib)
        torch.cuda.set_per_process_memory_fraction(min(1.0, card_gib / total))
    import comfy.sd
    import comfy.utils

    return comfy


def _state_dicts(variant: str = "ltx-2.0", tiny: bool = False):
    from trainer_core.tiny_checkpoint import (
        AUDIO_VAE_PREFIX, VAE_PREFIX, VOCODER_PREFIX, _tensor, audio_vae_layout, full_config, tiny_config,
        video_vae_layout, vocoder_layout,
    )

    cfg = tiny_config(variant) if tiny else full_config(variant)
    meta = {"config": json.dumps(cfg)}
    vsd = {k[len(VAE_PREFIX):]: _tensor(k, s, 0).to(torch.bfloat16) for k, s in video_vae_layout(cfg["vae"]).items()}
    asd = {"autoencoder." + k[len(AUDIO_VAE_PREFIX):]: _tensor(k, s, 0) for k, s in
           audio_vae_layout(cfg["audio_vae"]).items()}
    asd.update({"vocoder." + k[len(VOCODER_PREFIX):]: _tensor(k, s, 0) for k, s in
                vocoder_layout(cfg["vocoder"]).items()})
    return vsd, asd, meta


class _LogWatch(logging.Handler):
    """Counts ComfyUI's out-of-memory retries (its log warning) and notes tiled encodes."""

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.ooms = 0
        self.tiled = False

    def emit(self, record):
        msg = record.getMessage().lower()
        if "ran out of memory" in msg:
            self.ooms += 1
        if "tiled" in msg:
            self.tiled = True


def pack_module(name: str):
    """A module of this pack (``nodes.vae_encode``) imported as ComfyUI imports the pack: the repo
    as a package, so its relative imports resolve — the very function the node calls."""
    pkg = "ltx2_trainer_pack"
    if pkg not in sys.modules:
        spec = importlib.util.spec_from_file_location(pkg, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
        mod = importlib.util.module_from_spec(spec)
        sys.modules[pkg] = mod
        spec.loader.exec_module(mod)
    return importlib.import_module(f"{pkg}.{name}")


def _time(fn, reps: int, cuda: bool):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return out, sorted(times)


def run(comfy_path: str, card_gib: float | None, shape: str, reps: int, paths=("comfy", "planned"),
        grad: bool = False, cpu: bool = False, tiny: bool = False, budget_gib: float | None = None,
        audio: bool = True) -> list[dict]:
    comfy = _comfy(comfy_path, card_gib, cpu)
    import comfy.sd

    cuda = _cuda(cpu)
    dev_name = torch.cuda.get_device_name() if cuda else "cpu"
    total = torch.cuda.get_device_properties(0).total_memory / 2**30 if cuda else None
    vsd, asd, meta = _state_dicts(tiny=tiny)
    if not cuda:
        vsd = {k: v.float() for k, v in vsd.items()}
    vae = comfy.sd.VAE(sd=vsd, metadata=meta)
    vae.throw_exception_if_invalid()
    audio_vae = comfy.sd.VAE(sd=asd, metadata=meta) if audio else None
    if audio_vae is not None:
        audio_vae.throw_exception_if_invalid()
    del vsd, asd
    planner = pack_module("nodes.vae_encode") if "planned" in paths else None
    W, H, F = (int(v) for v in shape.split("x"))
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (F, H, W, 3), generator=g, dtype=torch.uint8).float().div_(255.0)
    secs = F / 24.0
    rate = int(getattr(audio_vae, "audio_sample_rate", 44100)) if audio_vae is not None else 16000
    wav = (0.1 * torch.randn(1, 2, int(secs * rate), generator=g))  # [B, C, N] as the node builds it
    budget = None if budget_gib is None else budget_gib * 2**30
    last_plan = {}

    def planned():
        res = planner.encode_video(vae, frames, budget_bytes=budget)
        last_plan["res"] = res
        return res.latent

    jobs = []
    for p in paths:
        if p == "comfy":
            jobs.append(("video", "comfy", lambda: vae.encode(frames)))
        elif p == "planned":
            jobs.append(("video", "planned", planned))
        else:
            raise ValueError(f"unknown path {p!r}: use comfy or planned")
    if audio_vae is not None:
        jobs.append(("audio", "comfy", lambda: audio_vae.encode(wav.movedim(1, -1))))

    mode = contextlib.nullcontext if grad else torch.inference_mode
    out = []
    for what, path, fn in jobs:
        watch = _LogWatch()
        logging.getLogger().addHandler(watch)
        try:
            with mode():
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                lat = fn()  # warm-up (and model load): its out-of-memory retries count too
                if cuda:
                    torch.cuda.synchronize()
                    base = torch.cuda.memory_allocated()
                    torch.cuda.reset_peak_memory_stats()
                lat, times = _time(fn, reps, cuda)
        finally:
            logging.getLogger().removeHandler(watch)
        rec = {"what": what, "path": path, "shape": shape, "card_gib": card_gib if card_gib is not None else
               (round(total, 1) if total else None), "latent_shape": list(lat.shape),
               "s_per_clip": round(times[len(times) // 2], 3), "s_min": round(times[0], 3), "s_max": round(times[-1], 3),
               "reps": reps,
               "peak_vram_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
               "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2) if cuda else None,
               "peak_extra_gib": round((torch.cuda.max_memory_allocated() - base) / 2**30, 2) if cuda else None,
               "oom_first_attempt": watch.ooms, "tiled": watch.tiled, "tiles": 1,
               "inference_mode": not grad, "forced_budget_gib": budget_gib if path == "planned" else None,
               "vae_dtype": str(getattr(vae, "vae_dtype", "")), "gpu": dev_name,
               "torch": torch.__version__,
               "note": ("tiny" if tiny else "full-size") + " LTX-2 VAE layout, random weights, ComfyUI's own VAE class"}
        if path == "planned":
            res = last_plan["res"]
            p = res.plan
            rec.update(plan=p.describe() if p else ("ComfyUI default: " + (res.note or "no plan on this device")),
                       tiled=bool(p and not p.whole) or watch.tiled, tiles=p.tiles if p else 1,
                       grid=list(p.grid) if p else None, est_gib=round(p.est_bytes / 2**30, 2) if p else None,
                       budget_gib=round(p.budget_bytes / 2**30, 2) if p else None,
                       encode_tiled_kwargs=(p.encode_tiled_kwargs() if p and not p.whole else None))
            if p and cuda and rec["peak_extra_gib"]:
                rec["est_over_measured"] = round(p.est_bytes / 2**30 / rec["peak_extra_gib"], 2)
        print(json.dumps(rec), flush=True)
        out.append(rec)
    return out


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH", "/opt/ComfyUI"))
    ap.add_argument("--card", type=float, default=None, help="simulate a card of this many GiB (default: whole card)")
    ap.add_argument("--shape", default="768x512x121", help="WxHxF")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--path", default="comfy,planned", help="comma list of comfy (ComfyUI's default) and planned (the node's)")
    ap.add_argument("--grad", action="store_true", help="encode outside inference mode (how the first records were taken)")
    ap.add_argument("--budget-gib", type=float, default=None, help="planned path: plan for this budget instead of ComfyUI's free memory")
    ap.add_argument("--no-audio", action="store_true")
    ap.add_argument("--cpu", action="store_true", help="run on the CPU (a dry run of the same code)")
    ap.add_argument("--tiny", action="store_true", help="the tiny checkpoint's VAE layout (with --cpu)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    a.paths = tuple(p.strip() for p in a.path.split(",") if p.strip())
    bad = [p for p in a.paths if p not in ("comfy", "planned")]
    if bad or not a.paths:
        ap.error(f"--path takes comfy and/or planned, got {a.path!r}")
    try:
        w, h, f = (int(v) for v in a.shape.split("x"))
        assert w > 0 and h > 0 and f > 0
    except (ValueError, AssertionError):
        ap.error(f"--shape is WxHxF in positive integers, e.g. 768x512x121; got {a.shape!r}")
    if a.reps < 1:
        ap.error("--reps must be at least 1")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    recs = run(a.comfyui, a.card, a.shape, a.reps, paths=a.paths, grad=a.grad, cpu=a.cpu, tiny=a.tiny,
               budget_gib=a.budget_gib, audio=not a.no_audio)
    gpu = (torch.cuda.get_device_name() if _cuda(a.cpu) else "cpu").replace(" ", "_")
    out = Path(a.out) if a.out else Path(__file__).parent / "results" / f"encode_{gpu}.json"
    prev = json.loads(out.read_text()) if out.exists() else []
    def key(r):
        return (r["what"], r.get("path", "comfy"), r.get("card_gib"), r.get("shape"), r.get("inference_mode", False),
                r.get("forced_budget_gib"))

    new = {key(r) for r in recs}
    prev = [r for r in prev if key(r) not in new]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(prev + recs, indent=1))
    os.replace(tmp, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
