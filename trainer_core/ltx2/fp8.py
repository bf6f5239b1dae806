"""Opt-in fp8 compute for the frozen linear layers of the transformer blocks.

LoRA training never updates the base weights, so their matmuls can run on Hopper's (and
Ada's) fp8 tensor cores: each frozen ``nn.Linear`` of a block gets two float8_e4m3fn copies
of its weight — ``W`` with one scale per output row (forward, ``y = x·Wᵀ``) and ``Wᵀ`` with
one scale per input column (backward, the input gradient ``gx = gy·W``) — and its activations
(and incoming gradients) are quantized per token row on the fly, each product one
``torch._scaled_mm`` with row-wise scales and a bf16 result. No weight gradient exists, so
nothing else is needed. The LoRA path stays untouched: adapters hook the module's output
and compute ``B(A(x))`` from the bf16 input in bf16 (their fp32 masters), so what is trained
is exactly the bf16 LoRA; only the frozen base's contribution carries fp8 rounding (about
2-4 % relative error per matmul on random data, like a fp8 checkpoint's).

On a device without fp8 matmuls (the CPU), the same arithmetic is emulated in float32 —
quantize, dequantize, multiply — so the path is testable anywhere; tests compare it with
the plain forward of a tiny model.

``enable_fp8_compute(root)`` patches the modules' ``forward`` (hooks keep working, the
weights stay as they are, for everything else that reads them); ``disable_fp8_compute(root)``
undoes it. Streamed blocks are not supported (their weights move between slots).

This module never imports ComfyUI.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0
_ATTR = "_ltx2_fp8"


def _quant_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[M, K] -> (fp8 [M, K], fp32 scale [M, 1]): absmax per row / 448."""
    s = x.detach().abs().amax(dim=1, keepdim=True).float().clamp_min(1e-12) / FP8_MAX
    return (x.float() / s).to(FP8), s


def _pad_rows(x: torch.Tensor, m: int = 16) -> tuple[torch.Tensor, int]:
    r = x.shape[0]
    p = (-r) % m
    return (torch.nn.functional.pad(x, (0, 0, 0, p)) if p else x), r


def _mm(aq: torch.Tensor, a_s: torch.Tensor, bq: torch.Tensor, b_s: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(aq·a_s) @ (bq·b_sᵀ)ᵀ in fp8 with row-wise scales: aq [M, K], bq [N, K] (both row-major
    fp8), a_s [M, 1], b_s [1, N] -> [M, N] in ``dtype``."""
    if aq.is_cuda:
        a, rows = _pad_rows(aq)
        sa = torch.nn.functional.pad(a_s, (0, 0, 0, a.shape[0] - rows), value=1.0) if a.shape[0] != rows else a_s
        y = torch._scaled_mm(a, bq.t(), scale_a=sa, scale_b=b_s, out_dtype=dtype)
        return y[:rows] if a.shape[0] != rows else y
    # emulation (CPU): the same quantized operands and scales, float32 arithmetic
    return ((aq.float() * a_s) @ (bq.float() * b_s.t()).t()).to(dtype)


class _FP8LinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, wq, ws, wtq, wts, bias):
        shp = x.shape
        x2 = x.reshape(-1, shp[-1])
        xq, xs = _quant_rows(x2)
        y = _mm(xq, xs, wq, ws, x.dtype)
        if bias is not None:
            y = y + bias.to(y.dtype)
        ctx.save_for_backward(wtq, wts)
        ctx.in_shape = shp
        return y.view(*shp[:-1], wq.shape[0])

    @staticmethod
    def backward(ctx, gy):
        wtq, wts = ctx.saved_tensors
        g2 = gy.reshape(-1, gy.shape[-1])
        gq, gs = _quant_rows(g2)
        gx = _mm(gq, gs, wtq, wts, gy.dtype)  # gy [M, N] · W [N, K] = gy · (Wᵀ)ᵀ
        return gx.view(ctx.in_shape), None, None, None, None, None


def _rowwise(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A weight [N, K] -> (fp8 [N, K], scale [1, N] contiguous: the layout _scaled_mm takes)."""
    q, s = _quant_rows(w.detach())
    return q, s.t().contiguous()


def eligible(m: nn.Module, min_features: int = 256) -> bool:
    """Frozen linear layers whose both sides are multiples of 16 (the fp8 kernels' rule) and
    at least ``min_features`` wide (the per-head gate logits and other slivers stay bf16)."""
    if type(m) is not nn.Linear and not (isinstance(m, nn.Linear) and hasattr(m, "weight")):
        return False
    w = m.weight
    return (w is not None and w.dim() == 2 and not w.requires_grad and w.dtype in (torch.bfloat16, torch.float16, torch.float32)
            and w.shape[0] % 16 == 0 and w.shape[1] % 16 == 0 and min(w.shape) >= min_features)


_BUFS = ("_fp8_w", "_fp8_ws", "_fp8_wt", "_fp8_wts")


def _fp8_forward(mod: nn.Linear):
    def forward(x: torch.Tensor) -> torch.Tensor:
        return _FP8LinearFn.apply(x, mod._fp8_w, mod._fp8_ws, mod._fp8_wt, mod._fp8_wts, mod.bias)
    return forward


def enable_fp8_compute(root: nn.Module, min_features: int = 256, blocks: Optional[nn.Module] = None) -> int:
    """Give every eligible frozen linear layer of the transformer blocks fp8 compute.
    Returns the number of layers switched (their fp8 copies take 2 bytes per weight on the
    weights' device)."""
    blocks = blocks if blocks is not None else root.transformer_blocks
    n = 0
    for m in blocks.modules():
        if getattr(m, _ATTR, None) is not None or not eligible(m, min_features):
            continue
        w = m.weight.detach()
        wq, ws = _rowwise(w)
        wtq, wts = _rowwise(w.t().contiguous())
        # non-persistent buffers: they follow the module (.to) and, like the weights, become
        # inputs of a compiled block rather than constants (one graph for every block)
        for name, t in zip(_BUFS, (wq, ws, wtq, wts)):
            m.register_buffer(name, t, persistent=False)
        setattr(m, _ATTR, True)
        m.forward = _fp8_forward(m)
        n += 1
    return n


def disable_fp8_compute(root: nn.Module) -> int:
    n = 0
    for m in root.modules():
        if getattr(m, _ATTR, None) is not None:
            delattr(m, _ATTR)
            for name in _BUFS:
                delattr(m, name)
            if "forward" in m.__dict__:
                del m.forward
            n += 1
    return n


def fp8_compute_enabled(root: nn.Module) -> bool:
    return any(getattr(m, _ATTR, None) is not None for m in root.modules())


__all__ = ["enable_fp8_compute", "disable_fp8_compute", "fp8_compute_enabled", "eligible"]
