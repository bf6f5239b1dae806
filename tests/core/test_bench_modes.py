"""The train-step benchmark's mode runs (bench/bench_train_step.py ``:ic`` / ``:ic2`` / ``:ext``,
``--official 768x512x121:ic`` …) on CPU at a tiny layout: the --runs / --official options
parse; our inputs come out of trainer_core.modes with the token counts of the mode (a full-size
reference as long as the target, a half-size one a quarter, extension's 8 clean latent frames),
the FLOP count and the memory plan see the reference; a step trains on them; and the official
stack's inputs (bench/official_stack.py, built as ltx-trainer's flexible strategy builds them)
have the same sequence — length, reference positions, per-token timestep 0 on the reference
and the prefix — and ltx-core's LTXModel trains on them. The benchmark itself needs CUDA."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import bench_train_step as bts  # noqa: E402
from trainer_core import modes as md  # noqa: E402
from trainer_core.ltx2 import LTX2Config, build_tree, make_predict  # noqa: E402
from trainer_core.tiny_checkpoint import text_context_width, tiny_config  # noqa: E402

import official_stack as off  # noqa: E402

WHY = off.unavailable()

# tiny layout with the real frame count: latent grid (16, 2, 4) = 128 video tokens, 126 audio steps
W, H, F, FPS = 128, 64, 121, 24.0
GRID = (16, 2, 4)
N = 16 * 2 * 4


def _ours(mode, variant="ltx-2.0"):
    cfg = tiny_config(variant)
    c = LTX2Config.from_metadata({"config": cfg})
    return c, cfg, bts.mode_step_inputs(c, text_context_width(cfg, processed=False), W, H, F, FPS, "cpu", 0, mode)


def test_runs_and_official_options_parse(capsys):
    assert bts.main(["--runs", "768x512x121:none:ic,768x512x121:none:nocal:ic2,768x512x121:none:ext,768x512x121:24",
                     "--official", "768x512x121:ic,768x512x121:ic2,768x512x121:ext,512x512x33", "--parse-only"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["mode"] for r in got["runs"]] == ["ic", "ic2", "ext", "t2v"]
    assert [r["budget"] for r in got["runs"]] == [None, None, None, 24.0]
    assert got["runs"][1]["calibrate"] is False and got["runs"][0]["calibrate"] is True
    assert [tuple(x) for x in got["official"]] == [("768x512x121", "ic"), ("768x512x121", "ic2"),
                                                   ("768x512x121", "ext"), ("512x512x33", "t2v")]
    with pytest.raises(ValueError, match="one mode option"):
        bts.main(["--runs", "768x512x121:none:ic:ext", "--parse-only"])
    with pytest.raises(ValueError, match="not one of"):
        bts.main(["--official", "768x512x121:i2v", "--parse-only"])
    # every bench mode has its official counterpart, and names a preset that exists
    assert set(bts.BENCH_MODES) <= set(off.OFFICIAL_MODES if WHY is None else bts.BENCH_MODES)
    for spec in bts.BENCH_MODES.values():
        md.resolve(spec["preset"])


@pytest.mark.parametrize("mode,ref,cond,audio", [("ic", N, None, False), ("ic2", N // 4, None, False),
                                                 ("ext", 0, 8 * 2 * 4, True)])
def test_mode_inputs_have_the_modes_sequence(mode, ref, cond, audio):
    c, cfg, inp = _ours(mode)
    counts = bts.token_counts(inp)
    assert counts["video_tokens"] == N and counts["reference_tokens"] == ref
    assert (inp.audio is not None) is audio and counts["audio_tokens"] == (126 if audio else 0)
    if cond is not None:  # extension: the first 8 latent frames clean, σ 0, no loss
        assert counts["conditioning_tokens"] == cond
        assert bool((inp.video.sigma[0, :cond] == 0).all()) and bool((inp.video.sigma[0, cond:] > 0).all())
        assert not bool(inp.inputs.video.loss_mask[0, :cond].any()) and bool(inp.inputs.video.loss_mask[0, cond:].all())
    assert bts.seq_tokens(inp) == (N + ref, 126 if audio else 0)
    if ref:
        toks, pos = inp.video.reference
        assert toks.shape == (1, ref, 128) and pos.shape[2] == ref
        if mode == "ic2":  # a half-size reference sits on the target's grid: positions scaled by 2
            from trainer_core.ltx2.forward import video_positions

            plain = video_positions((16, 1, 2), c, FPS, "cpu")
            assert torch.equal(pos[:, 1:], plain[:, 1:] * 2) and torch.equal(pos[:, 0], plain[:, 0])
    # the memory plan counts the reference tokens
    from trainer_core.ltx2.memory import plan_memory

    root = build_tree(c, init="meta")
    plan = plan_memory(root.transformer_blocks, 0, *bts.seq_tokens(inp), budget_gib=None)
    plan0 = plan_memory(root.transformer_blocks, 0, N, 126 if audio else 0, budget_gib=None)
    assert (plan.expected_peak_gib > plan0.expected_peak_gib) is bool(ref)
    from trainer_core.ltx2.memory import StepSpeed, predict_step_s

    sp = StepSpeed(165.0, 25.0, "4090-class")
    t = predict_step_s(plan, root.transformer_blocks, *bts.seq_tokens(inp), sp)
    t0 = predict_step_s(plan0, root.transformer_blocks, N, 126 if audio else 0, sp)
    assert t > 0 and (t > t0) is bool(ref)


def test_mode_step_trains_and_flops_count_the_reference():
    from torch.utils.flop_counter import FlopCounterMode

    c, cfg, _ = _ours("ic")
    root = build_tree(c, init="random", seed=0)
    root.requires_grad_(False)
    flops = {}
    for mode in ("ic", "ic2", "ext"):
        _, _, inp = _ours(mode)
        with torch.no_grad():
            fc = FlopCounterMode(display=False)
            with fc:
                v, a = make_predict(checkpointing=False)(root, inp)
        flops[mode] = fc.get_total_flops()
        assert v.shape == (1, N, 128) and (a is None) == (inp.audio is None)
        lora, opt = bts._lora_and_opt(root, "cpu")
        before = [p.detach().clone() for p in lora.parameters()]
        loss = float(bts._step(make_predict(checkpointing=False), root, inp, lora, opt))
        # the benchmark's loss is the mode's training loss (references and conditioning carry none)
        with torch.no_grad():
            v, a = make_predict(checkpointing=False)(root, inp)
        want = 0.0
        for pred, si in ((v, inp.inputs.video), (a, inp.inputs.audio)):
            if si is not None:
                want += float(((pred.float() - si.target.float()) ** 2).mean(-1)[si.loss_mask].mean())
        assert abs(float(bts.step_loss(v, a, inp)) - want) < 1e-5
        assert torch.isfinite(torch.tensor(loss))
        assert any(not torch.equal(p, b) for p, b in zip(lora.parameters(), before))
        lora.detach()
    assert flops["ic"] > flops["ic2"]  # the reference's tokens go through the blocks


def test_ratios_are_per_mode():
    recs = [{"stack": "ours", "model": "m", "shape": "s", "mode": "t2v", "budget_gib": None, "s_per_step": 1.0},
            {"stack": "ours", "model": "m", "shape": "s", "mode": "ic", "budget_gib": None, "s_per_step": 2.0},
            {"stack": "ours", "model": "m", "shape": "s", "mode": "ic", "budget_gib": 24.0, "s_per_step": 3.0},
            {"stack": "official", "model": "m", "shape": "s", "mode": "ic", "s_per_step": 8.0},
            {"stack": "official", "model": "m", "shape": "s", "s_per_step": 2.5}]
    bts.add_ratios(recs)
    assert recs[1]["ratio_to_resident"] == 1.0 and recs[2]["ratio_to_resident"] == 1.5
    assert recs[1]["speedup_vs_official"] == 4.0 and recs[0]["speedup_vs_official"] == 2.5


@pytest.mark.skipif(WHY is not None, reason=WHY or "")
@pytest.mark.parametrize("mode", ["ic", "ic2", "ext"])
def test_official_mode_inputs_match_ours_and_train(mode):
    c, cfg, inp = _ours(mode)
    tcfg = cfg["transformer"]
    oi = off.official_mode_inputs(tcfg, W, H, F, FPS, "cpu", mode, text_tokens=16)
    counts = bts.token_counts(inp)
    r = oi.reference_tokens
    assert r == counts["reference_tokens"]
    assert oi.video.latent.shape[1] == counts["video_tokens"] + r == bts.seq_tokens(inp)[0]
    assert (oi.audio is None) == (inp.audio is None)
    if oi.audio is not None:
        assert oi.audio.latent.shape[1] == counts["audio_tokens"]
    assert oi.video_targets.shape[1] == counts["video_tokens"]
    assert oi.video.positions.shape[2] == oi.video.latent.shape[1] == oi.video.timesteps.shape[1]
    if r:  # the reference: in front, timestep 0, no loss, the same positions as ours
        assert bool((oi.video.timesteps[:, :r] == 0).all()) and not bool(oi.video_loss_mask[:, :r].any())
        assert torch.allclose(oi.video.positions[:, :, :r].float(), inp.video.reference[1].float())
    from trainer_core.ltx2.forward import video_positions

    assert torch.allclose(oi.video.positions[:, :, r:].float(), video_positions(GRID, c, FPS, "cpu").float())
    if mode == "ext":
        k = counts["conditioning_tokens"]
        assert oi.conditioning_tokens == k == 64
        assert bool((oi.video.timesteps[:, :k] == 0).all()) and bool((oi.video.timesteps[:, k:] > 0).all())
        assert not bool(oi.video_loss_mask[:, :k].any()) and bool(oi.video_loss_mask[:, k:].all())
    model = off.build_official(tcfg, "cpu", rank=4)
    step = off.official_mode_step_fn(model, oi, lr=1e-2)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    losses = [float(step()) for _ in range(2)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if p.requires_grad)


@pytest.mark.skipif(WHY is not None, reason=WHY or "")
def test_official_masked_loss_is_flexibles():
    """official_stack.masked_loss against ltx-trainer's own _compute_modality_loss (flexible.py
    from the source copy tests/core/test_modes.py loads), on a prediction with reference tokens."""
    from tests.core import test_modes as tm

    if tm.FLEX is None:
        pytest.skip(f"official stack unavailable: {tm.WHY}")
    g = torch.Generator().manual_seed(1)
    pred, tgt = torch.randn(2, 10, 8, generator=g), torch.randn(2, 7, 8, generator=g)
    mask = torch.rand(2, 10, generator=g) > 0.3
    mask[:, :3] = False
    ref = tm.FLEX.FlexibleStrategy._compute_modality_loss(pred, tgt, mask)
    assert torch.allclose(off.masked_loss(pred, tgt, mask), ref, atol=1e-6)
