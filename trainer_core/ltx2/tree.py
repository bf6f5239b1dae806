"""A plain-torch LTX-2 audio-video transformer tree with the checkpoint's module names.

``build_tree(config)`` makes an ``nn.Module`` whose ``state_dict()`` keys are exactly the
checkpoint's ``model.diffusion_model.*`` keys with that prefix stripped, so a checkpoint
loads into it directly, LoRA targets resolve to the same names as on ComfyUI's model, and
``trainer_core.ltx2.forward`` runs over it unchanged. The modules hold weights only: the
computation lives in ``forward.py`` (the tree's own ``forward`` runs it).

Used by tests without ComfyUI and by headless runs.
"""
from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from .config import PREFIX, LTX2Config, read_checkpoint_config


class Attention(nn.Module):
    """Weights of one attention (names as in the checkpoint)."""

    def __init__(self, query_dim: int, heads: int, dim_head: int, context_dim: Optional[int] = None,
                 gated: bool = False):
        super().__init__()
        inner = heads * dim_head
        context_dim = query_dim if context_dim is None else context_dim
        self.heads, self.dim_head = heads, dim_head
        self.q_norm = nn.RMSNorm(inner, eps=1e-5)
        self.k_norm = nn.RMSNorm(inner, eps=1e-5)
        self.to_q = nn.Linear(query_dim, inner, bias=True)
        self.to_k = nn.Linear(context_dim, inner, bias=True)
        self.to_v = nn.Linear(context_dim, inner, bias=True)
        self.to_gate_logits = nn.Linear(query_dim, heads, bias=True) if gated else None
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim, bias=True), nn.Dropout(0.0))


class _GeluProj(nn.Module):
    def __init__(self, dim_in: int, dim_out: int, bias: bool = True):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out, bias=bias)


class FeedForward(nn.Module):
    """GELU-tanh MLP; ``bias=False`` drops both linears' biases (LTX-2.5's ``ff_bias``)."""

    def __init__(self, dim: int, mult: int = 4, bias: bool = True):
        super().__init__()
        self.net = nn.Sequential(_GeluProj(dim, dim * mult, bias), nn.Dropout(0.0),
                                 nn.Linear(dim * mult, dim, bias=bias))


class _TimestepEmbedder(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(256, dim)
        self.linear_2 = nn.Linear(dim, dim)


class _Emb(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.timestep_embedder = _TimestepEmbedder(dim)


class AdaLNSingle(nn.Module):
    """Timestep σ·1000 -> sinusoid(256) -> MLP (``emb``) -> SiLU -> ``linear`` (k·dim)."""

    def __init__(self, dim: int, coefficient: int):
        super().__init__()
        self.emb = _Emb(dim)
        self.linear = nn.Linear(dim, coefficient * dim)


class PixArtTextProjection(nn.Module):
    """LTX-2.0: caption projection after the connectors (linear, GELU-tanh, linear)."""

    def __init__(self, in_features: int, hidden: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_features, hidden)
        self.linear_2 = nn.Linear(hidden, hidden)


class NormLinearTextProjection(nn.Module):
    """Caption projection before the connectors, inside the model (RMS norm, scale, linear)."""

    def __init__(self, in_features: int, hidden: int):
        super().__init__()
        self.in_norm = nn.RMSNorm(in_features, eps=1e-6, elementwise_affine=False)
        self.linear_1 = nn.Linear(in_features, hidden)
        self.in_features, self.hidden_size = in_features, hidden


class ConnectorBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, gated: bool):
        super().__init__()
        self.attn1 = Attention(dim, heads, dim_head, gated=gated)
        self.ff = FeedForward(dim)


class EmbeddingsConnector(nn.Module):
    def __init__(self, heads: int, dim_head: int, layers: int, registers: int, gated: bool, split_rope: bool):
        super().__init__()
        self.num_attention_heads = heads
        self.inner_dim = heads * dim_head
        self.num_learnable_registers = registers
        self.split_rope = split_rope
        self.double_precision_rope = True
        self.transformer_1d_blocks = nn.ModuleList(ConnectorBlock(self.inner_dim, heads, dim_head, gated)
                                                   for _ in range(layers))
        if registers:
            self.learnable_registers = nn.Parameter(torch.empty(registers, self.inner_dim))


class AVBlock(nn.Module):
    def __init__(self, c: LTX2Config):
        super().__init__()
        v, a = c.inner_dim, c.audio_inner_dim
        vh, ah, vd, ad = c.num_attention_heads, c.audio_num_attention_heads, c.attention_head_dim, c.audio_attention_head_dim
        g = c.apply_gated_attention
        self.attn1 = Attention(v, vh, vd, gated=g)
        self.audio_attn1 = Attention(a, ah, ad, gated=g)
        self.attn2 = Attention(v, vh, vd, context_dim=c.cross_attention_dim, gated=g)
        self.audio_attn2 = Attention(a, ah, ad, context_dim=c.audio_cross_attention_dim, gated=g)
        self.audio_to_video_attn = Attention(v, ah, ad, context_dim=a, gated=g)  # Q video, K/V audio
        self.video_to_audio_attn = Attention(a, ah, ad, context_dim=v, gated=g)  # Q audio, K/V video
        self.ff = FeedForward(v, bias=c.ff_bias)
        self.audio_ff = FeedForward(a, bias=c.audio_ff_bias)
        k = c.adaln_params
        self.scale_shift_table = nn.Parameter(torch.empty(k, v))
        self.audio_scale_shift_table = nn.Parameter(torch.empty(k, a))
        if c.cross_attention_adaln:
            self.prompt_scale_shift_table = nn.Parameter(torch.empty(2, v))
            self.audio_prompt_scale_shift_table = nn.Parameter(torch.empty(2, a))
        self.scale_shift_table_a2v_ca_audio = nn.Parameter(torch.empty(5, a))
        self.scale_shift_table_a2v_ca_video = nn.Parameter(torch.empty(5, v))


class LTX2AVTransformer(nn.Module):
    """The transformer's module tree (``diffusion_model``), built from an :class:`LTX2Config`.

    ``forward(video=..., audio=..., context=..., fps=...)`` runs the training forward of
    ``trainer_core.ltx2.forward`` (see there for the arguments).
    """

    def __init__(self, c: LTX2Config):
        super().__init__()
        self.ltx2_config = c
        v, a = c.inner_dim, c.audio_inner_dim
        self.patchify_proj = nn.Linear(c.in_channels, v)
        if c.use_keyframes_abs_pos_embedding:  # 2.5: added to single-pixel-frame tokens
            self.keyframes_abs_pos_embedding = nn.Parameter(torch.zeros(1, v))
        self.adaln_single = AdaLNSingle(v, c.adaln_params)
        if c.has_prompt_adaln:
            self.prompt_adaln_single = AdaLNSingle(v, 2)
        if not c.caption_proj_before_connector:
            self.caption_projection = PixArtTextProjection(c.caption_channels, v)
        elif c.caption_projection_first_linear:
            self.caption_projection = NormLinearTextProjection(c.caption_channels, v)
        self.audio_patchify_proj = nn.Linear(c.audio_in_channels, a)
        self.audio_adaln_single = AdaLNSingle(a, c.adaln_params)
        if c.has_prompt_adaln:
            self.audio_prompt_adaln_single = AdaLNSingle(a, 2)
        self.av_ca_video_scale_shift_adaln_single = AdaLNSingle(v, 4)
        self.av_ca_a2v_gate_adaln_single = AdaLNSingle(v, 1)
        self.av_ca_audio_scale_shift_adaln_single = AdaLNSingle(a, 4)
        self.av_ca_v2a_gate_adaln_single = AdaLNSingle(a, 1)
        if not c.caption_proj_before_connector:
            self.audio_caption_projection = PixArtTextProjection(c.caption_channels, a)
        elif c.caption_projection_first_linear:
            self.audio_caption_projection = NormLinearTextProjection(c.caption_channels, a)
        split = c.connector_rope_type == "split"
        self.audio_embeddings_connector = EmbeddingsConnector(
            c.audio_connector_num_attention_heads, c.audio_connector_attention_head_dim, c.connector_num_layers,
            c.connector_num_learnable_registers, c.connector_apply_gated_attention, split)
        self.video_embeddings_connector = EmbeddingsConnector(
            c.connector_num_attention_heads, c.connector_attention_head_dim, c.connector_num_layers,
            c.connector_num_learnable_registers, c.connector_apply_gated_attention, split)
        self.transformer_blocks = nn.ModuleList(AVBlock(c) for _ in range(c.num_layers))
        self.scale_shift_table = nn.Parameter(torch.empty(2, v))
        self.norm_out = nn.LayerNorm(v, elementwise_affine=False, eps=1e-6)
        self.proj_out = nn.Linear(v, c.in_channels)
        self.audio_scale_shift_table = nn.Parameter(torch.empty(2, a))
        self.audio_norm_out = nn.LayerNorm(a, elementwise_affine=False, eps=1e-6)
        self.audio_proj_out = nn.Linear(a, c.audio_in_channels)

    def forward(self, video=None, audio=None, *, context, fps: float = 25.0, checkpointing: bool = False, **kw):
        from .forward import forward_av

        return forward_av(self, video=video, audio=audio, context=context, fps=fps, checkpointing=checkpointing, **kw)


@torch.no_grad()
def init_weights(root: nn.Module, seed: int = 0, std: float = 0.02) -> nn.Module:
    """Random weights of sensible scale (tests, benchmarks): linear weights ~ N(0, 1/fan_in),
    AdaLN tables ~ N(0, 0.1²), connector registers ~ N(0, 1), norm weights 1, biases
    ~ N(0, std²). Works on any device (the draws are seeded per device)."""
    gens: dict = {}
    for name, p in root.named_parameters():
        g = gens.get(p.device)
        if g is None:  # one generator per device (fast on GPUs; CPU draws repeat exactly)
            g = gens[p.device] = torch.Generator(device=p.device).manual_seed(seed)
        if name.endswith("norm.weight"):
            p.fill_(1.0)
            continue
        s = std
        if p.ndim == 2 and not name.endswith("table") and "registers" not in name:
            s = 1.0 / math.sqrt(p.shape[1])
        if p.ndim == 2 and (name.endswith("scale_shift_table") or "table_a2v" in name):
            s = 0.1
        if "registers" in name:
            s = 1.0
        t = torch.randn(p.shape, generator=g, dtype=torch.float32, device=p.device) * s
        p.copy_(t.to(p.dtype))
    return root


def build_tree(config: LTX2Config, device=None, dtype: Optional[torch.dtype] = None, init: str = "random",
               seed: int = 0) -> LTX2AVTransformer:
    """The module tree for ``config``. ``init``: "random" (seeded, see :func:`init_weights`),
    "empty" (uninitialised storage) or "meta" (no storage; load with ``assign=True``)."""
    if init not in ("random", "empty", "meta"):
        raise ValueError(f"init must be random, empty or meta, not {init!r}")
    dev = torch.device("meta") if init == "meta" else (torch.device(device) if device is not None else None)
    with torch.device(dev) if dev is not None else contextlib.nullcontext():
        root = LTX2AVTransformer(config)
    if dtype is not None:
        root.to(dtype)
    if init == "random":
        init_weights(root, seed)
    return root


def load_tree_from_checkpoint(path, device="cpu", dtype: Optional[torch.dtype] = None) -> LTX2AVTransformer:
    """Build the tree from a checkpoint's ``config`` metadata and load its
    ``model.diffusion_model.*`` tensors (strict: a missing or unexpected key is an error)."""
    from safetensors import safe_open

    path = Path(path)
    config = read_checkpoint_config(path)
    root = build_tree(config, init="meta")
    sd = {}
    with safe_open(str(path), framework="pt", device=str(device)) as f:
        for k in f.keys():
            if k.startswith(PREFIX):
                t = f.get_tensor(k)
                sd[k[len(PREFIX):]] = t.to(dtype) if dtype is not None and t.is_floating_point() else t
    missing, unexpected = root.load_state_dict(sd, strict=False, assign=True)
    if missing or unexpected:
        raise ValueError(f"{path.name} does not match its own config ({config.variant}): "
                         f"{len(missing)} missing keys (e.g. {missing[:3]}), "
                         f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    for p in root.parameters():
        p.requires_grad_(False)
    return root


__all__ = ["LTX2AVTransformer", "build_tree", "load_tree_from_checkpoint", "init_weights"]
