"""The training forward of LTX-2's audio-video transformer: out of place, checkpoint-safe.

It runs over any module tree with the checkpoint's structure and names — ComfyUI's own
``LTXAVModel`` (``model.diffusion_model``) or :mod:`trainer_core.ltx2.tree` — using the
tree's modules and weights, and reproduces ComfyUI's forward (``LTXAVModel.forward`` with
``unprocessed_ltxav_embeds`` text) to float rounding. It differs from ComfyUI's code in
what matters for training:

- **No in-place update of any activation.** ComfyUI's blocks do ``vx.addcmul_(...)`` /
  ``vx.add_(...)`` on the residual stream after a norm saved it; under autograd that either
  raises, or — with per-block activation checkpointing, whose recomputation re-reads the
  mutated block input — silently gives wrong gradients. Here every residual update makes a
  new tensor.
- **Every linear layer is called as a module** (``mod(x)``), never ``F.linear`` on its
  weight, so LoRA forward hooks (``trainer_core.lora``) and ComfyUI's weight casting and
  patching see every call. RMS norms with weights (q/k norms) are called as modules too.
- **Per-block activation checkpointing** (``torch.utils.checkpoint``, ``use_reentrant=False``,
  RNG state preserved so LoRA dropout repeats in the recomputation).
- **Runs under** ``torch.inference_mode(False)`` + ``enable_grad`` even when called inside
  ComfyUI's inference mode, and never saves an inference tensor for backward: inputs that
  are inference tensors are cloned, and the tree's weights are checked (see
  :func:`ensure_trainable_weights`).
- **Timestep modulation is kept compact**: AdaLN embeddings are computed once per distinct
  σ (a batch has a handful: one per sample, plus 0 for conditioning tokens) and gathered
  per token inside each block, instead of materialising ``[B, N, 9·4096]`` tensors.
- **RoPE tables** are computed once per (grid, fps, device, dtype) and cached.

σ and the model's timestep
--------------------------
ComfyUI's LTX-2 uses flow ("CONST") sampling whose ``timestep(σ) = σ``; the transformer
multiplies by ``timestep_scale_multiplier`` (1000) before the sinusoidal embedding. So the
per-token σ ∈ [0, 1] of the training objective is exactly the model's per-token timestep
input: AdaLN sees 1000·σ, conditioning tokens (σ = 0) see 0. The model predicts the flow
velocity ε − x₀ (ComfyUI's denoised = x − σ·v). The audio–video cross-attention AdaLN
follows Lightricks' formulation (ltx-core's ``MultiModalTransformerArgsPreprocessor``, and
ComfyUI since its May 2026 fix, 0.33 here): each stream's scale/shift AdaLN takes that
stream's own per-token timestep σ·1000; the gate AdaLN of the attention into a stream takes
the *other* stream's σ·1000 times ``av_ca_timestep_scale_multiplier /
timestep_scale_multiplier``. The other stream's σ is per sample (its largest token σ, which
is the sample's drawn σ: conditioning tokens have 0), as ltx-core's ``Modality.sigma``;
ComfyUI takes the maximum over the whole batch, which is the same whenever the samples of a
batch share their σ (always, in ComfyUI sampling). ComfyUI before that fix (e.g. 0.20.1)
fed the other stream's raw maximum σ to the scale/shift: 16–24 % output error on A+V.

Modes
-----
- video + audio: both streams, text cross-attention, and both cross-modal attentions.
- video only (``audio=None``): ComfyUI's behaviour with an empty audio latent: the video
  stream alone, no cross-modal attention.
- audio only (``video=None``): the audio stream alone, no cross-modal attention — ComfyUI's
  ``LTXAVModel`` with ``transformer_options={"run_vx": False, "v2a_cross_attn": False}``
  (whose audio output does not depend on the video latent), and Lightricks' audio-only
  model.
- video → audio / audio → video: the video + audio forward with σ = 0 on every token of the
  given modality (the engine then takes no loss on it).

LTX-2.5
-------
``ff_bias`` false: the video feed-forward has no biases (the modules say so; nothing to do
here). ``use_keyframes_abs_pos_embedding``: the learned [1, D] vector is added right after
``patchify_proj`` to the tokens of the first latent frame (:func:`keyframes_mask`), as
ComfyUI's ``apply_keyframes_abs_pos_embedding`` and ltx-core's
``apply_keyframes_absolute_embedding`` do. ``use_prompt_adaln_single`` false (no prompt
AdaLN MLPs): the text cross-attention's K/V modulation is the per-block
``prompt_scale_shift_table`` alone, as in ltx-core (ComfyUI 0.33 builds such a model but
its forward raises: ``apply_cross_attention_adaln`` reshapes the missing prompt timestep).
With the MLPs (the default), the prompt timestep is the sample's largest token σ·1000, as in
ComfyUI (``compute_prompt_timestep``) and ltx-core (``Modality.sigma``).

Not supported (yet): ComfyUI's keyframe / guide tokens (``keyframe_idxs``, guide attention
masks), reference audio (``ref_audio``), text attention masks (ComfyUI's LTX-2 text encoder
gives none: the connectors replace padding with their learnable registers).

This module never imports ComfyUI.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..lora import projection_group
from .config import LTX2Config

AUDIO_SAMPLE_RATE = 16000
AUDIO_HOP_LENGTH = 160
AUDIO_LATENT_DOWNSAMPLE = 4
CONNECTOR_MAX_POS = 4096
CONNECTOR_MIN_TOKENS = 1024
ROPE_THETA = 10000.0  # ComfyUI's LTX-2 blocks always use 10000 (the config's theta is not read)


class InferenceWeightsError(RuntimeError):
    pass


# ============================================================================ weights

def _unusable(t: Optional[torch.Tensor]) -> bool:
    """True for an inference tensor, and for a tensor that lost its version counter to
    inference mode: a parameter created inside ``torch.inference_mode`` whose ``.data`` was
    later replaced outside it (``Module.to()`` does that) reports ``is_inference() == False``
    but cannot be viewed (``weight.t()`` in a 3-D ``F.linear`` on CUDA) or saved for backward."""
    if t is None:
        return False
    if t.is_inference():
        return True
    try:
        t._version
    except RuntimeError:
        return True
    return False


def find_inference_tensors(root: nn.Module) -> list[str]:
    """Names of parameters and buffers under ``root`` that are inference tensors (or lost
    their version counter to inference mode)."""
    out = [n for n, p in root.named_parameters() if _unusable(p)]
    out += [n for n, b in root.named_buffers() if _unusable(b)]
    return out


def ensure_trainable_weights(root: nn.Module) -> int:
    """Replace every parameter and buffer of ``root`` that is an inference tensor (ComfyUI
    loads models inside ``torch.inference_mode``) by a normal copy, in place on its module
    (``module._parameters[name]``), keeping ``requires_grad``. Returns how many were
    replaced. Inference tensors cannot be saved for backward, and a frozen layer's weight
    is saved whenever its input needs a gradient (every layer a LoRA sits above).

    Each tensor is cloned and swapped one at a time, so the extra memory is one tensor.
    Safe to call every step: when nothing is an inference tensor it only scans.
    """
    n = 0
    with torch.inference_mode(False), torch.no_grad():
        for mod in root.modules():
            for name, p in list(mod._parameters.items()):
                if _unusable(p):
                    if _is_quantized(p) and not _unusable(p._qdata):
                        # a quantized weight whose storage is fine: a new wrapper, no copy
                        new = p._copy_with(qdata=p._qdata, clone_params=False)
                    else:
                        new = p.clone()
                    mod._parameters[name] = nn.Parameter(new, requires_grad=p.requires_grad)
                    n += 1
            for name, b in list(mod._buffers.items()):
                if _unusable(b):
                    mod._buffers[name] = b.clone()
                    n += 1
    return n


def _is_quantized(t: torch.Tensor) -> bool:
    """ComfyUI's quantized weights (fp8 checkpoints): a tensor subclass over ``_qdata``."""
    return type(t) not in (torch.Tensor, nn.Parameter) and hasattr(t, "_qdata") and hasattr(t, "_copy_with")


def quantized_weights_for_inference(root: nn.Module) -> int:
    """Before ComfyUI runs the model its own way (sampling validation previews): give every
    quantized weight an inference-mode wrapper over the same storage (no copy). ComfyUI moves
    weights inside ``torch.inference_mode`` and re-wraps them as parameters there, which a
    quantized weight made trainable (outside inference mode) cannot survive. Afterwards
    ``ensure_trainable_weights`` swaps trainable wrappers back in, again without copying."""
    n = 0
    with torch.inference_mode(), torch.no_grad():
        for mod in root.modules():
            for name, p in list(mod._parameters.items()):
                if p is not None and _is_quantized(p) and not p.is_inference():
                    mod._parameters[name] = nn.Parameter(p._copy_with(qdata=p._qdata, clone_params=False),
                                                         requires_grad=False)
                    n += 1
    return n


def _normal(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """A tensor autograd may save: clone inference tensors (called outside inference mode)."""
    if t is None or not torch.is_tensor(t) or not t.is_inference():
        return t
    return t.clone()


# ============================================================================ small ops

def rms(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return F.rms_norm(x, (x.shape[-1],), eps=eps)


def timestep_sinusoid(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """[U] -> [U, dim]: cos then sin (flip_sin_to_cos, no frequency shift), float32."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    args = t[:, None].float() * torch.exp(exponent)[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def adaln(mod: nn.Module, t: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """AdaLayerNormSingle over timesteps ``t`` [U] -> (modulation [U, k·D], embedding [U, D])."""
    te = mod.emb.timestep_embedder
    e = te.linear_2(F.silu(te.linear_1(timestep_sinusoid(t).to(dtype))))
    return mod.linear(F.silu(e)), e


def feed_forward(ff: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return ff.net[2](F.gelu(ff.net[0].proj(x), approximate="tanh"))


# ---------------------------------------------------------------------------- RoPE

@dataclass(frozen=True)
class Rope:
    cos: torch.Tensor
    sin: torch.Tensor
    split: bool  # split: [B|1, H, T, D/2]; interleaved: [B|1, T, H·D]


def apply_rope(x: torch.Tensor, pe: Rope, heads: int) -> torch.Tensor:
    b, t, c = x.shape
    if pe.split:
        xh = x.view(b, t, heads, c // heads).transpose(1, 2)  # [B, H, T, D]
        x1, x2 = xh.chunk(2, dim=-1)
        o1 = x1 * pe.cos - x2 * pe.sin
        o2 = x2 * pe.cos + x1 * pe.sin
        return torch.cat([o1, o2], dim=-1).transpose(1, 2).reshape(b, t, c)
    xp = x.view(b, t, c // 2, 2)
    rot = torch.stack([-xp[..., 1], xp[..., 0]], dim=-1).view(b, t, c)
    return x * pe.cos + rot * pe.sin


def _freq_grid(n_pos_dims: int, dim: int, float64: bool, device) -> torch.Tensor:
    """The RoPE frequency grid, computed as ComfyUI does (float64 via numpy, or float32)."""
    count = dim // (2 * n_pos_dims)
    if float64:
        try:
            import numpy as np

            g = np.power(ROPE_THETA, np.linspace(0.0, 1.0, count, dtype=np.float64))
            return torch.tensor(g * math.pi / 2, dtype=torch.float32, device=device)
        except ImportError:  # pragma: no cover - numpy ships with torch installs in practice
            g = torch.pow(torch.tensor(ROPE_THETA, dtype=torch.float64), torch.linspace(0.0, 1.0, count, dtype=torch.float64))
            return (g * math.pi / 2).to(device=device, dtype=torch.float32)
    e = torch.linspace(math.log(1, ROPE_THETA), math.log(ROPE_THETA, ROPE_THETA), count, device=device,
                       dtype=torch.float32)
    return (ROPE_THETA ** e).to(torch.float32) * math.pi / 2


def rope_tables(positions: torch.Tensor, dim: int, heads: int, max_pos: Sequence[float], use_middle: bool,
                split: bool, float64: bool, out_dtype: torch.dtype, freq_grid: Optional[torch.Tensor] = None) -> Rope:
    """positions [B, n, T, 2] (start, end) or [B, n, T] -> cos/sin tables for ``dim`` channels."""
    n = positions.shape[1]
    if positions.ndim == 4:
        grid = (positions[..., 0] + positions[..., 1]) / 2.0 if use_middle else positions[..., 0]
    else:
        grid = positions
    frac = torch.stack([grid[:, i] / max_pos[i] for i in range(n)], dim=-1)  # [B, T, n]
    ind = freq_grid if freq_grid is not None else _freq_grid(n, dim, float64, positions.device)
    ind = ind.to(frac.device)
    freqs = (ind * (frac.unsqueeze(-1) * 2 - 1)).transpose(-1, -2).flatten(2)  # [B, T, K·n]
    cos, sin = freqs.cos(), freqs.sin()
    if split:
        pad = dim // 2 - freqs.shape[-1]
        if pad:
            cos = torch.cat([torch.ones_like(cos[..., :pad]), cos], dim=-1)
            sin = torch.cat([torch.zeros_like(sin[..., :pad]), sin], dim=-1)
        b, t, h2 = cos.shape
        cos = cos.reshape(b, t, heads, h2 // heads).transpose(1, 2)
        sin = sin.reshape(b, t, heads, h2 // heads).transpose(1, 2)
    else:
        cos, sin = cos.repeat_interleave(2, dim=-1), sin.repeat_interleave(2, dim=-1)
        pad = dim % (2 * n)
        if pad:
            cos = torch.cat([torch.ones_like(cos[..., :pad]), cos], dim=-1)
            sin = torch.cat([torch.zeros_like(sin[..., :pad]), sin], dim=-1)
    return Rope(cos.to(out_dtype).contiguous(), sin.to(out_dtype).contiguous(), split)


def video_positions(grid: tuple, c: LTX2Config, fps: float, device) -> torch.Tensor:
    """[1, 3, F·H·W, 2] float32: (start, end) in seconds (time) and pixels (space), token order
    f-major then h then w — ComfyUI's patchifier order and the engine's ``video_to_tokens``."""
    f, h, w = grid
    ff, hh, ww = torch.meshgrid(torch.arange(f, device=device), torch.arange(h, device=device),
                                torch.arange(w, device=device), indexing="ij")
    start = torch.stack([ff, hh, ww]).reshape(3, -1)  # int64 latent coordinates
    coords = torch.stack([start, start + 1], dim=-1).unsqueeze(0)  # [1, 3, N, 2]
    scale = torch.tensor(c.vae_scale_factors, device=device).view(1, 3, 1, 1)
    pix = coords * scale
    if c.causal_temporal_positioning:
        t = (pix[:, 0] + 1 - c.vae_scale_factors[0]).clamp(min=0)
        pix = torch.cat([t.unsqueeze(1), pix[:, 1:]], dim=1)
    pix = pix.to(torch.float32)
    return torch.cat([(pix[:, 0] * (1.0 / fps)).unsqueeze(1), pix[:, 1:]], dim=1)


def keyframes_mask(grid: tuple, c: LTX2Config, device) -> torch.Tensor:
    """[N] bool: the video tokens that get LTX-2.5's ``keyframes_abs_pos_embedding`` — those
    whose latent encodes a single standalone pixel frame, told as ComfyUI tells them
    (``keyframes_abs_pos_mask``): temporal start == 0 in pixel coordinates. The causal video
    VAE's first latent frame covers one pixel frame, so with or without causal temporal
    positioning this is latent frame 0 (ltx-core's ``keyframes_mask``: the target's first
    latent frame). The training forward has no guide / keyframe-slot tokens, which both mark
    otherwise."""
    return video_positions(grid, c, 1.0, device)[0, 0, :, 0] == 0


def audio_positions(t: int, device) -> torch.Tensor:
    """[1, 1, T, 2] float32: (start, end) of each audio latent in seconds (causal mel frames)."""
    def secs(a, b):
        frame = torch.arange(a, b, dtype=torch.float32, device=device)
        mel = (frame * AUDIO_LATENT_DOWNSAMPLE + 1 - AUDIO_LATENT_DOWNSAMPLE).clip(min=0)
        return mel * AUDIO_HOP_LENGTH / AUDIO_SAMPLE_RATE

    return torch.stack([secs(0, t), secs(1, t + 1)], dim=-1).view(1, 1, t, 2)


# ---------------------------------------------------------------------------- attention

_SDPA_ORDER: Any = False


def _sdpa_order():
    """SDPA backends in the order the training forward prefers them on CUDA: cuDNN's fused
    attention first (H200, 19B video self-attention at 6144 tokens, forward + backward: 3.9 ms
    against 7.1 ms for FlashAttention-2 — bench/results/micro_attention_H200.json), then
    Flash, memory-efficient, math; SDPA skips any backend that cannot take the inputs.
    ``LTX2_TRAINER_SDPA=default`` keeps PyTorch's own order."""
    global _SDPA_ORDER
    if _SDPA_ORDER is False:
        import os

        if os.environ.get("LTX2_TRAINER_SDPA", "cudnn").strip().lower() == "default":
            _SDPA_ORDER = None
        else:
            _SDPA_ORDER = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                           SDPBackend.MATH]
    return _SDPA_ORDER


def _qkv(attn: nn.Module, x: torch.Tensor, context: Optional[torch.Tensor]):
    """The q, k, v projections (before the norms), with an attached LoRA's adapters: through
    its projection groups where it has them (one down-projection for the layers that share an
    input, see trainer_core.lora.ProjectionGroup), else through each layer's hook."""
    if context is None:
        g = projection_group(attn, "qkv")
        if g is not None:
            return tuple(g.outputs(x))
        ctx = x
    else:
        ctx = context
    g = projection_group(attn, "kv")
    if g is not None:
        k, v = g.outputs(ctx)
        return attn.to_q(x), k, v
    return attn.to_q(x), attn.to_k(ctx), attn.to_v(ctx)


def attention(attn: nn.Module, x: torch.Tensor, context: Optional[torch.Tensor] = None,
              pe: Optional[Rope] = None, k_pe: Optional[Rope] = None,
              mask: Optional[torch.Tensor] = None, sp: Any = None) -> torch.Tensor:
    """One LTX-2 attention over ``attn``'s modules: q/k RMS norms, RoPE, SDPA, per-head gates.
    ``sp``: a sequence-parallel :class:`~trainer_core.distributed.Dist` — ``x`` is this rank's
    slice of the tokens and the self-attention runs over the whole sequence (Ulysses)."""
    heads = attn.heads
    q, k, v = _qkv(attn, x, context)
    q, k = attn.q_norm(q), attn.k_norm(k)
    if pe is not None:
        q = apply_rope(q, pe, heads)
        k = apply_rope(k, pe if k_pe is None else k_pe, heads)
    b, tq, c = q.shape
    tk = k.shape[1]
    d = c // heads
    qh, kh, vh = (q.view(b, tq, heads, d).transpose(1, 2), k.view(b, tk, heads, d).transpose(1, 2),
                  v.view(b, tk, heads, d).transpose(1, 2))
    order = _sdpa_order() if q.is_cuda else None
    if sp is not None and sp.active and context is None and mask is None:
        from ..distributed import ulysses_attention

        def sdpa(qq, kk, vv):
            if order is None:
                return F.scaled_dot_product_attention(qq, kk, vv)
            with sdpa_kernel(order, set_priority=True):
                return F.scaled_dot_product_attention(qq, kk, vv)

        o = ulysses_attention(q.view(b, tq, heads, d), k.view(b, tk, heads, d), v.view(b, tk, heads, d), sp,
                              attn=sdpa).reshape(b, tq, c)
    elif order is not None:
        with sdpa_kernel(order, set_priority=True):
            o = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask).transpose(1, 2).reshape(b, tq, c)
    else:
        o = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask).transpose(1, 2).reshape(b, tq, c)
    gl = getattr(attn, "to_gate_logits", None)
    if gl is not None:
        g = 2.0 * torch.sigmoid(gl(x))  # [B, T, H]; zero-initialised logits -> identity
        o = (o.view(b, tq, heads, d) * g.unsqueeze(-1)).view(b, tq, c)
    return attn.to_out[0](o)


# ---------------------------------------------------------------------------- modulation

class Mod:
    """AdaLN modulation kept per distinct timestep: ``values`` [U, P·D] and ``index`` [B, N]
    (per-token σ), or ``values`` [B, 1, P·D] with ``index`` None (one value per sample)."""

    def __init__(self, values: torch.Tensor, index: Optional[torch.Tensor], params: int):
        self.values, self.index, self.params = values, index, params

    def get(self, table: torch.Tensor, sl: slice = slice(None)) -> tuple[torch.Tensor, ...]:
        """(table[sl] + values[:, sl]) gathered to tokens: a tuple of [B, N|1, D] tensors."""
        v = self.values
        tab = table[sl].to(device=v.device, dtype=v.dtype)
        if self.index is None:
            b = v.shape[0]
            m = tab.unsqueeze(0).unsqueeze(0) + v.view(b, 1, self.params, -1)[:, :, sl]
            return m.unbind(dim=2)
        u = v.shape[0]
        m = tab.unsqueeze(0) + v.view(u, self.params, -1)[:, sl]  # [U, k, D]
        return m[self.index].unbind(dim=2)  # [B, N, k, D] -> k × [B, N, D]


def sigma_slots(batch: int) -> int:
    """The σ table's size for a batch: 2·B — each sample's σ and 0 for its conditioning
    tokens, which is every mode's case."""
    return 2 * max(batch, 1)


def sigma_levels(u: torch.Tensor, batch: int) -> torch.Tensor:
    """The distinct σ of a batch, padded (with copies of the first) to a size that depends on
    the batch alone: :func:`sigma_slots`, or the next power of two above a larger count. The modulation tables (and
    with them the compiled blocks' input shapes) then stay the same from step to step, where
    the count alone would change with each draw of first-frame conditioning and make
    torch.compile build the blocks again (dynamo compiles with static shapes). On an H200, 19B
    at 512×512×33, nothing recompiles after the first step with the padding; the long second
    step of a CUDA-graph run (60–70 s) is the graphs being recorded, not a rebuild
    (bench/results/engine_step_H200_round6_logs.txt). The padded levels are never indexed."""
    n = int(u.numel())
    size = sigma_slots(batch)
    if n > size:
        size = 1 << (n - 1).bit_length()
    if n < size:
        u = torch.cat([u, u[:1].expand(size - n)])
    return u


def levels_on_device(flat: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``sigma_levels(torch.unique(flat), ...)`` and its inverse index, computed without
    reading the count back: a sort, the first of each run of equal values scattered into
    ``size`` slots (the rest copies of the first level). ``torch.unique`` on a GPU waits for
    everything queued before it (its output size comes back to the host), which kept the
    CPU from queueing a step while the GPU still ran the last. Returns (levels [size],
    index into them, like ``flat``). More than ``size`` distinct values make every level NaN:
    a wrong table never trains silently (every mode's σ takes at most two values a sample,
    its σ and 0, checked for each mode preset by the tests)."""
    s, order = torch.sort(flat)
    new = torch.ones_like(s, dtype=torch.bool)
    new[1:] = s[1:] != s[:-1]
    group = torch.cumsum(new, 0) - 1
    group = group.clamp(max=size - 1)  # (only an overflow has more: its levels become NaN below)
    index = torch.empty_like(group).scatter_(0, order, group)
    levels = s[:1].expand(size).clone()
    levels.scatter_(0, group, s)  # equal values per slot: any write order
    overflow = new.sum() > size
    return torch.where(overflow, torch.full_like(levels, float("nan")), levels), index


def sigma_table(sigma_scaled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(distinct σ levels, padded by :func:`sigma_levels`; each token's index into them) of
    σ [B, N]. On a GPU without a read-back (:func:`levels_on_device`, 2·B levels: every
    mode's case); elsewhere ``torch.unique``, exact for any count."""
    flat = sigma_scaled.reshape(-1)
    batch = sigma_scaled.shape[0]
    if flat.is_cuda:
        u, inv = levels_on_device(flat, sigma_slots(batch))
    else:
        u, inv = torch.unique(flat, return_inverse=True)
        u = sigma_levels(u, batch)
    return u, inv.view(sigma_scaled.shape)


def _per_token_mod(mod: nn.Module, sigma_scaled: torch.Tensor, dtype, params: int):
    """(Mod of the block modulation, Mod-like (values, index) of the embedding) for σ [B, N]."""
    u, index = sigma_table(sigma_scaled)
    values, emb = adaln(mod, u, dtype)
    return Mod(values, index, params), Mod(emb, index, 1)


def _per_sample_mod(mod: nn.Module, t: torch.Tensor, dtype, params: int) -> Mod:
    values, _ = adaln(mod, t, dtype)
    return Mod(values.view(t.shape[0], 1, -1), None, params)


# ============================================================================ text

def connect_text(root: nn.Module, c: LTX2Config, context: torch.Tensor, dtype: torch.dtype,
                 unprocessed: bool = True, connectors_grad: Optional[bool] = None,
                 lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The text encoder's cached output [B, L, D] through the model's connectors (and, for
    LTX-2.3 and later, the caption projection before them): the text as a cache written after
    the connectors holds it, [B, T, video + audio width], T the same for every caption of up to
    1024 tokens. A context that already is that (``unprocessed`` False) comes back as it is.
    ``lengths``: see :func:`prepare_text`."""
    if lengths is not None:
        lens = [int(v) for v in lengths.reshape(-1).tolist()]
        if len(lens) != context.shape[0]:
            raise ValueError(f"{len(lens)} text lengths for a batch of {context.shape[0]}")
        if any(n != context.shape[1] for n in lens):
            parts = [connect_text(root, c, context[i:i + 1, :n], dtype, unprocessed, connectors_grad)
                     for i, n in enumerate(lens)]
            if len({p.shape[1] for p in parts}) > 1:
                raise ValueError(
                    f"captions of {', '.join(map(str, lens))} tokens cannot share a batch: their prepared text "
                    f"has different lengths ({', '.join(str(p.shape[1]) for p in parts)} tokens; captions "
                    f"over {CONNECTOR_MIN_TOKENS} tokens, or text cached after the connectors). Shorten those "
                    "captions or train with batch size 1")
            return torch.cat(parts)
    context = context.to(dtype)
    if connectors_grad is None:
        connectors_grad = _has_hooks(root.video_embeddings_connector) or _has_hooks(root.audio_embeddings_connector)
    both = c.cross_attention_dim + c.audio_cross_attention_dim
    processed = (not unprocessed) and context.shape[-1] in (both, c.caption_channels * 2)
    if not processed:
        w = context.shape[-1]
        if c.caption_proj_before_connector and c.caption_projection_first_linear:
            ok = w in (both, c.caption_channels)
        else:
            ok = w == both or (w == c.video_connector_dim == c.audio_connector_dim)
        if not ok:
            raise ValueError(f"text context has width {w}; this LTX-2 {c.variant} model takes "
                             f"{both if c.caption_proj_before_connector else c.video_connector_dim}: the cached "
                             "conditioning was made for another LTX-2 variant — re-encode the captions with this "
                             "model's text encoder")
        if context.shape[-1] == both:
            cv, ca = context[..., :c.cross_attention_dim], context[..., c.cross_attention_dim:]
        else:
            cv = ca = context
        with torch.set_grad_enabled(connectors_grad and torch.is_grad_enabled()):
            if c.caption_proj_before_connector and c.caption_projection_first_linear:
                cv = _norm_linear_projection(root.caption_projection, cv)
                ca = _norm_linear_projection(root.audio_caption_projection, ca)
            cv = connector(root.video_embeddings_connector, c, cv)
            ca = connector(root.audio_embeddings_connector, c, ca)
        context = torch.cat([cv, ca], dim=-1)
    return context


def prepare_text(root: nn.Module, c: LTX2Config, context: torch.Tensor, dtype: torch.dtype,
                 unprocessed: bool = True, connectors_grad: Optional[bool] = None,
                 lengths: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The text encoder's cached output [B, L, D] -> (video context, audio context) as the
    blocks' text cross-attention sees them (ComfyUI's ``preprocess_text_embeds`` followed by
    the model's context preparation: :func:`connect_text`, then the caption projections of
    LTX-2.0). The connectors are frozen: they run under no_grad unless a forward hook (a
    LoRA) sits on one of their modules.

    ``lengths`` [B]: the real tokens of each sample of a batch padded to its longest caption
    (:func:`trainer_core.engine.stack_texts`). Each sample is then prepared on its own tokens
    — the connectors put their learnable registers after them, to the same length for every
    caption of up to 1024 tokens — so the batch gets exactly what each sample gets alone."""
    context = connect_text(root, c, context, dtype, unprocessed, connectors_grad, lengths).to(dtype)
    vdim = c.caption_channels if not c.caption_proj_before_connector else c.inner_dim
    adim = c.caption_channels if not c.caption_proj_before_connector else c.audio_inner_dim
    if context.shape[-1] != vdim + adim:
        raise ValueError(f"text context has width {context.shape[-1]}, the model expects {vdim + adim} after its "
                         f"connectors: the cached conditioning was made for another LTX-2 variant")
    v_ctx, a_ctx = context[..., :vdim], context[..., vdim:]
    if not c.caption_proj_before_connector:
        v_ctx = _pixart_projection(root.caption_projection, v_ctx)
        a_ctx = _pixart_projection(root.audio_caption_projection, a_ctx)
    return v_ctx, a_ctx


def _pixart_projection(p: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return p.linear_2(F.gelu(p.linear_1(x), approximate="tanh"))


def _norm_linear_projection(p: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = p.in_norm(x) * (p.hidden_size / p.in_features) ** 0.5
    return p.linear_1(x)


def _has_hooks(m: nn.Module) -> bool:
    return any(sub._forward_hooks or sub._forward_pre_hooks for sub in m.modules())


_CONNECTOR_PE: "OrderedDict[tuple, Rope]" = OrderedDict()


def connector(conn: nn.Module, c: LTX2Config, h: torch.Tensor) -> torch.Tensor:
    """Embeddings1DConnector: pad with learnable registers, 1-D RoPE self-attention blocks,
    final RMS norm."""
    b, l, dim = h.shape
    regs = getattr(conn, "learnable_registers", None) if getattr(conn, "num_learnable_registers", 0) else None
    if regs is not None:
        r = regs.shape[0]
        reps = math.ceil(max(CONNECTOR_MIN_TOKENS, l) / r)
        tiled = torch.tile(regs.to(h), (reps, 1))
        h = torch.cat([h, tiled[l:].unsqueeze(0).expand(b, -1, -1)], dim=1)
    t = h.shape[1]
    heads = conn.num_attention_heads
    split = bool(getattr(conn, "split_rope", True))
    key = (t, dim, heads, split, h.device, h.dtype)
    pe = _CONNECTOR_PE.get(key)
    if pe is None:
        pos = torch.arange(t, dtype=torch.float32, device=h.device)[None, None, :]
        pe = rope_tables(pos, dim, heads, [CONNECTOR_MAX_POS], False, split, True, h.dtype)
        _CONNECTOR_PE[key] = pe
        while len(_CONNECTOR_PE) > 8:
            _CONNECTOR_PE.popitem(last=False)
    for blk in conn.transformer_1d_blocks:
        h = h + attention(blk.attn1, rms(h), pe=pe)
        h = h + feed_forward(blk.ff, rms(h))
    return rms(h)


# ============================================================================ blocks

@dataclass
class StreamArgs:
    context: torch.Tensor
    mod: Mod
    prompt: Optional[torch.Tensor]  # [B, 1, 2·D] (cross-attention AdaLN) or None
    pe: Rope
    cross_pe: Optional[Rope] = None
    cross_ss: Optional[Mod] = None  # scale/shift of the cross-modal attentions (4 params)
    cross_gate: Optional[Mod] = None  # gate of the attention into this stream (1 param)
    sp: Any = None  # sequence parallel (video only): this stream holds a slice of its tokens
    cross_k_pe: Optional[Rope] = None  # sequence parallel: the whole sequence's cross RoPE (as keys)


def _text_cross(x, args: StreamArgs, attn, table, prompt_table, cross_adaln: bool):
    if cross_adaln:
        shift_q, scale_q, gate = args.mod.get(table, slice(6, 9))
        b = x.shape[0]
        kv = prompt_table.to(device=x.device, dtype=x.dtype)[None, None]
        if args.prompt is not None:  # the prompt AdaLN MLP's σ-dependent part
            kv = kv + args.prompt.reshape(b, args.prompt.shape[1], 2, -1)
        # else (use_prompt_adaln_single false): the per-block table alone, as ltx-core
        shift_kv, scale_kv = kv.unbind(dim=2)
        q_in = rms(x) * (1 + scale_q) + shift_q
        ctx = args.context * (1 + scale_kv) + shift_kv
        return attention(attn, q_in, ctx) * gate
    return attention(attn, rms(x), args.context)


def block_forward(block: nn.Module, c: LTX2Config, vx: Optional[torch.Tensor], ax: Optional[torch.Tensor],
                  v: Optional[StreamArgs], a: Optional[StreamArgs]):
    """One BasicAVTransformerBlock, out of place. Returns (vx, ax)."""
    cross_adaln = c.cross_attention_adaln
    if vx is not None:
        t = block.scale_shift_table
        shift, scale = v.mod.get(t, slice(0, 2))
        h = attention(block.attn1, rms(vx) * (1 + scale) + shift, pe=v.pe, sp=v.sp)
        (gate,) = v.mod.get(t, slice(2, 3))
        vx = vx + h * gate
        vx = vx + _text_cross(vx, v, block.attn2, t, getattr(block, "prompt_scale_shift_table", None), cross_adaln)
    if ax is not None:
        t = block.audio_scale_shift_table
        shift, scale = a.mod.get(t, slice(0, 2))
        h = attention(block.audio_attn1, rms(ax) * (1 + scale) + shift, pe=a.pe)
        (gate,) = a.mod.get(t, slice(2, 3))
        ax = ax + h * gate
        ax = ax + _text_cross(ax, a, block.audio_attn2, t, getattr(block, "audio_prompt_scale_shift_table", None),
                              cross_adaln)
    if vx is not None and ax is not None:
        vn, an = rms(vx), rms(ax)  # both directions read the streams before either update
        ta, tv = block.scale_shift_table_a2v_ca_audio, block.scale_shift_table_a2v_ca_video
        a_ss = a.cross_ss.get(ta[:4])  # (scale a2v, shift a2v, scale v2a, shift v2a)
        v_ss = v.cross_ss.get(tv[:4])
        # audio -> video
        q_in = vn * (1 + v_ss[0]) + v_ss[1]
        kv_in = an * (1 + a_ss[0]) + a_ss[1]
        (g_v,) = v.cross_gate.get(tv[4:])
        a2v = attention(block.audio_to_video_attn, q_in, kv_in, pe=v.cross_pe, k_pe=a.cross_pe) * g_v
        # video -> audio
        q_in = an * (1 + a_ss[2]) + a_ss[3]
        kv_in = vn * (1 + v_ss[2]) + v_ss[3]
        k_pe = v.cross_pe
        if v.sp is not None and v.sp.active:  # the audio queries attend to the whole video
            from ..distributed import gather_seq

            kv_in, k_pe = gather_seq(kv_in, v.sp), v.cross_k_pe
        (g_a,) = a.cross_gate.get(ta[4:])
        v2a = attention(block.video_to_audio_attn, q_in, kv_in, pe=a.cross_pe, k_pe=k_pe) * g_a
        vx, ax = vx + a2v, ax + v2a
    if vx is not None:
        t = block.scale_shift_table
        shift, scale = v.mod.get(t, slice(3, 5))
        h = feed_forward(block.ff, rms(vx) * (1 + scale) + shift)
        (gate,) = v.mod.get(t, slice(5, 6))
        vx = vx + h * gate
    if ax is not None:
        t = block.audio_scale_shift_table
        shift, scale = a.mod.get(t, slice(3, 5))
        h = feed_forward(block.audio_ff, rms(ax) * (1 + scale) + shift)
        (gate,) = a.mod.get(t, slice(5, 6))
        ax = ax + h * gate
    return vx, ax


# ============================================================================ the model

class RopeCache:
    """RoPE tables per (stream, grid, fps, device, dtype), least recently used dropped."""

    def __init__(self, size: int = 8):
        self.size = size
        self._d: "OrderedDict[tuple, Any]" = OrderedDict()

    def get(self, key, make: Callable[[], Any]):
        if key in self._d:
            self._d.move_to_end(key)
            return self._d[key]
        val = make()
        if self.size > 0:
            self._d[key] = val
            while len(self._d) > self.size:
                self._d.popitem(last=False)
        return val

    def clear(self):
        self._d.clear()


_DEFAULT_ROPE_CACHE = RopeCache()


def _sigma_bn(sigma: torch.Tensor, b: int, n: int) -> torch.Tensor:
    sigma = sigma.to(torch.float32)
    if sigma.ndim == 0:
        sigma = sigma.expand(b)
    if sigma.ndim == 1:
        sigma = sigma.view(b, 1).expand(b, n)
    if tuple(sigma.shape) != (b, n):
        raise ValueError(f"σ has shape {tuple(sigma.shape)}; expected [{b}, {n}] (per token), [{b}] or a scalar")
    return sigma


def _with_reference(positions: torch.Tensor, ref_positions: torch.Tensor) -> torch.Tensor:
    """Reference positions in front of the target's, on a common batch size."""
    ref_positions = ref_positions.to(device=positions.device, dtype=positions.dtype)
    b = max(positions.shape[0], ref_positions.shape[0])
    return torch.cat([ref_positions.expand(b, *ref_positions.shape[1:]), positions.expand(b, *positions.shape[1:])], dim=2)


def forward_av(root: nn.Module, video: Optional[tuple] = None, audio: Optional[tuple] = None, *,
               context: torch.Tensor, fps: float = 25.0, checkpointing: bool = False,
               dtype: Optional[torch.dtype] = None, config: Optional[LTX2Config] = None,
               unprocessed_text: bool = True, rope_cache: Optional[RopeCache] = None,
               text: Optional[tuple] = None, block_fn: Optional[Callable] = None,
               modes: Optional[Sequence[str]] = None, streamer: Any = None, offloader: Any = None,
               video_reference: Optional[tuple] = None, audio_reference: Optional[tuple] = None,
               sp: Any = None, context_lengths: Optional[torch.Tensor] = None
               ) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """The LTX-2 audio-video transformer forward, out of place.

    video: (tokens [B, F·H·W, 128], σ [B, N] | [B] | scalar, (F, H, W)) or None
    audio: (tokens [B, T, 128], σ [B, T] | [B] | scalar, (T,)) or None
    context: the text encoder's output [B, L, D] (ComfyUI's ``cross_attn`` with
        ``unprocessed_ltxav_embeds``); or pass ``text=(video_ctx, audio_ctx)`` already prepared
        by :func:`prepare_text`. ``context_lengths`` [B]: each sample's real tokens when the
        captions of a batch were padded to the longest (see :func:`prepare_text`).
    fps: frame rate of the video latents' clip (RoPE time positions).
    checkpointing: recompute each block in backward (``use_reentrant=False``).
    dtype: compute dtype (defaults to the video/audio tokens' dtype).
    block_fn: the per-block function (default :func:`block_forward`; e.g. a compiled one).
    modes: per block "keep" (activations resident), "offload" (activations kept in host
        memory by ``offloader``) or "full" (recomputed in backward); overrides
        ``checkpointing`` (see :mod:`trainer_core.ltx2.memory`).
    streamer: a :class:`~trainer_core.ltx2.memory.BlockStreamer` whose ``enter(i)`` runs at
        the start of block ``i`` (forward and recomputation) to bring its weights in.
    offloader: an :class:`~trainer_core.ltx2.memory.ActivationOffloader` for the
        "offload" blocks (without one they run as "keep").
    video_reference / audio_reference: (tokens [B, R, 128], RoPE positions [1 | B, n, R, 2])
        of IC-LoRA reference latents (:func:`trainer_core.modes.reference_video_positions`,
        :func:`audio_positions`): put in front of the stream's tokens (ltx-trainer's order),
        clean (σ = 0), attending with them both ways; their outputs are dropped, so the
        returned velocities cover the target tokens only. Without them the path is unchanged.
    sp: sequence parallel over the video tokens (a :class:`~trainer_core.distributed.Dist`
        with several ranks, all given the same inputs): each rank runs a contiguous slice of
        the video tokens (reference included) through the blocks — Ulysses all-to-all around
        the video self-attention, the video keys/values gathered for video→audio, text and
        audio→video local; audio and text replicated. The video output is gathered, so every
        rank returns the whole prediction (each rank's LoRA gradient is then world × its share:
        all-reduce and divide by the world size, as the engine does).

    Returns (video velocity [B, N, 128] or None, audio velocity [B, T, 128] or None).
    Must run with gradients enabled and outside inference mode to be trainable (use
    :func:`make_predict`, which takes care of that).
    """
    if video is None and audio is None:
        raise ValueError("the LTX-2 forward needs video tokens, audio tokens or both")
    c = config or LTX2Config.from_module(root)
    cache = rope_cache or _DEFAULT_ROPE_CACHE
    ref = (video or audio)[0]
    device = ref.device
    dtype = dtype or ref.dtype
    b = ref.shape[0]
    tsm = c.timestep_scale_multiplier

    if text is None:
        v_ctx, a_ctx = prepare_text(root, c, context, dtype, unprocessed_text, lengths=context_lengths)
    else:
        v_ctx, a_ctx = text
    if v_ctx.shape[0] != b:
        raise ValueError(f"text context batch {v_ctx.shape[0]} != latent batch {b}")

    vx = ax = None
    v = a = None
    v_out_mod = a_out_mod = None
    sp_on = sp is not None and sp.active and video is not None
    if video is not None:
        tokens, sigma, grid = video
        grid = tuple(int(g) for g in grid)
        n = tokens.shape[1]
        if math.prod(grid) != n:
            raise ValueError(f"video grid {grid} has {math.prod(grid)} tokens, the input has {n}")
        vsig = _sigma_bn(sigma, b, n)
        if video_reference is not None:
            tokens = torch.cat([video_reference[0].to(tokens.dtype), tokens], dim=1)
            vsig = torch.cat([vsig.new_zeros(b, video_reference[0].shape[1]), vsig], dim=1)
        sl = slice(None)
        if sp_on:
            from ..distributed import seq_slice

            sl = seq_slice(tokens.shape[1], sp)
        vx = root.patchify_proj(tokens[:, sl].to(dtype))
        kf = getattr(root, "keyframes_abs_pos_embedding", None) if c.use_keyframes_abs_pos_embedding else None
        if kf is not None:
            mask = cache.get(("kf", grid, device, _ckey(c)), lambda: keyframes_mask(grid, c, device))
            if video_reference is not None:  # ltx-core marks the target's first frame only
                mask = torch.cat([mask.new_zeros(video_reference[0].shape[1]), mask])
            vx = vx + mask[sl].to(dtype).unsqueeze(-1) * kf.to(device=device, dtype=dtype)
        mod, v_out_mod = _per_token_mod(root.adaln_single, vsig * tsm, dtype, c.adaln_params)
        mod, v_out_mod = _slice_mod(mod, sl), _slice_mod(v_out_mod, sl)
        prompt = None
        if c.has_prompt_adaln:
            prompt = _per_sample_mod(root.prompt_adaln_single, (vsig * tsm).amax(dim=1), dtype, 2).values
        if video_reference is None:
            pe = cache.get(("v", grid, float(fps), device, dtype, _ckey(c)),
                           lambda: rope_tables(video_positions(grid, c, fps, device), c.inner_dim, c.num_attention_heads,
                                               c.positional_embedding_max_pos, c.use_middle_indices_grid,
                                               c.rope_type == "split", c.frequencies_precision == "float64", dtype))
        else:
            v_pos = _with_reference(video_positions(grid, c, fps, device), video_reference[1])
            pe = rope_tables(v_pos, c.inner_dim, c.num_attention_heads, c.positional_embedding_max_pos,
                             c.use_middle_indices_grid, c.rope_type == "split", c.frequencies_precision == "float64", dtype)
        v = StreamArgs(v_ctx.to(dtype), mod, prompt, _slice_rope(pe, sl), sp=sp if sp_on else None)
    if audio is not None:
        tokens, sigma, grid = audio
        t = tokens.shape[1]
        if tuple(int(g) for g in grid) != (t,):
            raise ValueError(f"audio grid {tuple(grid)} does not match {t} audio tokens")
        asig = _sigma_bn(sigma, b, t)
        if audio_reference is not None:
            tokens = torch.cat([audio_reference[0].to(tokens.dtype), tokens], dim=1)
            asig = torch.cat([asig.new_zeros(b, audio_reference[0].shape[1]), asig], dim=1)
        ax = root.audio_patchify_proj(tokens.to(dtype))
        mod, a_out_mod = _per_token_mod(root.audio_adaln_single, asig * tsm, dtype, c.adaln_params)
        prompt = None
        if c.has_prompt_adaln:
            prompt = _per_sample_mod(root.audio_prompt_adaln_single, (asig * tsm).amax(dim=1), dtype, 2).values
        if audio_reference is None:
            pe = cache.get(("a", t, device, dtype, _ckey(c)),
                           lambda: rope_tables(audio_positions(t, device), c.audio_inner_dim, c.audio_num_attention_heads,
                                               c.audio_positional_embedding_max_pos, c.use_middle_indices_grid,
                                               c.rope_type == "split", c.frequencies_precision == "float64", dtype))
        else:
            a_pos = _with_reference(audio_positions(t, device), audio_reference[1])
            pe = rope_tables(a_pos, c.audio_inner_dim, c.audio_num_attention_heads, c.audio_positional_embedding_max_pos,
                             c.use_middle_indices_grid, c.rope_type == "split", c.frequencies_precision == "float64", dtype)
        a = StreamArgs(a_ctx.to(dtype), mod, prompt, pe)
    if v is not None and a is not None:
        # Lightricks' formulation (ltx-core; ComfyUI since its May 2026 fix): each stream's
        # scale/shift from its own per-token timestep σ·1000, each gate from the other
        # stream's σ·1000 · av_ca/ts multiplier — per sample (ComfyUI takes the batch maximum)
        vmax, amax = vsig.amax(dim=1), asig.amax(dim=1)
        factor = c.av_ca_timestep_scale_multiplier / tsm
        a.cross_ss, _ = _per_token_mod(root.av_ca_audio_scale_shift_adaln_single, asig * tsm, dtype, 4)
        v.cross_ss, _ = _per_token_mod(root.av_ca_video_scale_shift_adaln_single, vsig * tsm, dtype, 4)
        v.cross_ss = _slice_mod(v.cross_ss, sl)
        v.cross_gate = _per_sample_mod(root.av_ca_a2v_gate_adaln_single, amax * tsm * factor, dtype, 1)
        a.cross_gate = _per_sample_mod(root.av_ca_v2a_gate_adaln_single, vmax * tsm * factor, dtype, 1)
        max_pos = [max(c.positional_embedding_max_pos[0], c.audio_positional_embedding_max_pos[0])]
        split, f64 = c.rope_type == "split", c.frequencies_precision == "float64"
        grid_v = tuple(int(g) for g in video[2])
        if video_reference is None:
            v.cross_pe = cache.get(("vx", grid_v, float(fps), device, dtype, _ckey(c)),
                                   lambda: rope_tables(video_positions(grid_v, c, fps, device)[:, 0:1], c.audio_cross_attention_dim,
                                                       c.audio_num_attention_heads, max_pos, True, split, f64, dtype))
        else:
            v.cross_pe = rope_tables(v_pos[:, 0:1], c.audio_cross_attention_dim, c.audio_num_attention_heads, max_pos,
                                     True, split, f64, dtype)
        v.cross_k_pe, v.cross_pe = v.cross_pe, _slice_rope(v.cross_pe, sl)
        if audio_reference is None:
            a.cross_pe = cache.get(("ax", ax.shape[1], device, dtype, _ckey(c)),
                                   lambda: rope_tables(audio_positions(ax.shape[1], device)[:, 0:1], c.audio_cross_attention_dim,
                                                       c.audio_num_attention_heads, max_pos, True, split, f64, dtype))
        else:
            a.cross_pe = rope_tables(a_pos[:, 0:1], c.audio_cross_attention_dim, c.audio_num_attention_heads, max_pos,
                                     True, split, f64, dtype)

    fn = block_fn or block_forward
    blocks = root.transformer_blocks
    if modes is not None and len(modes) != len(blocks):
        raise ValueError(f"memory plan has {len(modes)} block modes for {len(blocks)} blocks")
    grad = torch.is_grad_enabled()
    for i, block in enumerate(blocks):
        recompute = (modes[i] == "full") if modes is not None else checkpointing
        offload = grad and offloader is not None and modes is not None and modes[i] == "offload"
        if streamer is not None and i in getattr(streamer, "params", {}) and not offload:
            recompute = True  # a streamed block's weights leave its slot: never save them for backward
        if streamer is not None:
            run = _StreamedBlock(fn, streamer, i)
        else:
            run = fn
        if recompute and grad:
            vx, ax = checkpoint(run, block, c, vx, ax, v, a, use_reentrant=False)
        elif offload:
            args = (vx, ax, v, a)
            with offloader.saving(i, args):
                vx, ax = run(block, c, *args)
            offloader.finish(i, (vx, ax))
        else:
            vx, ax = run(block, c, vx, ax, v, a)

    v_pred = a_pred = None
    if vx is not None:
        shift, scale = _output_modulation(v_out_mod, root.scale_shift_table)
        v_pred = root.proj_out(root.norm_out(vx) * (1 + scale) + shift)
        if sp_on:
            from ..distributed import gather_seq

            v_pred = gather_seq(v_pred, sp)
        if video_reference is not None:
            v_pred = v_pred[:, video_reference[0].shape[1]:]
    if ax is not None:
        shift, scale = _output_modulation(a_out_mod, root.audio_scale_shift_table)
        a_pred = root.audio_proj_out(root.audio_norm_out(ax) * (1 + scale) + shift)
        if audio_reference is not None:
            a_pred = a_pred[:, audio_reference[0].shape[1]:]
    return v_pred, a_pred


def _slice_mod(m: Mod, sl: slice) -> Mod:
    """The modulation of a slice of the tokens (sequence parallel; ``slice(None)``: all)."""
    if sl == slice(None) or m.index is None:
        return m
    return Mod(m.values, m.index[:, sl], m.params)


def _slice_rope(pe: Rope, sl: slice) -> Rope:
    if sl == slice(None):
        return pe
    if pe.split:  # [B|1, H, T, D/2]
        return Rope(pe.cos[:, :, sl], pe.sin[:, :, sl], True)
    return Rope(pe.cos[:, sl], pe.sin[:, sl], False)


class _StreamedBlock:
    """The block function with the streamer's ``enter(i)`` in front (runs in the forward and
    again in the recomputation, so the weights are brought in both times)."""

    def __init__(self, fn: Callable, streamer: Any, index: int):
        self.fn, self.streamer, self.index = fn, streamer, index

    def __call__(self, *args):
        self.streamer.enter(self.index)
        return self.fn(*args)


def _output_modulation(emb: Mod, table: torch.Tensor):
    """Output modulation: (table[0] + e, table[1] + e) per token (shift, scale)."""
    e = emb.values  # [U, D]
    m = table.to(device=e.device, dtype=e.dtype).unsqueeze(0) + e.unsqueeze(1)  # [U, 2, D]
    m = m[emb.index]
    return m[:, :, 0], m[:, :, 1]


def _ckey(c: LTX2Config) -> tuple:
    return (c.inner_dim, c.audio_inner_dim, c.num_attention_heads, c.audio_num_attention_heads,
            c.audio_cross_attention_dim, c.positional_embedding_max_pos, c.audio_positional_embedding_max_pos,
            c.vae_scale_factors, c.causal_temporal_positioning, c.use_middle_indices_grid, c.rope_type,
            c.frequencies_precision)


# ============================================================================ predict

def _reference_of(stream) -> Optional[tuple]:
    """A stream's IC-LoRA reference (tokens [B, R, C], positions) if it carries one: an
    optional ``reference`` attribute of the engine's per-modality input (None: none)."""
    ref = getattr(stream, "reference", None) if stream is not None else None
    if ref is None:
        return None
    return _normal(ref[0]), ref[1]


def _is_attention_forward(node) -> bool:
    """An attention kernel's forward in an aten graph: SDPA's backend ops (cuDNN, flash,
    memory-efficient, the CPU's flash) and the flash/efficient forwards themselves."""
    if node.op != "call_function":
        return False
    name = getattr(getattr(node.target, "overloadpacket", None), "__name__", "") or str(node.target)
    return ("_scaled_dot_product_" in name or name in ("_flash_attention_forward", "_efficient_attention_forward")) \
        and "backward" not in name


def mark_attention_saved(graph) -> int:
    """Tag every attention forward of a joint forward + backward graph as MUST_SAVE for
    AOTAutograd's partitioner, so that a memory budget below 1.0 never recomputes it in
    backward. (PyTorch's list of compute-intensive ops has the flash and memory-efficient
    attentions but not the cuDNN one nor the CPU's, and the budget's solver then treats them
    as cheap to recompute: on an H200 at 768×512×121, budget 0.7 ran the video self-attention
    forward again in most blocks' backward.) Returns how many nodes were tagged."""
    from torch.utils.checkpoint import CheckpointPolicy

    n = 0
    for node in graph.nodes:
        if _is_attention_forward(node):
            node.meta["recompute"] = CheckpointPolicy.MUST_SAVE
            n += 1
    return n


def _attention_saving_pass():
    """``mark_attention_saved`` as an inductor joint-graph pass (cacheable: it has a uuid),
    chained after any pass already configured."""
    import torch._inductor.config as icfg
    from torch._inductor.custom_graph_pass import CustomGraphPass

    prior = icfg.joint_custom_post_pass

    class _SaveAttention(CustomGraphPass):
        def __call__(self, graph) -> None:
            if prior is not None:
                prior(graph)
            mark_attention_saved(graph)

        def uuid(self):
            base = prior.uuid() if prior is not None and hasattr(prior, "uuid") else None
            return ("ltx2-save-attention-v1", base)

    return _SaveAttention()


def make_predict(*, checkpointing: bool = True, dtype: Optional[torch.dtype] = None,
                 fix_inference_weights: bool = True, rope_cache_size: int = 8,
                 config: Optional[LTX2Config] = None, compile_blocks: Any = False,
                 memory_plan: Any = None, cudagraphs: Optional[bool] = None,
                 activation_budget: Optional[float] = None, cudagraph_max_tokens: int = 4096,
                 offload_min_bytes: int = 1 << 20, sp: Any = None, save_attention: Optional[bool] = None) -> Callable:
    """The engine's ``predict(root, inputs) -> (video_pred, audio_pred)``.

    checkpointing: per-block activation checkpointing (recompute each block in backward).
    dtype: compute dtype. Default: under autocast, the autocast dtype — and when the weights
        are already in it (a bf16 model in a bf16 run) the forward runs with autocast off,
        every op in bf16 as ComfyUI runs the model; without autocast, the weights' dtype
        (bfloat16 for fp8 weights, which ComfyUI's layers cast).
    fix_inference_weights: weights that are inference tensors (ComfyUI loads models inside
        ``torch.inference_mode``) are replaced by normal copies on first sight
        (:func:`ensure_trainable_weights`); with False, such weights raise
        :class:`InferenceWeightsError` instead.
    compile_blocks: False (eager), True (``torch.compile`` of the block function, inductor) or
        a torch.compile backend name. The eager block forward is launch-bound at full size
        (measured on an H100, 8 full-width blocks, 6144 video + 126 audio tokens, rank-32
        LoRA on all attention, checkpointing: 0.41 s eager, 0.26 s compiled, after a ~1 min
        first compile; one compile per shape bucket).

    cudagraphs: with compiled blocks, replay each block as a CUDA graph (``torch.compile``'s
        "reduce-overhead"): removes the launch overhead that dominates small buckets
        (measured on an H100, 19B, 512×512×33: 5.2 ms/block with graphs, 15.7 without).
        None = automatic: on CUDA when every block keeps its activations, nothing streams
        and the bucket has at most ``cudagraph_max_tokens`` video tokens.
    activation_budget: for compiled blocks, AOTAutograd's activation memory budget (share of
        the save-everything memory a kept block may use; the partitioner recomputes the
        cheapest ops, elementwise work first). 0.7 halves a kept block's memory at full size
        for a slower block (H200, 768×512×121: 0.67 against 1.51 GiB/block at 1.0, 7.5 % slower).
        None: the memory plan's (``MemoryPlan.activation_budget``: 1.0 where the whole plan
        fits so), else 0.7.
    save_attention: with a budget below 1.0, the compiled blocks save their attention
        outputs instead of recomputing the attention forward in backward
        (:func:`mark_attention_saved`, an inductor joint-graph pass; H200, 768×512×121 at
        0.7: 0.9335 against 0.9904 s a step for +0.12 GiB a block). None: the memory plan's
        (``MemoryPlan.save_attention``), else off.
    memory_plan: a :class:`~trainer_core.ltx2.memory.MemoryPlan`: per-block keep/recompute
        (overrides ``checkpointing``) and the blocks whose weights stream from host memory
        (the streamer is set up on the first call, on the inputs' device, and exposed as
        ``predict.streamer``; call ``predict.release()`` after training to put the weights
        back). Blocks in mode "offload" keep their activations in host memory between
        forward and backward (:class:`~trainer_core.ltx2.memory.ActivationOffloader`, saved
        tensors of at least ``offload_min_bytes``; exposed as ``predict.offloader``).
    sp: sequence parallel over the video tokens across the ranks of this
        :class:`~trainer_core.distributed.Dist` (see :func:`forward_av`); eager blocks only.

    ``inputs`` is ``trainer_core.engine.StepInputs``: ``video``/``audio`` carry ``tokens``,
    ``sigma`` (per token) and ``grid``; ``text["context"]`` is the text encoder's output
    [B, L, D] (optionally ``text["unprocessed_ltxav_embeds"]``, default True, and
    ``text["context_lengths"]`` [B] for captions padded to a batch's longest); ``fps``.
    """
    cache = RopeCache(rope_cache_size)
    if activation_budget is None:
        from .memory import DEFAULT_ACTIVATION_BUDGET

        activation_budget = getattr(memory_plan, "activation_budget", None) or DEFAULT_ACTIVATION_BUDGET
    if save_attention is None:
        save_attention = bool(getattr(memory_plan, "save_attention", False))
    block_fn = cg_fn = None
    if compile_blocks and sp is not None and sp.active:
        raise ValueError("sequence parallel runs eager blocks: its all-to-alls are not traced by torch.compile; "
                         "turn compile_blocks off")
    if compile_blocks:
        if isinstance(compile_blocks, dict):
            kw = dict(compile_blocks)
        else:
            kw = {} if compile_blocks is True else {"backend": str(compile_blocks)}
        import torch._dynamo as dynamo

        # one graph serves every block, but each (shape bucket, keep/recompute, first block)
        # is a variant: leave room so no bucket silently falls back to eager
        dynamo.config.recompile_limit = max(dynamo.config.recompile_limit, 64)
        dynamo.config.accumulated_recompile_limit = max(dynamo.config.accumulated_recompile_limit, 512)
        block_fn = torch.compile(block_forward, dynamic=False, **kw)
        if cudagraphs is not False and "mode" not in kw:
            cg_fn = torch.compile(block_forward, dynamic=False, mode="reduce-overhead",
                                  **{k: v for k, v in kw.items() if k != "mode"})

    def predict(root: nn.Module, inputs, block_graphs: Optional[bool] = None
                ) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        # block_graphs False: no per-block CUDA graphs this call, whatever ``cudagraphs`` says
        # (the engine's whole-step graph captures the compiled blocks themselves)
        with torch.inference_mode(False), torch.enable_grad():
            # ComfyUI may (re)load weights inside inference mode at any time: check every call
            # (a scan of the parameter list; nothing is copied unless something must be).
            bad = find_inference_tensors(root)
            if bad:
                if not fix_inference_weights:
                    raise InferenceWeightsError(
                        f"{len(bad)} weights of the transformer are inference tensors (e.g. {bad[0]}): "
                        "ComfyUI loaded the model inside torch.inference_mode. Call "
                        "trainer_core.ltx2.forward.ensure_trainable_weights(model) before training, or "
                        "use make_predict(fix_inference_weights=True)")
                ensure_trainable_weights(root)
            c = config or LTX2Config.from_module(root)
            text = inputs.text
            if "context" not in text:
                raise ValueError(f"the cached text conditioning has no 'context' tensor (keys: {sorted(text)}); "
                                 "re-encode the captions with the LTX-2 text encoder")
            ctx = _normal(text["context"])
            unproc = _unprocessed(text)
            ref = (inputs.video or inputs.audio).tokens
            cd, plain = _compute_dtype(root, ref, dtype)
            vid = aud = None
            if inputs.video is not None:
                vid = (_normal(inputs.video.tokens), _normal(inputs.video.sigma), tuple(inputs.video.grid))
            if inputs.audio is not None:
                aud = (_normal(inputs.audio.tokens), _normal(inputs.audio.sigma), tuple(inputs.audio.grid))
            modes = None
            if memory_plan is not None:
                modes = state["modes"] or list(memory_plan.modes)
                if memory_plan.streamed and state["streamer"] is None:
                    from .memory import BlockStreamer

                    state["streamer"] = BlockStreamer(root.transformer_blocks, memory_plan.streamed, ref.device,
                                                      transfer=getattr(memory_plan, "transfer", "bf16"))
                    predict.streamer = state["streamer"]  # type: ignore[attr-defined]
                    for i in memory_plan.streamed:
                        # quantized weights cannot be re-viewed from a slot in backward: recompute
                        if modes[i] == "offload" and any(_is_quantized(p)
                                                         for p in root.transformer_blocks[i].parameters()):
                            modes[i] = "full"
                state["modes"] = modes
                if "offload" in modes and state["offloader"] is None:
                    from .memory import ActivationOffloader

                    state["offloader"] = ActivationOffloader(
                        root.transformer_blocks, [i for i, m in enumerate(modes) if m == "offload"], ref.device,
                        min_bytes=offload_min_bytes, streamer=state["streamer"])
                    predict.offloader = state["offloader"]  # type: ignore[attr-defined]
            fn = block_fn
            if cg_fn is not None and ref.is_cuda and state["streamer"] is None and block_graphs is not False:
                all_keep = (all(m == "keep" for m in modes) if modes is not None else not checkpointing)
                small = inputs.video is None or inputs.video.tokens.shape[1] <= cudagraph_max_tokens
                if cudagraphs or (cudagraphs is None and all_keep and small):
                    fn = cg_fn
                    torch.compiler.cudagraph_mark_step_begin()
            predict.used_cudagraphs = fn is not None and fn is cg_fn  # type: ignore[attr-defined]
            with contextlib.ExitStack() as scope:
                if plain:
                    scope.enter_context(torch.autocast(ref.device.type, enabled=False))
                if fn is not None:  # what the blocks compile under, should they compile now
                    import torch._functorch.config as fcfg

                    scope.enter_context(fcfg.patch(activation_memory_budget=float(activation_budget)))
                    if attention_pass is not None:
                        import torch._inductor.config as icfg

                        scope.enter_context(icfg.patch(joint_custom_post_pass=attention_pass))
                return forward_av(root, vid, aud, context=ctx, fps=float(inputs.fps), checkpointing=checkpointing,
                                  dtype=cd, config=c, unprocessed_text=unproc, rope_cache=cache,
                                  block_fn=fn, modes=modes, streamer=state["streamer"],
                                  offloader=state["offloader"],
                                  video_reference=_reference_of(inputs.video),
                                  audio_reference=_reference_of(inputs.audio), sp=sp,
                                  context_lengths=text.get("context_lengths"))

    def connected_inputs(root: nn.Module, inputs):
        """``inputs`` with their text already through the frozen connectors (as a cache written
        after them would hold it): one shape for every caption of up to 1024 tokens, so that a
        whole-step CUDA graph (trainer_core.step_graph) serves captions of any length. The
        same inputs back where a LoRA sits on the connectors (they then train) or the text
        is already processed."""
        text = inputs.text
        if "context" not in text or (_has_hooks(root.video_embeddings_connector)
                                     or _has_hooks(root.audio_embeddings_connector)):
            return inputs
        if not _unprocessed(text):
            return inputs
        with torch.inference_mode(False), torch.no_grad(), contextlib.ExitStack() as scope:
            c = config or LTX2Config.from_module(root)
            ref = (inputs.video or inputs.audio).tokens
            cd, plain = _compute_dtype(root, ref, dtype)
            if plain:
                scope.enter_context(torch.autocast(ref.device.type, enabled=False))
            ctx = connect_text(root, c, _normal(text["context"]), cd, True, False, lengths=text.get("context_lengths"))
        return dataclasses.replace(inputs, text={"context": ctx, "unprocessed_ltxav_embeds": False})

    state: dict[str, Any] = {"streamer": None, "offloader": None, "modes": None}
    # built once: a joint-graph pass for inductor, when attention must be saved under a budget
    attention_pass = _attention_saving_pass() if compile_blocks and save_attention and activation_budget < 1.0 else None

    def release() -> None:
        from .memory import free_pinned_cache

        # the activation buffers first (their pinned memory back to the system), then the
        # weights block by block: host memory never holds both the pinned and the pageable copies
        if state["offloader"] is not None:
            state["offloader"].release()
            state["offloader"] = None
            predict.offloader = None  # type: ignore[attr-defined]
            free_pinned_cache()
        if state["streamer"] is not None:
            state["streamer"].restore()
            state["streamer"] = None
            predict.streamer = None  # type: ignore[attr-defined]
        state["modes"] = None
        free_pinned_cache()  # what they pinned goes back to the system, not to PyTorch's cache

    predict.checkpointing = checkpointing  # type: ignore[attr-defined]
    predict.rope_cache = cache  # type: ignore[attr-defined]
    predict.memory_plan = memory_plan  # type: ignore[attr-defined]
    predict.activation_budget = float(activation_budget)  # type: ignore[attr-defined]
    predict.save_attention = bool(save_attention)  # type: ignore[attr-defined]
    predict.attention_saved = attention_pass is not None  # type: ignore[attr-defined]  (asked, compiled, budget < 1.0)
    predict.streamer = None  # type: ignore[attr-defined]
    predict.offloader = None  # type: ignore[attr-defined]
    predict.release = release  # type: ignore[attr-defined]
    predict.used_cudagraphs = False  # type: ignore[attr-defined]  (set by each call)
    predict.whole_step_graphs = True  # type: ignore[attr-defined]  (takes block_graphs: trainer_core.step_graph)
    predict.connected_inputs = connected_inputs  # type: ignore[attr-defined]
    return predict


_FLOATS = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def _unprocessed(text: dict) -> bool:
    """Is the cached text the encoder's output, still to go through the connectors (the cache's
    ``unprocessed_ltxav_embeds``, a flag or a tensor holding one; True when absent)?"""
    flag = text.get("unprocessed_ltxav_embeds", True)
    return bool(flag.flatten()[0]) if torch.is_tensor(flag) else bool(flag)


def _compute_dtype(root: nn.Module, tokens: torch.Tensor, dtype: Optional[torch.dtype]) -> tuple[torch.dtype, bool]:
    """(compute dtype, run without autocast).

    Under autocast with weights already in the autocast dtype (a bf16 model in a bf16 run),
    the forward runs in that dtype with autocast off — every op in bf16, as ComfyUI runs the
    model (norms and modulations included), LoRA weights staying fp32 masters. Otherwise
    autocast (if on) decides per op, the activations starting in the autocast dtype.
    Without autocast: the weights' dtype, or float32 for storage-only dtypes (fp8).
    """
    w = root.patchify_proj.weight.dtype
    if torch.is_autocast_enabled(tokens.device.type):
        ac = torch.get_autocast_dtype(tokens.device.type)
        cd = dtype or ac
        return cd, (w == cd)
    # weights stored in a storage-only dtype (fp8: ComfyUI's weight_dtype option) are cast per
    # layer; without autocast the run is a full-precision one, so compute in float32
    return (dtype or (w if w in _FLOATS else torch.float32)), False


__all__ = ["make_predict", "mark_attention_saved", "forward_av", "prepare_text", "ensure_trainable_weights",
           "find_inference_tensors", "InferenceWeightsError", "block_forward", "RopeCache"]
