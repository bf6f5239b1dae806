"""Training modes as data (trainer_core.modes) against Lightricks' official ``flexible``
training strategy (ltx-trainer training_strategies/flexible.py), run as is.

For every mode the official ``prepare_training_inputs`` / ``compute_loss`` run on a batch of
clean latents (+ masks, references) with a stand-in timestep sampler returning fixed σ and a
fixed prediction in place of the model call; its random draws (ε, per-sample condition draws,
the batch-wide reference draw) are replayed from the same torch seed into our ``Draws``, and
our inputs (tokens, per-token σ, positions, loss masks) and loss must equal the official ones.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

from trainer_core import modes as md
from trainer_core import objective as ob
from trainer_core import tiny_checkpoint
from trainer_core.ltx2 import LTX2Config
from trainer_core.ltx2.forward import audio_positions, forward_av, video_positions

MODES_COMMIT = os.environ.get("LTX2_MODES_COMMIT", "400fd31")


def _flexible_dir():
    cands = []
    if os.environ.get("LTX2_SRC"):
        cands.append(Path(os.environ["LTX2_SRC"]) / "packages/ltx-trainer/src/ltx_trainer/training_strategies")
    cands.append(Path(os.environ.get("HOME", "/tmp")) / ".cache/ltx2-src" / MODES_COMMIT /
                 "packages/ltx-trainer/src/ltx_trainer/training_strategies")
    spec = importlib.util.find_spec("ltx_trainer")
    if spec is not None and spec.submodule_search_locations:
        cands.append(Path(list(spec.submodule_search_locations)[0]) / "training_strategies")
    for d in cands:
        if (d / "flexible.py").is_file() and (d / "base_strategy.py").is_file():
            return d
    return None


def _load_official():
    """HEAD's base_strategy.py + flexible.py loaded by file path (the installed ltx-trainer is
    the older 203d484 one); flexible's ``from ltx_trainer.training_strategies.base_strategy``
    is pointed at the newer base for the duration of its import only."""
    d = _flexible_dir()
    if d is None:
        return None, ("ltx-trainer's flexible.py not found (scripts/setup.sh extracts it from a Lightricks/LTX-2 "
                      f"copy at {MODES_COMMIT}; or set LTX2_SRC to a checkout)")
    try:
        import ltx_trainer.training_strategies  # noqa: F401  (parents must exist for the alias)
        key = "ltx_trainer.training_strategies.base_strategy"
        spec = importlib.util.spec_from_file_location("_official_base_strategy", d / "base_strategy.py")
        base = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(base)
        old = sys.modules.get(key)
        sys.modules[key] = base
        try:
            spec = importlib.util.spec_from_file_location("_official_flexible", d / "flexible.py")
            flex = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(flex)
        finally:
            if old is not None:
                sys.modules[key] = old
            else:
                sys.modules.pop(key, None)
        return flex, None
    except Exception as e:  # pragma: no cover - environment without the official stack
        return None, f"could not import ltx-trainer's flexible.py from {d}: {type(e).__name__}: {e}"


FLEX, WHY = _load_official()
if FLEX is None and os.environ.get("LTX2_REQUIRE_OFFICIAL"):
    raise RuntimeError(f"LTX2_REQUIRE_OFFICIAL is set but the official flexible strategy is unavailable: {WHY}")
needs_official = pytest.mark.skipif(FLEX is None, reason=f"official stack unavailable: {WHY}")

CFG = LTX2Config.from_transformer_config(tiny_checkpoint.tiny_config("2.3")["transformer"])
B, C, F, H, W, T = 4, 128, 5, 4, 8, 12
FPS = 24.0


def _adapt(mode: md.TrainingMode, prob=None) -> md.TrainingMode:
    """The preset with parameters fitting the small test grid (and optionally every
    probability set to ``prob``)."""
    def cond(c, key):
        kw = {}
        if c.kind in ("prefix", "suffix"):
            kw["frames"] = 2 if key == "video" else 5
        if c.kind == "spatial_crop":
            kw["region"] = (40, 10, 100, 150)  # pixels → latent rows 1..3, cols 0..4 (floor)
        if prob is not None:
            kw["probability"] = prob
        return dataclasses.replace(c, **kw)

    def st(s, key):
        return None if s is None else md.Stream(s.role, tuple(cond(c, key) for c in s.conditions))
    return md.TrainingMode(mode.name, st(mode.video, "video"), st(mode.audio, "audio"), mode.description)


def _official_config(mode: md.TrainingMode):
    def mc(s, key):
        if s is None:
            return None
        conds = []
        for c in s.conditions:
            if c.kind == "reference":
                conds.append({"type": "reference", "latents_dir": f"ref_{key}", "probability": c.probability})
            elif c.kind == "mask":
                conds.append({"type": "mask", "mask_dir": f"mask_{key}", "probability": c.probability})
            elif c.kind in ("prefix", "suffix"):
                conds.append({"type": c.kind, "temporal_boundary": c.frames, "probability": c.probability})
            elif c.kind == "spatial_crop":
                conds.append({"type": "spatial_crop", "spatial_region": c.region, "probability": c.probability})
            else:
                conds.append({"type": c.kind, "probability": c.probability})
        return {"is_generated": s.role == md.GENERATED, "latents_dir": f"lat_{key}", "conditions": conds}
    return FLEX.FlexibleStrategyConfig(name="flexible", video=mc(mode.video, "video"), audio=mc(mode.audio, "audio"))


class FixedSampler:
    def __init__(self, sigma):
        self.sigma = sigma

    def sample_for(self, latents):
        assert latents.shape[0] == self.sigma.shape[0]
        return self.sigma.clone()


def _vid_tokens(x):  # [B, C, F, H, W] -> [B, F·H·W, C], f then h then w
    return x.permute(0, 2, 3, 4, 1).reshape(x.shape[0], -1, x.shape[1])


def _aud_tokens(x):  # [B, 8, T, 16] -> [B, T, 128]
    return x.permute(0, 2, 1, 3).reshape(x.shape[0], x.shape[2], -1)


def _vid_dict(x, fps=FPS):
    b = x.shape[0]
    full = lambda v: torch.full((b,), v)  # noqa: E731
    return {"latents": x, "num_frames": full(x.shape[2]), "height": full(x.shape[3]), "width": full(x.shape[4]),
            "fps": torch.full((b,), fps)}


def _replay(mode: md.TrainingMode, seed: int, sigmas: dict, patchified: dict) -> md.Draws:
    """The official strategy's global-RNG draws, in its order (flexible.py
    ``_process_modality``: ε by randn_like, then each intrinsic condition's per-sample rand(B)
    on a generated modality, then each reference's rand(())), video before audio.
    ε is drawn like the patchified latents it copies (randn_like keeps their strides: the video
    patchifier's output is a permuted view, so its ε fills [B, C, N] memory order)."""
    torch.manual_seed(seed)
    out = md.Draws()
    for key in ("video", "audio"):
        s = getattr(mode, key)
        if s is None:
            continue
        d = md.StreamDraws(None, None, [])
        if s.role == md.GENERATED:
            d.sigma = sigmas[key]
            d.eps = torch.randn_like(patchified[key])
            for c in s.conditions:
                if c.intrinsic:
                    d.apply.append(torch.rand(B) < c.probability)
        for c in s.conditions:
            if not c.intrinsic:
                d.apply.append(torch.rand(()).item() < c.probability)
        setattr(out, key, d)
    return out


def _run_both(mode: md.TrainingMode, tmp_path, seed=0, ref_scale=(1, 1)):
    g = torch.Generator().manual_seed(100 + seed)
    sp, tp = ref_scale
    v0 = torch.randn(B, C, F, H, W, generator=g)
    a0 = torch.randn(B, 8, T, 16, generator=g)
    rF, rH, rW = (F - 1) // tp + 1, H // sp, W // sp
    rv = torch.randn(B, C, rF, rH, rW, generator=g)
    ra = torch.randn(B, 8, 7, 16, generator=g)
    vmask = torch.rand(B, F, H, W, generator=g)
    amask = torch.rand(B, T, generator=g)
    sig = {"video": torch.rand(B, generator=g) * 0.9 + 0.05, "audio": torch.rand(B, generator=g) * 0.9 + 0.05}

    # official: the reference scale factors are inferred from one (target, reference) pair on disk
    for key, tgt, ref in (("video", v0, rv),):
        (tmp_path / f"lat_{key}").mkdir(exist_ok=True)
        (tmp_path / f"ref_{key}").mkdir(exist_ok=True)
        torch.save({"height": tgt.shape[3], "width": tgt.shape[4], "num_frames": tgt.shape[2]}, tmp_path / f"lat_{key}/s.pt")
        torch.save({"height": ref.shape[3], "width": ref.shape[4], "num_frames": ref.shape[2]}, tmp_path / f"ref_{key}/s.pt")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        strat = FLEX.FlexibleStrategy(_official_config(mode))
    finally:
        os.chdir(cwd)
    batch = {"video_latents": _vid_dict(v0), "audio_latents": {"latents": a0},
             "ref_video": _vid_dict(rv), "ref_audio": {"latents": ra},
             "mask_video": {"mask": vmask}, "mask_audio": {"mask": amask},
             "conditions": {"video_prompt_embeds": torch.zeros(B, 3, 8), "audio_prompt_embeds": torch.zeros(B, 3, 8),
                            "prompt_attention_mask": torch.ones(B, 3, dtype=torch.bool)}}
    stand_in = {k: FixedSampler(v) for k, v in sig.items()}

    class Sampler:  # the official calls sample_for(video latents) then sample_for(audio latents)
        def sample_for(self, latents):
            return stand_in["video" if latents.shape[1] == F * H * W else "audio"].sample_for(latents)

    draws = _replay(mode, seed, sig, {"video": strat._video_patchifier.patchify(v0),
                                      "audio": strat._audio_patchifier.patchify(a0)})
    torch.manual_seed(seed)
    off = strat.prepare_training_inputs(batch, Sampler())
    # fixed predictions over the whole sequence (references included): the model stand-in
    gp = torch.Generator().manual_seed(7 + seed)
    vp = torch.randn(off.video.latent.shape, generator=gp) if off.video is not None else None
    ap = torch.randn(off.audio.latent.shape, generator=gp) if off.audio is not None else None
    off_loss = strat.compute_loss(vp, ap, off)

    ours = md.build(mode, {"video": _vid_tokens(v0), "audio": _aud_tokens(a0)}, draws,
                    {"video": (F, H, W), "audio": (T,)},
                    masks={"video": vmask, "audio": amask},
                    references={"video": md.VideoRef(_vid_tokens(rv), (rF, rH, rW), FPS), "audio": _aud_tokens(ra)},
                    config=CFG, fps=FPS)
    return off, off_loss, ours, ours.loss(vp, ap), (vp, ap)


def _check_inputs(off, ours):
    for key in ("video", "audio"):
        om, si = getattr(off, key), getattr(ours, key)
        assert (om is None) == (si is None), key
        if om is None:
            continue
        toks, sig, lm = si.sequence()
        torch.testing.assert_close(toks, om.latent, atol=1e-6, rtol=0)
        torch.testing.assert_close(sig, om.timesteps.float(), atol=1e-7, rtol=0)
        tgt = getattr(off, f"{key}_targets")
        if tgt is None:
            assert si.target is None
        else:
            torch.testing.assert_close(si.target, tgt, atol=1e-6, rtol=0)
            assert torch.equal(lm, getattr(off, f"{key}_loss_mask"))
        base = video_positions(si.grid, CFG, FPS, "cpu") if key == "video" else audio_positions(si.grid[0], "cpu")
        pos = base if si.ref_positions is None else torch.cat([si.ref_positions, base], 2)
        torch.testing.assert_close(pos.expand_as(om.positions), om.positions.float(), atol=1e-6, rtol=0)


NAMES = list(md.PRESETS)


@needs_official
@pytest.mark.parametrize("name", NAMES)
def test_every_preset_equals_official_flexible(name, tmp_path):
    mode = _adapt(md.PRESETS[name])
    off, off_loss, ours, loss, _ = _run_both(mode, tmp_path, seed=NAMES.index(name))
    _check_inputs(off, ours)
    assert loss.shape == (B,)
    torch.testing.assert_close(loss, off_loss, atol=1e-6, rtol=1e-6)


@needs_official
@pytest.mark.parametrize("name", [n for n in NAMES if any(
    s is not None and s.conditions for s in (md.PRESETS[n].video, md.PRESETS[n].audio))])
@pytest.mark.parametrize("seed", [1, 2])
def test_conditions_at_probability_half_equal_official(name, seed, tmp_path):
    """Per-sample draws (some samples conditioned, some not) and the batch-wide reference draw."""
    mode = _adapt(md.PRESETS[name], prob=0.5)
    off, off_loss, ours, loss, _ = _run_both(mode, tmp_path, seed=seed)
    _check_inputs(off, ours)
    torch.testing.assert_close(loss, off_loss, atol=1e-6, rtol=1e-6)


COMPOSED = {
    "v2v_scaled_half": (md.TrainingMode("x", md.Stream(md.GENERATED, (md.Condition("reference"),
                                                                       md.Condition("first_frame", 0.5))), None), (2, 1)),
    "v2v_scaled_quarter_time_half": (md.TrainingMode("x", md.Stream(md.GENERATED, (md.Condition("reference"),)), None),
                                     (4, 2)),
    "av2av_scaled": (md.TrainingMode("x", md.Stream(md.GENERATED, (md.Condition("reference"),)),
                                     md.Stream(md.GENERATED, (md.Condition("reference"), md.Condition("suffix", 0.5, 3)))),
                     (2, 2)),
    "prefix_plus_mask_plus_crop": (md.TrainingMode("x", md.Stream(md.GENERATED, (
        md.Condition("prefix", 0.5, 1), md.Condition("mask", 0.7),
        md.Condition("spatial_crop", 0.5, region=(0, 32, 64, 128)))),
        md.Stream(md.GENERATED, (md.Condition("mask", 0.5), md.Condition("prefix", 0.5, 2)))), (1, 1)),
    "frozen_video_with_reference": (md.TrainingMode("x", md.Stream(md.FROZEN, (md.Condition("reference"),)),
                                                    md.Stream(md.GENERATED)), (1, 1)),
}


@needs_official
@pytest.mark.parametrize("case", list(COMPOSED))
def test_composed_and_scaled_references_equal_official(case, tmp_path):
    mode, scale = COMPOSED[case]
    off, off_loss, ours, loss, _ = _run_both(mode, tmp_path, seed=3, ref_scale=scale)
    _check_inputs(off, ours)
    torch.testing.assert_close(loss, off_loss, atol=1e-6, rtol=1e-6)
    if mode.video.has("reference"):
        assert ours.video.n_ref == off.video.latent.shape[1] - F * H * W > 0


def test_legacy_names_and_presets():
    assert len(set(md.OFFICIAL)) == 13 and set(md.OFFICIAL) <= set(md.PRESETS)
    for name, om in ob.MODES.items():
        m = md.get(name)
        assert m.needs_video == om.needs_video and m.needs_audio == om.needs_audio
        assert md.from_objective(ob.get_mode(name)) .video == m.video
        assert md.from_objective(om).audio == m.audio
    assert all(d for _, d in md.table())
    with pytest.raises(ValueError, match="video-only"):
        md.TrainingMode("bad", None, md.Stream(md.GENERATED, (md.Condition("first_frame"),)))
    with pytest.raises(ValueError, match="at least one"):
        md.TrainingMode("bad", md.Stream(md.FROZEN), None)


def test_prepare_draws_through_the_generator_only():
    mode = _adapt(md.PRESETS["av2av_ic_lora"], prob=0.5)
    lat = {"video": torch.randn(B, F * H * W, C), "audio": torch.randn(B, T, C)}
    refs = {"video": md.VideoRef(torch.randn(B, 2 * 2 * 3, C), (2, 2, 3), FPS), "audio": torch.randn(B, 4, C)}
    grids = {"video": (F, H, W), "audio": (T,)}
    torch.manual_seed(0)
    a = md.prepare(mode, lat, grids, torch.Generator().manual_seed(5), references=refs, config=CFG, fps=FPS)
    torch.manual_seed(1)
    b = md.prepare(mode, lat, grids, torch.Generator().manual_seed(5), references=refs, config=CFG, fps=FPS)
    for k in ("video", "audio"):
        assert torch.equal(getattr(a, k).x_t, getattr(b, k).x_t) and torch.equal(getattr(a, k).sigma, getattr(b, k).sigma)


# ---------------------------------------------------------------------------- the forward with references


def _parity():
    from tests.core import test_ltxcore_parity as P
    return P


@needs_official
@pytest.mark.parametrize("case", ["v2v_scaled_half", "av2av_scaled", "frozen_video_with_reference"])
def test_forward_with_references_matches_ltx_core(case, tmp_path):
    """Our forward_av with video_reference / audio_reference against ltx-core's LTXModel on the
    official flexible strategy's own Modality (reference tokens in front, σ = 0, their
    positions), same weights: the target tokens' velocities agree."""
    P = _parity()
    if P.WHY:
        pytest.skip(f"official stack unavailable: {P.WHY}")
    from ltx_core.guidance.perturbations import BatchedPerturbationConfig

    variant = "2.3"
    ours, off_model, proc, c = P.models(variant)
    feats, (venc, aenc, bmask) = P.text(variant, proc, B)
    mode, scale = COMPOSED[case]
    off, _, mine, _, _ = _run_both(mode, tmp_path, seed=4, ref_scale=scale)
    _check_inputs(off, mine)
    tv = dataclasses.replace(off.video, context=venc, context_mask=bmask) if off.video is not None else None
    ta = dataclasses.replace(off.audio, context=aenc, context_mask=bmask) if off.audio is not None else None

    def args(si):
        if si is None:
            return None, None
        ref = None if si.ref_tokens is None else (si.ref_tokens, si.ref_positions)
        return (si.x_t, si.sigma, si.grid), ref

    (mv, vref), (ma, aref) = args(mine.video), args(mine.audio)
    with torch.no_grad():
        v1, a1 = forward_av(ours, mv, ma, context=feats, text=P.our_text(variant, B), fps=FPS, dtype=torch.float32,
                            config=c, video_reference=vref, audio_reference=aref)
        v2, a2 = off_model(tv, ta, BatchedPerturbationConfig.empty(B))
        v0, a0 = forward_av(ours, mv, ma, context=feats, text=P.our_text(variant, B), fps=FPS, dtype=torch.float32,
                            config=c)
    # the references matter: without them the outputs are far from ltx-core's
    gen = mine.video if mine.video.target is not None else mine.audio
    far = P.rel(v0, v2[:, mine.video.n_ref:]) if gen is mine.video else P.rel(a0, a2[:, mine.audio.n_ref:])
    assert far > 1e-3, far
    errs = {}
    if v1 is not None:
        assert v1.shape == mine.video.x_t.shape
        errs["video"] = P.rel(v1, v2[:, mine.video.n_ref:])
    if a1 is not None:
        assert a1.shape == mine.audio.x_t.shape
        errs["audio"] = P.rel(a1, a2[:, mine.audio.n_ref:])
    print(f"forward with references vs ltx-core, {case}: {errs}")
    assert errs and all(e < P.TOL for e in errs.values()), errs


# ---------------------------------------------------------------------------- training on the tiny tree


@pytest.mark.parametrize("name", ["av2av_ic_lora"])
def test_mode_trains_tiny_tree_with_lora(name):
    """A mode's inputs through our tiny tree (build_tree + init_weights) with a LoRA: the loss
    of one sample (fixed draws) falls when overfitting it, and only the LoRA learns."""
    from trainer_core.lora import LoRASet, LoRASpec
    from trainer_core.ltx2 import build_tree
    from trainer_core.ltx2.tree import init_weights

    c = CFG
    root = init_weights(build_tree(c, init="empty"), seed=3)
    for p in root.parameters():
        p.requires_grad_(False)
    lora = LoRASet.for_model(root, LoRASpec(rank=4, alpha=4, preset="all attention"), seed=0).attach(root)
    opt = torch.optim.Adam(lora.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    b, f, h, w, t = 1, 3, 2, 4, 8
    mode = _adapt(md.PRESETS[name])
    lat = {"video": torch.randn(b, f * h * w, C, generator=g), "audio": torch.randn(b, t, C, generator=g)}
    refs = {"video": md.VideoRef(torch.randn(b, f * 1 * 2, C, generator=g), (f, 1, 2), FPS),
            "audio": torch.randn(b, 5, C, generator=g)}
    masks = {"video": torch.rand(b, f, h, w, generator=g)}
    ctx = torch.randn(b, 6, tiny_checkpoint.text_context_width("2.3", processed=False), generator=g)
    grids = {"video": (f, h, w), "audio": (t,)}
    from trainer_core.ltx2.forward import prepare_text
    with torch.no_grad():  # the text path is frozen: prepared once
        text = prepare_text(root, c, ctx, torch.float32)
    losses = []
    for _ in range(12):
        inp = md.prepare(mode, lat, grids, torch.Generator().manual_seed(1), masks=masks, references=refs,
                         config=c, fps=FPS)
        ref = lambda si: None if si is None or si.ref_tokens is None else (si.ref_tokens, si.ref_positions)  # noqa: E731
        arg = lambda si: None if si is None else (si.x_t, si.sigma, si.grid)  # noqa: E731
        v, a = forward_av(root, arg(inp.video), arg(inp.audio), context=ctx, text=text, fps=FPS, config=c,
                          video_reference=ref(inp.video), audio_reference=ref(inp.audio))
        loss = inp.loss(v, a).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(map(lambda x: x == x, losses))
    assert losses[-1] < 0.8 * losses[0], losses
    assert all(p.grad is None for p in root.parameters() if not p.requires_grad)


def test_make_predict_passes_a_streams_reference():
    """The engine's predict forwards an optional ``reference`` (tokens, positions) of a
    stream's input to forward_av, and without one the output is the plain forward's."""
    from types import SimpleNamespace

    from trainer_core.ltx2 import build_tree, make_predict

    root = build_tree(CFG, seed=5)
    g = torch.Generator().manual_seed(2)
    f, h, w = 2, 2, 2
    tok = torch.randn(1, f * h * w, C, generator=g)
    sig = torch.full((1, f * h * w), 0.6)
    rt = torch.randn(1, 2, C, generator=g)
    rp = md.reference_video_positions((2, 1, 1), (f, h, w), CFG, FPS)  # half-size reference
    ctx = torch.randn(1, 5, tiny_checkpoint.text_context_width("2.3", processed=False), generator=g)
    predict = make_predict(checkpointing=False)
    with_ref = SimpleNamespace(video=SimpleNamespace(tokens=tok, sigma=sig, grid=(f, h, w), reference=(rt, rp)),
                               audio=None, text={"context": ctx}, fps=FPS)
    plain = SimpleNamespace(video=SimpleNamespace(tokens=tok, sigma=sig, grid=(f, h, w)), audio=None,
                            text={"context": ctx}, fps=FPS)
    v_ref, _ = predict(root, with_ref)
    v_plain, _ = predict(root, plain)
    with torch.no_grad():
        direct, _ = forward_av(root, (tok, sig, (f, h, w)), None, context=ctx, fps=FPS, config=CFG,
                               video_reference=(rt, rp))
        direct_plain, _ = forward_av(root, (tok, sig, (f, h, w)), None, context=ctx, fps=FPS, config=CFG)
    assert v_ref.shape == tok.shape
    torch.testing.assert_close(v_ref.detach(), direct, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(v_plain.detach(), direct_plain, atol=1e-5, rtol=1e-5)
    assert (v_ref.detach() - v_plain.detach()).abs().max() > 1e-4


def test_audio_reference_positions_official_or_before_the_target():
    """``official``: the reference audio on the target's timeline from 0 (ltx-trainer); ``comfyui``:
    the same spacing, moved to end one latent step (40 ms) before 0 — where ComfyUI's LTXV
    Reference Audio puts it (the forward against ComfyUI's model: tests/comfy/test_forward_parity.py);
    the engine's setting reaches the step's reference positions."""
    from trainer_core import engine as en

    off = md.audio_reference_positions(5, "cpu", "official")
    com = md.audio_reference_positions(5, "cpu", "comfyui")
    assert torch.equal(off, audio_positions(5, "cpu"))
    shift = off - com
    assert torch.allclose(shift, shift.flatten()[0].expand_as(shift))  # one shift for every token
    assert abs(com[0, 0, -1, 1].item() - (-0.04)) < 1e-6  # ends 40 ms before the target starts
    with pytest.raises(ValueError, match="audio_reference_positions"):
        md.audio_reference_positions(5, "cpu", "middle")
    item = en.LatentItem("k", None, torch.randn(8, 6, 16), {"context": torch.zeros(3, 4)},
                         reference_audio=torch.randn(8, 5, 16))
    for conv, want in (("official", off), ("comfyui", com)):
        cfg = en.TrainConfig(mode="a2a_ic_lora", caption_dropout=0.0, audio_reference_positions=conv)
        inp = en.build_step_inputs([item], en.training_mode(cfg), cfg, torch.Generator().manual_seed(0), None,
                                   "cpu", torch.float32)
        assert torch.equal(inp.audio.reference[1], want)
    with pytest.raises(en.SettingsError, match="audio_reference_positions"):
        en.TrainConfig(audio_reference_positions="middle")
