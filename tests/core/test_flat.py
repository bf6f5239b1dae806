"""The LoRA in one buffer (trainer_core.flat): the same training as per-tensor AdamW.

The reference is PyTorch's own AdamW over the tensors one by one (what the engine ran
before, and still runs with ``Trainer.flat = False``). The buffer path must give the same
LoRA to rounding, leave tensors that get no gradient exactly as they were, and write
checkpoints that resume in either path.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.core.test_engine import ToyRoot, ToySource, cfg, lora_tensors, toy_predict
from trainer_core import engine as en
from trainer_core.flat import FlatAdamW, flat_fits


def _params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(*s, generator=g)) for s in [(4, 6), (6, 4), (3, 5), (5, 3), (2, 2)]]


def _grads(params, seed, skip=()):
    g = torch.Generator().manual_seed(seed)
    for i, p in enumerate(params):
        grad = torch.randn(p.shape, generator=g)
        if i not in skip:
            p.grad = grad


def test_buffer_adamw_matches_per_tensor_adamw_with_tensors_joining_late():
    """Tensors 1 and 3 get no gradient at first: they stay exactly as they are (no weight
    decay). At step 4 tensor 3 gets one: per-tensor AdamW updates it from its first step,
    as PyTorch's AdamW does. The rest follow AdamW to rounding, and share one storage."""
    kw = dict(lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
    ref, mine = _params(), _params()
    r_opt = torch.optim.AdamW(ref, **kw)
    m_opt = None
    for step in range(8):
        skip = (1, 3) if step < 4 else (1,)
        _grads(ref, step, skip)
        _grads(mine, step, skip)
        if m_opt is None:
            m_opt = FlatAdamW.adopt(torch.optim.AdamW(mine, **kw), mine)
            assert m_opt is not None and m_opt.live == [True, False, True, False, True]
        r_opt.step()
        m_opt.grad_tensors()
        m_opt.step()
        r_opt.zero_grad(set_to_none=True)
        m_opt.zero_grad(set_to_none=True)
        assert m_opt._grad.untyped_storage().nbytes() == 0  # no memory held between steps
        for r, m in zip(ref, mine):
            torch.testing.assert_close(m, r, rtol=1e-6, atol=1e-7)
        assert torch.equal(mine[1], _params()[1])  # never a gradient: untouched
        assert torch.equal(m_opt.largest(), torch.stack([p.abs().max() for p in mine]).max())
    assert not torch.equal(mine[3], _params()[3])
    storage = {p.untyped_storage().data_ptr() for i, p in enumerate(mine) if i in (0, 2, 4)}
    assert storage == {m_opt.param.untyped_storage().data_ptr()}
    # the checkpoint layout is per-tensor AdamW's: the same keys, shapes and step counts
    ours, theirs = m_opt.state_dict(), r_opt.state_dict()
    assert sorted(ours["state"]) == sorted(theirs["state"]) == [0, 2, 3, 4]
    for i, st in theirs["state"].items():
        assert float(ours["state"][i]["step"]) == float(st["step"])
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(ours["state"][i][key], st[key], rtol=1e-6, atol=1e-9)
    assert ours["param_groups"][0]["params"] == theirs["param_groups"][0]["params"]


def test_a_buffer_tensor_without_a_gradient_turns_the_run_per_tensor():
    """Tensor 2 gets no gradient at step 3: from there per-tensor AdamW goes on with the same
    state, skipping it as PyTorch's AdamW does (its momentum does not move it)."""
    kw = dict(lr=1e-2, weight_decay=0.1)
    ref, mine = _params(), _params()
    r_opt = torch.optim.AdamW(ref, **kw)
    m_opt = None
    for step in range(6):
        skip = (2,) if step in (3, 4) else ()
        _grads(ref, step, skip)
        _grads(mine, step, skip)
        m_opt = m_opt or FlatAdamW.adopt(torch.optim.AdamW(mine, **kw), mine)
        if step == 3:
            held = mine[2].detach().clone()
        grads = m_opt.grad_tensors()
        assert (m_opt.fallback is None) == (step < 3) and len(grads) == (1 if step < 3 else 5)
        r_opt.step()
        m_opt.step()
        r_opt.zero_grad()
        m_opt.zero_grad()
        if step == 4:
            assert torch.equal(mine[2], held)
        for r, m in zip(ref, mine):
            torch.testing.assert_close(m, r, rtol=1e-6, atol=1e-7)
    assert sorted(m_opt.state_dict()["state"]) == [0, 1, 2, 3, 4]
    assert len({float(st["step"]) for st in m_opt.state_dict()["state"].values()}) == 2


def test_state_loaded_into_per_tensor_adamw_moves_into_the_buffer():
    """A checkpoint's state (per tensor) taken over: the next steps are those of the
    per-tensor AdamW that holds it; a state that cannot be one buffer's is refused."""
    kw = dict(lr=1e-2, weight_decay=0.01)
    ref = _params()
    r_opt = torch.optim.AdamW(ref, **kw)
    for step in range(3):
        _grads(ref, step)
        r_opt.step()
        r_opt.zero_grad()
    sd = r_opt.state_dict()
    mine = [nn.Parameter(p.detach().clone()) for p in ref]
    loaded = torch.optim.AdamW(mine, **kw)
    loaded.load_state_dict(sd)
    _grads(ref, 3)
    _grads(mine, 3)
    m_opt = FlatAdamW.adopt(loaded, mine)
    for step in range(3, 6):
        r_opt.step()
        m_opt.grad_tensors()
        m_opt.step()
        r_opt.zero_grad()
        m_opt.zero_grad()
        _grads(ref, step + 1)
        _grads(mine, step + 1)
    for r, m in zip(ref, mine):
        torch.testing.assert_close(m, r, rtol=1e-6, atol=1e-7)
    # some live tensors with state, some without: per-tensor AdamW stays
    odd = [nn.Parameter(p.detach().clone()) for p in ref]
    o_opt = torch.optim.AdamW(odd, **kw)
    o_opt.load_state_dict(sd)
    del o_opt.state[odd[2]]
    _grads(odd, 0)
    assert FlatAdamW.adopt(o_opt, odd) is None


def test_offloading_the_state_keeps_the_views():
    """Validation moves the optimizer state to host memory and back: the LoRA's tensors are
    still the buffer's views after it, and the next step updates them."""
    ps = _params()
    _grads(ps, 0)
    opt = FlatAdamW.adopt(torch.optim.AdamW(ps, lr=1e-2), ps)
    opt.grad_tensors()
    opt.step()
    before = [p.detach().clone() for p in ps]
    with en.optimizer_offloaded(opt) as n:
        assert n == 0  # (on the CPU nothing moves; the dicts are the optimizer's own)
    assert all(st is opt.inner.state[opt.param] for st in opt.state.values())
    _grads(ps, 1)
    opt.grad_tensors()
    opt.step()
    assert all(not torch.equal(p, b) for p, b in zip(ps, before))


def test_fits_only_plain_adamw_over_float32():
    ps = _params()
    assert flat_fits(ps, "adamw")
    assert not flat_fits(ps, "adamw8bit")
    assert not flat_fits([*ps, nn.Parameter(torch.zeros(2, dtype=torch.float64))], "adamw")
    assert not flat_fits([], "adamw")


@pytest.mark.parametrize("mode,wd", [("text_to_audio_video", 0.0), ("video_only", 0.1)])
def test_engine_with_the_buffer_trains_the_per_tensor_lora(tmp_path, mode, wd, monkeypatch):
    """The engine's run with the buffer equals the per-tensor run to rounding, over grad
    accumulation, clipping and a schedule; in a video-only run the audio adapters stay as
    they started (no gradient, no weight decay)."""
    kw = dict(steps=8, grad_accum=2, mode=mode, weight_decay=wd, scheduler="cosine", warmup_steps=2,
              max_grad_norm=0.05)
    flat = en.Trainer(ToyRoot(), toy_predict, ToySource(n=3), cfg(**kw), tmp_path / "flat").train()
    monkeypatch.setattr(en.Trainer, "flat", False)
    plain = en.Trainer(ToyRoot(), toy_predict, ToySource(n=3), cfg(**kw), tmp_path / "plain").train()
    a, b = lora_tensors(flat), lora_tensors(plain)
    for k in b:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-7)
    for ha, hb in zip(flat.history, plain.history):
        assert ha["grad_norm"] == pytest.approx(hb["grad_norm"], rel=1e-5)
        assert ha["lora_max"] == pytest.approx(hb["lora_max"], rel=1e-6)
    assert any(h["grad_norm"] > 0.05 for h in plain.history)  # clipping did something
    live = [p for n, p in flat.lora.named_parameters() if mode != "video_only" or "audio" not in n]
    assert len({p.untyped_storage().data_ptr() for p in live}) == 1  # the buffer was used
    assert all(p.grad is None for p in flat.lora.parameters())  # and let go at the end
    if mode == "video_only":
        c = cfg(**kw)
        init = en.LoRASet.for_model(ToyRoot(), c.lora_spec(), seed=c.seed).state_dict()
        audio = [k for k in init if "audio" in k]
        assert audio and all(torch.equal(a[k], init[k]) for k in audio)


def test_checkpoints_resume_across_the_two_paths(tmp_path, monkeypatch):
    """A run's checkpoint of step 4 written with the buffer resumes per tensor, and one
    written per tensor resumes with the buffer; both end where the unbroken run ends, and
    the two checkpoints hold the same tensors under the same names."""
    kw = dict(steps=8, checkpoint_every=4, mode="video_only", weight_decay=0.1, keep_checkpoints=5)
    full = lora_tensors(en.Trainer(ToyRoot(), toy_predict, ToySource(n=3), cfg(**kw), tmp_path / "full").train())
    ck_flat = tmp_path / "full" / "checkpoints" / "step_000004.safetensors"
    monkeypatch.setattr(en.Trainer, "flat", False)
    en.Trainer(ToyRoot(), toy_predict, ToySource(n=3), cfg(**kw), tmp_path / "plain").train()
    ck_plain = tmp_path / "plain" / "checkpoints" / "step_000004.safetensors"
    t_flat, m_flat = en.read_checkpoint(ck_flat)
    t_plain, m_plain = en.read_checkpoint(ck_plain)
    assert sorted(t_flat) == sorted(t_plain) and m_flat["optimizer"] == m_plain["optimizer"]
    for k in t_plain:
        torch.testing.assert_close(t_flat[k], t_plain[k], rtol=1e-5, atol=1e-7)
    per_tensor = lora_tensors(en.Trainer(ToyRoot(), toy_predict, ToySource(n=3), cfg(**kw),
                                         tmp_path / "r1").train(resume_from=ck_flat))
    monkeypatch.setattr(en.Trainer, "flat", True)
    buffered = lora_tensors(en.Trainer(ToyRoot(), toy_predict, ToySource(n=3), cfg(**kw),
                                       tmp_path / "r2").train(resume_from=ck_plain))
    for k in full:
        torch.testing.assert_close(per_tensor[k], full[k], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(buffered[k], full[k], rtol=1e-5, atol=1e-7)
