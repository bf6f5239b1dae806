"""The VAE encode planner (trainer_core.encode_plan): whole when it fits, else tiles that fit,
placed exactly as ComfyUI's tiled_scale_multidim places them."""
from __future__ import annotations

import itertools
import math

import pytest

from trainer_core.encode_plan import (
    SAFETY, EncodeBudgetError, ltx2_bytes_per_voxel, plan_encode, tile_count,
)

GIB = 2**30
CLIP = (121, 512, 768, 3)
# bf16; the scenarios below are sized for a factor of twice ComfyUI's estimate (the planner's
# own margin is SAFETY, checked in the first test)
WHOLE, TILE = ltx2_bytes_per_voxel(2, safety=2.0)


def _comfy_positions(size, tile, overlap):
    """comfy/utils.py tiled_scale_multidim, one axis: (start, length) of each tile."""
    if size <= tile:
        return [(0, size)]
    out = []
    for it in range(0, size - overlap, tile - overlap):
        pos = max(0, min(size - overlap, it))
        out.append((pos, min(tile, size - pos)))
    return out


def _comfy_temporal(frames, tile_t, overlap_t):
    """comfy/sd.py VAE.encode_tiled for the LTX VAE: pixel tile_t / overlap_t to what is tiled."""
    down = lambda a: max(0, math.floor((a + 7) / 8))
    up = lambda a: max(0, a * 8 - 7)
    tl = max(2, down(tile_t))
    ov = up(max(1, min(tl // 2, down(overlap_t))))
    return up(tl), ov


def _tiles(plan, F, H, W):
    """The tiles ComfyUI's encode_tiled runs for the plan's arguments: it hands
    tile=(tile_t, tile_x, tile_y) to tiled_scale_multidim over [F, H, W]."""
    kw = plan.encode_tiled_kwargs()
    t, ov_t = _comfy_temporal(F, kw["tile_t"], kw["overlap_t"])
    axes = [_comfy_positions(F, t, ov_t), _comfy_positions(H, kw["tile_x"], kw["overlap"]),
            _comfy_positions(W, kw["tile_y"], kw["overlap"])]
    return axes, list(itertools.product(*axes))


def test_whole_when_there_is_room_and_factor_is_comfys_times_the_margin():
    # comfy/sd.py: 80 * max(F, 7) * H * W * dtype_size, times the measured margin
    assert ltx2_bytes_per_voxel(2) == (80 * 2 * SAFETY, 80 * 2 * SAFETY + 6) and SAFETY >= 2.72  # H200: 2.72x needed
    assert WHOLE == 80 * 2 * 2 and TILE == WHOLE + 6
    p = plan_encode(CLIP, 24 * GIB, WHOLE, TILE)
    assert p.whole and p.tiles == 1 and p.est_bytes == int(WHOLE * 121 * 512 * 768) <= 24 * GIB
    assert "whole" in p.describe()
    with pytest.raises(ValueError):
        p.encode_tiled_kwargs()


@pytest.mark.parametrize("gib", [12, 8, 6, 4, 2, 1, 0.5, 0.25])
def test_tiles_fit_the_budget_and_cover_the_clip(gib):
    F, H, W = CLIP[:3]
    p = plan_encode(CLIP, gib * GIB, WHOLE, TILE)
    assert not p.whole and p.tiles > 1
    axes, tiles = _tiles(p, F, H, W)
    # the planner's count is ComfyUI's count, and every tile ComfyUI will encode fits
    assert p.grid == tuple(len(a) for a in axes) and len(tiles) == p.tiles
    for (_, lt), (_, lh), (_, lw) in tiles:
        assert TILE * max(lt, 7) * lh * lw <= gib * GIB
        assert (lt - 1) % 8 == 0 and lh % 32 == 0 and lw % 32 == 0  # whole latents
    for a, size in zip(axes, (F, H, W)):  # covered, start to end
        assert a[0][0] == 0 and max(s + n for s, n in a) == size
        assert all(s2 < s1 + n1 for (s1, n1), (s2, _) in zip(a, a[1:]))  # consecutive tiles overlap
    kw = p.encode_tiled_kwargs()
    assert set(kw) == {"tile_x", "tile_y", "overlap", "tile_t", "overlap_t"}
    assert "tiles" in p.describe()
    assert p.tile_h <= H and p.tile_w <= W


def test_space_is_split_before_time():
    # a temporal tile restarts the causal encoder (see encode_plan's docstring): all frames stay
    # in one tile while some spatial tiling fits
    p = plan_encode(CLIP, 8 * GIB, WHOLE, TILE)
    assert p.grid[0] == 1 and p.tile_t == 121 and p.grid[1] * p.grid[2] == 2
    assert (p.tile_h, p.tile_w) in ((288, 768), (512, 416))  # 2 x 288 - 64 = 512, 2 x 416 - 64 = 768
    q = plan_encode(CLIP, 0.3 * GIB, WHOLE, TILE)
    assert q.grid[0] > 1  # no spatial tile of 121 frames fits 0.3 GiB


def test_streamed_frames_shrink_the_estimate():
    # ComfyUI's LTX encoder holds ~40 frames of a 768x512 clip at a time
    held = lambda f, h, w: min(f, 40)
    p = plan_encode(CLIP, 8 * GIB, WHOLE, TILE, frames_held=held)
    assert p.whole and p.est_bytes == int(WHOLE * 40 * 512 * 768)
    lin = plan_encode(CLIP, 8 * GIB, WHOLE, TILE)
    assert not lin.whole
    # a tile still pays for all of its pixels on the device
    t = plan_encode(CLIP, 4 * GIB, WHOLE, TILE, frames_held=held)
    assert not t.whole and t.grid[0] == 1
    th, tw = t.tile_h, t.tile_w
    assert t.est_bytes == int(WHOLE * 40 * th * tw) + int((TILE - WHOLE) * 121 * th * tw) <= 4 * GIB


def test_monotone_in_budget():
    budgets = [0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 48]
    plans = [plan_encode(CLIP, b * GIB, WHOLE, TILE) for b in budgets]
    counts = [p.tiles for p in plans]
    assert counts == sorted(counts, reverse=True), counts
    assert plans[-1].whole and not plans[0].whole
    assert all(p.est_bytes <= b * GIB for p, b in zip(plans, budgets))


def test_shapes_are_cropped_like_comfyui_and_small_clips_stay_whole():
    # 100x70 pixels crop to 96x64 (ComfyUI crops to the spatial multiple); 20 frames to 17
    p = plan_encode((20, 70, 100, 3), 1 * GIB, WHOLE, TILE)
    assert p.whole and p.est_bytes == int(WHOLE * 17 * 64 * 96)
    one = plan_encode((1, 512, 768), 1 * GIB, WHOLE, TILE)  # the first-frame latent: 7 frames' worth
    assert one.whole and one.est_bytes == int(WHOLE * 7 * 512 * 768)


def test_tile_count_matches_comfy():
    for size, tile, ov in [(768, 256, 64), (512, 512, 64), (500, 256, 64), (121, 65, 9), (121, 9, 1)]:
        assert tile_count(size, tile, ov) == len(_comfy_positions(size, tile, ov))


@pytest.mark.parametrize("kw,msg", [
    (dict(shape=(121, 512)), "shape"),
    (dict(shape=(0, 512, 768)), "too small"),
    (dict(shape=(9, 16, 768)), "too small"),
    (dict(budget_bytes=0), "budget"),
    (dict(budget_bytes=-5), "budget"),
    (dict(whole_bytes_per_voxel=0), "per voxel"),
    (dict(overlap=40), "overlap"),
])
def test_malformed_requests(kw, msg):
    args = dict(shape=CLIP, budget_bytes=8 * GIB, whole_bytes_per_voxel=WHOLE, tile_bytes_per_voxel=TILE)
    args.update(kw)
    with pytest.raises(ValueError, match=msg):
        plan_encode(**args)


def test_no_tiling_fits_says_what_to_do():
    with pytest.raises(EncodeBudgetError, match=r"only 0\.00 GiB.*unload other models"):
        plan_encode(CLIP, 1e6, WHOLE, TILE)
    with pytest.raises(ValueError):
        ltx2_bytes_per_voxel(0)
