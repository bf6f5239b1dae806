"""LTX-2.5 through the pack's nodes, loaded the split way, in real ComfyUI on CPU.

The tiny LTX-2.5 set (``trainer_core.tiny_checkpoint.make_tiny_set``: the real files' names
and key structure) is loaded by ComfyUI's stock nodes as its own LTX-2.5 template loads the
real one — MODEL from Load Diffusion Model (UNETLoader), the video VAE and the audio VAE from
Load VAE (VAELoader) — and Gemma 4 12B (no tiny form) is stood in for at its boundary by
tests/e2e/standin_text_encoder, whose conditioning has 2.5's true layout (the dual video /
audio projection's output, ``unprocessed_ltxav_embeds``). Then: Encode Latents → Train
LTX-2 LoRA (a few steps, validation previews at an interval) → Sample with LoRA, whose mp4
is read back.
"""
from __future__ import annotations

from pathlib import Path

import av
import pytest
import torch

from tests.core import mediagen as mg
from tests.e2e.standin_text_encoder import _StandInClip
from trainer_core.cache import LatentCache
from trainer_core.lora import load_lora
from trainer_core.tiny_checkpoint import SPLIT_FILES_25, make_tiny_set, text_context_width


@pytest.fixture(scope="module")
def split25(comfy):
    paths = make_tiny_set(comfy.base / "models", "ltx-2.5", seed=4)
    n = comfy.nodes.NODE_CLASS_MAPPINGS
    with torch.inference_mode():
        model = n["UNETLoader"]().load_unet(paths["transformer"].name, "default")[0]
        vae = n["VAELoader"]().load_vae(paths["video_vae"].name)[0]
        audio_vae = n["VAELoader"]().load_vae(paths["audio_vae"].name)[0]
    clip = _StandInClip(text_context_width("ltx-2.5", processed=False))
    root = comfy.base / "input" / "enc25"
    root.mkdir(parents=True, exist_ok=True)
    mg.write_clip(root / "a.mp4", [1.0], fps=24, size=(64, 64), seed=5)
    mg.write_clip(root / "b.mp4", [1.0], fps=24, size=(96, 64), seed=6)
    (root / "a.txt").write_text("a woman speaks")
    (root / "b.txt").write_text("a dog barks")
    return dict(paths=paths, model=model, vae=vae, audio_vae=audio_vae, clip=clip)


def _run(comfy, nid, **kw):
    with torch.inference_mode():
        node = comfy.pack[nid]
        if nid == "LTX2TrainLoRA":  # the old single-node names: options and validation split off
            import sys

            kw = sys.modules[node.__module__].flat_inputs(**kw)
        return node.execute(**kw)


def test_standin_conditioning_has_the_25_layout(split25):
    cond = split25["clip"].encode_from_tokens_scheduled(split25["clip"].tokenize("sks, hello"))
    t, extra = cond[0]
    assert t.shape[0] == 1 and t.shape[-1] == 64 + 32  # video (cross_attention_dim) + audio projection widths
    assert extra["unprocessed_ltxav_embeds"] is True


def test_encode_train_sample_on_the_split_25_set(comfy, split25):
    s = split25
    clips = _run(comfy, "LTX2TrainLoadClips", folder="enc25", path="").result[0]
    ds = _run(comfy, "LTX2TrainBucket", clips=clips, preset="custom", buckets="64x64x9;96x64x9",
              audio=True).result[0]
    latents, _, summary = _run(comfy, "LTX2TrainEncodeLatents", dataset=ds, vae=s["vae"], clip=s["clip"],
                               audio_vae=s["audio_vae"], trigger_word="sks", cache_name="enc25").result
    cache = LatentCache(latents["path"])
    assert len(cache.manifest.samples) == 2, summary
    for smp in cache.manifest.samples:
        assert cache.get("text", smp["text"])["context"].shape[-1] == 96
        assert cache.get("audio", smp["audio"])["latents"].shape[0] == 8
    out = _run(comfy, "LTX2TrainLoRA", model=s["model"], latents=latents, recipe="Character", lora_name="l25",
               steps=4, learning_rate=1e-3, rank=2, mode="text_to_audio_video", seed=1, resume="none",
               precision="fp32", checkpoint_every=0, validation_every=2, validation_prompts="sks, a woman speaks",
               validation_clip=s["clip"], validation_vae=s["vae"], validation_audio_vae=s["audio_vae"],
               validation_width=64, validation_height=64, validation_frames=9, validation_steps=2)
    trained, lora_rel, losses = out.result[0], out.result[1], out.result[2]
    assert len(losses) == 4
    nums = [float(v) for d in losses for v in (d.values() if isinstance(d, dict) else [d])
            if isinstance(v, (int, float))]
    assert nums and all(torch.isfinite(torch.tensor(nums))), losses
    lora_path = comfy.base / "models" / "loras" / lora_rel
    sd, meta = load_lora(lora_path)
    assert sd and meta["steps"] == "4"
    assert meta["base_model"] == "2.5", meta  # the base model's variant is recorded
    run_dir = comfy.base / "output" / "ltx2_lora_runs" / "l25"
    assert sorted(p.name for p in (run_dir / "samples").glob("step_*.mp4")) == ["step_000002_0.mp4",
                                                                                 "step_000004_0.mp4"]
    res = _run(comfy, "LTX2TrainSample", model=trained, vae=s["vae"], audio_vae=s["audio_vae"],
               prompt="sks, a woman speaks", clip=s["clip"], width=64, height=64, frames=9, fps=24, seed=3,
               steps=2, cfg=3.0, filename_prefix="ltx2_samples/l25")
    ui = res.ui.as_dict() if hasattr(res.ui, "as_dict") else res.ui
    saved = ui["images"][0]
    path = Path(comfy.folder_paths.get_output_directory()) / saved["subfolder"] / saved["filename"]
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
        assert len(frames) == 9 and (frames[0].width, frames[0].height) == (64, 64)
        assert c.streams.audio, "no sound"


def test_split_files_names_are_the_template_names():
    assert SPLIT_FILES_25 == {
        "transformer": ("diffusion_models", "ltx-2.5-22b-distilled-transformer-comfy-int8-convrot.safetensors"),
        "text_encoder": ("text_encoders", "gemma4-12b-with-proj-ltx-2.5-comfy-int8-convrot.safetensors"),
        "video_vae": ("vae", "ltx-2.5-video-vae-bf16.safetensors"),
        "audio_vae": ("vae", "ltx-2.5-audio-vae-bf16.safetensors"),
    }


def _int8_convrot(sd: dict, meta: dict, group: int = 16):
    """The tiny transformer in the layout of the template's ``comfy-int8-convrot`` file:
    every block linear as ComfyUI's ``int8_tensorwise`` with ConvRot (per-channel scales),
    quantized by ComfyUI's own layout code and listed in ``_quantization_metadata``."""
    import json

    import comfy.quant_ops as qo

    out, layers = {}, {}
    for k, t in sd.items():
        if k.startswith("model.diffusion_model.transformer_blocks.") and k.endswith(".weight") and t.dim() == 2 \
                and min(t.shape) >= group and t.shape[1] % group == 0:
            q, params = qo.TensorWiseINT8Layout.quantize(t.float(), is_weight=True, per_channel=True, convrot=True,
                                                         convrot_groupsize=group)
            layer = k[: -len(".weight")]
            out[k], out[layer + ".weight_scale"] = q, params.scale
            layers[layer] = {"format": "int8_tensorwise", "convrot": True, "convrot_groupsize": group}
        else:
            out[k] = t
    m = dict(meta)
    m["_quantization_metadata"] = json.dumps({"format_version": "1.0", "layers": layers}, sort_keys=True)
    return out, m, len(layers)


def test_trains_on_an_int8_convrot_25_transformer(comfy, tmp_path):
    """ComfyUI's LTX-2.5 template ships the transformer as ``comfy-int8-convrot``: the Train
    node trains on such a file (loaded by Load Diffusion Model as int8 QuantizedTensors) and
    its losses follow the unquantized weights' to within int8's error."""
    from trainer_core.tiny_checkpoint import make_tiny_cache, save_safetensors, tiny_split_state_dicts

    sd, meta = tiny_split_state_dicts("ltx-2.5", seed=5)["transformer"]
    q, qmeta, n = _int8_convrot(sd, meta)
    assert n >= 40
    dm_dir = comfy.base / "models" / "diffusion_models"
    save_safetensors(q, dm_dir / "tiny25_int8_convrot.safetensors", qmeta)
    loader = comfy.nodes.NODE_CLASS_MAPPINGS["UNETLoader"]()
    with torch.inference_mode():
        m8 = loader.load_unet("tiny25_int8_convrot.safetensors", "default")[0]
    w = m8.model.diffusion_model.transformer_blocks[0].attn1.to_q.weight
    assert type(w).__name__ == "QuantizedTensor"
    # the reference: the unquantized weights (int8 per-channel error is well under 1 %)
    save_safetensors(sd, dm_dir / "tiny25_int8_ref.safetensors", meta)
    with torch.inference_mode():
        mref = loader.load_unet("tiny25_int8_ref.safetensors", "default")[0]
    cache = make_tiny_cache(tmp_path / "c25", "ltx-2.5", n=2, seed=1)
    args = dict(latents={"path": str(cache)}, recipe="Character", steps=3, learning_rate=1e-3, rank=2, seed=2,
                resume="none", precision="fp32", checkpoint_every=0, caption_dropout=0.0)
    a = _run(comfy, "LTX2TrainLoRA", model=m8, lora_name="int8a", **args)
    b = _run(comfy, "LTX2TrainLoRA", model=mref, lora_name="int8b", **args)
    la, lb = [h["loss"] for h in a.result[2]], [h["loss"] for h in b.result[2]]
    assert la == pytest.approx(lb, rel=2e-2), (la, lb)
    assert "quantized weights stay quantized" in a.ui["text"][0]
