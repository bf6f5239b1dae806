"""The training forward against ComfyUI's own LTX-2 model, in-process on CPU, fp32.

ComfyUI's ``LTXAVModel`` is built through its own model config (``supported_models.LTXAV``
-> ``model_base.LTXAV``) from the tiny LTX-2.0, LTX-2.3 and LTX-2.5 configs of
``trainer_core.tiny_checkpoint`` (and a config leaving the RoPE switches to ComfyUI's
defaults), and the tiny checkpoints themselves are loaded by ComfyUI's Load Checkpoint code.

(a) outputs equal ComfyUI's forward (relative error < 1e-5): video+audio, video only,
    audio only; the engine's token layouts equal ComfyUI's patchifiers; ComfyUI's sampler
    path (``apply_model``: σ -> timestep, per-token timesteps from a denoise mask) gives
    denoised = x − σ·v of our forward;
(b) with per-block checkpointing, LoRA gradients equal the un-checkpointed reference;
(c) the trap: ComfyUI's own blocks under autograd raise, and under per-block checkpointing
    either raise or give wrong LoRA gradients (the measured error is recorded);
(d) called inside ``torch.inference_mode`` on a model loaded inside it, our forward trains
    and never saves an inference tensor for backward.
"""
from __future__ import annotations

import importlib
import json

import pytest
import torch
from torch.utils.checkpoint import checkpoint

from trainer_core import objective as ob
from trainer_core import tiny_checkpoint
from trainer_core.engine import ModalityInput, StepInputs, audio_to_tokens, video_to_tokens
from trainer_core.lora import LoRASet, LoRASpec
from trainer_core.ltx2 import LTX2Config, build_tree, forward_av, init_weights, make_predict
from trainer_core.ltx2.forward import find_inference_tensors

# The project's tiny checkpoints' configs (2 blocks, small widths, every switch of the
# variant), plus ComfyUI's defaults for the switches a config may leave out.
TINY = {v: tiny_checkpoint.tiny_config(v)["transformer"] for v in ("2.0", "2.3", "2.5")}
TINY["2.0-defaults"] = {k: v for k, v in TINY["2.0"].items()  # interleaved RoPE, float32 grid, start positions
                        if k not in ("rope_type", "frequencies_precision", "use_middle_indices_grid",
                                     "causal_temporal_positioning", "av_ca_timestep_scale_multiplier")}
VARIANTS = ["2.0", "2.3", "2.5", "2.0-defaults"]
MODES = ["text_to_audio_video", "video_only", "audio_only"]
TOL = 1e-5


def _rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def comfy_order_block(block, c, vx, ax, v, a):
    """Our block forward with the one ordering ComfyUI 0.33 differs in: its video->audio
    attention reads the video stream AFTER the audio->video update (``vx.addcmul_`` in place,
    then ``rms_norm(vx)``), where ltx-core (and our forward) read both streams before either
    update (ltx-core's ``vx_pre_av``). Everything else is ``forward.block_forward``'s own
    code path: used to show that, that ordering aside, ComfyUI's A+V forward and ours agree
    to float rounding."""
    from trainer_core.ltx2 import forward as fw

    if vx is None or ax is None:
        return fw.block_forward(block, c, vx, ax, v, a)
    cross = block.audio_to_video_attn, block.video_to_audio_attn
    # run self/text attention of both streams via the library block with cross-attention off
    vx1, ax1 = _self_and_text(block, c, vx, ax, v, a)
    vn, an = fw.rms(vx1), fw.rms(ax1)
    ta, tv = block.scale_shift_table_a2v_ca_audio, block.scale_shift_table_a2v_ca_video
    a_ss, v_ss = a.cross_ss.get(ta[:4]), v.cross_ss.get(tv[:4])
    (g_v,) = v.cross_gate.get(tv[4:])
    vx2 = vx1 + fw.attention(cross[0], vn * (1 + v_ss[0]) + v_ss[1], an * (1 + a_ss[0]) + a_ss[1],
                             pe=v.cross_pe, k_pe=a.cross_pe) * g_v
    vn2 = fw.rms(vx2)  # ComfyUI: the updated video stream
    (g_a,) = a.cross_gate.get(ta[4:])
    ax2 = ax1 + fw.attention(cross[1], an * (1 + a_ss[2]) + a_ss[3], vn2 * (1 + v_ss[2]) + v_ss[3],
                             pe=a.cross_pe, k_pe=v.cross_pe) * g_a
    return _feed_forwards(block, vx2, ax2, v, a)


def _self_and_text(block, c, vx, ax, v, a):
    from trainer_core.ltx2 import forward as fw

    t = block.scale_shift_table
    shift, scale = v.mod.get(t, slice(0, 2))
    vx = vx + fw.attention(block.attn1, fw.rms(vx) * (1 + scale) + shift, pe=v.pe) * v.mod.get(t, slice(2, 3))[0]
    vx = vx + fw._text_cross(vx, v, block.attn2, t, getattr(block, "prompt_scale_shift_table", None),
                             c.cross_attention_adaln)
    t = block.audio_scale_shift_table
    shift, scale = a.mod.get(t, slice(0, 2))
    ax = ax + fw.attention(block.audio_attn1, fw.rms(ax) * (1 + scale) + shift, pe=a.pe) * a.mod.get(t, slice(2, 3))[0]
    ax = ax + fw._text_cross(ax, a, block.audio_attn2, t, getattr(block, "audio_prompt_scale_shift_table", None),
                             c.cross_attention_adaln)
    return vx, ax


def _feed_forwards(block, vx, ax, v, a):
    from trainer_core.ltx2 import forward as fw

    t = block.scale_shift_table
    shift, scale = v.mod.get(t, slice(3, 5))
    vx = vx + fw.feed_forward(block.ff, fw.rms(vx) * (1 + scale) + shift) * v.mod.get(t, slice(5, 6))[0]
    t = block.audio_scale_shift_table
    shift, scale = a.mod.get(t, slice(3, 5))
    ax = ax + fw.feed_forward(block.audio_ff, fw.rms(ax) * (1 + scale) + shift) * a.mod.get(t, slice(5, 6))[0]
    return vx, ax


def ours(root, inp, comfy_order=False):
    """Our forward (``make_predict``), or with ComfyUI 0.33's V2A ordering (A+V only)."""
    if not comfy_order:
        return make_predict(checkpointing=False)(root, inp)
    v = (inp.video.tokens, inp.video.sigma, inp.video.grid) if inp.video is not None else None
    a = (inp.audio.tokens, inp.audio.sigma, inp.audio.grid) if inp.audio is not None else None
    return forward_av(root, v, a, context=inp.text["context"], fps=inp.fps, block_fn=comfy_order_block)


def comfy_model(comfy, c: LTX2Config, sd=None, seed=0):
    """ComfyUI's model (model_base.LTXAV with its LTXAVModel) built the way its loader does."""
    sm = importlib.import_module("comfy.supported_models")
    mc = sm.LTXAV({"image_model": "ltxav", **c.transformer_config()})
    mc.set_inference_dtype(torch.float32, None)
    bm = mc.get_model({}, device=torch.device("cpu"))
    dm = bm.diffusion_model
    if sd is None:
        init_weights(dm, seed)  # same names, so our initialiser applies to ComfyUI's tree
    else:
        dm.load_state_dict(sd, strict=True)
    for p in dm.parameters():
        p.requires_grad_(False)
    return bm


def context_width(c: LTX2Config) -> int:
    return c.cross_attention_dim + c.audio_cross_attention_dim if c.caption_proj_before_connector else c.caption_channels


def step_inputs(c: LTX2Config, mode: str, B=2, F=2, H=2, W=3, T=5, L=7, seed=0, fps=24.0) -> StepInputs:
    g = torch.Generator().manual_seed(seed)
    m = ob.get_mode(mode)
    vid = aud = None
    if m.needs_video:
        x0 = video_to_tokens(torch.randn(B, 128, F, H, W, generator=g))
        cond = torch.zeros(B, F * H * W, dtype=torch.bool)
        cond[0, :H * W] = True  # sample 0: first-frame conditioning (σ = 0 on those tokens)
        n = ob.noise_modality(x0, m.video, g, "uniform", cond_tokens=cond)
        vid = ModalityInput(n.x_t, n.sigma, n, (F, H, W))
    if m.needs_audio:
        a0 = audio_to_tokens(torch.randn(B, 8, T, 16, generator=g))
        n = ob.noise_modality(a0, m.audio, g, "uniform")
        aud = ModalityInput(n.x_t, n.sigma, n, (T,))
    return StepInputs(vid, aud, {"context": torch.randn(B, L, context_width(c), generator=g)}, fps, m)


def tokens_to_video(t, grid):
    b, n, ch = t.shape
    return t.transpose(1, 2).reshape(b, ch, *grid)


def tokens_to_audio(t):
    b, n, _ = t.shape
    return t.reshape(b, n, 8, 16).permute(0, 2, 1, 3)


def comfy_forward(dm, inp: StepInputs, transformer_options=None):
    """ComfyUI's LTXAVModel.forward, one sample at a time (it takes the cross-modal AdaLN's σ
    maxima over the whole batch; ours per sample), in token layout."""
    B = (inp.video or inp.audio).tokens.shape[0]
    vs, as_ = [], []
    for i in range(B):
        sl = slice(i, i + 1)
        ctx = dm.preprocess_text_embeds(inp.text["context"][sl], unprocessed=True)
        to = dict(transformer_options or {})
        if inp.video is not None and inp.audio is not None:
            x = [tokens_to_video(inp.video.tokens[sl], inp.video.grid), tokens_to_audio(inp.audio.tokens[sl])]
            ts = (inp.video.sigma[sl], inp.audio.sigma[sl])
        elif inp.video is not None:  # ComfyUI with no audio latent: an empty audio stream
            x = [tokens_to_video(inp.video.tokens[sl], inp.video.grid)]
            ts = (inp.video.sigma[sl], inp.video.sigma[sl].amax(dim=1))
        else:  # audio alone: the video stream switched off, no video->audio attention
            x = [torch.zeros(1, 128, 1, 1, 1), tokens_to_audio(inp.audio.tokens[sl])]
            ts = (inp.audio.sigma[sl].amax(dim=1), inp.audio.sigma[sl])
            to.update(run_vx=False, v2a_cross_attn=False)
        out = dm(x, ts, ctx, frame_rate=inp.fps, transformer_options=to)
        if inp.video is not None:
            vs.append(video_to_tokens(out[0] if isinstance(out, (list, tuple)) else out))
        if inp.audio is not None:
            as_.append(audio_to_tokens(out[1]))
    return (torch.cat(vs) if vs else None), (torch.cat(as_) if as_ else None)


@pytest.fixture(scope="module", params=VARIANTS)
def pair(request, comfy):
    """(variant, config, ComfyUI BaseModel, our tree with the same weights)."""
    c = LTX2Config.from_transformer_config(TINY[request.param])
    bm = comfy_model(comfy, c, seed=11)
    tree = build_tree(c, init="empty")
    tree.load_state_dict(bm.diffusion_model.state_dict(), strict=True)
    for p in tree.parameters():
        p.requires_grad_(False)
    return request.param, c, bm, tree


# ------------------------------------------------------------------------- (a) parity

def test_tree_and_config_match_comfyui(pair):
    variant, c, bm, tree = pair
    dm = bm.diffusion_model
    theirs = {k: tuple(v.shape) for k, v in dm.state_dict().items()}
    mine = {k: tuple(v.shape) for k, v in tree.state_dict().items()}
    assert mine == theirs
    got = LTX2Config.from_module(dm)
    assert got == c, (got, c)


def test_token_layouts_match_comfyui_patchifiers(pair):
    _, _, bm, _ = pair
    dm = bm.diffusion_model
    v = torch.randn(2, 128, 3, 2, 4)
    a = torch.randn(2, 8, 6, 16)
    assert torch.equal(dm.patchifier.patchify(v)[0], video_to_tokens(v))
    assert torch.equal(dm.a_patchifier.patchify(a)[0], audio_to_tokens(a))


@pytest.mark.parametrize("mode", MODES)
def test_outputs_equal_comfyui(pair, mode):
    variant, c, bm, tree = pair
    dm = bm.diffusion_model
    inp = step_inputs(c, mode, seed=1)
    with torch.no_grad():
        rv, ra = comfy_forward(dm, inp)
        av = mode == "text_to_audio_video"
        for root in (dm, tree):  # over ComfyUI's module tree and over ours
            # A+V: with ComfyUI 0.33's one different ordering (see comfy_order_block); alone,
            # the engine's own predict
            v, a = ours(root, inp, comfy_order=av)
            if inp.video is not None:
                assert _rel(v, rv) < TOL, (variant, mode, "video", _rel(v, rv))
            else:
                assert v is None
            if inp.audio is not None:
                assert _rel(a, ra) < TOL, (variant, mode, "audio", _rel(a, ra))
            else:
                assert a is None


def test_batched_call_equals_comfyui_batch_when_sigma_is_shared(pair):
    """Same σ for every sample (as in ComfyUI sampling): one batched ComfyUI call."""
    variant, c, bm, tree = pair
    dm = bm.diffusion_model
    inp = step_inputs(c, "text_to_audio_video", seed=2)
    B, N = inp.video.sigma.shape
    vs = torch.full((B, N), 0.6)
    as_ = torch.full(inp.audio.sigma.shape, 0.4)
    inp = StepInputs(ModalityInput(inp.video.tokens, vs, inp.video.noised, inp.video.grid),
                     ModalityInput(inp.audio.tokens, as_, inp.audio.noised, inp.audio.grid), inp.text, inp.fps, inp.mode)
    with torch.no_grad():
        # ComfyUI prepares each prompt alone (extra_conds) and batches the results; its
        # connectors' split RoPE assumes a batch of one
        ctx = torch.cat([dm.preprocess_text_embeds(inp.text["context"][i:i + 1], unprocessed=True) for i in range(B)])
        out = dm([tokens_to_video(inp.video.tokens, inp.video.grid), tokens_to_audio(inp.audio.tokens)],
                 (torch.full((B,), 0.6), torch.full((B,), 0.4)), ctx, frame_rate=inp.fps)
        v, a = ours(dm, inp, comfy_order=True)
    assert _rel(v, video_to_tokens(out[0])) < TOL and _rel(a, audio_to_tokens(out[1])) < TOL


def test_comfyui_sampler_path_sigma_mapping(pair, comfy):
    """ComfyUI's BaseModel.apply_model (CONST flow sampling: timestep(σ) = σ, per-token
    timesteps from a denoise mask, denoised = x − σ·v) agrees with our forward fed the
    per-token σ: σ on generated tokens, 0 on the clean first frame."""
    variant, c, bm, tree = pair
    utils = importlib.import_module("comfy.utils")
    g = torch.Generator().manual_seed(5)
    F, H, W, T, sigma = 3, 2, 2, 6, 0.55
    vlat, alat = torch.randn(1, 128, F, H, W, generator=g), torch.randn(1, 8, T, 16, generator=g)
    ctx = torch.randn(1, 9, context_width(c), generator=g)
    vmask = torch.ones(1, 128, F, H, W)
    vmask[:, :, 0] = 0.0  # first latent frame kept (image-to-video)
    amask = torch.ones(1, 8, T, 16)
    x, shapes = utils.pack_latents([vlat, alat])
    mask, _ = utils.pack_latents([vmask, amask])
    conds = bm.extra_conds(cross_attn=ctx, unprocessed_ltxav_embeds=True, frame_rate=25, latent_shapes=shapes,
                           denoise_mask=mask, device=torch.device("cpu"))
    kw = {k: v.cond for k, v in conds.items()}
    with torch.no_grad():
        den = bm.apply_model(x, torch.tensor([sigma]), **kw)
        dv, da = utils.unpack_latents(den, shapes)
        vsig = torch.full((1, F * H * W), sigma)
        vsig[:, :H * W] = 0.0
        v, a = forward_av(tree, (video_to_tokens(vlat), vsig, (F, H, W)),
                          (audio_to_tokens(alat), torch.full((1, T), sigma), (T,)), context=ctx, fps=25.0,
                          block_fn=comfy_order_block)
    assert _rel(video_to_tokens(vlat) - sigma * v, video_to_tokens(dv)) < TOL
    assert _rel(audio_to_tokens(alat) - sigma * a, audio_to_tokens(da)) < TOL


def test_batch_of_one_equals_one_comfyui_call(pair):
    variant, c, bm, tree = pair
    dm = bm.diffusion_model
    for mode in MODES:
        inp = step_inputs(c, mode, B=1, seed=12)
        with torch.no_grad():
            rv, ra = comfy_forward(dm, inp)
            v, a = ours(tree, inp, comfy_order=True)
        if rv is not None:
            assert _rel(v, rv) < TOL, (variant, mode, _rel(v, rv))
        if ra is not None:
            assert _rel(a, ra) < TOL, (variant, mode, _rel(a, ra))


def test_where_comfyui_batch_maxima_differ_from_per_sample_sigma(pair, artifacts_dir):
    """ComfyUI's forward, called once on a batch whose samples have different σ, feeds the
    audio-video cross-attention gates the other stream's maximum σ over the WHOLE batch
    (``a_timestep_scaled.max()`` / ``timestep_scaled.max()``); ltx-core and our forward use
    each sample's own σ. So: per sample, ComfyUI and ours agree to float rounding; batched,
    they differ on the samples whose σ is below the batch maximum, by far more than the
    tolerance, and only on the A+V path (without cross-modal attention a batched call
    agrees). The sizes are recorded."""
    variant, c, bm, tree = pair
    dm = bm.diffusion_model
    inp = step_inputs(c, "text_to_audio_video", seed=9)
    vmax, amax = inp.video.sigma.amax(dim=1), inp.audio.sigma.amax(dim=1)
    assert (vmax[0] - vmax[1]).abs() > 0.05 and (amax[0] - amax[1]).abs() > 0.05, (vmax, amax)

    def batched(i: StepInputs):
        B = (i.video or i.audio).tokens.shape[0]
        ctx = torch.cat([dm.preprocess_text_embeds(i.text["context"][k:k + 1], unprocessed=True) for k in range(B)])
        if i.audio is None:
            out = dm([tokens_to_video(i.video.tokens, i.video.grid)], (i.video.sigma, i.video.sigma.amax(dim=1)),
                     ctx, frame_rate=i.fps)
            return video_to_tokens(out[0] if isinstance(out, (list, tuple)) else out), None
        out = dm([tokens_to_video(i.video.tokens, i.video.grid), tokens_to_audio(i.audio.tokens)],
                 (i.video.sigma, i.audio.sigma), ctx, frame_rate=i.fps)
        return video_to_tokens(out[0]), audio_to_tokens(out[1])

    with torch.no_grad():
        ours_v, ours_a = ours(tree, inp, comfy_order=True)
        per_v, per_a = comfy_forward(dm, inp)
        bat_v, bat_a = batched(inp)
        vo = step_inputs(c, "video_only", seed=9)
        vo_ours, _ = make_predict(checkpointing=False)(tree, vo)
        vo_bat, _ = batched(vo)
    assert _rel(ours_v, per_v) < TOL and _rel(ours_a, per_a) < TOL
    assert _rel(vo_ours, vo_bat) < TOL  # no cross-modal attention: no batch maximum involved
    record = {"video_sigma_per_sample": vmax.tolist(), "audio_sigma_per_sample": amax.tolist()}
    for k in range(2):
        record[f"sample{k}"] = {"video_rel_diff_batched_vs_per_sample": _rel(bat_v[k], ours_v[k]),
                                "audio_rel_diff_batched_vs_per_sample": _rel(bat_a[k], ours_a[k])}
    # the video stream's a2v gate takes the audio's batch maximum: the sample whose audio σ
    # is below it differs; likewise the audio stream and the video maximum
    lo_a, lo_v = int(amax.argmin()), int(vmax.argmin())
    assert record[f"sample{lo_a}"]["video_rel_diff_batched_vs_per_sample"] > 100 * TOL, record
    assert record[f"sample{lo_v}"]["audio_rel_diff_batched_vs_per_sample"] > 100 * TOL, record
    # the sample holding both maxima (if one does) is unaffected
    hi = int(amax.argmax())
    if hi == int(vmax.argmax()):
        assert record[f"sample{hi}"]["video_rel_diff_batched_vs_per_sample"] < TOL
        assert record[f"sample{hi}"]["audio_rel_diff_batched_vs_per_sample"] < TOL
    out = artifacts_dir / "comfyui_batch_maxima.json"
    prev = json.loads(out.read_text()) if out.exists() else {}
    prev[variant] = record
    out.write_text(json.dumps(prev, indent=1, sort_keys=True))
    print(variant, json.dumps(record))


def test_v2a_ordering_is_the_one_difference_from_comfyui(pair, artifacts_dir):
    """ComfyUI 0.33 and ltx-core disagree on one thing in the A+V block: which video state
    the video->audio attention reads (ComfyUI: after the audio->video update; ltx-core and
    our forward: before, ``vx_pre_av``). With ComfyUI's ordering ours equals ComfyUI to
    float rounding; with ltx-core's (what trains) it differs from ComfyUI by the recorded
    amount, far above the tolerance."""
    variant, c, bm, tree = pair
    inp = step_inputs(c, "text_to_audio_video", seed=1)
    with torch.no_grad():
        rv, ra = comfy_forward(bm.diffusion_model, inp)
        cv, ca = ours(tree, inp, comfy_order=True)
        lv, la = ours(tree, inp)
    assert _rel(cv, rv) < TOL and _rel(ca, ra) < TOL
    rec = {"video_rel_diff": _rel(lv, rv), "audio_rel_diff": _rel(la, ra)}
    assert rec["audio_rel_diff"] > 100 * TOL, rec
    out = artifacts_dir / "comfyui_v2a_ordering.json"
    prev = json.loads(out.read_text()) if out.exists() else {}
    prev[variant] = rec
    out.write_text(json.dumps(prev, indent=1, sort_keys=True))
    print(variant, rec)


# ------------------------------------------------------------------ LTX-2.5 specifics

@pytest.mark.parametrize("causal", [True, False])
def test_keyframes_mask_equals_comfyui(comfy, causal):
    """Our mask of the tokens that get ``keyframes_abs_pos_embedding`` equals ComfyUI's
    ``keyframes_abs_pos_mask`` (temporal start == 0 in pixel coordinates) on the pixel
    coordinates its own patchifier gives: the first latent frame only."""
    from comfy.ldm.lightricks.model import latent_to_pixel_coords

    from trainer_core.ltx2.forward import keyframes_mask

    c = LTX2Config.from_transformer_config({**TINY["2.5"], "causal_temporal_positioning": causal})
    dm = comfy_model(comfy, c).diffusion_model
    F, H, W = 4, 2, 3
    x = torch.zeros(1, 128, F, H, W)
    _, coords = dm.patchifier.patchify(x)
    pix = latent_to_pixel_coords(coords, dm.vae_scale_factors, causal_fix=dm.causal_temporal_positioning)
    theirs = dm.keyframes_abs_pos_mask(pix, list(x.shape), None, 0, None)[0]
    mine = keyframes_mask((F, H, W), c, torch.device("cpu"))
    assert torch.equal(mine, theirs)
    assert int(mine.sum()) == H * W and bool(mine[:H * W].all())


def test_keyframes_embedding_is_applied_not_vacuous(pair):
    """On 2.5 the parity above is not vacuous: zeroing the keyframe embedding changes both
    ComfyUI's output and ours, the same way."""
    variant, c, bm, tree = pair
    dm = bm.diffusion_model
    if not c.use_keyframes_abs_pos_embedding:  # 2.0 / 2.3: neither model has one
        assert dm.keyframes_abs_pos_embedding is None
        assert getattr(tree, "keyframes_abs_pos_embedding", None) is None
        return
    inp = step_inputs(c, "text_to_audio_video", seed=13)
    with torch.no_grad():
        v1, _ = ours(tree, inp, comfy_order=True)
        saved = dm.keyframes_abs_pos_embedding.detach().clone(), tree.keyframes_abs_pos_embedding.detach().clone()
        try:
            dm.keyframes_abs_pos_embedding.zero_()
            tree.keyframes_abs_pos_embedding.zero_()
            rv, _ = comfy_forward(dm, inp)
            v0, _ = ours(tree, inp, comfy_order=True)
        finally:
            dm.keyframes_abs_pos_embedding.copy_(saved[0])
            tree.keyframes_abs_pos_embedding.copy_(saved[1])
    assert _rel(v0, rv) < TOL
    assert _rel(v1, v0) > 1e-3


def test_without_prompt_adaln_single(comfy):
    """``use_prompt_adaln_single`` false (ltx-core: the text cross-attention's K/V modulation
    is the per-block table alone). ComfyUI 0.33 builds that model without the prompt AdaLN
    modules, as ltx-core does, but its forward raises (``apply_cross_attention_adaln``
    reshapes the missing prompt timestep) — asserted, so a ComfyUI that fixes it shows up.
    Reference for ours: ComfyUI's model WITH the prompt AdaLN whose output linear is zero —
    its prompt timestep is then exactly 0, i.e. the table alone."""
    base = LTX2Config.from_transformer_config(TINY["2.5"])
    c = LTX2Config.from_transformer_config({**TINY["2.5"], "use_prompt_adaln_single": False})
    assert not c.has_prompt_adaln and c.cross_attention_adaln
    no_mlp = comfy_model(comfy, c, seed=3).diffusion_model
    assert no_mlp.prompt_adaln_single is None and no_mlp.audio_prompt_adaln_single is None
    assert LTX2Config.from_module(no_mlp) == c
    tree = build_tree(c, init="empty")
    tree.load_state_dict(no_mlp.state_dict(), strict=True)
    inp = step_inputs(c, "text_to_audio_video", B=1, seed=14)
    with torch.no_grad(), pytest.raises((AttributeError, TypeError)):
        comfy_forward(no_mlp, inp)
    ref = comfy_model(comfy, base, seed=3).diffusion_model
    ref.load_state_dict(no_mlp.state_dict(), strict=False)
    for m in (ref.prompt_adaln_single, ref.audio_prompt_adaln_single):
        m.linear.weight.data.zero_()
        m.linear.bias.data.zero_()
    with torch.no_grad():
        for mode in MODES:
            i = step_inputs(c, mode, B=2, seed=15)
            rv, ra = comfy_forward(ref, i)
            v, a = ours(tree, i, comfy_order=True)
            if rv is not None:
                assert _rel(v, rv) < TOL, (mode, _rel(v, rv))
            if ra is not None:
                assert _rel(a, ra) < TOL, (mode, _rel(a, ra))


# ------------------------------------------------------------------ (b) gradients

def _random_lora(root, preset="all attention", dropout=0.0, seed=0):
    lora = LoRASet.for_model(root, LoRASpec(rank=4, alpha=4, dropout=dropout, preset=preset), seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for n in lora.names:  # B ≠ 0 so that every A receives a gradient too
            lora.adapter(n).lora_B.copy_(torch.randn(lora.adapter(n).lora_B.shape, generator=g) * 0.1)
    return lora


def _weights(v, a, seed=123):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(v.shape, generator=g) if v is not None else None,
            torch.randn(a.shape, generator=g) if a is not None else None)


def _objective(v, a, w):
    tot = 0.0
    if v is not None:
        tot = tot + (v * w[0]).sum()
    if a is not None:
        tot = tot + (a * w[1]).sum()
    return tot


def _grads(lora):
    out = {n: torch.cat([lora.adapter(n).lora_A.grad.flatten(), lora.adapter(n).lora_B.grad.flatten()])
           for n in lora.names if lora.adapter(n).lora_A.grad is not None}
    lora.zero_grad(set_to_none=True)
    return out


def _our_grads(root, lora, inp, checkpointing, seed=7):
    torch.manual_seed(seed)
    v, a = make_predict(checkpointing=checkpointing)(root, inp)
    _objective(v, a, _weights(v, a)).backward()
    return _grads(lora)


@pytest.mark.parametrize("mode", MODES)
def test_checkpointed_lora_gradients_equal_reference(pair, mode):
    variant, c, bm, tree = pair
    dm = bm.diffusion_model
    inp = step_inputs(c, mode, seed=3)
    for root, preset, dropout in ((dm, "all attention", 0.0), (dm, "all attention + feed-forward", 0.1)):
        lora = _random_lora(root, preset, dropout).attach(root)
        try:
            ref = _our_grads(root, lora, inp, checkpointing=False)
            got = _our_grads(root, lora, inp, checkpointing=True)
        finally:
            lora.detach()
        assert ref and set(got) == set(ref)
        worst = max(_rel(got[n], ref[n]) for n in ref)
        assert worst < TOL, (variant, mode, preset, worst)


# ------------------------------------------------------------------------ (c) the trap

def _comfy_grads(dm, lora, inp, transformer_options):
    """LoRA gradients through ComfyUI's own forward (one sample)."""
    v, a = comfy_forward(dm, inp, transformer_options)
    _objective(v, a, _weights(v, a)).backward()
    return _grads(lora)


def _checkpoint_blocks(clone_inputs: bool):
    """ComfyUI's block-replacement hook running each original block under
    torch.utils.checkpoint (non-reentrant) — what a trainer would naturally write."""
    def patch(args, extra):
        orig = extra["original_block"]

        def run(vx, ax):
            if clone_inputs:
                vx, ax = vx.clone(), ax.clone()
            return orig({**args, "img": (vx, ax)})["img"]

        return {"img": checkpoint(run, *args["img"], use_reentrant=False)}

    return patch


def test_comfyui_blocks_give_wrong_gradients_under_checkpointing(pair, artifacts_dir):
    variant, c, bm, tree = pair
    dm = bm.diffusion_model
    inp = step_inputs(c, "text_to_audio_video", B=1, seed=4)
    lora = _random_lora(dm).attach(dm)
    record = {"variant": variant}
    try:
        ref = _our_grads(dm, lora, inp, checkpointing=False)
        # without checkpointing: autograd notices the in-place updates
        with pytest.raises(RuntimeError, match="inplace operation"):
            _comfy_grads(dm, lora, inp, None)
        lora.zero_grad(set_to_none=True)
        n = len(dm.transformer_blocks)
        results = {}
        for clone in (False, True):
            opts = {"patches_replace": {"dit": {("double_block", i): _checkpoint_blocks(clone) for i in range(n)}}}
            key = "checkpoint(clone inputs)" if clone else "checkpoint"
            try:
                got = _comfy_grads(dm, lora, inp, opts)
            except RuntimeError as e:
                lora.zero_grad(set_to_none=True)
                results[key] = {"raised": str(e).splitlines()[0][:200]}
                continue
            errs = {k: _rel(got[k], ref[k]) for k in ref}
            results[key] = {"max_rel_error": max(errs.values()),
                            "median_rel_error": sorted(errs.values())[len(errs) // 2],
                            "block0_attn1_to_q_rel_error": errs["transformer_blocks.0.attn1.to_q"]}
        record.update(results)
    finally:
        lora.detach()
    print(json.dumps(record, indent=1))
    out = artifacts_dir / "ltx2_inplace_trap.json"
    prev = json.loads(out.read_text()) if out.exists() else {}
    prev[variant] = record
    out.write_text(json.dumps(prev, indent=1, sort_keys=True))
    # every checkpointed variant either raised or was wrong by far more than float error
    for key, r in results.items():
        assert "raised" in r or r["max_rel_error"] > 1e-2, (key, r)
    # ComfyUI 0.33's kernels without an autograd formula (comfy_kitchen rms_adaln, on the
    # cross-attention-AdaLN models 2.3 / 2.5) may make every checkpointed run raise instead
    assert any("max_rel_error" in r and r["max_rel_error"] > 1e-2 for r in results.values()) or \
        all("inplace" in r["raised"] or "autograd" in r["raised"] for r in results.values()), results


# -------------------------------------------------------------------- (d) inference mode

def test_inside_inference_mode_on_a_model_loaded_in_inference_mode(pair, comfy):
    variant, c, bm, tree = pair
    sd = bm.diffusion_model.state_dict()
    inp = step_inputs(c, "text_to_audio_video", seed=6)
    ref_lora = _random_lora(bm.diffusion_model).attach(bm.diffusion_model)
    try:
        ref = _our_grads(bm.diffusion_model, ref_lora, inp, checkpointing=False)
    finally:
        ref_lora.detach()

    with torch.inference_mode():  # as ComfyUI loads and runs nodes
        inf_bm = comfy_model(comfy, c, sd=sd)
        inf_inp = step_inputs(c, "text_to_audio_video", seed=6)
    dm = inf_bm.diffusion_model
    assert find_inference_tensors(dm) and inf_inp.video.tokens.is_inference()
    lora = _random_lora(dm).attach(dm)
    saved = []

    def pack(t):
        saved.append(bool(t.is_inference()))
        return t

    try:
        for checkpointing in (False, True):
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                with torch.inference_mode():
                    torch.manual_seed(7)
                    v, a = make_predict(checkpointing=checkpointing)(dm, inf_inp)
                assert v.requires_grad and not v.is_inference()
                _objective(v, a, _weights(v, a)).backward()
            got = _grads(lora)
            assert max(_rel(got[n], ref[n]) for n in ref) < TOL
    finally:
        lora.detach()
    assert saved and not any(saved), f"{sum(saved)} inference tensors saved for backward"
    assert not find_inference_tensors(dm)


# --------------------------------------------------- tiny checkpoints via ComfyUI's loader

def test_tiny_25_set_loaded_by_comfyui(comfy, tmp_path):
    """The tiny LTX-2.5 transformer file, loaded by ComfyUI's Load Diffusion Model code and
    by our loader: same module tree, same config, same outputs in every mode."""
    from dataclasses import replace

    from trainer_core.ltx2 import load_tree_from_checkpoint

    sd_mod = importlib.import_module("comfy.sd")
    paths = tiny_checkpoint.make_tiny_set(tmp_path, "ltx-2.5", seed=0)
    patcher = sd_mod.load_diffusion_model(str(paths["transformer"]))
    dm = patcher.model.diffusion_model
    tree = load_tree_from_checkpoint(paths["transformer"], dtype=torch.float32)
    c = tree.ltx2_config
    assert c.variant == "2.5" and c.use_keyframes_abs_pos_embedding and not c.ff_bias
    assert LTX2Config.from_module(dm) == replace(c, model_version="")
    assert {k: tuple(v.shape) for k, v in tree.state_dict().items()} == \
           {k: tuple(v.shape) for k, v in dm.state_dict().items()}
    for mode in MODES:
        inp = step_inputs(c, mode, seed=8)
        with torch.no_grad():
            rv, ra = comfy_forward(dm, inp)
            for root in (dm, tree):
                v, a = ours(root, inp, comfy_order=mode == "text_to_audio_video")
                if rv is not None:
                    assert _rel(v, rv) < TOL, (mode, _rel(v, rv))
                if ra is not None:
                    assert _rel(a, ra) < TOL, (mode, _rel(a, ra))


@pytest.mark.parametrize("variant", ["2.0", "2.3"])
def test_tiny_checkpoint_loaded_by_comfyui(comfy, tmp_path, variant):
    """The project's tiny checkpoints, loaded by ComfyUI's Load Checkpoint code and by our
    loader: same module tree, same config, same outputs in every mode."""
    from trainer_core import tiny_checkpoint
    from trainer_core.ltx2 import load_tree_from_checkpoint

    sd_mod = importlib.import_module("comfy.sd")
    path = tiny_checkpoint.make_tiny_checkpoint(tmp_path / f"tiny_{variant}.safetensors", variant, seed=0)
    patcher = sd_mod.load_checkpoint_guess_config(str(path), output_vae=False, output_clip=False)[0]
    dm = patcher.model.diffusion_model
    dtype = dm.patchify_proj.weight.dtype
    assert dtype == torch.float32, dtype
    tree = load_tree_from_checkpoint(path, dtype=dtype)
    c = tree.ltx2_config
    assert c.variant == variant
    assert LTX2Config.from_module(dm) == c
    assert {k: tuple(v.shape) for k, v in tree.state_dict().items()} == \
           {k: tuple(v.shape) for k, v in dm.state_dict().items()}
    for mode in MODES:
        inp = step_inputs(c, mode, seed=8)
        assert inp.text["context"].shape[-1] == tiny_checkpoint.text_context_width(variant, processed=False)
        with torch.no_grad():
            rv, ra = comfy_forward(dm, inp)
            for root in (dm, tree):
                v, a = ours(root, inp, comfy_order=mode == "text_to_audio_video")
                if rv is not None:
                    assert _rel(v, rv) < TOL, (variant, mode, _rel(v, rv))
                if ra is not None:
                    assert _rel(a, ra) < TOL, (variant, mode, _rel(a, ra))


def test_reference_audio_positions_match_comfyuis_reference_audio_node(pair):
    """Audio IC-LoRA trained with ``audio_reference_positions = comfyui`` sees the reference
    sound where ComfyUI puts it when sampling (LTXV Reference Audio → the model's ``ref_audio``:
    clean tokens before the target, timed to end just before 0): our audio forward with those
    positions equals ComfyUI's LTXAVModel given the same reference; with the official positions
    (ltx-trainer's: on the target's timeline from 0) it does not."""
    from trainer_core.modes import audio_reference_positions

    variant, c, bm, tree = pair
    g = torch.Generator().manual_seed(3)
    T, R, L = 6, 4, 7
    a = torch.randn(1, T, 128, generator=g)
    ref = torch.randn(1, R, 128, generator=g)
    sigma = torch.full((1, T), 0.6)
    ctx = torch.randn(1, L, context_width(c), generator=g)
    dm = bm.diffusion_model
    with torch.no_grad():
        text = dm.preprocess_text_embeds(ctx, unprocessed=True)
        theirs = dm([torch.zeros(1, 128, 1, 1, 1), tokens_to_audio(a)], (sigma.amax(dim=1), sigma), text,
                    frame_rate=24.0, ref_audio={"tokens": ref},
                    transformer_options=dict(run_vx=False, v2a_cross_attn=False))[1]
        theirs = audio_to_tokens(theirs)
        got = {}
        for conv in ("comfyui", "official"):
            got[conv] = forward_av(tree, None, (a, sigma, (T,)), context=ctx, fps=24.0,
                                   audio_reference=(ref, audio_reference_positions(R, "cpu", conv)))[1]
    rel = lambda x: ((x - theirs).norm() / theirs.norm()).item()
    assert got["comfyui"].shape == theirs.shape
    # (measured: 2.0 8e-6, 2.3 / 2.5 4e-5; the official positions 3e-2)
    assert rel(got["comfyui"]) < 1e-4, rel(got["comfyui"])
    assert rel(got["official"]) > 100 * rel(got["comfyui"]), (rel(got["official"]), rel(got["comfyui"]))
