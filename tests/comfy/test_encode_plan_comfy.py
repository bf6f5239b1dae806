"""The planned video encode (nodes/vae_encode.py, what Encode Latents calls) against ComfyUI's own
whole-clip VAE.encode, with the tiny checkpoint's LTX-2 video VAE on CPU and a forced small
budget so that it tiles.

What a tiled encode can match: ComfyUI blends overlapping tiles, and each temporal tile restarts
the causal encoder, so values differ from the whole encode near and after a tile seam. What must
hold: the latent shape; the first temporal tile's latents before the seam's overlap equal the
whole encode's (the encoder is causal in time: they saw the same frames); the tiles ComfyUI runs
are the ones the planner counted, each within the planned size; and the whole result stays
close: relative RMS difference to the whole encode below 0.3 for spatial tiles (measured 0.22
here: 128-pixel tiles with 64 of overlap are mostly seam on this random-weight VAE) and below
0.6 with temporal tiles (measured 0.42); misplaced tiles would give ~1 or more.
"""
from __future__ import annotations

import pytest
import torch

from trainer_core.tiny_checkpoint import make_tiny_checkpoint


@pytest.fixture(scope="module")
def vae(comfy):
    name = "plan_tiny.safetensors"
    make_tiny_checkpoint(comfy.base / "models" / "checkpoints" / name, variant="ltx-2.0", seed=3)
    with torch.inference_mode():
        return comfy.nodes.NODE_CLASS_MAPPINGS["CheckpointLoaderSimple"]().load_checkpoint(name)[2]


def _module(comfy):
    """nodes/vae_encode.py as the loaded pack has it (the module Encode Latents imports)."""
    import importlib

    return importlib.import_module(comfy.pack["LTX2TrainEncodeLatents"].__module__.rsplit(".", 1)[0] + ".vae_encode")


def _clip(F=33, H=128, W=192, seed=0):
    g = torch.Generator().manual_seed(seed)
    # smooth moving content (random pixels would make every seam look worse than real video does)
    t = torch.linspace(0, 1, F)[:, None, None, None]
    y = torch.linspace(0, 1, H)[None, :, None, None]
    x = torch.linspace(0, 1, W)[None, None, :, None]
    ph = torch.rand(1, 1, 1, 3, generator=g) * 6.28
    px = 0.5 + 0.4 * torch.sin(6 * x + 4 * y + 3 * t + ph) * torch.cos(5 * y - 2 * t + ph)
    return px.clamp(0, 1)


def _rel(a, b):
    return float((a.float() - b.float()).pow(2).mean().sqrt() / b.float().pow(2).mean().sqrt())


class _Count:
    """Wraps the VAE's first_stage_model.encode to record the pixel tile shapes it is given."""

    def __init__(self, vae):
        self.model, self.shapes = vae.first_stage_model, []
        self.orig = self.model.encode

    def __enter__(self):
        def enc(x, *a, **k):
            self.shapes.append(tuple(x.shape[2:]))
            return self.orig(x, *a, **k)
        self.model.encode = enc
        return self

    def __exit__(self, *exc):
        self.model.encode = self.orig


def _budget_for(mod, vae, shape, want):
    """The largest budget (bytes) below a whole-clip encode at which the planner's plan satisfies ``want``."""
    b = 1e11
    while b > 1e6:
        try:
            p = mod.plan_for(vae, shape, b)
            if not p.whole and want(p):
                return b
        except ValueError:  # not even the smallest tile fits this budget
            break
        b /= 1.03
    raise AssertionError("no budget gives such a plan")


SPATIAL = ("spatial", lambda p: p.grid[0] == 1)
TEMPORAL = ("temporal", lambda p: p.grid[0] > 1)


@pytest.mark.parametrize("kind,bound", [(SPATIAL, 0.3), (TEMPORAL, 0.6)])
def test_planned_tiles_match_comfy_whole_encode(comfy, vae, kind, bound):
    mod = _module(comfy)
    px = _clip()
    with torch.inference_mode():
        whole = vae.encode(px)
        big = mod.encode_video(vae, px, budget_bytes=2**40)
        assert big.plan.whole and big.oom_retries == 0 and torch.equal(big.latent, whole)
        budget = _budget_for(mod, vae, px.shape, kind[1])
        with _Count(vae) as seen:
            res = mod.encode_video(vae, px, budget_bytes=budget)
    p = res.plan
    assert not p.whole and kind[1](p) and res.oom_retries == 0
    assert p.est_bytes <= budget
    # ComfyUI ran exactly the planned tiles, none larger than planned
    assert len(seen.shapes) == p.tiles, (seen.shapes, p)
    assert all(f <= p.tile_t and h <= p.tile_h and w <= p.tile_w for f, h, w in seen.shapes)
    lat = res.latent
    assert lat.shape == whole.shape == (1, 128, 5, 4, 6)
    rel = _rel(lat, whole)
    print(kind[0], p.describe(), "relative RMS difference", round(rel, 4))
    assert 0 < rel < bound, rel
    if p.grid[0] > 1:
        # causal in time: the first tile's latents before the blended overlap are the whole encode's
        lat_first = (p.tile_t + 7) // 8
        keep = lat_first - max(1, min(lat_first // 2, (p.overlap_t + 7) // 8))
        assert keep >= 1
        if p.grid[1] * p.grid[2] == 1:
            torch.testing.assert_close(lat[:, :, :keep], whole[:, :, :keep], rtol=1e-4, atol=1e-5)


def test_cpu_without_budget_is_comfys_default(comfy, vae):
    mod = _module(comfy)
    px = _clip(F=9, H=64, W=64)
    with torch.inference_mode():
        res = mod.encode_video(vae, px)
        assert res.plan is None and torch.equal(res.latent, vae.encode(px))
    assert mod.summary_line([res]) == ""


def test_summary_says_when_it_tiled(comfy, vae):
    mod = _module(comfy)
    px = _clip()
    with torch.inference_mode():
        tiled = mod.encode_video(vae, px, budget_bytes=_budget_for(mod, vae, px.shape, SPATIAL[1]))
        whole = mod.encode_video(vae, px, budget_bytes=2**40)
    line = mod.summary_line([tiled, whole])
    assert "1 whole, 1 tiled" in line and f"{tiled.plan.tiles} tiles" in line, line
