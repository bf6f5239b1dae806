"""Sample with LoRA with each training mode's conditioning (Sample Conditioning), in real
ComfyUI on CPU with a tiny LTX-2 checkpoint and a LoRA that visibly changes the model.

For each conditioning the node's frames and sound equal the stock ComfyUI graph's — written
out here from ComfyUI's own nodes as a user wires them (LoraLoaderModelOnly, LTXVAddGuide +
Get IC-LoRA Parameters + LTXVCropGuides, LTXVImgToVideoInplace, VAEEncode + Set Latent Noise
Mask, LTXVAudioVAEEncode, LTXVReferenceAudio) — at the same seed, and the conditioning is
visible: the clean tokens (reference guide, prefix, kept source cells, kept audio) come out of
the sampler exactly as encoded, and the result differs from the unconditioned sample.
"""
from __future__ import annotations

import math

import pytest
import torch

from trainer_core.lora import LoRASet, LoRASpec, save_lora
from trainer_core.tiny_checkpoint import make_tiny_checkpoint, text_context_width

W, H, F, FPS = 64, 64, 17, 24
SEED, STEPS, CFG = 7, 2, 3.0


@pytest.fixture(scope="module")
def tiny(comfy):
    name = "tiny_sample_cond.safetensors"
    make_tiny_checkpoint(comfy.base / "models" / "checkpoints" / name, variant="ltx-2.0", seed=2)
    with torch.inference_mode():
        model, _, vae = comfy.nodes.NODE_CLASS_MAPPINGS["CheckpointLoaderSimple"]().load_checkpoint(name)[:3]
        from comfy_extras.nodes_lt_audio import LTXVAudioVAELoader

        audio_vae = LTXVAudioVAELoader.execute(name).result[0]
    lora = LoRASet.for_model(model.model.diffusion_model, LoRASpec(rank=4, alpha=4, preset="all attention"), seed=3)
    with torch.no_grad():
        g = torch.Generator().manual_seed(4)
        for n in lora.names:
            ad = lora.adapter(n)
            ad.lora_B.copy_(0.5 * torch.randn(ad.lora_B.shape, generator=g))
    lora_name = "test_cond.safetensors"
    save_lora(comfy.base / "models" / "loras" / lora_name, lora, {"base_model": "ltx-2.0"})
    w = text_context_width("ltx-2.0", processed=False)
    g = torch.Generator().manual_seed(5)
    pos = [[torch.randn(1, 7, w, generator=g), {"unprocessed_ltxav_embeds": True}]]
    neg = [[torch.randn(1, 3, w, generator=g), {"unprocessed_ltxav_embeds": True}]]
    g = torch.Generator().manual_seed(6)
    clip = torch.rand(F, H, W, 3, generator=g)  # a source / reference clip
    sr = 16000
    t = torch.arange(int(sr * F / FPS)) / sr
    wave = (0.4 * torch.sin(2 * math.pi * 330 * t)).repeat(1, 2, 1)
    return dict(model=model, vae=vae, audio_vae=audio_vae, lora=lora_name, pos=pos, neg=neg, clip=clip,
                audio={"waveform": wave, "sample_rate": sr})


def _cond(comfy, **kw):
    args = dict(include_in_output=False, region="")
    args.update(kw)
    return comfy.pack["LTX2TrainSampleConditioning"].execute(**args).result[0]


def _run_node(comfy, t, conditioning=None, w=W, h=H, lora=True):
    args = dict(model=t["model"], vae=t["vae"], audio_vae=t["audio_vae"], positive=t["pos"], negative=t["neg"],
                width=w, height=h, frames=F, fps=FPS, seed=SEED, steps=STEPS, cfg=CFG, conditioning=conditioning,
                filename_prefix="ltx2_samples/cond")
    if lora:
        args.update(lora_1=t["lora"], strength_1=0.8)
    with torch.inference_mode():
        return comfy.pack["LTX2TrainSample"].execute(**args).result


class Stock:
    """The stock LTX-2 graph, node by node, as a user wires it for each conditioning."""

    def __init__(self, comfy, t, w=W, h=H):
        from comfy_extras import nodes_lt as lt
        from comfy_extras import nodes_lt_audio as lta

        self.N, self.lt, self.lta, self.t, self.w, self.h = comfy.nodes.NODE_CLASS_MAPPINGS, lt, lta, t, w, h
        self.model = self.N["LoraLoaderModelOnly"]().load_lora_model_only(t["model"], t["lora"], 0.8)[0]
        self.pos, self.neg = lt.LTXVConditioning.execute(t["pos"], t["neg"], float(FPS)).result
        self.vlat = lt.EmptyLTXVLatentVideo.execute(w, h, F, 1).result[0]
        self.alat = lta.LTXVEmptyLatentAudio.execute(F, FPS, 1, t["audio_vae"]).result[0]
        self.guided = False

    def sample(self):
        from comfy_extras import nodes_custom_sampler as cs

        lt, lta, t = self.lt, self.lta, self.t
        av = lt.LTXVConcatAVLatent.execute(self.vlat, self.alat).result[0]
        if getattr(self, "audio_latent", None) is not None:
            av = lt.LTXVConcatAVLatent.execute(av, self.audio_latent).result[0]
        guider = cs.CFGGuider.execute(self.model, self.pos, self.neg, CFG).result[0]
        sigmas = lt.LTXVScheduler.execute(STEPS, 2.05, 0.95, True, 0.1, latent=av).result[0]
        sampler = cs.KSamplerSelect.execute("euler_ancestral").result[0]
        noise = cs.RandomNoise.execute(SEED).result[0]
        out = cs.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas, av).result[0]
        v, a = lt.LTXVSeparateAVLatent.execute(out).result
        raw_v = v["samples"]
        if self.guided:
            v = lt.LTXVCropGuides.execute(self.pos, self.neg, v).result[2]
        images = self.N["VAEDecode"]().decode(t["vae"], v)[0]
        audio = lta.LTXVAudioVAEDecode.execute(a, t["audio_vae"]).result[0]
        return images, audio, raw_v, a["samples"]


def _same(ours, images, audio):
    _, our_audio, our_images = ours
    assert torch.equal(our_images, images)
    assert torch.equal(our_audio["waveform"], audio["waveform"])


@pytest.fixture(scope="module")
def plain(comfy, tiny):
    return _run_node(comfy, tiny)


def test_ic_lora_reference_equals_the_stock_guide_graph(comfy, tiny, plain):
    ref = tiny["clip"]
    ours = _run_node(comfy, tiny, _cond(comfy, reference_video=ref))
    with torch.inference_mode():
        s = Stock(comfy, tiny)
        params = s.lt.GetICLoRAParameters.execute(s.model).result[0]
        s.pos, s.neg, s.vlat = s.lt.LTXVAddGuide.execute(s.pos, s.neg, tiny["vae"], s.vlat, ref, 0, 1.0,
                                                         iclora_parameters=params).result
        s.guided = True
        images, audio, raw_v, _ = s.sample()
        enc_ref = tiny["vae"].encode(ref[..., :3])
    _same(ours, images, audio)
    # the guide's tokens (appended after the target frames) come out of the sampler clean
    assert torch.equal(raw_v[:, :, -enc_ref.shape[2]:], enc_ref.to(raw_v))
    assert images.shape == (F, H, W, 3)
    assert not torch.equal(images, plain[2])
    # include_in_output: reference | result side by side
    both = _run_node(comfy, tiny, _cond(comfy, reference_video=ref, include_in_output=True))[2]
    assert both.shape == (F, H, 2 * W, 3)
    assert torch.equal(both[:, :, W:], images)
    assert torch.allclose(both[:, :, :W], ref)


def test_ic_lora_scaled_reference_equals_the_stock_small_grid_guide(comfy, tiny):
    """A reference trained at half size: LTXVAddGuide with reference_downscale_factor 2 (the
    IC-LoRA parameters ComfyUI reads from a LoRA's metadata) — a dilated small-grid guide."""
    w = h = 128
    ref = torch.nn.functional.interpolate(tiny["clip"].movedim(-1, 1), size=(h, w)).movedim(1, -1)
    ours = _run_node(comfy, tiny, _cond(comfy, reference_video=ref, reference_scale="2"), w=w, h=h)
    with torch.inference_mode():
        s = Stock(comfy, tiny, w=w, h=h)
        s.pos, s.neg, s.vlat = s.lt.LTXVAddGuide.execute(s.pos, s.neg, tiny["vae"], s.vlat, ref, 0, 1.0,
                                                         iclora_parameters={"reference_downscale_factor": 2}).result
        s.guided = True
        images, audio, raw_v, _ = s.sample()
        full = _run_node(comfy, tiny, _cond(comfy, reference_video=ref), w=w, h=h)[2]
    _same(ours, images, audio)
    assert not torch.equal(images, full)  # the small-grid guide is another conditioning than the full one


def test_extension_prefix_is_kept_and_equals_the_stock_graph(comfy, tiny, plain):
    prefix = tiny["clip"][:9]  # 9 frames = 2 latent frames of the 3
    ours = _run_node(comfy, tiny, _cond(comfy, source_video=prefix))
    with torch.inference_mode():
        s = Stock(comfy, tiny)
        s.vlat = s.lt.LTXVImgToVideoInplace.execute(tiny["vae"], prefix, s.vlat, 1.0).result[0]
        images, audio, raw_v, _ = s.sample()
        enc = tiny["vae"].encode(prefix[..., :3])
    _same(ours, images, audio)
    assert enc.shape[2] == 2 and raw_v.shape[2] == 3
    assert torch.equal(raw_v[:, :, :2], enc.to(raw_v))  # the prefix's latent frames, clean
    assert not torch.equal(raw_v[:, :, 2], torch.zeros_like(raw_v[:, :, 2]))  # the continuation is generated
    assert not torch.equal(images, plain[2])


def test_inpainting_mask_keeps_the_source_outside_it(comfy, tiny, plain):
    src = tiny["clip"]
    mask = torch.zeros(F, H, W)
    mask[:, :, W // 2:] = 1.0  # regenerate the right half
    ours = _run_node(comfy, tiny, _cond(comfy, source_video=src, mask=mask))
    with torch.inference_mode():
        s = Stock(comfy, tiny)
        s.vlat = {"samples": s.N["VAEEncode"]().encode(tiny["vae"], src)[0]["samples"]}
        s.vlat = s.N["SetLatentNoiseMask"]().set_mask(s.vlat, mask)[0]
        images, audio, raw_v, _ = s.sample()
        enc = tiny["vae"].encode(src[..., :3])
    _same(ours, images, audio)
    assert torch.equal(raw_v[..., :1], enc[..., :1].to(raw_v))  # left latent column: the source, clean
    assert not torch.equal(raw_v[..., 1:], enc[..., 1:].to(raw_v))  # right: regenerated
    with pytest.raises(ValueError, match="source_video"):
        _cond(comfy, mask=mask)
    # a training mask (white = kept clean, ltx-trainer's convention) says the same with mask_white="keep"
    assert torch.equal(_cond(comfy, source_video=src, mask=1.0 - mask, mask_white="keep")["mask"], mask)


def test_outpainting_region_keeps_the_rectangle(comfy, tiny):
    w = h = 128  # a 4 x 4 latent grid
    src = torch.nn.functional.interpolate(tiny["clip"].movedim(-1, 1), size=(h, w)).movedim(1, -1)
    ours = _run_node(comfy, tiny, _cond(comfy, source_video=src, region="32, 32, 96, 96"), w=w, h=h)
    with torch.inference_mode():
        s = Stock(comfy, tiny, w=w, h=h)
        s.vlat = {"samples": s.N["VAEEncode"]().encode(tiny["vae"], src)[0]["samples"]}
        keep = torch.zeros(F, h, w)  # what a user paints: the kept rectangle black, the rest white
        keep[:, 32:96, 32:96] = 1.0
        s.vlat = s.N["SetLatentNoiseMask"]().set_mask(s.vlat, 1.0 - keep)[0]
        images, audio, raw_v, _ = s.sample()
        enc = tiny["vae"].encode(src[..., :3]).to(raw_v)
    _same(ours, images, audio)
    assert torch.equal(raw_v[..., 1:3, 1:3], enc[..., 1:3, 1:3])  # the rectangle's latent cells, clean
    assert not torch.equal(raw_v[..., 0, :], enc[..., 0, :])      # the border: generated
    with pytest.raises(ValueError, match="y1, x1, y2, x2"):
        _cond(comfy, source_video=src, region="10, 10, 5")


def test_video_to_audio_keeps_the_video_and_makes_sound(comfy, tiny, plain):
    src = tiny["clip"]
    ours = _run_node(comfy, tiny, _cond(comfy, source_video=src))
    with torch.inference_mode():
        s = Stock(comfy, tiny)
        s.vlat = s.lt.LTXVImgToVideoInplace.execute(tiny["vae"], src, s.vlat, 1.0).result[0]
        images, audio, raw_v, _ = s.sample()
        enc = tiny["vae"].encode(src[..., :3])
    _same(ours, images, audio)
    assert torch.equal(raw_v, enc.to(raw_v))  # every video token kept
    assert not torch.equal(audio["waveform"], plain[1]["waveform"])  # the sound follows the video


def test_audio_to_video_keeps_the_sound(comfy, tiny, plain):
    ours = _run_node(comfy, tiny, _cond(comfy, audio=tiny["audio"]))
    with torch.inference_mode():
        s = Stock(comfy, tiny)
        enc = s.lta.LTXVAudioVAEEncode.execute(tiny["audio"], tiny["audio_vae"]).result[0]
        e = enc["samples"]
        s.audio_latent = s.N["SetLatentNoiseMask"]().set_mask(enc, torch.zeros(e.shape[0], e.shape[2], e.shape[3]))[0]
        images, audio, _, raw_a = s.sample()
    _same(ours, images, audio)
    n = min(raw_a.shape[2], e.shape[2])
    assert torch.equal(raw_a[:, :, :n], e[:, :, :n].to(raw_a))  # the track's latents, clean
    assert not torch.equal(images, plain[2])  # the video follows the sound


def test_audio_reference_equals_the_stock_reference_audio_graph(comfy, tiny, plain):
    ours = _run_node(comfy, tiny, _cond(comfy, reference_audio=tiny["audio"]))
    with torch.inference_mode():
        s = Stock(comfy, tiny)
        s.model, s.pos, s.neg = s.lt.LTXVReferenceAudio.execute(s.model, s.pos, s.neg, tiny["audio"],
                                                                 tiny["audio_vae"], 0.0, 0.0, 1.0).result
        images, audio, _, _ = s.sample()
    _same(ours, images, audio)
    assert not torch.equal(audio["waveform"], plain[1]["waveform"])


def test_validation_samples_with_the_conditioning_and_shows_the_mask(comfy, tiny, tmp_path):
    """run_validation (the Train node's previews) samples with the Sample Conditioning dict —
    the same frames as Sample with LoRA — and the gallery's frames show the inpainting mask
    tinted over the sample; the Train node hands its validation_conditioning to the spec."""
    import importlib

    import numpy as np

    val = importlib.import_module(comfy.pack["LTX2TrainSample"].__module__.rsplit(".", 1)[0] + ".validation")
    train = importlib.import_module(comfy.pack["LTX2TrainLoRA"].__module__)
    src = tiny["clip"]
    mask = torch.zeros(F, H, W)
    mask[:, :, W // 2:] = 1.0
    cond = _cond(comfy, source_video=src, mask=mask)
    spec = train._validation_spec(1, "", None, tiny["pos"], tiny["neg"], tiny["vae"], tiny["audio_vae"], None,
                                  W, H, F, STEPS, CFG, SEED, cond)
    assert spec.conditioning is cond
    m = comfy.nodes.NODE_CLASS_MAPPINGS["LoraLoaderModelOnly"]().load_lora_model_only(tiny["model"], tiny["lora"], 0.8)[0]
    paths = val.run_validation(spec, m, 3, tmp_path)
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["step_000003_0.mp4"]
    ours = _run_node(comfy, tiny, cond)[2]  # Sample with LoRA, same seed (validation: seed + prompt index 0)
    step, i, frames = spec.shots[0]
    assert (step, i) == (3, 0)
    picks = sorted({0, F // 3, (2 * F) // 3, F - 1})
    for f, j in zip(frames, picks):
        raw = ours[j].clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
        assert np.array_equal(f[:, : W // 2], raw[:, : W // 2])  # kept half: the sample as it is
        assert not np.array_equal(f[:, W // 2:], raw[:, W // 2:])  # regenerated half: tinted
        assert np.array_equal(f, val.overlay_mask(raw, mask[j].numpy()))
    region = val.regenerated_area(_cond(comfy, source_video=src, region="0, 0, 32, 64"), F, H, W)
    assert region.shape == (1, H, W) and region[0, :32].max() == 0 and region[0, 32:].min() == 1
