"""IC-LoRA, extension and inpainting in real ComfyUI: Load Clips pairs the clips (naming
rule, generated masks) and reports the unpaired one, Bucket keeps each pair together (scaled
reference), Encode Latents caches references and masks through the tiny checkpoint's VAEs,
and Train LTX-2 LoRA trains each mode on that cache."""
from __future__ import annotations

import pytest
import torch

from tests.comfy.test_encode_node import GemmaStandIn
from tests.core import mediagen as mg
from trainer_core.cache import LatentCache
from trainer_core.tiny_checkpoint import make_tiny_checkpoint, text_context_width


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models are launch-bound: one thread is as fast and spends no CPU spinning."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _run(comfy, nid, **kw):
    with torch.inference_mode():
        return comfy.pack[nid].execute(**kw).result


@pytest.fixture(scope="module")
def paired(comfy):
    name = "pair_tiny.safetensors"
    make_tiny_checkpoint(comfy.base / "models" / "checkpoints" / name, variant="ltx-2.0", seed=3)
    with torch.inference_mode():
        model, _, vae = comfy.nodes.NODE_CLASS_MAPPINGS["CheckpointLoaderSimple"]().load_checkpoint(name)[:3]
        audio_vae = comfy.nodes.NODE_CLASS_MAPPINGS["LTXVAudioVAELoader"].execute(ckpt_name=name).result[0]
    root = comfy.base / "input" / "pairs"
    root.mkdir(parents=True, exist_ok=True)
    for i, stem in enumerate(("a", "b", "lonely")):
        mg.write_clip(root / f"{stem}.mp4", [1.0], fps=24, size=(128, 64), seed=i, preset="ultrafast")
        (root / f"{stem}.txt").write_text(f"clip {stem}")
    for i, stem in enumerate(("a", "b")):  # the references: other pictures, with sound
        mg.write_clip(root / f"{stem}.reference.mp4", [1.0], fps=24, size=(128, 64), seed=10 + i, preset="ultrafast")
    clips, _, summary = _run(comfy, "LTX2TrainLoadClips", folder="pairs", path="", masks="generated boxes",
                             mask_seed=4)
    split = _run(comfy, "LTX2TrainSplitScenes", clips=clips, enabled=False, detector="content", threshold=0.0,
                 min_seconds=0.0, max_seconds=0.0)[0]
    ds = _run(comfy, "LTX2TrainBucket", clips=split, preset="custom", buckets="128x64x17", target_fps=24.0,
              audio=True, static_threshold=0.0, reference_scale="2")[0]
    clip = GemmaStandIn(text_context_width("ltx-2.0", processed=False))
    latents, _, enc_summary = _run(comfy, "LTX2TrainEncodeLatents", dataset=ds, vae=vae, clip=clip,
                                   audio_vae=audio_vae, trigger_word="", cache_name="pairs_cache")
    return model, latents, summary, enc_summary, ds


def test_pairs_reported_and_cached(comfy, paired):
    _, latents, summary, enc_summary, ds = paired
    assert "lonely.mp4" in summary and "no reference" in summary  # the unpaired clip, named
    assert "a.reference.mp4" not in [c.name for c in ds.clipset.clips]
    assert sorted(c.name for c in ds.clipset.clips) == ["a.mp4", "b.mp4"]
    assert "paired: reference 2, reference audio 2, video mask 2" in enc_summary
    cache = LatentCache(latents["path"])
    for s in cache.manifest.samples:
        ref = cache.get("video", s["reference"])["latents"]
        tgt = cache.get("video", s["video"])["latents"]
        assert tuple(ref.shape) == (128, 3, 1, 2) and tuple(tgt.shape) == (128, 3, 2, 4)  # 1/2 size reference
        assert not torch.equal(ref, tgt[:, :, ::2, ::2])
        assert tuple(cache.get("audio", s["reference_audio"])["latents"].shape)[0] == 8
        m = cache.get("mask", s["video_mask"])["mask"]
        assert tuple(m.shape) == (3, 2, 4) and 0 < m.sum() < m.numel()


@pytest.mark.parametrize("mode,extra", [("v2v_ic_lora", {}), ("video_extension", {"extension_frames": 1}),
                                        ("video_inpainting", {})])
def test_mode_trains_on_the_paired_cache(comfy, paired, mode, extra):
    model, latents, *_ = paired
    flat_inputs = _flat_inputs(comfy)
    with torch.inference_mode():
        out = comfy.pack["LTX2TrainLoRA"].execute(**flat_inputs(
            model=model, latents=latents, recipe="Character", lora_name=f"pair_{mode}", steps=2,
            learning_rate=1e-3, rank=2, seed=1, resume="none", precision="fp32", checkpoint_every=0, mode=mode,
            **extra))
    assert out.result[1].startswith(f"ltx2/pair_{mode}_")
    hist = out.result[2]
    assert len(hist) == 2 and all(h["loss"] == h["loss"] and h["loss"] > 0 for h in hist)
    if mode == "v2v_ic_lora":  # trained on 1/2-size references: the LoRA says so, as ComfyUI's IC-LoRA node reads it
        params = comfy.nodes.NODE_CLASS_MAPPINGS["GetICLoRAParameters"]
        assert params.execute(iclora_model=out.result[0]).result[0] == {"reference_downscale_factor": 2}


def _flat_inputs(comfy):
    import sys

    return sys.modules[comfy.pack["LTX2TrainLoRA"].__module__].flat_inputs


def test_ic_lora_on_a_cache_without_references_says_what_to_do(comfy, paired):
    model = paired[0]
    root = comfy.base / "input" / "plain"
    root.mkdir(parents=True, exist_ok=True)
    mg.write_clip(root / "p.mp4", [1.0], fps=24, size=(128, 64), seed=5, preset="ultrafast")
    clips = _run(comfy, "LTX2TrainLoadClips", folder="plain", path="")[0]
    ds = _run(comfy, "LTX2TrainBucket", clips=clips, preset="custom", buckets="128x64x17", target_fps=24.0,
              audio=False, static_threshold=0.0)[0]
    clip = GemmaStandIn(text_context_width("ltx-2.0", processed=False))
    with torch.inference_mode():
        loader = comfy.nodes.NODE_CLASS_MAPPINGS["CheckpointLoaderSimple"]()
        vae = loader.load_checkpoint("pair_tiny.safetensors")[2]
    latents = _run(comfy, "LTX2TrainEncodeLatents", dataset=ds, vae=vae, clip=clip, trigger_word="",
                   cache_name="plain_cache")[0]
    with pytest.raises(ValueError, match="no reference for 1 of 1 samples.*Load Clips"):
        with torch.inference_mode():
            comfy.pack["LTX2TrainLoRA"].execute(**_flat_inputs(comfy)(
                model=model, latents=latents, recipe="Character", lora_name="plain", steps=1, rank=2,
                resume="none", precision="fp32", checkpoint_every=0, mode="v2v_ic_lora"))
