"""Layer 2: ComfyUI's stock loaders load what ``trainer_core.tiny_checkpoint`` writes.

For both variants the tiny file goes into ComfyUI's checkpoints folder and is loaded by the
stock nodes — Load Checkpoint (``CheckpointLoaderSimple``) for the transformer and the video
VAE, ``LTXVAudioVAELoader`` for the audio VAE and vocoder. Key sets are compared exactly
with the modules ComfyUI builds (no key missing, none left over, same shapes), ComfyUI's own
"missing/unexpected" warnings are captured and must be absent, and every part runs: the
video VAE encodes [9, 64, 64, 3] to [1, 128, 2, 2, 2] and decodes back, the audio VAE
encodes 1 s of stereo audio to [1, 8, ~25, 16] and decodes through the vocoder, and the
transformer runs one audio-video forward (directly and through ComfyUI's apply path).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import re

import pytest
import torch

from trainer_core import tiny_checkpoint as tc

VARIANTS = ["ltx-2.0", "ltx-2.3"]
DM = "model.diffusion_model."


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.records: list[str] = []

    def emit(self, record):
        try:
            self.records.append(record.getMessage())
        except Exception:  # pragma: no cover
            self.records.append(str(record.msg))


@contextlib.contextmanager
def _captured_log():
    """Every log record (DEBUG and up) while the block runs."""
    h = _Capture()
    root = logging.getLogger()
    old = root.level
    root.addHandler(h)
    root.setLevel(logging.DEBUG)
    try:
        yield h
    finally:
        root.removeHandler(h)
        root.setLevel(old)


@pytest.fixture()
def capture_log():
    with _captured_log() as h:
        yield h


@pytest.fixture(scope="module")
def written(comfy):
    """Both tiny checkpoints written into ComfyUI's checkpoints folder."""
    out = {}
    for v in VARIANTS:
        name = f"tiny-{v}.safetensors"
        out[v] = tc.make_tiny_checkpoint(comfy.base / "models" / "checkpoints" / name, v, seed=1)
    return out


@pytest.fixture(scope="module")
def loaded(comfy, written):
    """(MODEL, CLIP, VAE) from the stock CheckpointLoaderSimple, per variant, plus the
    warnings ComfyUI logged while loading."""
    cls = comfy.nodes.NODE_CLASS_MAPPINGS["CheckpointLoaderSimple"]
    out = {}
    for v, path in written.items():
        h = _Capture()
        root = logging.getLogger()
        old = root.level
        root.addHandler(h)
        root.setLevel(logging.DEBUG)
        try:
            node = cls()
            result = getattr(node, cls.FUNCTION)(ckpt_name=path.name)
        finally:
            root.removeHandler(h)
            root.setLevel(old)
        out[v] = (result, h.records)
    return out


def _file_state(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    return shapes, meta


def _bad_messages(records):
    bad = ("unet missing", "unet unexpected", "Missing VAE keys", "Leftover VAE keys")
    return [r for r in records if any(b in r for b in bad)]


@pytest.mark.parametrize("variant", VARIANTS)
def test_checkpoint_loader_builds_ltxav_with_exact_keys(comfy, written, loaded, variant):
    from comfy.ldm.lightricks.av_model import LTXAVModel

    (model, clip, vae), records = loaded[variant]
    dm = model.model.diffusion_model
    assert type(dm) is LTXAVModel
    assert len(dm.transformer_blocks) == 2
    assert not _bad_messages(records), _bad_messages(records)
    assert any("VAE load device" in r for r in records), "log capture saw nothing"
    # what Load Checkpoint leaves over is exactly the audio side and the text projection
    left = [r for r in records if r.startswith("left over keys")]
    assert len(left) == 1
    left_keys = set(re.findall(r"'([^']+)'", left[0]))
    assert left_keys and all(k.startswith(("audio_vae.", "vocoder.", "text_embedding_projection."))
                             for k in left_keys)

    shapes, meta = _file_state(written[variant])
    cfg = json.loads(meta["config"])
    assert cfg == tc.tiny_config(variant)
    # ComfyUI built what the config says
    t = cfg["transformer"]
    assert dm.inner_dim == t["num_attention_heads"] * t["attention_head_dim"] == 64
    assert dm.audio_inner_dim == t["audio_num_attention_heads"] * t["audio_attention_head_dim"] == 32
    assert dm.num_attention_heads == 2 and dm.attention_head_dim == 32
    gated = variant == "ltx-2.3"
    assert (dm.transformer_blocks[0].attn1.to_gate_logits is not None) == gated
    assert bool(dm.caption_proj_before_connector) == gated
    assert bool(dm.cross_attention_adaln) == gated

    # exact key set and shapes of the diffusion model
    file_dm = {k[len(DM):]: s for k, s in shapes.items() if k.startswith(DM)}
    comfy_dm = {k: tuple(v.shape) for k, v in dm.state_dict().items()}
    assert set(file_dm) == set(comfy_dm), (sorted(set(comfy_dm) - set(file_dm))[:20],
                                           sorted(set(file_dm) - set(comfy_dm))[:20])
    assert {k: s for k, s in file_dm.items() if comfy_dm[k] != s} == {}

    # exact key set of the video VAE
    file_vae = {k[len("vae."):]: s for k, s in shapes.items() if k.startswith("vae.")}
    comfy_vae = {k: tuple(v.shape) for k, v in vae.first_stage_model.state_dict().items()}
    assert set(file_vae) == set(comfy_vae), (sorted(set(comfy_vae) - set(file_vae))[:20],
                                             sorted(set(file_vae) - set(comfy_vae))[:20])
    assert {k: s for k, s in file_vae.items() if comfy_vae[k] != s} == {}

    # everything in the file is one of the five real prefixes
    prefixes = (DM, "vae.", "audio_vae.", "vocoder.", "text_embedding_projection.")
    assert all(k.startswith(prefixes) for k in shapes)
    # the loaded weights are the file's (seeded values survived ComfyUI's load)
    from safetensors import safe_open

    with safe_open(str(written[variant]), framework="pt") as f:
        k = "transformer_blocks.1.attn2.to_k.weight"
        assert torch.equal(dm.state_dict()[k].float(), f.get_tensor(DM + k).float())


@pytest.mark.parametrize("variant", VARIANTS)
def test_text_projection_matches_comfy_layout(comfy, written, variant):
    """``text_embedding_projection.*`` has the layout ComfyUI's LTX-AV text encoder loads
    (single linear for 2.0, the dual video/audio projection for 2.3), at the tiny width."""
    from comfy.ops import disable_weight_init
    from comfy.text_encoders import lt

    shapes, _ = _file_state(written[variant])
    tp = {k: s for k, s in shapes.items() if k.startswith("text_embedding_projection.")}
    detected = lt.sd_detect([{k: torch.empty(s, device="meta") for k, s in shapes.items()}])["text_projection_type"]
    n_in = tc.TINY_TEXT_HIDDEN * tc.GEMMA_LAYERS
    if variant == "ltx-2.0":
        assert detected == "single_linear"
        ref = {"text_embedding_projection.aggregate_embed.weight": (40, n_in)}
    else:
        assert detected == "dual_linear"
        mod = lt.DualLinearProjection(n_in, 64, 32, operations=disable_weight_init, device="meta")
        ref = {f"text_embedding_projection.{k}": tuple(v.shape) for k, v in mod.state_dict().items()}
    assert tp == ref


@pytest.mark.parametrize("variant", VARIANTS)
def test_video_vae_encodes_and_decodes(comfy, loaded, variant):
    (model, clip, vae), _ = loaded[variant]
    assert vae.latent_channels == 128
    g = torch.Generator().manual_seed(0)
    video = torch.rand(9, 64, 64, 3, generator=g)
    with torch.inference_mode():
        lat = vae.encode(video)
        assert tuple(lat.shape) == (1, 128, 2, 2, 2)
        assert torch.isfinite(lat).all() and lat.std() > 1e-3
        lat2 = vae.encode(torch.rand(9, 64, 64, 3, generator=g))
        assert not torch.allclose(lat, lat2)
        img = vae.decode(lat)
    assert tuple(img.shape) == (1, 9, 64, 64, 3)
    assert torch.isfinite(img).all() and img.std() > 1e-4


@pytest.mark.parametrize("variant", VARIANTS)
def test_audio_vae_loader_encodes_and_decodes(comfy, written, capture_log, variant):
    cls = comfy.nodes.NODE_CLASS_MAPPINGS["LTXVAudioVAELoader"]
    assert written[variant].name in comfy.folder_paths.get_filename_list("checkpoints")
    out = cls.execute(ckpt_name=written[variant].name)
    avae = out.result[0]
    assert not _bad_messages(capture_log.records), _bad_messages(capture_log.records)

    fsm = avae.first_stage_model
    assert fsm.latent_channels == 8 and fsm.latent_frequency_bins == 16
    assert fsm.latents_per_second == 25.0 and fsm.sample_rate == 16000
    assert fsm.output_sample_rate == (24000 if variant == "ltx-2.0" else 48000)
    want_vocoder = "Vocoder" if variant == "ltx-2.0" else "VocoderWithBWE"
    assert type(fsm.vocoder).__name__ == want_vocoder

    # exact key set against ComfyUI's module (file prefixes audio_vae. -> autoencoder.)
    shapes, _ = _file_state(written[variant])
    file_keys = {}
    for k, s in shapes.items():
        if k.startswith("audio_vae."):
            file_keys["autoencoder." + k[len("audio_vae."):]] = s
        elif k.startswith("vocoder."):
            file_keys[k] = s
    comfy_keys = {k: tuple(v.shape) for k, v in fsm.state_dict().items()}
    assert set(file_keys) == set(comfy_keys), (sorted(set(comfy_keys) - set(file_keys))[:20],
                                               sorted(set(file_keys) - set(comfy_keys))[:20])
    assert {k: s for k, s in file_keys.items() if comfy_keys[k] != s} == {}

    # fixed buffers (anti-alias filters) equal ComfyUI's own construction
    for k, v in fsm.vocoder.state_dict().items():
        if k.endswith("upsample.filter") or k.endswith("lowpass.filter"):
            assert torch.allclose(v.float(), tc.kaiser_sinc_lowpass(0.25, 0.3, 12), atol=1e-6), k

    # ~1 s of stereo audio at 16 kHz -> [1, 8, ~25, 16]
    sr = 16000
    t = torch.arange(sr) / sr
    wave = torch.stack([torch.sin(2 * math.pi * 440 * t), torch.sin(2 * math.pi * 660 * t)])[None] * 0.3
    enc_cls = comfy.nodes.NODE_CLASS_MAPPINGS["LTXVAudioVAEEncode"]
    with torch.inference_mode():
        latent = enc_cls.execute(audio={"waveform": wave, "sample_rate": sr}, audio_vae=avae).result[0]["samples"]
        assert latent.shape[0] == 1 and latent.shape[1] == 8 and latent.shape[3] == 16
        assert 23 <= latent.shape[2] <= 27, latent.shape
        assert torch.isfinite(latent).all() and latent.std() > 1e-3
        audio = avae.decode(latent)
    assert audio.shape[0] == 1 and audio.shape[-1] == 2
    assert torch.isfinite(audio).all() and audio.std() > 0


def _inputs(dm, variant, gen):
    """Video latent [1, 128, 2, 2, 2], audio latent [1, 8, 25, 16], σ, and processed text."""
    v = torch.randn(1, 128, 2, 2, 2, generator=gen)
    a = torch.randn(1, 8, 25, 16, generator=gen)
    width = tc.text_context_width(tc.tiny_config(variant), processed=False)
    raw = torch.randn(1, 12, width, generator=gen)  # what the LTX-AV text encoder outputs
    ctx = dm.preprocess_text_embeds(raw, unprocessed=True)
    return v, a, raw, ctx


@pytest.mark.parametrize("variant", VARIANTS)
def test_diffusion_forward_is_finite(comfy, loaded, variant):
    from comfy.utils import pack_latents

    (model, clip, vae), _ = loaded[variant]
    dm = model.model.diffusion_model
    gen = torch.Generator().manual_seed(3)
    with torch.inference_mode():
        v, a, raw, ctx = _inputs(dm, variant, gen)
        width = tc.text_context_width(tc.tiny_config(variant), processed=True)
        assert tuple(ctx.shape) == (1, 1024, width)  # connectors pad with registers to 1024 tokens
        sigma = torch.tensor([0.7])
        out_v, out_a = dm([v.clone(), a.clone()], (sigma, sigma), ctx, frame_rate=25)
        assert out_v.shape == v.shape and out_a.shape == a.shape
        assert torch.isfinite(out_v).all() and torch.isfinite(out_a).all()
        assert out_v.std() > 1e-4 and out_a.std() > 1e-4
        # the output depends on the input latents and on σ
        out_v2, out_a2 = dm([v.clone() * 0.5, a.clone()], (torch.tensor([0.2]),) * 2, ctx, frame_rate=25)
        assert not torch.allclose(out_v, out_v2) and not torch.allclose(out_a, out_a2)

        # ComfyUI's model apply path (packed AV latent, extra conds as the sampler builds them)
        packed, shapes = pack_latents([v, a])
        conds = model.model.extra_conds(cross_attn=raw, unprocessed_ltxav_embeds=True,
                                        device=torch.device("cpu"), latent_shapes=shapes, frame_rate=25,
                                        noise=packed)
        kwargs = {k: c.cond for k, c in conds.items() if k != "c_crossattn"}
        denoised = model.model.apply_model(packed, sigma, c_crossattn=conds["c_crossattn"].cond, **kwargs)
    assert denoised.shape == packed.shape
    assert torch.isfinite(denoised).all()


@pytest.mark.parametrize("variant", VARIANTS + ["ltx-2.5"])
def test_full_size_layout_matches_comfy_modules(comfy, variant):
    """``full_config`` + the generator's layout code give exactly the keys and shapes of the
    real-size modules ComfyUI builds from that config (built on the meta device: nothing
    allocated). This is what GPU benchmarks rely on."""
    from comfy.ldm.lightricks.av_model import LTXAVModel
    from comfy.ldm.lightricks.vae.audio_vae import AudioVAE
    from comfy.ldm.lightricks.vae.causal_video_autoencoder import VideoVAE
    from comfy.ops import disable_weight_init

    cfg = tc.full_config(variant)
    layout = tc.checkpoint_layout(cfg, tc.text_feature_size(tiny=False))
    with torch.device("meta"):
        dm = LTXAVModel(**cfg["transformer"], operations=disable_weight_init, dtype=torch.bfloat16)
        vae = VideoVAE(config=cfg["vae"])
        avae = AudioVAE(metadata={"config": json.dumps(cfg)})
    assert len(dm.transformer_blocks) == 48 and dm.inner_dim == 4096 and dm.audio_inner_dim == 2048

    def check(module, prefix, rename=None):
        want = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        got = {}
        for k, spec in layout.items():
            for p in (prefix if isinstance(prefix, tuple) else (prefix,)):
                if k.startswith(p):
                    got[rename(k) if rename else k[len(p):]] = spec.shape
        assert set(got) == set(want), (sorted(set(want) - set(got))[:10], sorted(set(got) - set(want))[:10])
        assert {k: s for k, s in got.items() if want[k] != s} == {}

    check(dm, DM)
    check(vae, "vae.")
    check(avae, ("audio_vae.", "vocoder."),
          lambda k: "autoencoder." + k[len("audio_vae."):] if k.startswith("audio_vae.") else k)


# ------------------------------------------------------------------ LTX-2.5: the split set

def _load_logged(fn):
    with _captured_log() as h:
        return fn(), h.records


@pytest.fixture(scope="module")
def set25(comfy):
    """The tiny LTX-2.5 split set written into ComfyUI's models folder under the real names,
    and each part loaded by its stock node: Load Diffusion Model (UNETLoader), VAELoader for
    the video VAE and for the audio VAE (as ComfyUI's own LTX-2.5 templates load them)."""
    paths = tc.make_tiny_set(comfy.base / "models", "ltx-2.5", seed=2)
    n = comfy.nodes.NODE_CLASS_MAPPINGS
    out = {"paths": paths}
    for part, cls, kw in (("transformer", "UNETLoader", dict(unet_name=paths["transformer"].name, weight_dtype="default")),
                          ("video_vae", "VAELoader", dict(vae_name=paths["video_vae"].name)),
                          ("audio_vae", "VAELoader", dict(vae_name=paths["audio_vae"].name))):
        node = n[cls]()
        out[part] = _load_logged(lambda: getattr(node, n[cls].FUNCTION)(**kw)[0])
    return out


def test_25_set_files_and_names(set25):
    paths = set25["paths"]
    assert {p: (paths[p].parent.name, paths[p].name) for p in paths} == tc.SPLIT_FILES_25
    for part, p in paths.items():
        shapes, meta = _file_state(p)
        assert meta["model_version"] == "2.5.0"
        prefixes = {"transformer": (DM,), "text_encoder": ("text_embedding_projection.",),
                    "video_vae": ("encoder.", "decoder.", "per_channel_statistics."),
                    "audio_vae": ("audio_vae.", "vocoder.")}[part]
        assert shapes and all(k.startswith(prefixes) for k in shapes), part
    with pytest.raises(ValueError, match="split files"):
        tc.make_tiny_checkpoint(paths["transformer"].parent / "x.safetensors", "ltx-2.5")


def test_25_transformer_loads_via_load_diffusion_model(comfy, set25):
    from comfy.ldm.lightricks.av_model import LTXAVModel

    from trainer_core.ltx2 import LTX2Config, read_checkpoint_config

    model, records = set25["transformer"]
    dm = model.model.diffusion_model
    assert type(dm) is LTXAVModel and len(dm.transformer_blocks) == 2
    assert not _bad_messages(records), _bad_messages(records)
    shapes, meta = _file_state(set25["paths"]["transformer"])
    file_dm = {k[len(DM):]: s for k, s in shapes.items() if k.startswith(DM)}
    comfy_dm = {k: tuple(v.shape) for k, v in dm.state_dict().items()}
    assert file_dm == comfy_dm, (sorted(set(comfy_dm) ^ set(file_dm))[:20])
    # the 2.5 switches, as ComfyUI built them
    assert dm.keyframes_abs_pos_embedding is not None and tuple(dm.keyframes_abs_pos_embedding.shape) == (1, 64)
    assert dm.transformer_blocks[0].ff.net[0].proj.bias is None and dm.transformer_blocks[0].ff.net[2].bias is None
    assert dm.transformer_blocks[0].audio_ff.net[0].proj.bias is not None
    assert dm.prompt_adaln_single is not None and dm.transformer_blocks[0].attn1.to_gate_logits is not None
    c = read_checkpoint_config(set25["paths"]["transformer"])
    assert c.variant == "2.5" and c.model_version == "2.5.0"
    assert (c.ff_bias, c.audio_ff_bias, c.use_prompt_adaln_single, c.use_keyframes_abs_pos_embedding) == \
        (False, True, True, True)
    from dataclasses import replace

    assert LTX2Config.from_module(dm) == replace(c, model_version="")
    # the weights are the file's
    from safetensors import safe_open

    with safe_open(str(set25["paths"]["transformer"]), framework="pt") as f:
        assert torch.equal(dm.keyframes_abs_pos_embedding.float(), f.get_tensor(DM + "keyframes_abs_pos_embedding"))


def test_25_video_vae_loads_via_vaeloader(set25):
    vae, records = set25["video_vae"]
    assert not _bad_messages(records), _bad_messages(records)
    shapes, meta = _file_state(set25["paths"]["video_vae"])
    assert {k: tuple(v.shape) for k, v in vae.first_stage_model.state_dict().items()} == shapes
    assert vae.latent_channels == 128
    video = torch.rand(9, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        lat = vae.encode(video)
        img = vae.decode(lat)
    assert tuple(lat.shape) == (1, 128, 2, 2, 2) and torch.isfinite(lat).all() and lat.std() > 1e-3
    assert tuple(img.shape) == (1, 9, 64, 64, 3) and torch.isfinite(img).all()


def test_25_audio_vae_loads_via_vaeloader(comfy, set25):
    avae, records = set25["audio_vae"]
    assert not _bad_messages(records), _bad_messages(records)
    fsm = avae.first_stage_model
    assert type(fsm).__name__ == "AudioVAE" and type(fsm.vocoder).__name__ == "VocoderWithBWE"
    assert fsm.latent_channels == 8 and fsm.latents_per_second == 25.0 and fsm.output_sample_rate == 48000
    shapes, _ = _file_state(set25["paths"]["audio_vae"])
    file_keys = {("autoencoder." + k[len("audio_vae."):] if k.startswith("audio_vae.") else k): s
                 for k, s in shapes.items()}
    assert {k: tuple(v.shape) for k, v in fsm.state_dict().items()} == file_keys
    sr = 16000
    t = torch.arange(sr) / sr
    wave = torch.stack([torch.sin(2 * math.pi * 440 * t), torch.sin(2 * math.pi * 660 * t)])[None] * 0.3
    enc = comfy.nodes.NODE_CLASS_MAPPINGS["LTXVAudioVAEEncode"]
    dec = comfy.nodes.NODE_CLASS_MAPPINGS["LTXVAudioVAEDecode"]
    with torch.inference_mode():
        latent = enc.execute(audio={"waveform": wave, "sample_rate": sr}, audio_vae=avae).result[0]
        assert latent["samples"].shape[1] == 8 and 23 <= latent["samples"].shape[2] <= 27
        audio = dec.execute(samples=latent, audio_vae=avae).result[0]
    assert audio["sample_rate"] == 48000 and torch.isfinite(audio["waveform"]).all()


def test_25_text_projection_is_what_comfys_gemma4_ltx_encoder_loads(set25):
    """The bundled projection: ComfyUI's ``sd_detect`` sees the dual projection with biases
    (what makes comfy.sd pick the LTX-AV encoder for a Gemma 4 12B file), and the keys and
    shapes are those of its ``DualLinearProjection`` at the tiny Gemma width."""
    from comfy.ops import disable_weight_init
    from comfy.text_encoders import lt

    shapes, meta = _file_state(set25["paths"]["text_encoder"])
    assert "text_embedding_projection.video_aggregate_embed.weight" in shapes
    det = lt.sd_detect([{k: torch.empty(s, device="meta") for k, s in shapes.items()}])
    assert det == {"text_projection_type": "dual_linear", "video_projection_dim": 64, "audio_projection_dim": 32,
                   "video_projection_bias": True, "audio_projection_bias": True}
    n_in = tc.TINY_TEXT_HIDDEN * tc.GEMMA_LAYERS
    mod = lt.DualLinearProjection(n_in, 64, 32, operations=disable_weight_init, device="meta")
    assert shapes == {f"text_embedding_projection.{k}": tuple(v.shape) for k, v in mod.state_dict().items()}


def test_25_forward_through_comfys_apply_path(comfy, set25):
    from comfy.utils import pack_latents

    model, _ = set25["transformer"]
    dm = model.model.diffusion_model
    gen = torch.Generator().manual_seed(3)
    v, a, raw, ctx = _inputs(dm, "ltx-2.5", gen)
    with torch.inference_mode():
        packed, shapes = pack_latents([v, a])
        conds = model.model.extra_conds(cross_attn=raw, unprocessed_ltxav_embeds=True,
                                        device=torch.device("cpu"), latent_shapes=shapes, frame_rate=25, noise=packed)
        kwargs = {k: c.cond for k, c in conds.items() if k != "c_crossattn"}
        den = model.model.apply_model(packed, torch.tensor([0.7]), c_crossattn=conds["c_crossattn"].cond, **kwargs)
    assert den.shape == packed.shape and torch.isfinite(den).all()
