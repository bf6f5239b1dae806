"""Encode Latents' video encode: plan from the free VRAM, then one attempt.

On CUDA the VAE is loaded first (ComfyUI is asked for the room a whole-clip encode needs, so it
unloads other models if it must), the free memory is read from ComfyUI (less its reserve,
``--reserve-vram``), and ``trainer_core.encode_plan`` picks whole clip or tiles; then ComfyUI's
own ``VAE.encode`` or ``VAE.encode_tiled`` runs once with that choice, with no out-of-memory
first attempt. On the CPU (and for VAEs that are not 3-D video VAEs) it is ComfyUI's
``VAE.encode`` as before. ComfyUI still catches an out-of-memory error inside ``encode`` and
retries tiled; that is counted (its log warning) so the caller can say so — the plan aims at 0.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from ..trainer_core.encode_plan import (
    COMFY_MIN_FRAMES, SAFETY, EncodeBudgetError, EncodePlan, ltx2_bytes_per_voxel, plan_encode,
)

_OOM_MARK = "ran out of memory when regular vae encoding"


class _OomWatch(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.count = 0

    def emit(self, record):
        try:
            if _OOM_MARK in record.getMessage().lower():
                self.count += 1
        except Exception:
            pass


@dataclass
class VideoEncode:
    latent: object  # torch.Tensor [1, C, F', H', W']
    plan: EncodePlan | None  # None: ComfyUI's default path (CPU, or no plan could be made)
    oom_retries: int  # times ComfyUI caught an out-of-memory error and retried tiled
    note: str = ""


def bytes_per_voxel(vae, shape) -> tuple[float, float]:
    """(whole, tile) bytes per input voxel for this VAE: ComfyUI's own ``memory_used_encode`` at
    the clip's shape, per voxel (80 × dtype size for LTX-2's video VAE), times ``SAFETY``; a tile
    adds its pixels on the device."""
    import torch

    dtype = getattr(vae, "vae_dtype", torch.bfloat16)
    size = torch.empty((), dtype=dtype).element_size()
    F, H, W = (int(v) for v in shape[:3])
    try:
        comfy = float(vae.memory_used_encode((1, 3, F, H, W), dtype)) / (max(F, COMFY_MIN_FRAMES) * H * W)
    except Exception:
        comfy = 0.0
    if not comfy > 0:
        return ltx2_bytes_per_voxel(size)
    whole = comfy * SAFETY
    return whole, whole + 3 * size


def _compression(vae) -> tuple[int, int]:
    t = s = None
    try:
        t = int(vae.temporal_compression_decode() or 0) or None
        s = int(vae.spacial_compression_encode())
    except Exception:
        pass
    return t or 8, s or 32


def frames_held(vae):
    """ComfyUI's LTX encoder streams time: ``Encoder.forward_orig`` (comfy/ldm/lightricks/vae/
    causal_video_autoencoder.py) encodes the first frame, then chunks of ``chunk_t`` frames with
    the causal state carried over, ``chunk_t`` = twice ``get_max_chunk_size(device)`` over the
    bytes of one frame after ``conv_in`` (rounded to 2, 4 or a multiple of 8). This is that rule
    as ``frames_held(frames, h, w)`` for the planner; None when this ComfyUI's VAE is not that
    encoder (the planner then counts every frame, as ComfyUI's own estimate does)."""
    import torch

    try:
        from comfy.ldm.lightricks.vae.causal_video_autoencoder import Encoder, get_max_chunk_size
    except ImportError:
        return None
    enc = getattr(getattr(vae, "first_stage_model", None), "encoder", None)
    if not isinstance(enc, Encoder) or not hasattr(enc, "forward_orig"):
        return None
    try:
        max_chunk = int(get_max_chunk_size(torch.device(vae.device))) * 2
        ratio = enc.conv_in.out_channels / enc.conv_in.in_channels
        size = torch.empty((), dtype=vae.vae_dtype).element_size()
    except (AttributeError, TypeError, ValueError, RuntimeError):
        return None

    def held(frames: int, h: int, w: int) -> int:
        frame = max(1, int(3 * h * w * size * ratio))
        t = max(2, max_chunk // frame)
        t = 2 if t < 4 else 4 if t < 8 else t // 8 * 8
        return min(frames, t)

    return held


def planner(vae, shape):
    """``budget_bytes -> EncodePlan`` for this VAE and clip (its memory factors, compression and
    time streaming read once)."""
    whole, tile = bytes_per_voxel(vae, shape)
    t, s = _compression(vae)
    held = frames_held(vae)
    return lambda budget_bytes: plan_encode(shape, budget_bytes, whole, tile, temporal=t, spatial=s, frames_held=held)


def plan_for(vae, shape, budget_bytes: float) -> EncodePlan:
    return planner(vae, shape)(budget_bytes)


def encode_video(vae, px, budget_bytes: float | None = None) -> VideoEncode:
    """Encode pixels ``px`` (float [F, H, W, 3] in [0, 1]) with ComfyUI's ``vae``.

    ``budget_bytes``: the VRAM to plan for; None reads it from ComfyUI on CUDA and keeps
    ComfyUI's default path elsewhere (a given budget plans on any device — the tests force a
    small one to make it tile)."""
    import torch

    import comfy.model_management as mm

    device = torch.device(getattr(vae, "device", "cpu"))
    watch = _OomWatch()
    root = logging.getLogger()
    root.addHandler(watch)
    try:
        other = (getattr(vae, "latent_dim", 3) != 3 or getattr(vae, "not_video", False)
                 or getattr(vae, "handles_tiling", False))  # not a video VAE tiled by tiled_scale_multidim
        if (budget_bytes is None and device.type != "cuda") or other or px.ndim != 4:
            return VideoEncode(vae.encode(px), None, watch.count)
        # ask ComfyUI for room for a whole-clip encode (it unloads other models if it must)
        plan_of = planner(vae, px.shape)
        need = plan_of(2**62).est_bytes
        mm.load_models_gpu([vae.patcher], memory_required=need, force_full_load=getattr(vae, "disable_offload", False))
        if budget_bytes is None:
            budget_bytes = vae.patcher.get_free_memory(device) - mm.extra_reserved_memory()
        try:
            plan = plan_of(budget_bytes)
        except EncodeBudgetError as e:
            logging.warning("LTX-2 Trainer: %s; leaving it to ComfyUI's encode (it retries tiled on out-of-memory)", e)
            return VideoEncode(vae.encode(px), None, watch.count, note=str(e))
        if plan.whole:
            lat = vae.encode(px)
        else:
            lat = vae.encode_tiled(px, **plan.encode_tiled_kwargs())
        return VideoEncode(lat, plan, watch.count)
    finally:
        root.removeHandler(watch)


def summary_line(results: list[VideoEncode]) -> str:
    """One line for the node's summary: how the clips were encoded ('' when nothing was planned)."""
    planned = [r for r in results if r.plan is not None]
    if not planned and not any(r.note for r in results):
        return ""
    tiled = [r for r in planned if not r.plan.whole]
    parts = []
    if planned:
        budget = min(r.plan.budget_bytes for r in planned)
        parts.append(f"video encode planned for {budget / 2**30:.1f} GiB free: {len(planned) - len(tiled)} whole, "
                     f"{len(tiled)} tiled")
        if tiled:
            biggest = max(tiled, key=lambda r: r.plan.tiles)
            parts.append(f"e.g. {biggest.plan.describe()}")
    unplanned = [r for r in results if r.plan is None and r.note]
    if unplanned:
        parts.append(f"{len(unplanned)} left to ComfyUI's encode ({unplanned[0].note})")
    ooms = sum(r.oom_retries for r in results)
    if ooms:
        parts.append(f"ComfyUI ran out of memory and retried tiled {ooms}x")
    return "; ".join(parts)
