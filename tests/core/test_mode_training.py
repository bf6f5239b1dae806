"""Every training mode through the engine on the tiny LTX-2 tree: the loss of fixed draws
falls when overfitting, and a run cancelled at step k and resumed ends with the LoRA of the
run that never stopped, bit for bit. References and masks come in as the cache gives them
(LatentItem.reference / reference_audio / video_mask / audio_mask)."""
from __future__ import annotations

import json

import pytest
import torch

from trainer_core import engine as en
from trainer_core import modes as md
from trainer_core import tiny_checkpoint
from trainer_core.ltx2 import LTX2Config, build_tree, make_predict

CFG = LTX2Config.from_transformer_config(tiny_checkpoint.tiny_config("2.3")["transformer"])
WIDTH = tiny_checkpoint.text_context_width("2.3", processed=False)
F, H, W, T = 3, 2, 4, 8


class PairedSource(en.ItemSource):
    """Cached samples with references (full or scaled size) and masks."""

    def __init__(self, ref_scale=1, seed=0, n=1):
        g = torch.Generator().manual_seed(seed)
        items = []
        for i in range(n):
            vm = torch.zeros(F, H, W)
            vm[:, :, : W // 2] = 1.0  # left half kept, right half to fill
            am = torch.zeros(T)
            am[: T // 2] = 1.0
            items.append(en.LatentItem(
                key=f"s{i}", video=torch.randn(128, F, H, W, generator=g), audio=torch.randn(8, T, 16, generator=g),
                text={"context": torch.randn(5, WIDTH, generator=g)}, fps=24.0, bucket="128x64x17",
                reference=torch.randn(128, F, H // ref_scale, W // ref_scale, generator=g),
                reference_audio=torch.randn(8, T, 16, generator=g), video_mask=vm, audio_mask=am,
                reference_scale=ref_scale))
        super().__init__(items, {"context": torch.zeros(5, WIDTH)})


# (mode, conditions, reference scale): the 13 official modes (boundaries and the outpainting
# rectangle fitted to the tiny grid), the pack's video_only, a composition and a scaled reference
CASES = [(m, "", 1) for m in md.OFFICIAL] + [
    ("video_only", "", 1),
    ("v2v_ic_lora", "reference + first_frame@0.5", 2),
    ("video_extension", "prefix:1@0.5 + suffix:1@0.5", 1),
]


def _cfg(mode, conditions, **kw):
    base = dict(steps=6, learning_rate=0.1, max_grad_norm=0.0, rank=4, alpha=4, targets="all attention", seed=3,
                mode=mode,
                conditions=conditions or ("spatial_crop[0,0,32,64]" if mode == "video_outpainting" else ""),
                extension_frames=1, mixed_precision="fp32", checkpoint_every=0, sigma_sampler="uniform",
                caption_dropout=0.2)
    base.update(kw)
    return en.TrainConfig(**base)


def _root():
    return build_tree(CFG, seed=5)


def _fixed_loss(root, predict, data, cfg, lora=None, steps=3):
    """Mean loss over the draws of the run's first ``steps`` steps (the engine seeds step k's
    generator from (seed, k)): what overfitting lowers."""
    mode = en.training_mode(cfg)
    items = [data.get(i) for i in range(len(data))]
    if lora is not None:
        lora.attach(root)
    total = 0.0
    try:
        for k in range(steps):
            inp = en.build_step_inputs(items, mode, cfg, torch.Generator().manual_seed(en._mix(cfg.seed, k, 0)),
                                       data.empty_text(), "cpu", torch.float32, config=CFG)
            with torch.no_grad():
                v, a = predict(root, inp)
                lv, la = en.step_losses(inp, v, a)
            total += float(en.ob.combine_losses(lv, la, cfg.audio_weight))
    finally:
        if lora is not None:
            lora.detach()
    return total / steps


@pytest.fixture(autouse=True)
def one_thread():
    """The tiny tree is launch-bound: one thread is as fast and spends no CPU spinning."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("mode,conditions,scale", CASES, ids=[f"{m}{'+' if c else ''}{'/' + str(s) if s > 1 else ''}"
                                                             for m, c, s in CASES])
def test_mode_trains_and_resumes_exactly(mode, conditions, scale, tmp_path):
    predict = make_predict(checkpointing=False)
    data = PairedSource(scale)
    cfg = _cfg(mode, conditions, checkpoint_every=3)
    full = en.Trainer(_root(), predict, data, cfg, tmp_path / "full").train()
    root = _root()
    before = _fixed_loss(root, predict, data, cfg)
    after = _fixed_loss(root, predict, data, cfg, full.lora)
    assert after < 0.95 * before, (before, after)

    # the step-3 checkpoint of that run, resumed by a fresh trainer (fresh model, other global
    # RNG state), ends with the same LoRA and the same losses
    ck = tmp_path / "full" / "checkpoints" / "step_000003.safetensors"
    torch.manual_seed(7)
    resumed = en.Trainer(_root(), predict, data, cfg, tmp_path / "full").train(resume_from=ck)
    a, b = full.lora.state_dict(), resumed.lora.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed run differs from the uninterrupted one"
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]


def test_references_and_masks_reach_the_model():
    """The step inputs carry the cached reference (in front, σ = 0, no loss) and the masks
    (kept tokens clean, σ = 0) — and a reference-less cache is refused with what to do."""
    data = PairedSource(2)
    cfg = _cfg("av2av_ic_lora", "")
    inp = en.build_step_inputs([data.get(0)], en.training_mode(cfg), cfg, torch.Generator().manual_seed(0),
                               data.empty_text(), "cpu", torch.float32, config=CFG)
    rt, rp = inp.video.reference
    assert rt.shape == (1, F * (H // 2) * (W // 2), 128)
    assert torch.equal(rt[0], en.video_to_tokens(data.get(0).reference[None])[0])
    assert rp.shape[2] == rt.shape[1] and inp.audio.reference[0].shape == (1, T, 128)
    cfg = _cfg("video_inpainting", "")
    inp = en.build_step_inputs([data.get(0)], en.training_mode(cfg), cfg, torch.Generator().manual_seed(0),
                               data.empty_text(), "cpu", torch.float32, config=CFG)
    kept = data.get(0).video_mask.reshape(-1) > 0.5
    assert torch.all(inp.video.sigma[0, kept] == 0) and torch.all(inp.video.sigma[0, ~kept] > 0)
    assert torch.equal(inp.video.tokens[0, kept], en.video_to_tokens(data.get(0).video[None])[0, kept])
    bare = PairedSource(1)
    bare.items = [en.LatentItem(**{**it.__dict__, "reference": None}) for it in bare.items]
    with pytest.raises(ValueError, match="reference video per sample"):
        en.build_step_inputs([bare.get(0)], en.training_mode(_cfg("v2v_ic_lora", "")), cfg,
                             torch.Generator(), None, "cpu", torch.float32, config=CFG)


def test_resume_of_a_draw_order_1_checkpoint(tmp_path):
    """A checkpoint made before draw order 2: an image→video run is refused with what to do;
    a run without conditions continues exactly (its draws did not change)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    predict = make_predict(checkpointing=False)
    data = PairedSource()

    def old_checkpoint(cfg, run):
        calls = {"n": 0}

        def stop():
            calls["n"] += 1
            return calls["n"] > 2

        with pytest.raises(en.TrainingStopped):
            en.Trainer(_root(), predict, data, cfg, run, callbacks=en.Callbacks(should_stop=stop)).train()
        ck = en.list_checkpoints(run)[-1]
        with safe_open(str(ck), framework="pt") as f:
            meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
        fp = json.loads(meta["fingerprint"])
        for k in ("draw order", "mode spec"):
            fp.pop(k)
        meta["fingerprint"] = json.dumps(fp, sort_keys=True)
        save_file(tensors, str(ck), metadata=meta)
        return ck

    i2v = _cfg("image_to_video", "", steps=4, first_frame_prob=0.5)
    ck = old_checkpoint(i2v, tmp_path / "i2v")
    with pytest.raises(en.CheckpointError, match="draw order 1.*init_lora"):
        en.Trainer(_root(), predict, data, i2v, tmp_path / "i2v").train(resume_from=ck)
    t2v = _cfg("text_to_audio_video", "", steps=4)
    full = en.Trainer(_root(), predict, data, t2v, tmp_path / "full").train()
    ck = old_checkpoint(t2v, tmp_path / "t2v")
    res = en.Trainer(_root(), predict, data, t2v, tmp_path / "t2v").train(resume_from=ck)
    assert any("draw order 1" in n for n in res.notes)
    a, b = full.lora.state_dict(), res.lora.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", ["text_to_audio_video", "video_only", "audio_only", "video_to_audio",
                                  "audio_to_video"])
def test_modes_without_conditions_draw_as_draw_order_1(name):
    """What lets a draw-order-1 checkpoint of these modes resume: the earlier engine's draws
    (objective.noise_modality per modality, σ then ε) give the very same step inputs."""
    data = PairedSource(n=2)
    items = [data.get(0), data.get(1)]
    cfg = _cfg(name, "", caption_dropout=0.0, sigma_sampler="shifted_logit_normal")
    new = en.build_step_inputs(items, en.training_mode(cfg), cfg, torch.Generator().manual_seed(9), None, "cpu",
                               torch.float32, config=CFG)
    om = en.ob.get_mode(name)
    g = torch.Generator().manual_seed(9)
    for key, role in (("video", om.video), ("audio", om.audio)):
        if role == en.ob.ABSENT:
            assert getattr(new, key) is None
            continue
        x = torch.stack([getattr(it, key) for it in items])
        tok = en.video_to_tokens(x) if key == "video" else en.audio_to_tokens(x)
        old = en.ob.noise_modality(tok, role, g, "shifted_logit_normal")
        assert torch.equal(old.x_t, getattr(new, key).tokens) and torch.equal(old.sigma, getattr(new, key).sigma)
