"""The tiny LTX-2 checkpoint generator, without ComfyUI: determinism, structure, config,
variant-specific keys, finiteness, size, and the CLI. (That ComfyUI's stock loaders load
the files is proven in tests/comfy/test_tiny_checkpoint_loads.py.)"""
from __future__ import annotations

import ast
import hashlib
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from trainer_core import tiny_checkpoint as tc

REPO = Path(__file__).resolve().parents[2]
VARIANTS = ["ltx-2.0", "ltx-2.3"]
DM = "model.diffusion_model."
PREFIXES = (DM, "vae.", "audio_vae.", "vocoder.", "text_embedding_projection.")


def _read(path):
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    return {v: tc.make_tiny_checkpoint(d / f"{v}.safetensors", v, seed=0) for v in VARIANTS}


@pytest.fixture(scope="module")
def contents(files):
    return {v: _read(p) for v, p in files.items()}


def _sha(p):
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


@pytest.mark.parametrize("variant", VARIANTS)
def test_seeded_and_deterministic(tmp_path, files, contents, variant):
    again = tc.make_tiny_checkpoint(tmp_path / "again.safetensors", variant, seed=0)
    assert _sha(again) == _sha(files[variant])  # same arguments, same bytes
    other, _ = _read(tc.make_tiny_checkpoint(tmp_path / "other.safetensors", variant, seed=1))
    sd, _ = contents[variant]
    assert other.keys() == sd.keys()
    k = DM + "transformer_blocks.0.attn1.to_q.weight"
    assert not torch.equal(other[k], sd[k])
    # a tensor's values depend on (seed, key) only, not on what else is in the file
    a = tc.tiny_state_dict("ltx-2.0", seed=0)[0][k]
    b = tc.tiny_state_dict("ltx-2.3", seed=0)[0][k]
    assert torch.equal(a, b)


@pytest.mark.parametrize("variant", VARIANTS)
def test_prefixes_and_real_key_structure(contents, variant):
    sd, _ = contents[variant]
    assert all(k.startswith(PREFIXES) for k in sd), [k for k in sd if not k.startswith(PREFIXES)][:5]
    for p in PREFIXES:
        assert any(k.startswith(p) for k in sd), p
    # ComfyUI's detection keys
    assert DM + "adaln_single.emb.timestep_embedder.linear_1.bias" in sd
    assert DM + "audio_adaln_single.linear.weight" in sd  # -> "ltxav"
    assert "vae.decoder.up_blocks.0.res_blocks.0.conv1.conv.weight" in sd  # -> LTX video VAE
    voc = "vocoder.resblocks.0.convs1.0.weight" if variant == "ltx-2.0" else \
        "vocoder.vocoder.resblocks.0.convs1.0.weight"
    assert voc in sd  # -> LTX audio VAE
    blocks = {int(k[len(DM):].split(".")[1]) for k in sd if k.startswith(DM + "transformer_blocks.")}
    assert blocks == {0, 1}
    for mod in ("attn1", "audio_attn1", "attn2", "audio_attn2", "audio_to_video_attn", "video_to_audio_attn"):
        for lin in ("to_q", "to_k", "to_v", "to_out.0"):
            assert f"{DM}transformer_blocks.1.{mod}.{lin}.weight" in sd
    for k in ("ff.net.0.proj.weight", "ff.net.2.weight", "audio_ff.net.0.proj.weight",
              "scale_shift_table", "audio_scale_shift_table",
              "scale_shift_table_a2v_ca_audio", "scale_shift_table_a2v_ca_video"):
        assert f"{DM}transformer_blocks.0.{k}" in sd
    for k in ("video_embeddings_connector.learnable_registers", "audio_embeddings_connector.learnable_registers",
              "av_ca_video_scale_shift_adaln_single.linear.weight", "av_ca_a2v_gate_adaln_single.linear.weight",
              "av_ca_audio_scale_shift_adaln_single.linear.weight", "av_ca_v2a_gate_adaln_single.linear.weight",
              "patchify_proj.weight", "audio_patchify_proj.weight", "proj_out.weight", "audio_proj_out.weight",
              "scale_shift_table", "audio_scale_shift_table"):
        assert DM + k in sd, k
    assert sd[DM + "video_embeddings_connector.learnable_registers"].shape[0] == 128


@pytest.mark.parametrize("variant", VARIANTS)
def test_config_metadata_parses_and_matches_variant(contents, variant):
    sd, meta = contents[variant]
    cfg = json.loads(meta["config"])
    assert cfg == tc.tiny_config(variant)
    assert set(cfg) >= {"transformer", "vae", "audio_vae", "vocoder"}
    t = cfg["transformer"]
    assert t["num_layers"] == 2
    assert t["num_attention_heads"] * t["attention_head_dim"] == 64 == t["cross_attention_dim"]
    assert t["audio_num_attention_heads"] * t["audio_attention_head_dim"] == 32 == t["audio_cross_attention_dim"]
    is23 = variant == "ltx-2.3"
    assert bool(t.get("apply_gated_attention", False)) == is23
    assert bool(t.get("cross_attention_adaln", False)) == is23
    assert bool(t.get("caption_proj_before_connector", False)) == is23
    assert bool(t.get("connector_apply_gated_attention", False)) == is23
    facts = json.loads(meta["tiny_ltx2"])
    assert facts["variant"] == variant and facts["seed"] == 0
    # shapes agree with the config the way ComfyUI's detection reads them
    to_k = sd[DM + "transformer_blocks.0.attn2.to_k.weight"]
    assert to_k.shape[1] == t["cross_attention_dim"]
    assert sd[DM + "adaln_single.linear.weight"].shape[0] == (9 if is23 else 6) * 64
    assert sd[DM + "transformer_blocks.0.scale_shift_table"].shape == ((9 if is23 else 6), 64)
    # the real checkpoint's section layout and latent facts
    full = tc.full_config(variant)
    assert set(cfg) == set(full)
    assert set(t) == set(full["transformer"])
    assert cfg["vae"]["latent_channels"] == 128 and cfg["vae"]["patch_size"] == 4


@pytest.mark.parametrize("variant", VARIANTS)
def test_latent_facts(contents, variant):
    sd, meta = contents[variant]
    cfg = json.loads(meta["config"])
    # transformer inputs: 128 video latent channels, 8 x 16 audio latent channels
    assert sd[DM + "patchify_proj.weight"].shape == (64, 128)
    assert sd[DM + "audio_patchify_proj.weight"].shape == (32, 8 * 16)
    assert sd[DM + "proj_out.weight"].shape == (128, 64)
    assert sd[DM + "audio_proj_out.weight"].shape == (128, 32)
    # video VAE: 32x spatial (patch 4 x 2 x 2 x 2), 8x temporal, 128 channels (+1 uniform log-var)
    vae = cfg["vae"]
    strides = {"compress_space_res": (1, 2), "compress_time_res": (2, 1), "compress_all_res": (2, 2)}
    t_c, s_c = 1, vae["patch_size"]
    for name, _ in vae["encoder_blocks"]:
        if name in strides:
            t_c, s_c = t_c * strides[name][0], s_c * strides[name][1]
    assert (t_c, s_c) == (8, 32)
    assert sd["vae.encoder.conv_out.conv.weight"].shape[0] == 129
    assert sd["vae.decoder.conv_in.conv.weight"].shape[1] == 128
    assert sd["vae.decoder.conv_out.conv.weight"].shape[0] == 3 * 4 * 4
    assert sd["vae.per_channel_statistics.std-of-means"].shape == (128,)
    # audio VAE: 2 mel channels in, z = 8 (double_z -> 16 out), 64 mels / 4 = 16 bins, 25 latents/s
    dd = cfg["audio_vae"]["model"]["params"]["ddconfig"]
    assert dd["z_channels"] == 8 and dd["mel_bins"] == 64 and len(dd["ch_mult"]) == 3  # two 2x downsamples
    assert sd["audio_vae.encoder.conv_out.conv.weight"].shape[0] == 16
    assert sd["audio_vae.decoder.conv_in.conv.weight"].shape[1] == 8
    assert sd["audio_vae.per_channel_statistics.mean-of-means"].shape == (128,)
    hop = cfg["audio_vae"]["preprocessing"]["stft"]["hop_length"]
    sr = cfg["audio_vae"]["model"]["params"]["sampling_rate"]
    assert sr / hop / 4 == tc.AUDIO_LATENTS_PER_SECOND == 25.0


def test_variant_specific_keys(contents):
    sd20, _ = contents["ltx-2.0"]
    sd23, _ = contents["ltx-2.3"]
    only23 = ["to_gate_logits", DM + "prompt_adaln_single.", DM + "audio_prompt_adaln_single.",
              "prompt_scale_shift_table", "vocoder.bwe_generator.", "vocoder.mel_stft.", "vocoder.vocoder.",
              "text_embedding_projection.video_aggregate_embed.", "text_embedding_projection.audio_aggregate_embed."]
    only20 = [DM + "caption_projection.", DM + "audio_caption_projection.",
              "text_embedding_projection.aggregate_embed.weight", "vocoder.conv_pre."]
    for s in only23:
        assert any(s in k for k in sd23), s
        assert not any(s in k for k in sd20), s
    for s in only20:
        assert any(k.startswith(s) for k in sd20), s
        assert not any(k.startswith(s) for k in sd23), s
    # every attention of 2.3 is gated: blocks (6 per block) and connectors
    gates = [k for k in sd23 if k.endswith("to_gate_logits.weight")]
    assert len([k for k in gates if ".transformer_blocks." in k]) == 2 * 6
    assert any("embeddings_connector" in k for k in gates)
    assert sd23[DM + "transformer_blocks.0.attn1.to_gate_logits.weight"].shape == (2, 64)  # [heads, query_dim]
    assert sd23[DM + "transformer_blocks.0.audio_to_video_attn.to_gate_logits.weight"].shape == (2, 64)
    assert sd23[DM + "transformer_blocks.0.video_to_audio_attn.to_gate_logits.weight"].shape == (2, 32)
    # caption projection placement: 2.0 inside the transformer (after the connectors, 40 -> 64/32),
    # 2.3 in the text projection (features -> 64/32, before the connectors)
    assert sd20[DM + "caption_projection.linear_1.weight"].shape == (64, 40)
    assert sd20[DM + "audio_caption_projection.linear_1.weight"].shape == (32, 40)
    n_in = tc.text_feature_size(tiny=True)
    assert sd20["text_embedding_projection.aggregate_embed.weight"].shape == (40, n_in)
    assert sd23["text_embedding_projection.video_aggregate_embed.weight"].shape == (64, n_in)
    assert sd23["text_embedding_projection.audio_aggregate_embed.weight"].shape == (32, n_in)
    # connector widths: 2.0 at the text width, 2.3 at the stream widths
    assert sd20[DM + "video_embeddings_connector.learnable_registers"].shape == (128, 40)
    assert sd20[DM + "audio_embeddings_connector.learnable_registers"].shape == (128, 40)
    assert sd23[DM + "video_embeddings_connector.learnable_registers"].shape == (128, 64)
    assert sd23[DM + "audio_embeddings_connector.learnable_registers"].shape == (128, 32)
    # processed text context widths differ between the variants (80 vs 96), unprocessed 40 vs 96
    assert tc.text_context_width("ltx-2.0") == 80 and tc.text_context_width("ltx-2.0", processed=False) == 40
    assert tc.text_context_width("ltx-2.3") == 96 == tc.text_context_width("ltx-2.3", processed=False)
    assert tc.text_context_width("ltx-2.0", tiny=False) == 7680
    assert tc.text_context_width("ltx-2.3", tiny=False) == 6144


@pytest.mark.parametrize("variant", VARIANTS)
def test_finite_non_degenerate_and_small(files, contents, variant):
    sd, _ = contents[variant]
    for k, v in sd.items():
        assert v.dtype == torch.float32, k
        assert torch.isfinite(v).all(), k
    for k, v in sd.items():
        if k.endswith(("q_norm.weight", "k_norm.weight")):
            assert torch.equal(v, torch.ones_like(v)), k
        elif k.endswith(".weight") and v.ndim >= 2 and v.numel() > 16:
            assert v.std() > 1e-3, k  # random, not zeros
    assert (sd["vae.per_channel_statistics.std-of-means"] > 0).all()
    assert Path(files[variant]).stat().st_size < 12 * 1024 * 1024


def test_fixed_buffers():
    f = tc.kaiser_sinc_lowpass(0.25, 0.3, 12)
    assert f.shape == (1, 1, 12)
    assert torch.allclose(f.sum(), torch.tensor(1.0))
    assert torch.allclose(f.flatten(), f.flatten().flip(0))  # linear phase
    fb = tc.mel_filterbank(16000, 256, 64)
    assert fb.shape == (64, 129) and (fb >= 0).all() and (fb.sum(1) > 0).all()
    sd, meta = tc.tiny_state_dict("ltx-2.3")
    cfg = json.loads(meta["config"])["vocoder"]["bwe"]
    fwd = sd["vocoder.mel_stft.stft_fn.forward_basis"]
    assert fwd.shape == (2 * (cfg["n_fft"] // 2 + 1), 1, cfg["n_fft"])
    # the analysis basis computes a windowed DFT
    x = torch.randn(cfg["n_fft"])
    spec = (fwd[:, 0, :] @ x)
    ref = torch.fft.rfft(x * torch.hann_window(cfg["n_fft"], periodic=True))
    n = cfg["n_fft"] // 2 + 1
    assert torch.allclose(spec[:n], ref.real, atol=1e-3) and torch.allclose(spec[n:], ref.imag, atol=1e-3)


def test_dtype_argument(tmp_path):
    p = tc.make_tiny_checkpoint(tmp_path / "bf16.safetensors", "ltx-2.3", seed=0, dtype=torch.bfloat16)
    sd, _ = _read(p)
    assert all(v.dtype == torch.bfloat16 for v in sd.values())


def test_variant_names():
    assert tc.normalize_variant("2.5") == tc.normalize_variant("LTX-2.5") == "ltx-2.5"
    assert tc.normalize_variant("2.0") == tc.normalize_variant("LTX-2") == "ltx-2.0"
    assert tc.normalize_variant("ltx2.3") == tc.normalize_variant("2.3.0") == "ltx-2.3"
    with pytest.raises(ValueError, match="unknown LTX-2 variant"):
        tc.normalize_variant("ltx-1.0")


@pytest.mark.parametrize("variant, low, high", [("ltx-2.0", 17e9, 21e9), ("ltx-2.3", 20e9, 24e9),
                                               ("ltx-2.5", 20e9, 24e9)])
def test_full_config_layout(variant, low, high):
    """full_config describes the real models: 48 blocks, 4096/2048 wide; the transformer's
    parameter count (from shapes, nothing allocated) is the published size."""
    cfg = tc.full_config(variant)
    t = cfg["transformer"]
    assert t["num_layers"] == 48
    assert t["num_attention_heads"] * t["attention_head_dim"] == 4096
    assert t["audio_num_attention_heads"] * t["audio_attention_head_dim"] == 2048
    layout = tc.checkpoint_layout(cfg, tc.text_feature_size(tiny=False))
    n_dm = sum(math.prod(s.shape) for k, s in layout.items() if k.startswith(DM))
    assert low < n_dm < high, n_dm
    assert layout[DM + "transformer_blocks.47.attn1.to_q.weight"].shape == (4096, 4096)
    assert layout[DM + "transformer_blocks.0.audio_to_video_attn.to_k.weight"].shape == (2048, 2048)
    assert layout[DM + "transformer_blocks.0.video_to_audio_attn.to_k.weight"].shape == (2048, 4096)
    assert layout["vae.encoder.conv_out.conv.weight"].shape[:2] == (129, 1024)


def test_cli(tmp_path):
    out = tmp_path / "cli.safetensors"
    assert tc.main(["--variant", "ltx-2.3", "--out", str(out), "--seed", "3"]) == 0
    assert _sha(out) == _sha(tc.make_tiny_checkpoint(tmp_path / "api.safetensors", "ltx-2.3", seed=3))
    out2 = tmp_path / "m.safetensors"
    r = subprocess.run([sys.executable, "-m", "trainer_core.tiny_checkpoint", "--variant", "ltx-2.0",
                        "--out", str(out2)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "ltx-2.0" in r.stdout and out2.is_file()
    _, meta = _read(out2)
    assert json.loads(meta["config"]) == tc.tiny_config("ltx-2.0")


def test_no_comfy_imports():
    tree = ast.parse(Path(tc.__file__).read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    assert not names & {"comfy", "comfy_extras", "folder_paths", "nodes", "server", "comfy_api"}


# ------------------------------------------------------------------ LTX-2.5: the split set

def test_25_split_set(tmp_path):
    """The tiny 2.5 set: four files under the names and folders of ComfyUI's LTX-2.5
    template, the same tensors as the combined layout cut by prefix, deterministic, with the
    2.5 switches in the transformer's keys and metadata."""
    paths = tc.make_tiny_set(tmp_path / "a", "ltx-2.5", seed=1)
    again = tc.make_tiny_set(tmp_path / "b", "ltx-2.5", seed=1)
    other = tc.make_tiny_set(tmp_path / "c", "ltx-2.5", seed=2)
    assert set(paths) == {"transformer", "text_encoder", "video_vae", "audio_vae"}
    for part, p in paths.items():
        assert (p.parent.name, p.name) == tc.SPLIT_FILES_25[part]
        assert _sha(p) == _sha(again[part]) and _sha(p) != _sha(other[part])
    full, _ = tc.tiny_state_dict("ltx-2.5", seed=1)
    got = {}
    metas = {}
    for part, p in paths.items():
        sd, meta = _read(p)
        metas[part] = meta
        assert meta["model_version"] == "2.5.0"
        for k, v in sd.items():
            got[("vae." + k) if part == "video_vae" else k] = v
    assert set(got) == set(full) and all(torch.equal(got[k], full[k]) for k in full)
    t = json.loads(metas["transformer"]["config"])["transformer"]
    assert t["ff_bias"] is False and t["use_keyframes_abs_pos_embedding"] is True
    assert json.loads(metas["transformer"]["gemma_source_checkpoint"]) == tc.GEMMA_SOURCE_25
    assert set(json.loads(metas["video_vae"]["config"])) == {"vae"}
    assert set(json.loads(metas["audio_vae"]["config"])) == {"audio_vae", "vocoder"}
    tkeys = set(_read(paths["transformer"])[0])
    assert DM + "keyframes_abs_pos_embedding" in tkeys
    assert DM + "transformer_blocks.0.ff.net.0.proj.weight" in tkeys
    assert DM + "transformer_blocks.0.ff.net.0.proj.bias" not in tkeys and DM + "transformer_blocks.0.ff.net.2.bias" not in tkeys
    assert DM + "transformer_blocks.1.audio_ff.net.2.bias" in tkeys
    assert DM + "prompt_adaln_single.linear.weight" in tkeys
    # 2.3's keys minus the FFN biases plus the keyframe embedding: nothing else differs
    k23 = {k for k in tc.tiny_state_dict("ltx-2.3")[0] if k.startswith(DM)}
    assert tkeys - k23 == {DM + "keyframes_abs_pos_embedding"}
    assert k23 - tkeys == {k for k in k23 if re.search(r"transformer_blocks\.\d+\.ff\.net\.(0\.proj|2)\.bias$", k)}
    te = set(_read(paths["text_encoder"])[0])
    assert te == {f"text_embedding_projection.{m}_aggregate_embed.{w}" for m in ("video", "audio") for w in ("weight", "bias")}
    with pytest.raises(ValueError, match="split files"):
        tc.make_tiny_checkpoint(tmp_path / "one.safetensors", "ltx-2.5")


def test_25_cli(tmp_path):
    assert tc.main(["--variant", "ltx-2.5", "--out", str(tmp_path / "models"), "--seed", "3"]) == 0
    for part, (sub, name) in tc.SPLIT_FILES_25.items():
        assert (tmp_path / "models" / sub / name).is_file(), part
