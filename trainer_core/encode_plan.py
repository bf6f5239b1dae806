"""How to encode one clip through the LTX-2 video VAE within a VRAM budget: whole, or in tiles.

Pure arithmetic (no ComfyUI, no torch): the Encode Latents node asks it before encoding, so
the first attempt fits instead of running out of memory and retrying tiled.

Memory model. ComfyUI sizes an LTX-2 video VAE encode with ``memory_used_encode`` (comfy/sd.py,
the ``VideoVAE`` branch): ``80 * max(F, 7) * H * W * dtype_size`` bytes for a pixel clip of F
frames of H×W — 80 dtype-sized values per input voxel (a voxel = one pixel of one frame). We
take that as the per-voxel factor times ``SAFETY`` = 3, set from the GPU: one 768×512×121 clip
through ComfyUI's own classes at the full LTX-2 layout (H200, bf16, inference mode) took
6.37 GiB above the weights, 2.7× ComfyUI's estimate (bench/results/encode_H200.json, where
a factor of 2 gave ``est_over_measured`` 0.74); 3 leaves a tenth of margin for the caching
allocator and cuDNN's workspaces on other cards. (On CPU, fp32, the same encode held 1.4×
ComfyUI's estimate at 17 frames of 192×128 and 0.9× at 33.) ComfyUI's LTX encoder streams time in chunks internally
(about 40 frames at 768×512 on a card of 24 GiB or more), so only the frames it holds at once
count (``frames_held``, given by the node from ComfyUI's rule; without it every frame counts,
as in ComfyUI's own estimate).

The whole-clip path (``vae.encode``) keeps the pixels in host memory and moves one chunk at a
time (the VAE's chunked input); the tiled path (``vae.encode_tiled``) moves each tile's pixels
to the device first, so a tile costs 3 more values per voxel.

Tiling as ComfyUI's ``VAE.encode_tiled`` does it for a 3-D VAE (``tiled_scale_multidim``):
tiles start every ``tile - overlap`` along each axis (the last one clamped to the end) and
overlapping outputs are blended with a linear feather. Temporal tiles are whole latent frames:
``tile_t`` pixel frames become ``max(2, (tile_t + 7) // 8)`` latent frames and ``overlap_t``
becomes ``max(1, min(tile_latent // 2, (overlap_t + 7) // 8))`` latent frames.

Space before time. A temporal tile is cheaper to compute (no spatial halo) but it restarts the
causal encoder: its first latent encodes one frame alone, as a clip's first latent does, and
the latents after it see a different past (on the tiny checkpoint's VAE the latents after a
seam differ by 35-60 % RMS from the whole encode; before the seam they are equal). Spatial
tiles only blend a halo. And ComfyUI's LTX encoder already streams time exactly (causal
chunks, ``frames_held``), so splitting time saves memory only when a chunk's frames outnumber
the tile's. Hence: whole clip; else all frames in the fewest spatial tiles; time is split
only when no spatial tiling of the whole clip fits.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

# LTX-2's video VAE: 8x in time (causal: 1 + 8k frames -> 1 + k latents), 32x in space.
LTX2_TEMPORAL = 8
LTX2_SPATIAL = 32
# comfy/sd.py, VideoVAE branch: memory_used_encode = 80 * max(F, 7) * H * W * dtype_size.
COMFY_LTX2_ENCODE_VALUES_PER_VOXEL = 80
COMFY_MIN_FRAMES = 7
SAFETY = 3.0  # measured 2.7x ComfyUI's estimate on an H200 (see above)
# Overlaps: ComfyUI's own tiled fallback uses 256-pixel tiles with 64 pixels of overlap (2 latents);
# in time 2 latent frames (9 pixel frames) so the feather has a ramp.
OVERLAP = 64
OVERLAP_T = 9
MIN_TILE = 128  # pixels: 4 latents, 2 of them overlap
MIN_TILE_T_LATENT = 2  # ComfyUI's floor for a temporal tile


class EncodeBudgetError(ValueError):
    """No tiling fits the budget."""


def ltx2_bytes_per_voxel(dtype_bytes: int, safety: float = SAFETY) -> tuple[float, float]:
    """(whole, tile) bytes per input voxel for the LTX-2 video VAE computing in ``dtype_bytes``
    (2 for bf16/fp16, 4 for fp32): ComfyUI's factor times ``safety``; a tile adds its pixels
    (3 channels) on the device."""
    if dtype_bytes <= 0 or safety <= 0:
        raise ValueError(f"dtype_bytes ({dtype_bytes}) and safety ({safety}) must be positive")
    whole = COMFY_LTX2_ENCODE_VALUES_PER_VOXEL * dtype_bytes * safety
    return whole, whole + 3 * dtype_bytes


@dataclass(frozen=True)
class EncodePlan:
    whole: bool
    est_bytes: int
    budget_bytes: int
    # tiled only: what to pass to ComfyUI's VAE.encode_tiled (pixels and pixel frames)
    tile_t: int | None = None
    overlap_t: int | None = None
    tile_h: int | None = None
    tile_w: int | None = None
    overlap: int | None = None
    grid: tuple[int, int, int] = (1, 1, 1)  # tiles along (time, height, width)
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def tiles(self) -> int:
        return math.prod(self.grid)

    def encode_tiled_kwargs(self) -> dict:
        """Arguments for ComfyUI's ``VAE.encode_tiled``. For a 3-D VAE ComfyUI passes
        ``tile=(tile_t, tile_x, tile_y)`` to ``tiled_scale_multidim`` over [F, H, W]: its
        ``tile_x`` runs along the height and ``tile_y`` along the width."""
        if self.whole:
            raise ValueError("a whole-clip plan has no tiles")
        return {"tile_x": self.tile_h, "tile_y": self.tile_w, "overlap": self.overlap,
                "tile_t": self.tile_t, "overlap_t": self.overlap_t}

    def describe(self) -> str:
        gib = lambda b: f"{b / 2**30:.1f} GiB"
        if self.whole:
            return f"whole clip (needs ~{gib(self.est_bytes)} of {gib(self.budget_bytes)} free)"
        t, h, w = self.grid
        how = [f"{t} in time of {self.tile_t} frames"] if t > 1 else []
        if h * w > 1:
            how.append(f"{w}x{h} in space of {self.tile_w}x{self.tile_h} px")
        return (f"{self.tiles} tiles ({', '.join(how)}; ~{gib(self.est_bytes)} each of "
                f"{gib(self.budget_bytes)} free)")


def tile_count(size: int, tile: int, overlap: int) -> int:
    """Tiles along one axis exactly as ComfyUI's ``tiled_scale_multidim`` places them."""
    if size <= tile:
        return 1
    return len(range(0, size - overlap, tile - overlap))


def _latent_frames(frames: int, t: int) -> int:
    """Latent frames of ``frames`` pixel frames for a causal VAE of temporal factor t (ComfyUI's downscale_ratio[0])."""
    return max(0, (frames + t - 1) // t)


def _pixel_frames(latents: int, t: int) -> int:
    """Pixel frames of ``latents`` latent frames (ComfyUI's upscale_ratio[0]): 1 + t(k - 1)."""
    return max(0, latents * t - (t - 1))


def _temporal(frames: int, tile_latent: int, overlap_t: int, t: int) -> tuple[int, int, int]:
    """(tile frames, overlap frames, tiles) as ComfyUI's encode_tiled turns tile_t/overlap_t into them."""
    tl = max(MIN_TILE_T_LATENT, tile_latent)
    ol = max(1, min(tl // 2, _latent_frames(overlap_t, t)))
    tile, ov = _pixel_frames(tl, t), _pixel_frames(ol, t)
    return tile, ov, tile_count(frames, tile, ov)


def _spatial_tile(size: int, n: int, overlap: int, q: int) -> int | None:
    """The smallest multiple of q that covers ``size`` in ``n`` tiles (None when n tiles cannot)."""
    if n == 1:
        return size
    cover = -(-(size - overlap) // n) + overlap  # n tiles of this length reach the end
    tile = max(MIN_TILE, overlap + q, -(-cover // q) * q)
    while tile < size and tile_count(size, tile, overlap) > n:
        tile += q
    if tile >= size or tile_count(size, tile, overlap) != n:
        return None
    return tile


def plan_encode(shape, budget_bytes: float, whole_bytes_per_voxel: float, tile_bytes_per_voxel: float,
                temporal: int = LTX2_TEMPORAL, spatial: int = LTX2_SPATIAL, overlap: int = OVERLAP,
                overlap_t: int = OVERLAP_T, frames_held=None) -> EncodePlan:
    """Whole clip if it fits ``budget_bytes``, else the tiling whose largest tile fits with, in
    order: the most frames per tile (time is split only when no spatial tiling of the whole
    clip fits), then the fewest spatial tiles.

    ``shape``: the pixel clip, [F, H, W] or [F, H, W, C]. H and W are cropped to the VAE's
    spatial multiple (as ComfyUI does), F to 1 + 8k. ``frames_held(frames, h, w)``: how many
    frames the encoder holds on the device at once for a clip or tile of that size (ComfyUI's
    LTX encoder streams time in chunks; the node passes its rule); None means all of them.
    Activations cost ``whole_bytes_per_voxel`` per held voxel; a tile's pixels, all its frames,
    cost the difference ``tile_bytes_per_voxel - whole_bytes_per_voxel`` per voxel on top.
    Raises ``EncodeBudgetError`` when not even the smallest tile fits, ``ValueError`` for a
    malformed request."""
    if len(shape) not in (3, 4):
        raise ValueError(f"shape must be [frames, height, width(, channels)], got {list(shape)}")
    F, H, W = (int(v) for v in shape[:3])
    if temporal < 1:
        raise ValueError(f"temporal compression must be at least 1, got {temporal}")
    if spatial <= 0 or overlap % spatial or overlap < 0:
        raise ValueError(f"overlap ({overlap}) must be a non-negative multiple of the spatial compression ({spatial})")
    H, W = H // spatial * spatial, W // spatial * spatial
    F = _pixel_frames(_latent_frames(F, temporal), temporal)
    if F < 1 or H < spatial or W < spatial:
        raise ValueError(f"a clip of {list(shape)[:3]} frames x height x width is too small for the VAE "
                         f"(at least 1 frame of {spatial}x{spatial} pixels)")
    if not (budget_bytes > 0):
        raise ValueError(f"the VRAM budget must be positive, got {budget_bytes} bytes: free memory on the GPU "
                         "(unload other models) or encode on the CPU")
    if not (whole_bytes_per_voxel > 0 and tile_bytes_per_voxel >= whole_bytes_per_voxel):
        raise ValueError("bytes per voxel must be positive (and a tile's at least the whole clip's)")
    budget = int(budget_bytes)
    held = (lambda f, h, w: f) if frames_held is None else frames_held  # noqa: E731

    def act(f: int, h: int, w: int) -> int:
        return int(whole_bytes_per_voxel * max(min(int(held(f, h, w)), f), COMFY_MIN_FRAMES) * h * w)

    est_whole = act(F, H, W)
    if est_whole <= budget:
        return EncodePlan(whole=True, est_bytes=est_whole, budget_bytes=budget)

    def est(tf: int, th: int, tw: int) -> int:
        tf, th, tw = min(tf, F), min(th, H), min(tw, W)
        return act(tf, th, tw) + int((tile_bytes_per_voxel - whole_bytes_per_voxel) * tf * th * tw)

    lat_f = _latent_frames(F, temporal)
    splits = []
    for ny in range(1, max(1, H // spatial) + 1):
        ty = _spatial_tile(H, ny, overlap, spatial)
        if ty is None:
            continue
        for nx in range(1, max(1, W // spatial) + 1):
            tx = _spatial_tile(W, nx, overlap, spatial)
            if tx is None:
                continue
            splits.append((ny * nx, -(min(ty, H) * min(tx, W)), ny, nx, ty, tx))
    splits.sort()
    smallest = None
    seen_counts = set()
    for tl in range(max(lat_f, MIN_TILE_T_LATENT), MIN_TILE_T_LATENT - 1, -1):
        tf, _, nt = _temporal(F, tl, overlap_t, temporal)
        if nt in seen_counts:
            continue  # a longer tile gave this many already; the shortest of them is taken below
        for _, _, ny, nx, ty, tx in splits:
            e = est(tf, ty, tx)
            smallest = e if smallest is None else min(smallest, e)
            if e > budget:
                continue
            if nt > 1:
                # the same number of temporal tiles from the shortest tile that gives it: evener, less memory
                tl = min(k for k in range(MIN_TILE_T_LATENT, tl + 1) if _temporal(F, k, overlap_t, temporal)[2] == nt)
                tf = _temporal(F, tl, overlap_t, temporal)[0]
                e = est(tf, ty, tx)
            return EncodePlan(
                whole=False, est_bytes=e, budget_bytes=budget, tile_t=min(tf, F), overlap_t=overlap_t,
                tile_h=(H if ny == 1 else ty), tile_w=(W if nx == 1 else tx), overlap=overlap,
                grid=(nt, ny, nx), notes=(f"whole clip would need ~{est_whole / 2**30:.1f} GiB",))
        seen_counts.add(nt)
    raise EncodeBudgetError(
        f"encoding a {F}x{H}x{W} clip needs ~{est_whole / 2**30:.1f} GiB whole and ~{(smallest or 0) / 2**30:.2f} GiB "
        f"for its smallest tile, but only {budget / 2**30:.2f} GiB of VRAM is free: unload other models, "
        "use a smaller bucket, or encode on the CPU")
