"""The training loop on a small stand-in transformer with LTX-2's module names.

The real LTX-2 training forward is exercised in test_train_ltx2.py; here the loop's own
behaviour is pinned down: learning, repeatability, resume, cancel, NaN, divergence,
checkpoint rotation, schedules, optimizers.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from trainer_core import engine as en


class ToyRoot(nn.Module):
    """Video and audio 'attention' projections named as in LTX-2."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        blk = nn.Module()
        a1, aa1 = nn.Module(), nn.Module()
        a1.to_q, a1.to_k = nn.Linear(128, 128), nn.Linear(128, 128)
        aa1.to_q, aa1.to_k = nn.Linear(128, 128), nn.Linear(128, 128)
        blk.attn1, blk.audio_attn1 = a1, aa1
        self.transformer_blocks = nn.ModuleList([blk])
        self.text = nn.Linear(16, 128)


def toy_predict(root, inputs: en.StepInputs):
    b = root.transformer_blocks[0]
    t = root.text(inputs.text["ctx"])[:, None, :]
    v = a = None
    if inputs.video is not None:
        x = inputs.video.tokens
        v = b.attn1.to_k(torch.tanh(b.attn1.to_q(x) + t)) * (1 + inputs.video.sigma[..., None])
    if inputs.audio is not None:
        x = inputs.audio.tokens
        a = b.audio_attn1.to_k(torch.tanh(b.audio_attn1.to_q(x) + t))
    return v, a


class ToySource:
    def __init__(self, n=4, audio=True, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.items = [en.LatentItem(key=f"s{i}", video=torch.randn(128, 2, 2, 3, generator=g),
                                    audio=torch.randn(8, 5, 16, generator=g) if audio else None,
                                    text={"ctx": torch.randn(16, generator=g)}, bucket="96x64x9")
                      for i in range(n)]
        self.empty = {"ctx": torch.zeros(16)}
        self.gets = []

    def __len__(self):
        return len(self.items)

    def get(self, i):
        self.gets.append(i)
        return self.items[i]

    def bucket_of(self, i):
        return self.items[i].bucket

    def empty_text(self):
        return self.empty


def cfg(**kw):
    base = dict(steps=12, learning_rate=3e-3, rank=4, alpha=4, targets="all attention", seed=3,
                mixed_precision="fp32", checkpoint_every=0, sigma_sampler="uniform", max_grad_norm=1.0,
                first_frame_prob=0.0)
    base.update(kw)
    return en.TrainConfig(**base)


def lora_tensors(res):
    return {k: v.detach().clone() for k, v in res.lora.state_dict().items()}


def test_loss_falls_when_overfitting(tmp_path):
    res = en.Trainer(ToyRoot(), toy_predict, ToySource(n=2), cfg(steps=120, learning_rate=1e-2), tmp_path).train()
    first = sum(h["loss"] for h in res.history[:10]) / 10
    last = sum(h["loss"] for h in res.history[-10:]) / 10
    assert last < 0.9 * first, (first, last)
    assert all({"loss_video", "loss_audio", "lr", "s_per_step", "grad_norm"} <= set(h) for h in res.history)


def test_same_seed_same_lora_other_seed_differs(tmp_path):
    a = lora_tensors(en.Trainer(ToyRoot(), toy_predict, ToySource(), cfg(), tmp_path / "a").train())
    b = lora_tensors(en.Trainer(ToyRoot(), toy_predict, ToySource(), cfg(), tmp_path / "b").train())
    c = lora_tensors(en.Trainer(ToyRoot(), toy_predict, ToySource(), cfg(seed=4), tmp_path / "c").train())
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("opt", ["adamw", "adamw8bit"])
def test_resume_is_bit_exact(tmp_path, opt):
    kw = dict(steps=10, checkpoint_every=4, grad_accum=2, optimizer=opt, caption_dropout=0.3, dropout=0.1,
              scheduler="cosine", warmup_steps=2, mode="image_to_video", first_frame_prob=0.5)
    full = en.Trainer(ToyRoot(), toy_predict, ToySource(n=3), cfg(**kw), tmp_path / "full").train()

    # stop after 4 steps (cancel), then resume from that checkpoint in a fresh process state
    calls = {"n": 0}

    def stop_after_4():
        calls["n"] += 1
        return calls["n"] > 4

    run = tmp_path / "split"
    with pytest.raises(en.TrainingStopped) as e:
        en.Trainer(ToyRoot(), toy_predict, ToySource(n=3), cfg(**kw), run,
                   callbacks=en.Callbacks(should_stop=stop_after_4)).train()
    assert e.value.reason == "cancelled" and e.value.step == 4
    ck = en.list_checkpoints(run)[-1]
    assert ck.name == "step_000004.safetensors"
    torch.manual_seed(999)  # disturb global RNG: resume must not depend on it
    resumed = en.Trainer(ToyRoot(), toy_predict, ToySource(n=3), cfg(**kw), run).train(resume_from=ck)
    a, b = lora_tensors(full), lora_tensors(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed run differs from the uninterrupted one"
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]


def test_resume_refuses_a_different_lora_shape(tmp_path):
    en.Trainer(ToyRoot(), toy_predict, ToySource(), cfg(steps=4, checkpoint_every=2), tmp_path).train()
    ck = en.list_checkpoints(tmp_path)[-1]
    with pytest.raises(ValueError, match="rank"):
        en.Trainer(ToyRoot(), toy_predict, ToySource(), cfg(steps=4, rank=8), tmp_path).train(resume_from=ck)


def test_checkpoint_rotation_keeps_last_k(tmp_path):
    events = []
    en.Trainer(ToyRoot(), toy_predict, ToySource(), cfg(steps=11, checkpoint_every=2, keep_checkpoints=2),
               tmp_path, callbacks=en.Callbacks(on_event=lambda n, p: events.append((n, p["step"])))).train()
    names = [p.name for p in en.list_checkpoints(tmp_path)]
    # every 2 steps, and the end (so a later run with more steps can continue it)
    assert names == ["step_000010.safetensors", "step_000011.safetensors"]
    assert [s for n, s in events if n == "checkpoint"] == [2, 4, 6, 8, 10, 11]
    assert not list((tmp_path / "checkpoints").glob(".*"))  # no temp files left


def test_nan_stops_with_step_and_cause(tmp_path):
    calls = {"n": 0}

    def bad_predict(root, inputs):
        calls["n"] += 1
        v, a = toy_predict(root, inputs)
        if calls["n"] >= 3:
            v = v * float("nan")
        return v, a

    with pytest.raises(en.TrainingStopped) as e:
        en.Trainer(ToyRoot(), bad_predict, ToySource(), cfg(), tmp_path).train()
    assert e.value.reason == "nan" and "step 3" in str(e.value) and "learning rate" in str(e.value)


def test_a_step_reads_the_device_back_once(tmp_path, monkeypatch):
    """The loss, the per-stream losses, the gradient norm and the largest LoRA weight come
    back to the host in one read, after the optimizer step is queued: no read between forward,
    backward and the optimizer (each one makes the GPU wait for the CPU; at 512×512×33 the CPU
    part of clipping and AdamW alone is ≈ 30 ms). Batch 2, two micro-batches, video and audio:
    the old loop read back eight times a step. The recorded figures are still every step's."""
    import sys

    reads = []

    def counted(name):
        orig = getattr(torch.Tensor, name)

        def wrapper(self, *a, **k):
            f = sys._getframe(1)
            if f.f_code.co_filename.endswith("engine.py") and f.f_code.co_name in ("train", "settle"):
                reads.append(name)
            return orig(self, *a, **k)
        return wrapper

    for name in ("item", "tolist", "__float__", "__bool__"):
        monkeypatch.setattr(torch.Tensor, name, counted(name))
    hist = []
    en.Trainer(ToyRoot(), toy_predict, ToySource(n=4), cfg(steps=3, grad_accum=2), tmp_path, batch_size=2,
               callbacks=en.Callbacks(on_step=hist.append)).train()
    assert len(reads) == 3, reads
    assert len(hist) == 3 and all(math.isfinite(h["loss"]) and h["grad_norm"] > 0 and h["lora_max"] > 0
                                  for h in hist)
    assert all("loss_video" in h and "loss_audio" in h for h in hist)


def test_steps_are_read_one_step_late_with_the_same_run(tmp_path):
    """Pipelined (the default): a step's numbers reach the progress callback while the next
    step's forward and backward are queued, so the CPU does not wait for the GPU between
    steps. The run is the same as reading each step at its end (same history, same LoRA);
    steps that validate, save a checkpoint or end the run are read at once, so validation
    sees its own step's LoRA and numbers."""
    calls = {"n": 0}

    def counting(root, inputs):
        calls["n"] += 1
        return toy_predict(root, inputs)

    runs = {}
    for pipelined in (True, False):
        calls["n"] = 0
        seen, validated = [], []
        cls = type("T", (en.Trainer,), {"pipelined": pipelined})
        cb = en.Callbacks(on_step=lambda r: seen.append((r["step"], calls["n"])),
                          on_validate=lambda step, opt: validated.append((step, calls["n"], len(seen))),
                          validate_every=3)
        res = cls(ToyRoot(), counting, ToySource(n=4), cfg(steps=7, checkpoint_every=5), tmp_path / str(pipelined),
                  callbacks=cb).train()
        runs[pipelined] = (res, seen, validated)
    (rp, seen_p, val_p), (rs, seen_s, val_s) = runs[True], runs[False]
    assert seen_s == [(k, k) for k in range(1, 8)]  # read at the end of each step
    # pipelined: step k is told after step k + 1's forward; steps 3, 5 (validate, checkpoint), 6
    # (validate) and 7 (the last) at once
    assert seen_p == [(1, 2), (2, 3), (3, 3), (4, 5), (5, 5), (6, 6), (7, 7)], seen_p
    assert val_p == val_s == [(3, 3, 3), (6, 6, 6)]
    drop = ("s_per_step",)
    assert [{k: v for k, v in h.items() if k not in drop} for h in rp.history] == \
        [{k: v for k, v in h.items() if k not in drop} for h in rs.history]
    a, b = lora_tensors(rp), lora_tensors(rs)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [Path(c).name for c in rp.checkpoints] == [Path(c).name for c in rs.checkpoints] == \
        ["step_000005.safetensors", "step_000007.safetensors"]


def test_a_stop_between_steps_saves_the_step_still_being_read(tmp_path):
    """A cancel that comes while a step's numbers are still on their way saves that step,
    with its record: the checkpoint names the LoRA it holds."""
    seen = []
    stop = {"now": False}

    def on_step(r):
        seen.append(r["step"])
        stop["now"] = r["step"] >= 2

    cb = en.Callbacks(on_step=on_step, should_stop=lambda: stop["now"])
    with pytest.raises(en.TrainingStopped) as e:
        en.Trainer(ToyRoot(), toy_predict, ToySource(n=4), cfg(steps=9), tmp_path, callbacks=cb).train()
    assert e.value.reason == "cancelled"
    # step 3 was queued when step 2 was read; the stop is seen at step 4's start, after step 3
    # is read: the checkpoint is step 3's, with three records
    assert seen == [1, 2, 3] and e.value.step == 3
    tensors, meta = en.read_checkpoint(Path(e.value.checkpoint))
    assert int(meta["step"]) == 3 and len(json.loads(meta["history"])) == 3


def test_divergence_stops(tmp_path):
    calls = {"n": 0}

    def blowup(root, inputs):
        calls["n"] += 1
        v, a = toy_predict(root, inputs)
        return v * (1 + (calls["n"] > 25) * 100.0), a

    with pytest.raises(en.TrainingStopped) as e:
        en.Trainer(ToyRoot(), blowup, ToySource(), cfg(steps=60, learning_rate=1e-4), tmp_path).train()
    assert e.value.reason == "diverged" and "lower it" in str(e.value)


def test_modes_use_the_right_streams(tmp_path):
    seen = []

    def spy(root, inputs):
        seen.append((inputs.video is not None, inputs.audio is not None,
                     inputs.video.noised.target is not None if inputs.video else None,
                     inputs.audio.noised.target is not None if inputs.audio else None))
        return toy_predict(root, inputs)

    for mode, want in [("video_only", (True, False, True, None)), ("audio_only", (False, True, None, True)),
                       ("video_to_audio", (True, True, False, True)), ("audio_to_video", (True, True, True, False))]:
        seen.clear()
        en.Trainer(ToyRoot(), spy, ToySource(), cfg(steps=1, mode=mode), tmp_path / mode).train()
        assert seen[0] == want, mode


def test_audio_mode_on_silent_clip_says_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="no audio latents"):
        en.Trainer(ToyRoot(), toy_predict, ToySource(audio=False), cfg(steps=1), tmp_path).train()


def test_lr_schedules():
    c = cfg(steps=110, warmup_steps=10, scheduler="cosine")
    assert en.lr_factor(0, c) == pytest.approx(0.1)
    assert en.lr_factor(9, c) == pytest.approx(1.0)
    assert en.lr_factor(60, c) == pytest.approx(0.5)
    assert en.lr_factor(110, c) == pytest.approx(0.0, abs=1e-9)
    lin = cfg(steps=100, scheduler="linear")
    assert en.lr_factor(50, lin) == pytest.approx(0.5)
    assert en.lr_factor(77, cfg(scheduler="constant")) == 1.0


def test_plateau_note():
    flat = [{"loss": 1.0 + 0.001 * math.sin(i)} for i in range(100)]
    falling = [{"loss": 1.0 / (1 + i)} for i in range(100)]
    assert "plateau" in en.plateau(flat)
    assert en.plateau(falling) is None


def test_config_round_trip_and_recipes():
    c = en.TrainConfig(**en.RECIPES["Audio"])
    assert en.TrainConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="unknown training settings"):
        en.TrainConfig.from_dict({"stepz": 3})


def test_on_validate_runs_at_its_steps_and_changes_nothing(tmp_path):
    """on_validate(step, optimizer) every validate_every steps; offloading the optimizer
    state meanwhile (and drawing random numbers, as sampling does) leaves the LoRA identical."""
    seen = []

    def validate(step, opt):
        with en.optimizer_offloaded(opt) as n:
            assert all(v.device.type == "cpu" for st in opt.state.values() for v in st.values() if torch.is_tensor(v))
            seen.append((step, n >= 0))
            torch.randn(100)  # sampling uses the global generator

    plain = lora_tensors(en.Trainer(ToyRoot(), toy_predict, ToySource(), cfg(), tmp_path / "a").train())
    res = en.Trainer(ToyRoot(), toy_predict, ToySource(), cfg(), tmp_path / "b",
                     callbacks=en.Callbacks(on_validate=validate, validate_every=5)).train()
    assert [s for s, _ in seen] == [5, 10]
    got = lora_tensors(res)
    assert all(torch.equal(plain[k], got[k]) for k in plain)


def test_collector_kept_out_of_steps_and_given_back(tmp_path):
    import gc
    import weakref

    assert gc.get_freeze_count() == 0 and gc.isenabled()

    class Junk:
        pass

    made = []

    def predict(root, inputs):
        j = Junk()
        j.me = j  # a reference cycle per step: only the collector frees it
        made.append(weakref.ref(j))
        return toy_predict(root, inputs)

    seen = []

    def on_step(rec):
        seen.append((rec["step"], gc.get_freeze_count() > 0, gc.isenabled(), sum(r() is not None for r in made)))

    en.Trainer(ToyRoot(), predict, ToySource(), cfg(steps=5), tmp_path,
               callbacks=en.Callbacks(on_step=on_step)).train()
    # from the end of the first step on: old objects frozen, no automatic collection inside
    # steps, and still every step's cycles collected between steps
    assert seen == [(s, True, False, 0) for s in range(1, 6)], seen
    # ... and everything handed back when training ends
    assert gc.get_freeze_count() == 0 and gc.isenabled()
    # a second freeze owner is respected: training neither freezes more nor unfreezes theirs,
    # and still keeps automatic collection out of its steps, collecting between them
    gc.freeze()
    try:
        before = gc.get_freeze_count()
        seen.clear()
        made.clear()
        en.Trainer(ToyRoot(), predict, ToySource(), cfg(steps=3), tmp_path / "b",
                   callbacks=en.Callbacks(on_step=on_step)).train()
        # (frozen objects may die meanwhile; a freeze of ours would add the run's objects)
        assert 0 < gc.get_freeze_count() <= before and gc.isenabled()
        assert [(s, e, n) for s, _, e, n in seen] == [(s, False, 0) for s in range(1, 4)], seen
    finally:
        gc.unfreeze()


def test_collector_given_back_when_training_stops_early(tmp_path):
    import gc

    with pytest.raises(en.TrainingStopped):
        en.Trainer(ToyRoot(), toy_predict, ToySource(), cfg(steps=6), tmp_path,
                   callbacks=en.Callbacks(should_stop=iter([False, False, True]).__next__)).train()
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_quiet_gc_collects_cycles_that_outlived_a_tick():
    """Something alive at a tick is promoted past the young generations; when it later becomes
    cyclic garbage, the periodic full collection (old objects frozen, so cheap) frees it."""
    import gc
    import weakref

    class Node:
        pass

    q = en.QuietGC(full_every=3)
    q.settle()
    try:
        a = Node()
        a.me = a
        r = weakref.ref(a)
        q.tick()  # a survives: it moves to the oldest generation
        q.tick()
        del a  # now garbage, in a cycle, in the oldest generation
        q.tick()  # the third tick collects everything not frozen
        assert r() is None
        b = Node()
        b.me = b
        rb = weakref.ref(b)
        q.tick()
        del b
        q.tick()  # a young-generation tick does not reach it
        assert rb() is not None
        q.tick()
        assert rb() is None
    finally:
        q.release()


def test_validation_garbage_is_collected_before_training_goes_on(tmp_path):
    """Sampling inside training (the validation callback) may leave GPU tensors in reference
    cycles that outlive a young-generation collection; a full collection follows it."""
    import gc
    import weakref

    class Held:
        pass

    refs = []
    old = {}

    def validate(step, opt):
        keep = Held()
        keep.me = keep
        refs.append(weakref.ref(keep))
        old["obj"] = keep  # survives the next young collection: promoted to the oldest generation
        gc.collect(1)
        del old["obj"], keep  # now cyclic garbage in the oldest generation

    alive_after = []

    def on_step(rec):
        alive_after.append(sum(r() is not None for r in refs))

    en.Trainer(ToyRoot(), toy_predict, ToySource(), cfg(steps=6), tmp_path,
               callbacks=en.Callbacks(on_validate=validate, validate_every=2, on_step=on_step)).train()
    assert len(refs) == 3
    assert all(r() is None for r in refs)
    # on_step runs before validation; by the next step the previous validation's cycle is gone
    assert alive_after == [0, 0, 0, 0, 0, 0], alive_after


def test_fused_adamw_is_the_default_update():
    """make_optimizer takes PyTorch's fused AdamW on a CUDA device (one launch for every LoRA
    tensor); its update is the default AdamW's to rounding — checked here on the CPU, where
    PyTorch has the fused kernel too — over 20 steps with weight decay and uneven shapes."""
    c = cfg(weight_decay=0.01, betas=(0.9, 0.99))
    g = torch.Generator().manual_seed(0)
    shapes = [(32, 4), (4, 48), (7,), (3, 5, 2)]
    init = [torch.randn(s, generator=g) for s in shapes]
    grads = [[torch.randn(s, generator=g) for s in shapes] for _ in range(20)]
    out = []
    for fused in (None, True):
        ps = [torch.nn.Parameter(t.clone()) for t in init]
        opt = torch.optim.AdamW(ps, lr=c.learning_rate, betas=tuple(c.betas), weight_decay=c.weight_decay, fused=fused)
        for gs in grads:
            for p_, g_ in zip(ps, gs):
                p_.grad = g_.clone()
            opt.step()
        out.append([p_.detach() for p_ in ps])
    for a, b, t in zip(*out, init):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert (a - t).abs().max() > c.learning_rate  # the steps moved every tensor
    mine = en.make_optimizer([torch.nn.Parameter(t.clone()) for t in init], c)
    assert mine.defaults["fused"] is None  # CPU parameters: the default (foreach) AdamW
    assert mine.defaults["weight_decay"] == 0.01 and tuple(mine.defaults["betas"]) == (0.9, 0.99)
