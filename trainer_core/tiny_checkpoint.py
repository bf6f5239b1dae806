"""Tiny LTX-2 checkpoints with the real key structure, for tests and headless smoke runs.

``make_tiny_checkpoint(path, variant)`` writes ONE safetensors file laid out like Lightricks'
single-file checkpoints (``ltx-2-19b-*.safetensors`` for LTX-2.0, ``ltx-2.3-22b-*.safetensors``
for LTX-2.3): same prefixes, same module names, same tensor ranks, the ``config`` metadata
JSON with the sections a real file carries — only with 2 transformer blocks and small
widths. Weights are seeded random normals (norm weights ones), so every forward is finite
and input-dependent. Nothing here imports ComfyUI: key names and shapes are derived by this
module's own code from the config, the way ComfyUI's modules lay them out (the ComfyUI test
layer cross-checks the key sets exactly against ComfyUI's own modules).

Key structure of a real checkpoint (and of the tiny one)
--------------------------------------------------------
``model.diffusion_model.*`` — the audio-video transformer (ComfyUI ``LTXAVModel``), read by
  Load Checkpoint (``CheckpointLoaderSimple``) and by the diffusion-model loader:

  - video stream: ``patchify_proj``, ``adaln_single.{emb.timestep_embedder.linear_1,
    linear_2, linear}`` (``linear`` out = 6·D, or 9·D with ``cross_attention_adaln``),
    ``scale_shift_table`` [2, D], ``proj_out``;
  - audio stream: the same with an ``audio_`` prefix (``audio_patchify_proj``,
    ``audio_adaln_single``, ``audio_scale_shift_table``, ``audio_proj_out``);
  - cross-modal AdaLN: ``av_ca_video_scale_shift_adaln_single`` (4·D),
    ``av_ca_a2v_gate_adaln_single`` (1·D), ``av_ca_audio_scale_shift_adaln_single`` (4·Da),
    ``av_ca_v2a_gate_adaln_single`` (1·Da);
  - text: ``video_embeddings_connector`` / ``audio_embeddings_connector``
    (``transformer_1d_blocks.N.{attn1,ff}``, ``learnable_registers`` [128, width]);
  - ``transformer_blocks.N.``: ``attn1``/``audio_attn1`` (self), ``attn2``/``audio_attn2``
    (text), ``audio_to_video_attn`` (Q video, K/V audio, audio heads),
    ``video_to_audio_attn`` (Q audio, K/V video, audio heads) — each with ``q_norm``,
    ``k_norm`` (RMSNorm weights), ``to_q``, ``to_k``, ``to_v``, ``to_out.0`` —; ``ff`` /
    ``audio_ff`` (``net.0.proj`` D→4D, ``net.2`` 4D→D); ``scale_shift_table`` [6|9, D],
    ``audio_scale_shift_table`` [6|9, Da], ``scale_shift_table_a2v_ca_video`` [5, D],
    ``scale_shift_table_a2v_ca_audio`` [5, Da].

  LTX-2.0 only: ``caption_projection.linear_{1,2}`` and ``audio_caption_projection.linear_{1,2}``
  (PixArt text projection 3840→D / 3840→Da, applied AFTER the connectors); connectors are
  3840 wide (30 heads × 128), 2 layers, not gated.
  LTX-2.3 only: ``to_gate_logits`` (per-head gate, [heads, query_dim]) in every attention of
  the blocks and of the connectors; ``prompt_adaln_single`` / ``audio_prompt_adaln_single``
  and per-block ``prompt_scale_shift_table`` / ``audio_prompt_scale_shift_table`` [2, ·]
  (``cross_attention_adaln``; block tables become [9, ·]); NO caption projection in the
  transformer (``caption_proj_before_connector`` with ``caption_projection_first_linear``
  false: the projection moved into the text side, ``text_embedding_projection``); connectors
  are D and Da wide (32×128 and 32×64), 8 layers, gated.

``text_embedding_projection.*`` — the Gemma feature projection, read by ComfyUI's LTX-AV text
  encoder (``LTXAVTextEncoderLoader``: the Gemma file plus this checkpoint; the layout is
  told by key names, ``comfy.text_encoders.lt.sd_detect``). Load Checkpoint leaves it alone.
  LTX-2.0: ``aggregate_embed.weight`` [3840, 3840·49], no bias ("single_linear"; output 3840
  wide = caption_channels). LTX-2.3: ``video_aggregate_embed`` [4096, 3840·49] and
  ``audio_aggregate_embed`` [2048, 3840·49], with biases ("dual_linear"; output 4096+2048).
  ComfyUI hard-codes the 3840·49 input, so the tiny projection (16·49 inputs) is there for
  structure and for our own stand-in text path, not for ComfyUI's Gemma loader.

``vae.*`` — the causal video VAE (ComfyUI ``VideoVAE``; Load Checkpoint builds it from these
  keys plus ``config["vae"]``): ``encoder.{conv_in,down_blocks.N,conv_out}``,
  ``decoder.{conv_in,up_blocks.N,conv_out}``, ``per_channel_statistics.{mean,std}-of-means``
  [128]. 32× spatial (patch 4 × three 2× stages), 8× temporal, 128 latent channels.

``audio_vae.*`` — the causal mel autoencoder (ComfyUI ``CausalAudioAutoencoder``, read by
  ``LTXVAudioVAELoader`` with ``config["audio_vae"]``): ``encoder.*``, ``decoder.*``,
  ``per_channel_statistics.*`` [128 = 8 channels × 16 mel bins]. 16 kHz, 64 mels, hop 160,
  4× time compression: latents [8, T, 16] at 25 frames/s.

``vocoder.*`` — mel→waveform (read by ``LTXVAudioVAELoader`` with ``config["vocoder"]``).
  LTX-2.0: HiFi-GAN (``conv_pre``, ``ups.N``, ``resblocks.N.convs{1,2}.M``, ``conv_post``),
  ×240 → 24 kHz. LTX-2.3: BigVGAN-v2 + bandwidth extension: ``vocoder.vocoder.*`` (×160 →
  16 kHz, AMP blocks with SnakeBeta ``acts*.act.{alpha,beta}`` and anti-alias filters),
  ``vocoder.bwe_generator.*``, ``vocoder.mel_stft.{stft_fn.forward_basis,
  stft_fn.inverse_basis,mel_basis}`` → 48 kHz.

Metadata: ``config`` (JSON with ``transformer``, ``vae``, ``audio_vae``, ``vocoder`` and
``scheduler`` sections; ComfyUI reads ``transformer`` over what it detects from the state
dict, ``vae`` for the video VAE, ``audio_vae`` + ``vocoder`` for the audio VAE). The tiny file
adds ``tiny_ltx2`` (JSON: variant, seed, text-feature sizes) — real files do not have it.

How ComfyUI tells the variant: it does not name one. ``audio_adaln_single.linear.weight``
makes the model ``ltxav``; blocks are counted; ``attention_head_dim`` / ``cross_attention_dim``
come from ``transformer_blocks.0.attn2.to_k`` (assuming 32 heads), then the metadata's
``transformer`` section overrides everything — so the 2.3 switches
(``apply_gated_attention``, ``cross_attention_adaln``, ``caption_proj_before_connector``,
connector sizes) exist only in the metadata. A tiny file therefore MUST carry its config.

Tiny sizes (``tiny_config``)
----------------------------
2 blocks; video 2 heads × 32 = 64, audio 2 heads × 16 = 32 (= the cross-attention widths);
2.0 text/caption width 40 (connectors 2 × 20), 2.3 connectors 2 × 32 and 2 × 16; 2 connector
layers; text features 16 × 49 = 784. Video VAE: the real block list with one resnet per
stage and base width 4 (4 → 8 → 16 → 32); audio VAE ch 8 (× [1, 2, 4]), one resnet per
level; vocoders 64 wide (2.3 BWE 32 wide, STFT 256). Latent facts are the real ones: 128
video channels, 32× / 8× compression, audio [8, T, 16] at 25 latents/s. Widths are picked so
that dimensions ComfyUI keeps apart never coincide (a processed 2.0 text context is 80 wide,
a 2.3 one 96), so a mix-up fails instead of passing by accident. A file is ~6–8 MB (float32).

The 2.3 ``config`` sections follow a published LTX-2.3 header; the 2.0 transformer section
follows the published ltx-2-19b header, while its ``vae`` / ``audio_vae`` sections are taken
as 2.3's (same architecture) and its ``vocoder`` as the HiFi-GAN ×240 layout ComfyUI builds
for 24 kHz — the structure ComfyUI loads, not a verified copy of the 2.0 header.

Usage::

    python -m trainer_core.tiny_checkpoint --variant ltx-2.3 --out tiny.safetensors [--seed N]
    python -m trainer_core.tiny_checkpoint --variant ltx-2.5 --out ComfyUI/models   # the split set

LTX-2.5 (``make_tiny_set``): 2.3's layout with the 2.5 switches (``ff_bias`` false: no
``ff.net.*.bias``; ``keyframes_abs_pos_embedding`` [1, D]; prompt AdaLN kept), as split
files under the names of ComfyUI's LTX-2.5 templates (see ``SPLIT_FILES_25``), each with
``model_version`` "2.5.0" metadata; the transformer's also carries ``config`` and
``gemma_source_checkpoint``. Latents keep the 2.x format.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import re
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

VARIANTS = ("ltx-2.0", "ltx-2.3", "ltx-2.5")
SPLIT_VARIANTS = ("ltx-2.5",)  # shipped as split files (transformer, text encoder, video VAE, audio VAE)
DIFFUSION_PREFIX = "model.diffusion_model."
VAE_PREFIX = "vae."
AUDIO_VAE_PREFIX = "audio_vae."
VOCODER_PREFIX = "vocoder."
TEXT_PROJECTION_PREFIX = "text_embedding_projection."

# Facts of the model family (true for full and tiny checkpoints alike).
VIDEO_LATENT_CHANNELS = 128
VIDEO_SPATIAL_COMPRESSION = 32
VIDEO_TEMPORAL_COMPRESSION = 8
AUDIO_LATENT_CHANNELS = 8
AUDIO_LATENT_FREQ_BINS = 16
AUDIO_SAMPLE_RATE = 16000
AUDIO_MEL_HOP = 160
AUDIO_MEL_BINS = 64
AUDIO_LATENT_DOWNSAMPLE = 4
AUDIO_LATENTS_PER_SECOND = AUDIO_SAMPLE_RATE / AUDIO_MEL_HOP / AUDIO_LATENT_DOWNSAMPLE  # 25.0
CONNECTOR_REGISTERS = 128  # ComfyUI's Embeddings1DConnector always has 128 learnable registers
GEMMA_LAYERS = 49  # Gemma 3 12B: 48 layers + embeddings, all fed to the feature projection
GEMMA_HIDDEN = 3840
TINY_TEXT_HIDDEN = 16  # the tiny stand-in for Gemma's hidden width (tests make features of this size)


def normalize_variant(variant: str) -> str:
    """"ltx-2.0" or "ltx-2.3" from the spellings people use ("2.0", "ltx2", "LTX-2.3", "2.3.0", "22b" ...)."""
    v = str(variant).strip().lower().replace("_", "-").replace(" ", "")
    for p in ("ltx-", "ltxv-", "ltx", "ltxv"):
        if v.startswith(p):
            v = v[len(p):]
            break
    v = v.lstrip("-")
    if v in ("2", "2.0", "2.0.0", "19b", "2-19b"):
        return "ltx-2.0"
    if v in ("2.3", "2.3.0", "22b", "2.3-22b"):
        return "ltx-2.3"
    if v in ("2.5", "2.5.0", "2.5-22b"):
        return "ltx-2.5"
    raise ValueError(f"unknown LTX-2 variant {variant!r}: use one of {', '.join(VARIANTS)}")


# --------------------------------------------------------------------------------------------
# configs
# --------------------------------------------------------------------------------------------
_VAE_ENCODER_BLOCKS = [["res_x", {"num_layers": 4}], ["compress_space_res", {"multiplier": 2}],
                       ["res_x", {"num_layers": 6}], ["compress_time_res", {"multiplier": 2}],
                       ["res_x", {"num_layers": 4}], ["compress_all_res", {"multiplier": 2}],
                       ["res_x", {"num_layers": 2}], ["compress_all_res", {"multiplier": 1}],
                       ["res_x", {"num_layers": 2}]]
_VAE_DECODER_BLOCKS = [["res_x", {"num_layers": 4}], ["compress_space", {"multiplier": 2}],
                       ["res_x", {"num_layers": 6}], ["compress_time", {"multiplier": 2}],
                       ["res_x", {"num_layers": 4}], ["compress_all", {"multiplier": 1}],
                       ["res_x", {"num_layers": 2}], ["compress_all", {"multiplier": 2}],
                       ["res_x", {"num_layers": 2}]]

# The transformer section as the published headers spell it (ComfyUI passes every key to
# LTXAVModel; the ones it does not know are ignored).
_TRANSFORMER_COMMON = {
    "_class_name": "AVTransformer3DModel",
    "activation_fn": "gelu-approximate",
    "attention_bias": True,
    "attention_head_dim": 128,
    "attention_type": "default",
    "audio_attention_head_dim": 64,
    "audio_cross_attention_dim": 2048,
    "audio_num_attention_heads": 32,
    "audio_out_channels": 128,
    "audio_positional_embedding_max_pos": [20],
    "av_ca_timestep_scale_multiplier": 1000.0,
    "av_cross_ada_norm": True,
    "caption_channels": 3840,
    "causal_temporal_positioning": True,
    "connector_attention_head_dim": 128,
    "connector_norm_output": True,
    "connector_num_learnable_registers": CONNECTOR_REGISTERS,
    "connector_positional_embedding_max_pos": [4096],
    "cross_attention_dim": 4096,
    "cross_attention_norm": True,
    "double_self_attention": False,
    "dropout": 0.0,
    "frequencies_precision": "float64",
    "in_channels": 128,
    "norm_elementwise_affine": False,
    "norm_eps": 1e-06,
    "norm_num_groups": 32,
    "num_attention_heads": 32,
    "num_embeds_ada_norm": 1000,
    "num_layers": 48,
    "num_vector_embeds": None,
    "only_cross_attention": False,
    "out_channels": 128,
    "positional_embedding_max_pos": [20, 2048, 2048],
    "positional_embedding_theta": 10000.0,
    "positional_embedding_type": "rope",
    "qk_norm": "rms_norm",
    "rope_type": "split",
    "share_ff": False,
    "standardization_norm": "rms_norm",
    "timestep_scale_multiplier": 1000,
    "upcast_attention": False,
    "use_audio_video_cross_attention": True,
    "use_embeddings_connector": True,
    "use_linear_projection": False,
    "use_middle_indices_grid": True,
}

_TRANSFORMER_20 = {  # ltx-2-19b
    "_diffusers_version": "0.25.1",
    "connector_num_attention_heads": 30,
    "connector_num_layers": 2,
}

_TRANSFORMER_23 = {  # ltx-2.3-22b
    "apply_gated_attention": True,
    "audio_connector_attention_head_dim": 64,
    "audio_connector_num_attention_heads": 32,
    "caption_proj_before_connector": True,
    "caption_proj_input_norm": False,
    "caption_projection_first_linear": False,
    "caption_projection_second_linear": False,
    "connector_apply_gated_attention": True,
    "connector_learnable_registers_std": 1,
    "connector_num_attention_heads": 32,
    "connector_num_layers": 8,
    "cross_attention_adaln": True,
    "text_encoder_norm_type": "per_token_rms",
}

# ltx-2.5-22b: 2.3's architecture plus the switches ltx-core's configurator names for the
# Gemma 4 generation (ff_bias false, the keyframe embedding). use_prompt_adaln_single stays
# true: ComfyUI 0.33's forward cannot run a cross-attention-AdaLN model without it.
_TRANSFORMER_25 = dict(_TRANSFORMER_23, ff_bias=False, audio_ff_bias=True, use_prompt_adaln_single=True,
                       use_keyframes_abs_pos_embedding=True)
MODEL_VERSION_25 = "2.5.0"
GEMMA_SOURCE_25 = {"gemma_version": "gemma-4-12b"}  # ltx-core checks this against the Gemma config

_VAE = {
    "_class_name": "CausalVideoAutoencoder",
    "dims": 3,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": VIDEO_LATENT_CHANNELS,
    "encoder_blocks": _VAE_ENCODER_BLOCKS,
    "decoder_blocks": _VAE_DECODER_BLOCKS,
    "scaling_factor": 1.0,
    "norm_layer": "pixel_norm",
    "patch_size": 4,
    "latent_log_var": "uniform",
    "use_quant_conv": False,
    "causal_decoder": False,
    "timestep_conditioning": False,
    "normalize_latent_channels": False,
    "encoder_base_channels": 128,
    "decoder_base_channels": 128,
    "spatial_padding_mode": "zeros",
}

_AUDIO_VAE = {
    "model": {"params": {
        "ddconfig": {
            "double_z": True, "mel_bins": AUDIO_MEL_BINS, "z_channels": AUDIO_LATENT_CHANNELS,
            "resolution": 256, "downsample_time": False, "in_channels": 2, "out_ch": 2, "ch": 128,
            "ch_mult": [1, 2, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0,
            "mid_block_add_attention": False, "norm_type": "pixel", "causality_axis": "height",
        },
        "sampling_rate": AUDIO_SAMPLE_RATE,
    }},
    "preprocessing": {
        "audio": {"sampling_rate": AUDIO_SAMPLE_RATE, "max_wav_value": 32768.0, "duration": 5.12,
                  "stereo": True, "causal_padding": 3},
        "stft": {"filter_length": 1024, "hop_length": AUDIO_MEL_HOP, "win_length": 1024, "causal": True},
        "mel": {"n_mel_channels": AUDIO_MEL_BINS, "mel_fmin": 0, "mel_fmax": 8000},
    },
}

_DILATIONS = [[1, 3, 5], [1, 3, 5], [1, 3, 5]]

_VOCODER_20 = {  # HiFi-GAN, x240 -> 24 kHz
    "resblock": "1",
    "upsample_rates": [6, 5, 2, 2, 2],
    "upsample_kernel_sizes": [16, 15, 8, 4, 4],
    "upsample_initial_channel": 1024,
    "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": _DILATIONS,
    "stereo": True,
}

_VOCODER_23 = {  # BigVGAN v2 (x160 -> 16 kHz) + bandwidth extension (x3 -> 48 kHz)
    "vocoder": {
        "upsample_initial_channel": 1536, "resblock": "AMP1", "upsample_rates": [5, 2, 2, 2, 2, 2],
        "resblock_kernel_sizes": [3, 7, 11], "upsample_kernel_sizes": [11, 4, 4, 4, 4, 4],
        "resblock_dilation_sizes": _DILATIONS, "stereo": True, "use_tanh_at_final": False,
        "activation": "snakebeta", "use_bias_at_final": False,
    },
    "bwe": {
        "upsample_initial_channel": 512, "resblock": "AMP1", "upsample_rates": [6, 5, 2, 2, 2],
        "resblock_kernel_sizes": [3, 7, 11], "upsample_kernel_sizes": [12, 11, 4, 4, 4],
        "resblock_dilation_sizes": _DILATIONS, "stereo": True, "use_tanh_at_final": False,
        "activation": "snakebeta", "use_bias_at_final": False, "apply_final_activation": False,
        "input_sampling_rate": 16000, "output_sampling_rate": 48000, "hop_length": 80,
        "n_fft": 512, "win_size": 512, "num_mels": 64,
    },
}

_SCHEDULER = {"_class_name": "RectifiedFlowScheduler", "_diffusers_version": "0.25.1",
              "num_train_timesteps": 1000, "shifting": None, "base_resolution": None,
              "sampler": "LinearQuadratic"}


def full_config(variant: str) -> dict:
    """The ``config`` metadata of a real full-size checkpoint of ``variant`` (48 blocks, video
    32×128 = 4096 wide, audio 32×64 = 2048 wide). For GPU benchmarks; never built in tests.

    Transformer sections follow the published checkpoints' metadata (ltx-2-19b-dev,
    ltx-2.3-22b-dev); the 2.0 vocoder section is the HiFi-GAN ×240 (24 kHz) layout.
    """
    v = normalize_variant(variant)
    t = dict(_TRANSFORMER_COMMON)
    t.update({"ltx-2.0": _TRANSFORMER_20, "ltx-2.3": _TRANSFORMER_23, "ltx-2.5": _TRANSFORMER_25}[v])
    return copy.deepcopy({
        "transformer": t,
        "vae": _VAE,
        "audio_vae": _AUDIO_VAE,
        "vocoder": _VOCODER_20 if v == "ltx-2.0" else _VOCODER_23,
        "scheduler": _SCHEDULER,
    })


# Tiny sizes. Widths are chosen so that no two dimensions that ComfyUI keeps apart coincide
# (video 64, audio 32, 2.0 caption/connector width 40 -> a processed 2.0 context is 80 wide,
# a 2.3 one 96), so a mix-up fails loudly instead of passing by accident.
TINY_DIMS = {
    "num_layers": 2,
    "num_attention_heads": 2, "attention_head_dim": 32,             # video 64
    "audio_num_attention_heads": 2, "audio_attention_head_dim": 16,  # audio 32
    "caption_channels": 40,  # 2.0 text width = connector width (2 heads x 20)
    "connector_num_layers": 2,
    "vae_base_channels": 4,
    "audio_vae_ch": 8,
    "vocoder_channels_20": 64,
    "vocoder_channels_23": 64,
    "bwe_channels_23": 32,
    "bwe_n_fft_23": 256,
    "text_hidden": TINY_TEXT_HIDDEN,
}


def tiny_config(variant: str) -> dict:
    """The ``config`` metadata of the tiny checkpoint: the real layout and every switch of
    ``variant``, with 2 blocks and small widths. Latent facts stay true: video latents have
    128 channels (32× spatial, 8× temporal); audio latents are [8, T, 16] at 25 frames/s
    (16 kHz, 64 mels, hop 160, 4×)."""
    v = normalize_variant(variant)
    d = TINY_DIMS
    cfg = full_config(v)
    t = cfg["transformer"]
    vid = d["num_attention_heads"] * d["attention_head_dim"]
    aud = d["audio_num_attention_heads"] * d["audio_attention_head_dim"]
    t.update(num_layers=d["num_layers"],
             num_attention_heads=d["num_attention_heads"], attention_head_dim=d["attention_head_dim"],
             cross_attention_dim=vid,
             audio_num_attention_heads=d["audio_num_attention_heads"],
             audio_attention_head_dim=d["audio_attention_head_dim"],
             audio_cross_attention_dim=aud,
             connector_num_layers=d["connector_num_layers"])
    if v == "ltx-2.0":
        # 2.0: the connectors run at the text width (caption_channels), then the caption
        # projections map to the streams' widths.
        cap = d["caption_channels"]
        t.update(caption_channels=cap, connector_num_attention_heads=2, connector_attention_head_dim=cap // 2)
    else:
        # 2.3: the text side already projects to the streams' widths; connectors match them.
        t.update(caption_channels=d["caption_channels"],  # unused by 2.3's weights (no projection)
                 connector_num_attention_heads=2, connector_attention_head_dim=vid // 2,
                 audio_connector_num_attention_heads=2, audio_connector_attention_head_dim=aud // 2)

    vae = cfg["vae"]
    for blocks in (vae["encoder_blocks"], vae["decoder_blocks"]):
        for name, params in blocks:
            if name == "res_x":
                params["num_layers"] = 1
    vae["encoder_base_channels"] = vae["decoder_base_channels"] = d["vae_base_channels"]

    dd = cfg["audio_vae"]["model"]["params"]["ddconfig"]
    dd.update(ch=d["audio_vae_ch"], num_res_blocks=1)

    voc = cfg["vocoder"]
    if v == "ltx-2.0":
        voc["upsample_initial_channel"] = d["vocoder_channels_20"]
    else:
        voc["vocoder"]["upsample_initial_channel"] = d["vocoder_channels_23"]
        voc["bwe"].update(upsample_initial_channel=d["bwe_channels_23"],
                          n_fft=d["bwe_n_fft_23"], win_size=d["bwe_n_fft_23"])
    return cfg


def text_feature_size(tiny: bool = True) -> int:
    """Input width of ``text_embedding_projection``: Gemma's hidden width × 49 layers
    (3840·49 = 188160 in real checkpoints; 16·49 = 784 in tiny ones)."""
    return (TINY_TEXT_HIDDEN if tiny else GEMMA_HIDDEN) * GEMMA_LAYERS


def text_context_width(variant_or_config, processed: bool = True, tiny: bool = True) -> int:
    """Width of the text context (``variant_or_config``: a ``config`` dict, or a variant name
    meaning its tiny config — its full one with ``tiny=False``).

    ``processed=False``: what the LTX-AV text encoder outputs (``unprocessed_ltxav_embeds``) —
    caption_channels (2.0, single projection) or cross_attention_dim + audio_cross_attention_dim
    (2.3, dual projection). ``processed=True``: what ``LTXAVModel.forward`` takes as
    ``context`` (after ``preprocess_text_embeds``: the two connectors' outputs concatenated,
    padded with registers to ≥1024 tokens) — 2·caption_channels (2.0) or
    cross_attention_dim + audio_cross_attention_dim (2.3).
    """
    t = _as_config(variant_or_config, tiny)["transformer"]
    before = bool(t.get("caption_proj_before_connector", False))
    if before:
        return int(t["cross_attention_dim"]) + int(t["audio_cross_attention_dim"])
    return int(t["caption_channels"]) * (2 if processed else 1)


def _as_config(variant_or_config, tiny: bool) -> dict:
    if isinstance(variant_or_config, dict):
        return variant_or_config
    return tiny_config(variant_or_config) if tiny else full_config(variant_or_config)


# --------------------------------------------------------------------------------------------
# layout: key -> (shape, init)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TensorSpec:
    shape: tuple
    init: str  # "w" fan-in normal, "b" bias, "ones", "table", "registers", "log_scale",
    #            "stats_mean", "stats_std", "fixed"
    fixed: Optional[Callable[[], torch.Tensor]] = None


class _L:
    """Collects keys under a prefix."""

    def __init__(self, out: "OrderedDict[str, TensorSpec]", prefix: str = ""):
        self.out, self.prefix = out, prefix

    def sub(self, name: str) -> "_L":
        return _L(self.out, f"{self.prefix}{name}.")

    def add(self, name: str, shape: Sequence[int], init: str, fixed=None) -> None:
        key = self.prefix + name
        if key in self.out:
            raise AssertionError(f"duplicate key {key}")
        self.out[key] = TensorSpec(tuple(int(s) for s in shape), init, fixed)

    def linear(self, name: str, n_in: int, n_out: int, bias: bool = True) -> None:
        self.add(f"{name}.weight", (n_out, n_in), "w")
        if bias:
            self.add(f"{name}.bias", (n_out,), "b")

    def conv(self, name: str, n_in: int, n_out: int, kernel: Sequence[int], bias: bool = True,
             transposed: bool = False) -> None:
        shape = (n_in, n_out, *kernel) if transposed else (n_out, n_in, *kernel)
        self.add(f"{name}.weight", shape, "w")
        if bias:
            self.add(f"{name}.bias", (n_out,), "b")


# ---- transformer ---------------------------------------------------------------------------
def _attention(L: _L, query_dim: int, context_dim: int, heads: int, dim_head: int, gated: bool) -> None:
    inner = heads * dim_head
    L.add("q_norm.weight", (inner,), "ones")
    L.add("k_norm.weight", (inner,), "ones")
    L.linear("to_q", query_dim, inner)
    L.linear("to_k", context_dim, inner)
    L.linear("to_v", context_dim, inner)
    if gated:
        L.linear("to_gate_logits", query_dim, heads)
    L.linear("to_out.0", inner, query_dim)


def _feed_forward(L: _L, dim: int, mult: int = 4, bias: bool = True) -> None:
    L.linear("net.0.proj", dim, dim * mult, bias)
    L.linear("net.2", dim * mult, dim, bias)


def _adaln_single(L: _L, dim: int, coefficient: int) -> None:
    L.linear("emb.timestep_embedder.linear_1", 256, dim)
    L.linear("emb.timestep_embedder.linear_2", dim, dim)
    L.linear("linear", dim, coefficient * dim)


def _connector(L: _L, heads: int, dim_head: int, layers: int, gated: bool) -> None:
    dim = heads * dim_head
    for i in range(layers):
        b = L.sub(f"transformer_1d_blocks.{i}")
        _attention(b.sub("attn1"), dim, dim, heads, dim_head, gated)
        _feed_forward(b.sub("ff"), dim)
    L.add("learnable_registers", (CONNECTOR_REGISTERS, dim), "registers")


def transformer_layout(tcfg: dict, prefix: str = DIFFUSION_PREFIX) -> "OrderedDict[str, TensorSpec]":
    """Keys and shapes of the audio-video transformer for a ``config["transformer"]`` section,
    with ComfyUI's constructor defaults for keys the section leaves out."""
    g = tcfg.get
    heads, dh = int(g("num_attention_heads", 32)), int(g("attention_head_dim", 128))
    a_heads, a_dh = int(g("audio_num_attention_heads", 32)), int(g("audio_attention_head_dim", 64))
    D, Da = heads * dh, a_heads * a_dh
    ctx, a_ctx = int(g("cross_attention_dim", 4096)), int(g("audio_cross_attention_dim", 2048))
    cap = g("caption_channels", 3840)
    in_ch, a_in = int(g("in_channels", 128)), int(g("audio_in_channels", 128))
    out_ch, a_out = in_ch, a_in  # ComfyUI: out = in
    layers = int(g("num_layers", 48))
    gated = bool(g("apply_gated_attention", False))
    xadaln = bool(g("cross_attention_adaln", False))
    before = bool(g("caption_proj_before_connector", False))
    first_linear = bool(g("caption_projection_first_linear", True))
    n_ada = 9 if xadaln else 6
    prompt_adaln = xadaln and bool(g("use_prompt_adaln_single", True))
    ff_bias, a_ff_bias = bool(g("ff_bias", True)), bool(g("audio_ff_bias", True))
    keyframes = bool(g("use_keyframes_abs_pos_embedding", False))
    c_heads, c_dh = int(g("connector_num_attention_heads", 30)), int(g("connector_attention_head_dim", 128))
    ac_heads = int(g("audio_connector_num_attention_heads", c_heads))
    ac_dh = int(g("audio_connector_attention_head_dim", c_dh))
    c_layers = int(g("connector_num_layers", 2))
    c_gated = bool(g("connector_apply_gated_attention", False))
    if not before and (c_heads * c_dh != cap or ac_heads * ac_dh != cap):
        raise ValueError("LTX-2.0 layout: connector width must equal caption_channels")
    if before and (c_heads * c_dh != D or ac_heads * ac_dh != Da):
        raise ValueError("LTX-2.3 layout: connector widths must equal the video/audio widths")
    if ctx != D or a_ctx != Da:
        raise ValueError("cross_attention_dim / audio_cross_attention_dim must equal the stream widths")

    out: "OrderedDict[str, TensorSpec]" = OrderedDict()
    R = _L(out, prefix)
    # video input, timestep, text projection
    R.linear("patchify_proj", in_ch, D)
    if keyframes:
        R.add("keyframes_abs_pos_embedding", (1, D), "table")
    _adaln_single(R.sub("adaln_single"), D, n_ada)
    if prompt_adaln:
        _adaln_single(R.sub("prompt_adaln_single"), D, 2)
    if not before:
        R.linear("caption_projection.linear_1", int(cap), D)
        R.linear("caption_projection.linear_2", D, D)
    elif first_linear:
        R.linear("caption_projection.linear_1", int(cap), D)
    # audio input and the cross-modal AdaLNs
    R.linear("audio_patchify_proj", a_in, Da)
    _adaln_single(R.sub("audio_adaln_single"), Da, n_ada)
    if prompt_adaln:
        _adaln_single(R.sub("audio_prompt_adaln_single"), Da, 2)
    _adaln_single(R.sub("av_ca_video_scale_shift_adaln_single"), D, 4)
    _adaln_single(R.sub("av_ca_a2v_gate_adaln_single"), D, 1)
    _adaln_single(R.sub("av_ca_audio_scale_shift_adaln_single"), Da, 4)
    _adaln_single(R.sub("av_ca_v2a_gate_adaln_single"), Da, 1)
    if not before:
        R.linear("audio_caption_projection.linear_1", int(cap), Da)
        R.linear("audio_caption_projection.linear_2", Da, Da)
    elif first_linear:
        R.linear("audio_caption_projection.linear_1", int(cap), Da)
    _connector(R.sub("audio_embeddings_connector"), ac_heads, ac_dh, c_layers, c_gated)
    _connector(R.sub("video_embeddings_connector"), c_heads, c_dh, c_layers, c_gated)
    # blocks
    for i in range(layers):
        B = R.sub(f"transformer_blocks.{i}")
        _attention(B.sub("attn1"), D, D, heads, dh, gated)
        _attention(B.sub("audio_attn1"), Da, Da, a_heads, a_dh, gated)
        _attention(B.sub("attn2"), D, ctx, heads, dh, gated)
        _attention(B.sub("audio_attn2"), Da, a_ctx, a_heads, a_dh, gated)
        _attention(B.sub("audio_to_video_attn"), D, Da, a_heads, a_dh, gated)
        _attention(B.sub("video_to_audio_attn"), Da, D, a_heads, a_dh, gated)
        _feed_forward(B.sub("ff"), D, bias=ff_bias)
        _feed_forward(B.sub("audio_ff"), Da, bias=a_ff_bias)
        B.add("scale_shift_table", (n_ada, D), "table")
        B.add("audio_scale_shift_table", (n_ada, Da), "table")
        if xadaln:
            B.add("prompt_scale_shift_table", (2, D), "table")
            B.add("audio_prompt_scale_shift_table", (2, Da), "table")
        B.add("scale_shift_table_a2v_ca_audio", (5, Da), "table")
        B.add("scale_shift_table_a2v_ca_video", (5, D), "table")
    # outputs
    R.add("scale_shift_table", (2, D), "table")
    R.linear("proj_out", D, out_ch)
    R.add("audio_scale_shift_table", (2, Da), "table")
    R.linear("audio_proj_out", Da, a_out)
    return out


def text_projection_layout(tcfg: dict, in_features: int,
                           prefix: str = TEXT_PROJECTION_PREFIX) -> "OrderedDict[str, TensorSpec]":
    """``text_embedding_projection.*``: single linear (2.0) or video/audio pair (2.3)."""
    out: "OrderedDict[str, TensorSpec]" = OrderedDict()
    L = _L(out, prefix)
    if tcfg.get("caption_proj_before_connector", False):
        L.linear("audio_aggregate_embed", in_features, int(tcfg.get("audio_cross_attention_dim", 2048)))
        L.linear("video_aggregate_embed", in_features, int(tcfg.get("cross_attention_dim", 4096)))
    else:
        L.linear("aggregate_embed", in_features, int(tcfg.get("caption_channels", 3840)), bias=False)
    return out


# ---- video VAE -----------------------------------------------------------------------------
def _params(p) -> dict:
    return dict(p) if isinstance(p, dict) else {"num_layers": int(p)}


def _conv3d(L: _L, name: str, n_in: int, n_out: int) -> None:
    L.conv(f"{name}.conv", n_in, n_out, (3, 3, 3))  # CausalConv3d wraps a Conv3d as ``.conv``


def _res_x(L: _L, ch: int, layers: int, inject_noise: bool) -> None:
    for j in range(layers):
        r = L.sub(f"res_blocks.{j}")
        _conv3d(r, "conv1", ch, ch)
        if inject_noise:
            r.add("per_channel_scale1", (ch, 1, 1), "log_scale")
        _conv3d(r, "conv2", ch, ch)
        if inject_noise:
            r.add("per_channel_scale2", (ch, 1, 1), "log_scale")


def video_vae_layout(vcfg: dict, prefix: str = VAE_PREFIX) -> "OrderedDict[str, TensorSpec]":
    """Keys of the causal video VAE for a ``config["vae"]`` section (the block kinds real LTX-2
    checkpoints use; pixel norm, no timestep conditioning)."""
    if vcfg.get("dims", 3) != 3:
        raise ValueError("only 3-D video VAEs")
    if vcfg.get("norm_layer", "group_norm") != "pixel_norm":
        raise ValueError("only pixel_norm video VAEs (LTX-2)")
    if vcfg.get("timestep_conditioning", False):
        raise ValueError("timestep-conditioned video VAE decoders are not LTX-2's")
    p = int(vcfg.get("patch_size", 1))
    latent = int(vcfg["latent_channels"])
    out: "OrderedDict[str, TensorSpec]" = OrderedDict()
    R = _L(out, prefix)

    E = R.sub("encoder")
    ch = int(vcfg.get("encoder_base_channels", 128))
    _conv3d(E, "conv_in", int(vcfg.get("in_channels", 3)) * p * p, ch)
    for i, (name, params) in enumerate(vcfg["encoder_blocks"]):
        prm, b = _params(params), E.sub(f"down_blocks.{i}")
        if name == "res_x":
            _res_x(b, ch, int(prm["num_layers"]), False)
        elif name in ("compress_space_res", "compress_time_res", "compress_all_res"):
            stride = {"compress_space_res": (1, 2, 2), "compress_time_res": (2, 1, 1),
                      "compress_all_res": (2, 2, 2)}[name]
            new = int(prm.get("multiplier", 2)) * ch
            _conv3d(b, "conv", ch, new // math.prod(stride))  # space-to-depth after the conv
            ch = new
        else:
            raise ValueError(f"video VAE encoder block {name!r} is not used by LTX-2")
    log_var = vcfg.get("latent_log_var", "per_channel" if vcfg.get("double_z", True) else "none")
    n_out = {"per_channel": 2 * latent, "uniform": latent + 1, "constant": latent + 1, "none": latent}[log_var]
    _conv3d(E, "conv_out", ch, n_out)

    D = R.sub("decoder")
    blocks = list(reversed(vcfg["decoder_blocks"]))
    ch = int(vcfg.get("decoder_base_channels", 128))
    for name, params in blocks:
        if name.startswith("compress_"):
            ch *= int(_params(params).get("multiplier", 1))
    _conv3d(D, "conv_in", latent, ch)
    for i, (name, params) in enumerate(blocks):
        prm, b = _params(params), D.sub(f"up_blocks.{i}")
        if name == "res_x":
            _res_x(b, ch, int(prm["num_layers"]), bool(prm.get("inject_noise", False)))
        elif name in ("compress_space", "compress_time", "compress_all"):
            stride = {"compress_space": (1, 2, 2), "compress_time": (2, 1, 1), "compress_all": (2, 2, 2)}[name]
            mult = int(prm.get("multiplier", 1))
            _conv3d(b, "conv", ch, math.prod(stride) * ch // mult)  # conv then depth-to-space
            ch //= mult
        else:
            raise ValueError(f"video VAE decoder block {name!r} is not used by LTX-2")
    _conv3d(D, "conv_out", ch, int(vcfg.get("out_channels", 3)) * p * p)
    R.add("per_channel_statistics.std-of-means", (latent,), "stats_std")
    R.add("per_channel_statistics.mean-of-means", (latent,), "stats_mean")
    return out


# ---- audio VAE -----------------------------------------------------------------------------
def _conv2d_causal(L: _L, name: str, n_in: int, n_out: int, k: int = 3) -> None:
    L.conv(f"{name}.conv", n_in, n_out, (k, k))  # CausalConv2d wraps a Conv2d as ``.conv``


def _audio_resnet(L: _L, n_in: int, n_out: int) -> None:
    _conv2d_causal(L, "conv1", n_in, n_out)
    _conv2d_causal(L, "conv2", n_out, n_out)
    if n_in != n_out:
        _conv2d_causal(L, "nin_shortcut", n_in, n_out, k=1)


def audio_vae_layout(acfg: dict, prefix: str = AUDIO_VAE_PREFIX) -> "OrderedDict[str, TensorSpec]":
    """Keys of the causal mel autoencoder for a ``config["audio_vae"]`` section."""
    params = acfg.get("model", {}).get("params", {})
    enc = params.get("encoder", params.get("ddconfig", {}))
    dec = params.get("decoder", enc)
    out: "OrderedDict[str, TensorSpec]" = OrderedDict()
    R = _L(out, prefix)
    for side, dd in (("encoder", enc), ("decoder", dec)):
        if dd.get("norm_type", "group") != "pixel" or dd.get("mid_block_add_attention", True) \
                or list(dd.get("attn_resolutions", [])):
            raise ValueError("only the LTX-2 audio VAE layout (pixel norm, no attention)")
        if dd.get("causality_axis", "width") in (None, "none"):
            raise ValueError("only causal audio VAEs")
        ch, mult, nrb = int(dd["ch"]), [int(m) for m in dd["ch_mult"]], int(dd["num_res_blocks"])
        z = int(dd["z_channels"])
        S = R.sub(side)
        if side == "encoder":
            _conv2d_causal(S, "conv_in", int(dd["in_channels"]), ch)
            block_in = ch
            in_mult = [1] + mult
            for i in range(len(mult)):
                block_in, block_out = ch * in_mult[i], ch * mult[i]
                for j in range(nrb):
                    _audio_resnet(S.sub(f"down.{i}.block.{j}"), block_in, block_out)
                    block_in = block_out
                if i != len(mult) - 1:
                    S.sub(f"down.{i}.downsample").conv("conv", block_in, block_in, (3, 3))  # plain Conv2d
            _audio_resnet(S.sub("mid.block_1"), block_in, block_in)
            _audio_resnet(S.sub("mid.block_2"), block_in, block_in)
            _conv2d_causal(S, "conv_out", block_in, 2 * z if dd.get("double_z", True) else z)
        else:
            block_in = ch * mult[-1]
            _conv2d_causal(S, "conv_in", z, block_in)
            _audio_resnet(S.sub("mid.block_1"), block_in, block_in)
            _audio_resnet(S.sub("mid.block_2"), block_in, block_in)
            levels: list[tuple[int, list]] = []
            for i in reversed(range(len(mult))):
                block_out = ch * mult[i]
                specs = []
                for _ in range(nrb + 1):
                    specs.append((block_in, block_out))
                    block_in = block_out
                levels.append((i, specs))
            for i, specs in sorted(levels):
                for j, (a, b) in enumerate(specs):
                    _audio_resnet(S.sub(f"up.{i}.block.{j}"), a, b)
                if i != 0:
                    _conv2d_causal(S.sub(f"up.{i}.upsample"), "conv", specs[-1][1], specs[-1][1])
            _conv2d_causal(S, "conv_out", block_in, int(dd["out_ch"]))
    n_stats = AUDIO_LATENT_CHANNELS * AUDIO_LATENT_FREQ_BINS  # ComfyUI's processor: 128
    R.add("per_channel_statistics.std-of-means", (n_stats,), "stats_std")
    R.add("per_channel_statistics.mean-of-means", (n_stats,), "stats_mean")
    return out


# ---- vocoder -------------------------------------------------------------------------------
def kaiser_sinc_lowpass(cutoff: float, half_width: float, kernel_size: int) -> torch.Tensor:
    """Kaiser-windowed sinc low-pass filter [1, 1, K], normalised to unit DC gain (the
    anti-aliasing filter of BigVGAN-v2 activations; Kaiser's β from the stop-band attenuation)."""
    half = kernel_size // 2
    atten = 2.285 * (half - 1) * math.pi * (4 * half_width) + 7.95
    if atten > 50.0:
        beta = 0.1102 * (atten - 8.7)
    elif atten >= 21.0:
        beta = 0.5842 * (atten - 21.0) ** 0.4 + 0.07886 * (atten - 21.0)
    else:
        beta = 0.0
    window = torch.kaiser_window(kernel_size, periodic=False, beta=beta)
    if kernel_size % 2 == 0:
        t = torch.arange(-half, half, dtype=torch.float32) + 0.5
    else:
        t = torch.arange(kernel_size, dtype=torch.float32) - half
    if cutoff == 0:
        return torch.zeros(1, 1, kernel_size)
    h = 2 * cutoff * window * torch.sinc(2 * cutoff * t)
    return (h / h.sum()).view(1, 1, kernel_size)


def _anti_alias_filter() -> torch.Tensor:
    return kaiser_sinc_lowpass(0.25, 0.3, 12)  # 2x up / 2x down, kernel 12


def _activation1d(L: _L, ch: int, snake_beta: bool) -> None:
    L.add("act.alpha", (ch,), "log_scale")
    if snake_beta:
        L.add("act.beta", (ch,), "log_scale")
    L.add("upsample.filter", (1, 1, 12), "fixed", _anti_alias_filter)
    L.add("downsample.lowpass.filter", (1, 1, 12), "fixed", _anti_alias_filter)


def _hifigan(L: _L, c: dict) -> None:
    rates, kernels = c.get("upsample_rates", [5, 4, 2, 2, 2]), c.get("upsample_kernel_sizes", [16, 16, 8, 4, 4])
    rk = c.get("resblock_kernel_sizes", [3, 7, 11])
    rd = c.get("resblock_dilation_sizes", _DILATIONS)
    uic = int(c.get("upsample_initial_channel", 1024))
    stereo = bool(c.get("stereo", True))
    kind = str(c.get("resblock", "1"))
    snake_beta = c.get("activation", "snake") == "snakebeta"
    if uic % (2 ** len(rates)):
        raise ValueError("vocoder upsample_initial_channel must be divisible by 2**len(upsample_rates)")
    L.conv("conv_pre", 128 if stereo else 64, uic, (7,))
    for i, (u, k) in enumerate(zip(rates, kernels)):
        L.conv(f"ups.{i}", uic // 2 ** i, uic // 2 ** (i + 1), (k,), transposed=True)
    ch = uic
    for i in range(len(rates)):
        ch = uic // 2 ** (i + 1)
        for j, (k, d) in enumerate(zip(rk, rd)):
            r = L.sub(f"resblocks.{i * len(rk) + j}")
            if kind == "2":
                for m in range(2):
                    r.conv(f"convs.{m}", ch, ch, (k,))
                continue
            for m in range(3):
                r.conv(f"convs1.{m}", ch, ch, (k,))
            for m in range(3):
                r.conv(f"convs2.{m}", ch, ch, (k,))
            if kind == "AMP1":
                for m in range(3):
                    _activation1d(r.sub(f"acts1.{m}"), ch, snake_beta)
                for m in range(3):
                    _activation1d(r.sub(f"acts2.{m}"), ch, snake_beta)
            elif kind != "1":
                raise ValueError(f"unknown vocoder resblock {kind!r}")
    if kind == "AMP1":
        _activation1d(L.sub("act_post"), ch, snake_beta)
    L.conv("conv_post", ch, 2 if stereo else 1, (7,), bias=bool(c.get("use_bias_at_final", True)))


def _stft_bases(n_fft: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Windowed real-DFT analysis basis [2F, 1, N] (cosines then sines) and its pseudo-inverse."""
    n_freqs = n_fft // 2 + 1
    n = torch.arange(n_fft, dtype=torch.float64)
    f = torch.arange(n_freqs, dtype=torch.float64)
    ang = 2 * math.pi * f[:, None] * n[None, :] / n_fft
    basis = torch.cat([torch.cos(ang), -torch.sin(ang)], dim=0)  # [2F, N]
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    fwd = basis * window[None, :]
    inv = torch.linalg.pinv(basis).T * window[None, :]
    return fwd.float().unsqueeze(1), inv.float().unsqueeze(1)


def _hz_to_mel(f: torch.Tensor) -> torch.Tensor:  # Slaney scale
    lin = f / (200.0 / 3)
    log = 15.0 + torch.log(torch.clamp(f, min=1e-10) / 1000.0) / (math.log(6.4) / 27.0)
    return torch.where(f >= 1000.0, log, lin)


def _mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    lin = m * (200.0 / 3)
    log = 1000.0 * torch.exp((math.log(6.4) / 27.0) * (m - 15.0))
    return torch.where(m >= 15.0, log, lin)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: Optional[float] = None) -> torch.Tensor:
    """Slaney-scale, Slaney-normalised triangular mel filterbank [n_mels, n_fft//2+1]."""
    fmax = sample_rate / 2.0 if fmax is None else fmax
    freqs = torch.linspace(0, sample_rate / 2.0, n_fft // 2 + 1, dtype=torch.float64)
    mels = torch.linspace(float(_hz_to_mel(torch.tensor(fmin, dtype=torch.float64))),
                          float(_hz_to_mel(torch.tensor(fmax, dtype=torch.float64))), n_mels + 2,
                          dtype=torch.float64)
    hz = _mel_to_hz(mels)
    lower = (freqs[None, :] - hz[:-2, None]) / (hz[1:-1] - hz[:-2])[:, None]
    upper = (hz[2:, None] - freqs[None, :]) / (hz[2:] - hz[1:-1])[:, None]
    fb = torch.clamp(torch.minimum(lower, upper), min=0.0)
    fb = fb * (2.0 / (hz[2:] - hz[:-2]))[:, None]
    return fb.float()


def vocoder_layout(vcfg: dict, prefix: str = VOCODER_PREFIX) -> "OrderedDict[str, TensorSpec]":
    """Keys of the vocoder for a ``config["vocoder"]`` section: HiFi-GAN/BigVGAN alone, or
    (with a ``bwe`` sub-section) BigVGAN + bandwidth extension."""
    out: "OrderedDict[str, TensorSpec]" = OrderedDict()
    R = _L(out, prefix)
    if "bwe" in vcfg:
        bwe = vcfg["bwe"]
        _hifigan(R.sub("vocoder"), vcfg["vocoder"])
        _hifigan(R.sub("bwe_generator"), bwe)
        n_fft, n_mels, sr = int(bwe["n_fft"]), int(bwe["num_mels"]), int(bwe["input_sampling_rate"])
        n_freqs = n_fft // 2 + 1
        R.add("mel_stft.stft_fn.forward_basis", (2 * n_freqs, 1, n_fft), "fixed",
              lambda: _stft_bases(n_fft)[0])
        R.add("mel_stft.stft_fn.inverse_basis", (2 * n_freqs, 1, n_fft), "fixed",
              lambda: _stft_bases(n_fft)[1])
        R.add("mel_stft.mel_basis", (n_mels, n_freqs), "fixed",
              lambda: mel_filterbank(sr, n_fft, n_mels))
    else:
        _hifigan(R, vcfg)
    return out


# ---- whole checkpoint ----------------------------------------------------------------------
def checkpoint_layout(config: dict, text_in_features: int) -> "OrderedDict[str, TensorSpec]":
    """Every key of a single-file LTX-2 checkpoint for ``config`` (the ``config`` metadata)."""
    out: "OrderedDict[str, TensorSpec]" = OrderedDict()
    for part in (transformer_layout(config["transformer"]),
                 text_projection_layout(config["transformer"], text_in_features),
                 video_vae_layout(config["vae"]),
                 audio_vae_layout(config["audio_vae"]),
                 vocoder_layout(config["vocoder"])):
        for k, v in part.items():
            if k in out:
                raise AssertionError(f"duplicate key {k}")
            out[k] = v
    return out


def _tensor(key: str, spec: TensorSpec, seed: int) -> torch.Tensor:
    if spec.init == "ones":
        return torch.ones(spec.shape)
    if spec.init == "fixed":
        t = spec.fixed().float()
        if tuple(t.shape) != spec.shape:
            raise AssertionError(f"{key}: fixed tensor {tuple(t.shape)} != {spec.shape}")
        return t.contiguous()
    g = torch.Generator().manual_seed((int(seed) * 1_000_003 + zlib.crc32(key.encode())) % (2 ** 62))
    if spec.init == "w":
        fan_in = math.prod(spec.shape[1:]) if len(spec.shape) > 1 else spec.shape[0]
        if re.search(r"(^|\.)ups\.\d+\.weight$", key):
            fan_in = spec.shape[0] * math.prod(spec.shape[2:])  # ConvTranspose: [in, out, k]
        return torch.randn(spec.shape, generator=g) / math.sqrt(max(1, fan_in))
    if spec.init == "b":
        return torch.randn(spec.shape, generator=g) * 0.02
    if spec.init == "table":
        return torch.randn(spec.shape, generator=g) * 0.1
    if spec.init == "registers":
        return torch.randn(spec.shape, generator=g)
    if spec.init == "log_scale":
        return torch.randn(spec.shape, generator=g) * 0.1
    if spec.init == "stats_mean":
        return torch.randn(spec.shape, generator=g) * 0.1
    if spec.init == "stats_std":
        return 0.5 + torch.rand(spec.shape, generator=g)
    raise AssertionError(f"unknown init {spec.init!r} for {key}")


def tiny_state_dict(variant: str = "ltx-2.0", seed: int = 0, dtype: torch.dtype = torch.float32
                    ) -> tuple["OrderedDict[str, torch.Tensor]", dict]:
    """(state dict, metadata) of the tiny checkpoint, without writing it."""
    v = normalize_variant(variant)
    cfg = tiny_config(v)
    text_in = text_feature_size(tiny=True)
    layout = checkpoint_layout(cfg, text_in)
    sd: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for key, spec in layout.items():
        sd[key] = _tensor(key, spec, seed).to(dtype).contiguous()
    facts = {
        "variant": v, "seed": int(seed), "dtype": str(dtype).replace("torch.", ""),
        "text_encoder_hidden": TINY_TEXT_HIDDEN, "text_encoder_layers": GEMMA_LAYERS,
        "text_projection_in_features": text_in,
        "text_context_width_unprocessed": text_context_width(cfg, processed=False),
        "text_context_width_processed": text_context_width(cfg, processed=True),
        "generator": "trainer_core.tiny_checkpoint",
    }
    meta = {"config": json.dumps(cfg), "tiny_ltx2": json.dumps(facts)}
    return sd, meta


_ST_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.float64: "F64",
              torch.float8_e4m3fn: "F8_E4M3", torch.int8: "I8"}


def save_safetensors(state_dict, path, metadata: dict) -> Path:
    """Write a safetensors file whose bytes depend only on the arguments.

    (``safetensors.torch.save_file`` serialises ``__metadata__`` in hash-map order, so a file
    with two metadata keys can differ byte-wise between runs; this writer sorts them.)
    Tensors are stored in the state dict's order, 8-byte aligned header, little-endian data.
    """
    import struct

    path = Path(path)
    header: dict = {"__metadata__": {str(k): str(metadata[k]) for k in sorted(metadata)}}
    blobs, offset = [], 0
    for key, t in state_dict.items():
        if t.dtype not in _ST_DTYPES:
            raise ValueError(f"{key}: dtype {t.dtype} not supported by the tiny-checkpoint writer")
        data = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        header[key] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape),
                       "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)
    tmp.replace(path)
    return path


def make_tiny_checkpoint(path, variant: str = "ltx-2.0", seed: int = 0,
                         dtype: torch.dtype = torch.float32) -> Path:
    """Write the tiny ``variant`` checkpoint to ``path`` (one safetensors file, seeded and
    deterministic: same arguments, same bytes). Returns the path. LTX-2.5 ships as split
    files: use :func:`make_tiny_set` for it."""
    if normalize_variant(variant) in SPLIT_VARIANTS:
        raise ValueError(f"{variant} ships as split files (transformer, text encoder, video VAE, audio VAE): "
                         "use make_tiny_set(folder, variant) / --out FOLDER")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd, meta = tiny_state_dict(variant, seed, dtype)
    return save_safetensors(sd, path, meta)


# ---- split files (LTX-2.5) -----------------------------------------------------------------
# The file names and folders of ComfyUI's own LTX-2.5 templates (comfyui_workflow_templates:
# video_ltx2_5_t2v / video_ltx2_5_i2v; hosted at huggingface.co/Lightricks/LTX-2.5), and the
# stock loader that reads each: UNETLoader (Load Diffusion Model), CLIPLoader (type "ltxv"),
# VAELoader (video VAE, and the audio VAE too: ComfyUI's VAE tells it by its vocoder keys).
SPLIT_FILES_25 = {
    "transformer": ("diffusion_models", "ltx-2.5-22b-distilled-transformer-comfy-int8-convrot.safetensors"),
    "text_encoder": ("text_encoders", "gemma4-12b-with-proj-ltx-2.5-comfy-int8-convrot.safetensors"),
    "video_vae": ("vae", "ltx-2.5-video-vae-bf16.safetensors"),
    "audio_vae": ("vae", "ltx-2.5-audio-vae-bf16.safetensors"),
}
# the same set under names that cannot be mistaken for the real files (install checks)
TINY_SPLIT_FILES_25 = {part: (sub, f"ltx2-tiny-2.5-{part.replace('_', '-')}.safetensors")
                       for part, (sub, _) in SPLIT_FILES_25.items()}
GEMMA4_12B_HIDDEN = 3840  # Gemma 4 12B: 48 layers + embeddings, 3840 wide (the projection takes 3840·49, as Gemma 3's)


def tiny_split_state_dicts(variant: str = "ltx-2.5", seed: int = 0, dtype: torch.dtype = torch.float32
                           ) -> dict[str, tuple["OrderedDict[str, torch.Tensor]", dict]]:
    """{part: (state dict, metadata)} of the tiny split set — the same tensors as
    :func:`tiny_state_dict`, cut the way the real split files are:

    - ``transformer``: ``model.diffusion_model.*``; metadata ``config`` (``transformer`` +
      ``scheduler``), ``model_version``, ``gemma_source_checkpoint`` (JSON);
    - ``text_encoder``: the bundled ``text_embedding_projection.{video,audio}_aggregate_embed``
      (dual linear, with biases: what ComfyUI's ``sd_detect`` looks for beside Gemma 4 12B's
      weights — which have no tiny form, so the tiny file holds the projection alone);
    - ``video_vae``: the VAE's keys without the ``vae.`` prefix (VAELoader), ``config``
      with the ``vae`` section;
    - ``audio_vae``: ``audio_vae.*`` and ``vocoder.*`` (the audio VAE file holds the
      vocoder), ``config`` with ``audio_vae`` and ``vocoder``.
    """
    v = normalize_variant(variant)
    if v not in SPLIT_VARIANTS:
        raise ValueError(f"{variant} ships as one file: use make_tiny_checkpoint")
    sd, meta = tiny_state_dict(v, seed, dtype)
    cfg = json.loads(meta["config"])
    facts = json.loads(meta["tiny_ltx2"])
    mv = MODEL_VERSION_25
    parts: dict = {k: OrderedDict() for k in SPLIT_FILES_25}
    for k, t in sd.items():
        if k.startswith(DIFFUSION_PREFIX):
            parts["transformer"][k] = t
        elif k.startswith(TEXT_PROJECTION_PREFIX):
            parts["text_encoder"][k] = t
        elif k.startswith(VAE_PREFIX):
            parts["video_vae"][k[len(VAE_PREFIX):]] = t
        elif k.startswith((AUDIO_VAE_PREFIX, VOCODER_PREFIX)):
            parts["audio_vae"][k] = t
        else:
            raise AssertionError(f"key {k} belongs to no split file")
    out = {}
    for part, psd in parts.items():
        m = {"model_version": mv, "tiny_ltx2": json.dumps(dict(facts, part=part, file=SPLIT_FILES_25[part][1]))}
        if part == "transformer":
            m["config"] = json.dumps({"transformer": cfg["transformer"], "scheduler": cfg["scheduler"]})
            m["gemma_source_checkpoint"] = json.dumps(GEMMA_SOURCE_25)
        elif part == "video_vae":
            m["config"] = json.dumps({"vae": cfg["vae"]})
        elif part == "audio_vae":
            m["config"] = json.dumps({"audio_vae": cfg["audio_vae"], "vocoder": cfg["vocoder"]})
        out[part] = (psd, m)
    return out


def make_tiny_set(folder, variant: str = "ltx-2.5", seed: int = 0, dtype: torch.dtype = torch.float32,
                  tiny_names: bool = False) -> dict[str, Path]:
    """Write the tiny split set under ``folder`` as ComfyUI's ``models`` folder lays it out
    (``diffusion_models/``, ``text_encoders/``, ``vae/``) with the real files' names
    (``tiny_names``: ``ltx2-tiny-2.5-*.safetensors`` instead). Deterministic. Returns
    {part: path}."""
    folder = Path(folder)
    paths = {}
    names = TINY_SPLIT_FILES_25 if tiny_names else SPLIT_FILES_25
    for part, (psd, m) in tiny_split_state_dicts(variant, seed, dtype).items():
        sub, name = names[part]
        p = folder / sub / name
        p.parent.mkdir(parents=True, exist_ok=True)
        paths[part] = save_safetensors(psd, p, m)
    return paths


def quantize_checkpoint_fp8(sd: dict, meta: dict, prefix: str = "model.diffusion_model.transformer_blocks."):
    """The ComfyUI mixed-precision fp8 layout of a checkpoint (what ComfyUI's fp8 LTX-2
    checkpoints use): every transformer-block linear weight as float8_e4m3fn with a per-tensor
    ``weight_scale``, listed in the ``_quantization_metadata`` header. Returns
    ``(fp8 state dict, metadata, reference state dict)`` — the reference holds the same
    weights dequantized to float32, i.e. exactly what the fp8 model computes with."""
    out, ref, layers = {}, {}, {}
    for k, t in sd.items():
        if k.startswith(prefix) and k.endswith(".weight") and t.dim() == 2 and min(t.shape) >= 16:
            w = t.float()
            scale = (w.abs().max() / 448.0).clamp_min(1e-12)
            q = (w / scale).to(torch.float8_e4m3fn)
            layer = k[: -len(".weight")]
            out[k] = q
            out[layer + ".weight_scale"] = scale.reshape(())
            layers[layer] = {"format": "float8_e4m3fn"}
            ref[k] = (q.float() * scale).to(t.dtype)
        else:
            out[k] = t
            ref[k] = t
    m = dict(meta)
    m["_quantization_metadata"] = json.dumps({"format_version": "1.0", "layers": layers}, sort_keys=True)
    return out, m, ref


def make_tiny_cache(root, variant: str = "ltx-2.0", n: int = 2, seed: int = 0) -> Path:
    """A latent cache (what Encode Latents writes) for the tiny checkpoint: ``n`` samples of a
    64x64x9 bucket with audio and text conditioning of the tiny text encoder's true width —
    enough to run the Train node end to end without a text encoder (install check, demos)."""
    from .cache import LatentCache

    v = normalize_variant(variant)
    g = torch.Generator().manual_seed(seed)
    c = LatentCache(root)
    w = text_context_width(v, processed=False)
    for i in range(n):
        c.put("video", f"v{i}", {"latents": torch.randn(128, 2, 2, 2, generator=g),
                                 "first_frame": torch.randn(128, 1, 2, 2, generator=g)})
        c.put("audio", f"a{i}", {"latents": torch.randn(8, 9, 16, generator=g)})
        c.put("text", f"t{i}", {"context": torch.randn(7, w, generator=g)})
    c.put("text", "empty", {"context": torch.zeros(3, w)})
    c.manifest.samples = [dict(key=f"demo{i}#0", video=f"v{i}", audio=f"a{i}", text=f"t{i}", bucket="64x64x9",
                               fps=24.0, has_audio=True, caption=f"demo clip {i}") for i in range(n)]
    c.manifest.empty_text = "empty"
    c.save_manifest()
    return Path(root)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trainer_core.tiny_checkpoint",
                                 description="Write a tiny LTX-2 checkpoint with the real key structure.")
    ap.add_argument("--variant", default="ltx-2.0", help="ltx-2.0, ltx-2.3 or ltx-2.5")
    ap.add_argument("--out", required=True, help="output .safetensors path (ltx-2.5: a models folder; the split "
                                                 "files go into its diffusion_models/, text_encoders/, vae/)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--cache", default=None, help="also write a tiny latent cache for it into this folder")
    ap.add_argument("--tiny-names", action="store_true",
                    help="ltx-2.5: name the split files ltx2-tiny-2.5-*.safetensors, not as the real ones")
    a = ap.parse_args(argv)
    try:
        variant = normalize_variant(a.variant)
    except ValueError as e:
        ap.error(str(e))
    from safetensors import safe_open

    if variant in SPLIT_VARIANTS:
        ps = list(make_tiny_set(a.out, variant, a.seed, getattr(torch, a.dtype), tiny_names=a.tiny_names).values())
    else:
        ps = [make_tiny_checkpoint(a.out, variant, a.seed, getattr(torch, a.dtype))]
    for p in ps:
        with safe_open(str(p), framework="pt") as f:
            n = len(list(f.keys()))
        print(f"wrote {p} ({variant}, seed {a.seed}, {n} tensors, {p.stat().st_size / 1e6:.2f} MB)")
    if a.cache:
        print(f"wrote a tiny latent cache in {make_tiny_cache(a.cache, variant, seed=a.seed)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
