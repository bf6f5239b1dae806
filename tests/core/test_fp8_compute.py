"""Opt-in fp8 compute of the frozen block linears (trainer_core.ltx2.fp8), on the CPU's
float32 emulation of the fp8 products: the tiny model's forward and LoRA gradients stay
within fp8 rounding of the plain forward, the LoRA path is untouched, and disabling it
restores the plain forward exactly."""
from __future__ import annotations

import torch

from trainer_core.ltx2 import build_tree, make_predict
from trainer_core.ltx2.fp8 import _FP8LinearFn, _rowwise, disable_fp8_compute, enable_fp8_compute

from tests.core.test_ltx2_forward import _lora_grads, _random_lora, _rel, step_inputs, tiny_config


def test_fp8_linear_matches_linear_forward_and_input_gradient():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(48, 64, generator=g) * 0.05
    b = torch.randn(48, generator=g)
    x = torch.randn(3, 20, 64, generator=g, requires_grad=True)
    wq, ws = _rowwise(w)
    wtq, wts = _rowwise(w.t().contiguous())
    y = _FP8LinearFn.apply(x, wq, ws, wtq, wts, b)
    ref = torch.nn.functional.linear(x, w, b)
    err = _rel(y.detach(), ref.detach())
    assert 1e-4 < err < 0.05, err  # rounded (so fp8 really ran) but close
    gy = torch.randn(ref.shape, generator=g)
    gx, = torch.autograd.grad(y, x, gy)
    gref, = torch.autograd.grad(ref, x, gy)
    assert 1e-4 < _rel(gx, gref) < 0.05, _rel(gx, gref)


def test_fp8_compute_forward_and_lora_gradients_near_plain():
    c = tiny_config("2.0")
    root = build_tree(c, seed=2)
    lora = _random_lora(root, "all attention + feed-forward")
    inp = step_inputs(c, "text_to_audio_video", seed=3)
    pred = make_predict(checkpointing=True)
    with torch.no_grad():
        v0, a0 = pred(root, inp)
    ref = _lora_grads(root, lora, pred, inp)
    n = enable_fp8_compute(root, min_features=16)
    assert n >= 12  # every block linear of both streams and the cross-modal attentions
    with torch.no_grad():
        v1, a1 = pred(root, inp)
    got = _lora_grads(root, lora, pred, inp)
    ev, ea = _rel(v1, v0), _rel(a1, a0)
    assert 1e-4 < ev < 0.08 and 1e-4 < ea < 0.08, (ev, ea)
    worst = max(_rel(got[k], ref[k]) for k in ref)
    assert worst < 0.15, worst
    # the LoRA still acts: zeroing its B changes the fp8 forward
    for k in lora.names:
        lora.adapter(k).lora_B.data.zero_()
    with torch.no_grad():
        v2, _ = pred(root, inp)
    assert _rel(v2, v1) > 1e-3
    assert disable_fp8_compute(root) == n
    with torch.no_grad():
        v3, _ = pred(root, inp)
    lora.detach()
    with torch.no_grad():
        v4, _ = pred(root, inp)
    assert torch.equal(v3, v4)  # B = 0 LoRA is a no-op, and the plain path is back exactly
