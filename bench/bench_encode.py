"""GPU benchmark: encoding one training clip through ComfyUI's own LTX-2 VAEs, as the
Encode Latents node does, at full size with random weights.

Builds the full-size LTX-2 video VAE and audio VAE + vocoder state dicts (the real key
layout from ``trainer_core.tiny_checkpoint``'s full config, random weights), loads them
through ComfyUI's classes exactly as Load Checkpoint and the LTX audio VAE loader do, and
encodes a 768×512×121 clip and its 5 s of stereo audio with the calls the node makes
(``vae.encode(frames)``, ``audio_vae.encode(waveform)``). Two settings: the whole card, and
a simulated 24 GB card (the process is capped at 24 GiB and ComfyUI is told to keep the rest
reserved), where ComfyUI's own memory estimate and its tiled fallback decide how to encode.

Writes ``bench/results/encode_<gpu>.json`` (or ``--out``): records with what, shape,
card_gib, s_per_clip, peak_vram_gib, peak_reserved_gib, tiled, gpu, torch.

    COMFYUI_PATH=/path/to/ComfyUI python bench/bench_encode.py [--card 24]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _comfy(path: str, card_gib: float | None):
    sys.path.insert(0, path)
    import comfy.options

    comfy.options.enable_args_parsing(False)
    import comfy.cli_args

    if not torch.cuda.is_available():
        comfy.cli_args.args.cpu = True
    if card_gib is not None and torch.cuda.is_available():
        total = torch.cuda.get_device_properties(0).total_memory / 2**30
        comfy.cli_args.args.reserve_vram = max(0.0, total - card_gib)
        torch.cuda.set_per_process_memory_fraction(min(1.0, card_gib / total))
    import comfy.sd
    import comfy.utils

    return comfy


def _state_dicts(variant: str = "ltx-2.0"):
    from trainer_core.tiny_checkpoint import (
        AUDIO_VAE_PREFIX, VAE_PREFIX, VOCODER_PREFIX, _tensor, audio_vae_layout, full_config, video_vae_layout,
        vocoder_layout,
    )

    cfg = full_config(variant)
    meta = {"config": json.dumps(cfg)}
    vsd = {k[len(VAE_PREFIX):]: _tensor(k, s, 0).to(torch.bfloat16) for k, s in video_vae_layout(cfg["vae"]).items()}
    asd = {"autoencoder." + k[len(AUDIO_VAE_PREFIX):]: _tensor(k, s, 0) for k, s in
           audio_vae_layout(cfg["audio_vae"]).items()}
    asd.update({"vocoder." + k[len(VOCODER_PREFIX):]: _tensor(k, s, 0) for k, s in
                vocoder_layout(cfg["vocoder"]).items()})
    return vsd, asd, meta


class _TileWatch(logging.Handler):
    def __init__(self):
        super().__init__()
        self.tiled = False

    def emit(self, record):
        if "tiled" in record.getMessage().lower():
            self.tiled = True


def run(comfy_path: str, card_gib: float | None, shape: str, reps: int) -> list[dict]:
    comfy = _comfy(comfy_path, card_gib)
    import comfy.sd

    dev_name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    total = torch.cuda.get_device_properties(0).total_memory / 2**30 if torch.cuda.is_available() else None
    vsd, asd, meta = _state_dicts()
    vae = comfy.sd.VAE(sd=vsd, metadata=meta)
    vae.throw_exception_if_invalid()
    audio_vae = comfy.sd.VAE(sd=asd, metadata=meta)
    audio_vae.throw_exception_if_invalid()
    del vsd, asd
    W, H, F = (int(v) for v in shape.split("x"))
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (F, H, W, 3), generator=g, dtype=torch.uint8).float().div_(255.0)
    secs = F / 24.0
    rate = int(getattr(audio_vae, "audio_sample_rate", 44100))
    wav = (0.1 * torch.randn(1, 2, int(secs * rate), generator=g))  # [B, C, N] as the node builds it

    watch = _TileWatch()
    logging.getLogger().addHandler(watch)
    out = []
    for what, fn in (("video", lambda: vae.encode(frames)),
                     ("audio", lambda: audio_vae.encode(wav.movedim(1, -1)))):
        watch.tiled = False
        lat = fn()  # warm-up (and model load)
        times = []
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        for _ in range(reps):
            t0 = time.perf_counter()
            lat = fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        rec = {"what": what, "shape": shape, "card_gib": card_gib if card_gib is not None else
               (round(total, 1) if total else None), "latent_shape": list(lat.shape),
               "s_per_clip": round(sorted(times)[len(times) // 2], 3),
               "peak_vram_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None,
               "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2) if torch.cuda.is_available() else None,
               "tiled": watch.tiled, "vae_dtype": str(getattr(vae, "vae_dtype", "")), "gpu": dev_name,
               "torch": torch.__version__, "note": "full-size LTX-2 VAE layout, random weights, ComfyUI's own VAE class"}
        print(json.dumps(rec), flush=True)
        out.append(rec)
    logging.getLogger().removeHandler(watch)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH", "/opt/ComfyUI"))
    ap.add_argument("--card", type=float, default=None, help="simulate a card of this many GiB (default: whole card)")
    ap.add_argument("--shape", default="768x512x121")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    recs = run(a.comfyui, a.card, a.shape, a.reps)
    gpu = (torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu").replace(" ", "_")
    out = Path(a.out) if a.out else Path(__file__).parent / "results" / f"encode_{gpu}.json"
    prev = json.loads(out.read_text()) if out.exists() else []
    prev = [r for r in prev if not (r.get("card_gib") == recs[0]["card_gib"] and r.get("shape") == a.shape)]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(prev + recs, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
