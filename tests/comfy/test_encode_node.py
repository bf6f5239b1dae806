"""Encode Latents in real ComfyUI with the tiny LTX-2 checkpoint's VAEs, then a short training run.

The text encoder is stood in for at its own boundary only (Gemma 3 12B has no tiny form):
an object with the two CLIP methods the node calls, returning conditioning of the true
layout ([1, L, width of the LTX-AV text encoder's output]).
"""
from __future__ import annotations

import hashlib

import pytest
import torch

from tests.core import mediagen as mg
from trainer_core.cache import LatentCache
from trainer_core.tiny_checkpoint import make_tiny_checkpoint, text_context_width


class GemmaStandIn:
    def __init__(self, width: int):
        self.width = width
        self.calls: list[str] = []

    def tokenize(self, text):
        return {"text": text}

    def encode_from_tokens(self, tokens, return_dict=False, **kw):
        text = tokens["text"]
        self.calls.append(text)
        seed = int(hashlib.sha1(text.encode()).hexdigest()[:8], 16)
        n = 4 + len(text.split())
        cond = torch.randn(1, n, self.width, generator=torch.Generator().manual_seed(seed))
        return {"cond": cond, "pooled_output": None}


@pytest.fixture(scope="module")
def setup(comfy):
    name = "enc_tiny.safetensors"
    make_tiny_checkpoint(comfy.base / "models" / "checkpoints" / name, variant="ltx-2.0", seed=2)
    with torch.inference_mode():
        model, _, vae = comfy.nodes.NODE_CLASS_MAPPINGS["CheckpointLoaderSimple"]().load_checkpoint(name)[:3]
        audio_vae = comfy.nodes.NODE_CLASS_MAPPINGS["LTXVAudioVAELoader"].execute(ckpt_name=name).result[0]
    root = comfy.base / "input" / "enc"
    root.mkdir(parents=True, exist_ok=True)
    mg.write_clip(root / "a.mp4", [1.0, 1.0], fps=24, size=(96, 64), seed=1)
    mg.write_clip(root / "b.mp4", [1.2], fps=24, size=(64, 96), seed=2)
    (root / "a.txt").write_text("a clip with two scenes")
    (root / "b.txt").write_text("a portrait clip")
    return model, vae, audio_vae


def _dataset(comfy):
    def run(nid, **kw):
        with torch.inference_mode():
            return comfy.pack[nid].execute(**kw).result

    clips = run("LTX2TrainLoadClips", folder="enc", path="")[0]
    split = run("LTX2TrainSplitScenes", clips=clips, enabled=False, detector="content", threshold=0.0,
                min_seconds=0.0, max_seconds=0.0)[0]
    return run("LTX2TrainBucket", clips=split, preset="custom", buckets="64x64x17;64x96x17;96x64x17",
               target_fps=24.0, audio=True, static_threshold=0.0)[0]


def _encode(comfy, ds, vae, audio_vae, clip, cache="enc_cache"):
    with torch.inference_mode():
        return comfy.pack["LTX2TrainEncodeLatents"].execute(dataset=ds, vae=vae, clip=clip, audio_vae=audio_vae,
                                                            trigger_word="sks", cache_name=cache).result


def test_encode_shapes_reuse_and_repair_then_train(comfy, setup):
    model, vae, audio_vae = setup
    ds = _dataset(comfy)
    clip = GemmaStandIn(text_context_width("ltx-2.0", processed=False))
    latents, preview, summary = _encode(comfy, ds, vae, audio_vae, clip)
    cache = LatentCache(latents["path"])
    m = cache.manifest
    assert len(m.samples) == 2 and latents["samples"] == 2
    for s in m.samples:
        w, h, f = (int(v) for v in s["bucket"].split("x"))
        v = cache.get("video", s["video"])
        assert tuple(v["latents"].shape) == (128, 1 + (f - 1) // 8, h // 32, w // 32)
        assert tuple(v["first_frame"].shape) == (128, 1, h // 32, w // 32)
        a = cache.get("audio", s["audio"])["latents"]
        assert a.shape[0] == 8 and a.shape[2] == 16
        assert a.shape[1] == round(f / 24 * 25)  # ~25 audio latent frames per second
        assert s["caption"].startswith("sks, ")
        t = cache.get("text", s["text"])["context"]
        assert t.shape[-1] == clip.width
    assert preview.shape[-1] == 3 and "encoded" in summary

    # a second run encodes nothing
    clip.calls.clear()
    _, _, summary2 = _encode(comfy, ds, vae, audio_vae, clip)
    assert "encoded video 0, audio 0, text 0" in summary2 and clip.calls == []

    # one changed caption: one text entry re-encoded
    ds.samples[0].caption = "a different caption"
    _encode(comfy, ds, vae, audio_vae, clip)
    assert clip.calls == ["sks, a different caption"]

    # a truncated cache file is detected and re-encoded
    p = cache.path("video", m.samples[1]["video"])
    p.write_bytes(p.read_bytes()[:-64])
    _, _, summary3 = _encode(comfy, ds, vae, audio_vae, clip)
    assert "encoded video 1," in summary3
    assert LatentCache(latents["path"]).valid("video", m.samples[1]["video"])

    # and the cache trains
    with torch.inference_mode():
        train = comfy.pack["LTX2TrainLoRA"]
        opts = comfy.pack["LTX2TrainOptions"].execute(**{**_option_defaults(comfy), "precision": "fp32",
                                                          "checkpoint_every": 0}).result[0]
        out = train.execute(model=model, latents=latents, recipe="Character", lora_name="enc", steps=3,
                            learning_rate=1e-3, rank=2, seed=1, resume="none", options=opts)
    assert out.result[1] == "ltx2/enc_00001.safetensors" and len(out.result[2]) == 3


def _option_defaults(comfy) -> dict:
    """LTX-2 Training Options' widget defaults, read from its object_info as the frontend does."""
    info = comfy.pack["LTX2TrainOptions"].GET_NODE_INFO_V1()
    return {k: v[1]["default"] for k, v in info["input"]["required"].items()}
