"""Sample with LoRA in real ComfyUI on CPU with tiny LTX-2 checkpoints.

The text conditioning stands in for Gemma 3 12B at its own boundary (the LTX-AV text
encoder's unprocessed output, true layout). The node's mp4 is read back with PyAV, and its
frames and sound equal the stock LTX-2 graph's — built here from ComfyUI's own nodes with the
LoRA loaded by LoraLoaderModelOnly — at the same seed.
"""
from __future__ import annotations

from pathlib import Path

import av
import pytest
import torch

from trainer_core.lora import LoRASet, LoRASpec, save_lora
from trainer_core.tiny_checkpoint import make_tiny_checkpoint, text_context_width

W, H, F, FPS = 64, 64, 9, 24


@pytest.fixture(scope="module", params=["ltx-2.0", "ltx-2.3"])
def tiny(request, comfy):
    variant = request.param
    name = f"tiny_sample_{variant}.safetensors"
    make_tiny_checkpoint(comfy.base / "models" / "checkpoints" / name, variant=variant, seed=2)
    with torch.inference_mode():
        model, _, vae = comfy.nodes.NODE_CLASS_MAPPINGS["CheckpointLoaderSimple"]().load_checkpoint(name)[:3]
        from comfy_extras.nodes_lt_audio import LTXVAudioVAELoader

        audio_vae = LTXVAudioVAELoader.execute(name).result[0]
    # a LoRA that visibly changes the model: random A and B on every attention projection
    root = model.model.diffusion_model
    lora = LoRASet.for_model(root, LoRASpec(rank=4, alpha=4, preset="all attention"), seed=3)
    with torch.no_grad():
        g = torch.Generator().manual_seed(4)
        for n in lora.names:
            ad = lora.adapter(n)
            ad.lora_B.copy_(0.5 * torch.randn(ad.lora_B.shape, generator=g))
    lora_name = f"test_{variant}.safetensors"
    save_lora(comfy.base / "models" / "loras" / lora_name, lora, {"base_model": variant})
    w = text_context_width(variant, processed=False)
    g = torch.Generator().manual_seed(5)
    pos = [[torch.randn(1, 7, w, generator=g), {"unprocessed_ltxav_embeds": True}]]
    neg = [[torch.randn(1, 3, w, generator=g), {"unprocessed_ltxav_embeds": True}]]
    return dict(variant=variant, model=model, vae=vae, audio_vae=audio_vae, lora=lora_name, pos=pos, neg=neg)


def _run_node(comfy, t, **kw):
    node = comfy.pack["LTX2TrainSample"]
    args = dict(model=t["model"], vae=t["vae"], audio_vae=t["audio_vae"], positive=t["pos"], negative=t["neg"],
                width=W, height=H, frames=F, fps=FPS, seed=11, steps=2, cfg=3.0,
                filename_prefix=f"ltx2_samples/{t['variant']}")
    args.update(kw)
    with torch.inference_mode():
        return node.execute(**args)


def _ui(out) -> dict:
    return out.ui.as_dict() if hasattr(out.ui, "as_dict") else out.ui


def test_sample_writes_an_mp4_with_sound(comfy, tiny):
    out = _run_node(comfy, tiny, lora_1=tiny["lora"], strength_1=0.8)
    video, audio, images = out.result
    saved = _ui(out)["images"][0]
    path = Path(comfy.folder_paths.get_output_directory()) / saved["subfolder"] / saved["filename"]
    assert path.exists() and path.suffix == ".mp4" and saved["type"] == "output"
    assert not list(path.parent.glob("*.part.mp4"))
    assert images.shape == (F, H, W, 3)
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        aus = c.streams.audio
        assert vs.codec_context.name == "h264" and (vs.width, vs.height) == (W, H)
        assert float(vs.average_rate) == pytest.approx(FPS)
        n = sum(1 for _ in c.decode(video=0))
        assert n == F
        assert aus and aus[0].codec_context.name == "aac"
    with av.open(str(path)) as c:
        samples = sum(fr.samples for fr in c.decode(audio=0))
        rate = c.streams.audio[0].rate
    assert samples / rate == pytest.approx(F / FPS, abs=0.05)
    assert audio["waveform"].shape[-1] / audio["sample_rate"] == pytest.approx(F / FPS, abs=0.05)
    # numbered names: a second run does not overwrite the first
    out2 = _run_node(comfy, tiny, seed=12)
    assert _ui(out2)["images"][0]["filename"] != saved["filename"]


def test_sample_equals_the_stock_graph_with_the_lora(comfy, tiny):
    """The stock LTX-2 graph from ComfyUI's own nodes, LoRA via LoraLoaderModelOnly."""
    from comfy_extras import nodes_custom_sampler as cs
    from comfy_extras import nodes_lt as lt
    from comfy_extras import nodes_lt_audio as lta

    ours = _run_node(comfy, tiny, lora_1=tiny["lora"], strength_1=0.8)
    _, audio, images = ours.result
    N = comfy.nodes.NODE_CLASS_MAPPINGS
    with torch.inference_mode():
        m = N["LoraLoaderModelOnly"]().load_lora_model_only(tiny["model"], tiny["lora"], 0.8)[0]
        pos, neg = lt.LTXVConditioning.execute(tiny["pos"], tiny["neg"], float(FPS)).result
        vlat = lt.EmptyLTXVLatentVideo.execute(W, H, F, 1).result[0]
        alat = lta.LTXVEmptyLatentAudio.execute(F, FPS, 1, tiny["audio_vae"]).result[0]
        avl = lt.LTXVConcatAVLatent.execute(vlat, alat).result[0]
        guider = cs.CFGGuider.execute(m, pos, neg, 3.0).result[0]
        sigmas = lt.LTXVScheduler.execute(2, 2.05, 0.95, True, 0.1, latent=avl).result[0]
        sampler = cs.KSamplerSelect.execute("euler_ancestral").result[0]
        noise = cs.RandomNoise.execute(11).result[0]
        out = cs.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas, avl).result[0]
        v, a = lt.LTXVSeparateAVLatent.execute(out).result
        want_images = N["VAEDecode"]().decode(tiny["vae"], v)[0]
        want_audio = lta.LTXVAudioVAEDecode.execute(a, tiny["audio_vae"]).result[0]
    assert torch.equal(images, want_images)
    assert torch.equal(audio["waveform"], want_audio["waveform"])
    assert audio["sample_rate"] == want_audio["sample_rate"]
    # and the LoRA matters: without it the same seed gives another result
    plain = _run_node(comfy, tiny)
    assert not torch.equal(plain.result[2], images)


def test_sample_refuses_bad_frames_and_missing_text(comfy, tiny):
    with pytest.raises(ValueError, match="8"):
        _run_node(comfy, tiny, frames=10)
    with pytest.raises(ValueError, match="clip"):
        _run_node(comfy, tiny, positive=None, negative=None, prompt="x")
