"""Memory plan and weight streaming (trainer_core.ltx2.memory) on a tiny LTX-2 tree on CPU.

Streaming moves where the frozen weights live, never what is computed: a few LoRA steps
with blocks streamed through two slots must give the very same losses and LoRA weights as
the resident run, and the weights must be back in place afterwards.
"""
from __future__ import annotations

import copy

import pytest
import torch

from trainer_core import objective as ob
from trainer_core import tiny_checkpoint
from trainer_core.lora import LoRASet, LoRASpec
from trainer_core.ltx2 import LTX2Config, build_tree, make_predict
from trainer_core.ltx2.memory import GIB, BlockStreamer, MemoryPlan, module_bytes, plan_memory

from tests.core.test_ltx2_forward import step_inputs  # noqa: E402


def _tree(variant: str, layers: int = 6):
    cfg = tiny_checkpoint.tiny_config(variant)["transformer"]
    cfg = dict(cfg, num_layers=layers)
    c = LTX2Config.from_transformer_config(cfg)
    root = build_tree(c, init="random", seed=3)
    root.requires_grad_(False)
    return c, root


def _train(root, c, plan, steps=3, variant_inputs=None, **predict_kw):
    lora = LoRASet.for_model(root, LoRASpec(rank=4, alpha=4, preset="all attention"), seed=1)
    with torch.no_grad():  # non-zero B so every adapter changes the output from step 0
        for p in lora.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    lora.attach(root)
    opt = torch.optim.AdamW(list(lora.parameters()), lr=1e-2)
    predict = make_predict(memory_plan=plan, **predict_kw)
    losses = []
    for s in range(steps):
        inp = step_inputs(c, "text_to_audio_video", seed=10 + s)
        v, a = predict(root, inp)
        loss = ob.masked_mse(v, inp.video.noised.target, inp.video.noised.loss_mask).mean() + \
            ob.masked_mse(a, inp.audio.noised.target, inp.audio.noised.loss_mask).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    streamer = predict.streamer
    copies = streamer.copies if streamer is not None else 0
    if predict.offloader is not None:
        _train.offloaded = (predict.offloader.bytes_out, predict.offloader.fetches)
    predict.release()
    lora.detach()
    return losses, {k: v.detach().clone() for k, v in lora.state_dict().items()}, copies


@pytest.mark.parametrize("variant", ["2.0", "2.3"])
def test_streamed_training_equals_resident(variant):
    c, root = _tree(variant)
    ref_state = copy.deepcopy(root.state_dict())
    n = len(root.transformer_blocks)
    resident = MemoryPlan(["keep", "full", "keep", "full", "full", "keep"])
    streamed = MemoryPlan(["keep", "full", "full", "full", "full", "full"], streamed=[1, 2, 4, 5])
    l1, w1, c1 = _train(root, c, resident)
    l2, w2, c2 = _train(root, c, streamed)
    assert c1 == 0
    # each step: 4 blocks come in for the forward and again for their recomputation; the
    # turn at the end of the forward reuses what is already there
    assert 3 * 4 <= c2 <= 3 * 8
    assert l1 == l2
    assert w1.keys() == w2.keys()
    for k in w1:
        assert torch.equal(w1[k], w2[k]), k
    assert l1[-1] != l1[0]  # training moved
    # weights back where they were, unchanged
    for k, v in root.state_dict().items():
        assert v.device == ref_state[k].device
        assert torch.equal(v, ref_state[k]), k
    assert n == 6


@pytest.mark.parametrize("variant,compiled", [("2.0", False), ("2.3", False), ("2.0", "aot_eager")])
def test_offloaded_activations_equal_kept_ones(variant, compiled):
    """mode "offload": a block's saved activations go to host memory after its forward and
    come back for its backward. Same kernels on bit-identical tensors: the losses and the
    LoRA equal the all-"keep" run exactly, alone and next to streamed, recomputed blocks —
    eager, and compiled (AOTAutograd saves the block's tensors in one go)."""
    c, root = _tree(variant)
    kw = dict(offload_min_bytes=0, compile_blocks=compiled)
    l_keep, w_keep, _ = _train(root, c, MemoryPlan(["keep"] * 6), **kw)
    _train.offloaded = (0, 0)
    l_off, w_off, _ = _train(root, c, MemoryPlan(["offload", "full", "offload", "offload", "keep", "offload"]), **kw)
    moved, fetches = _train.offloaded
    assert moved > 0 and fetches == 3 * 4  # every offloaded block comes back once per step
    _train.offloaded = (0, 0)
    l_mix, w_mix, copies = _train(root, c, MemoryPlan(["offload", "full", "offload", "keep", "full", "offload"],
                                                      streamed=[1, 4]), **kw)
    assert copies >= 2 and _train.offloaded[1] == 3 * 3  # two streamed blocks: both slots hold them
    # streamed blocks that keep their activations in host memory too: their saved weights are
    # taken from the slots in backward (three streamed blocks through two slots: block 1
    # comes back for its backward, brought by block 3's backward)
    _train.offloaded = (0, 0)
    l_so, w_so, copies = _train(root, c, MemoryPlan(["offload", "offload", "full", "offload", "keep", "offload"],
                                                    streamed=[1, 3, 5]), **kw)
    assert _train.offloaded[1] == 3 * 4 and copies >= 3 * 2
    assert l_off == l_keep and l_mix == l_keep and l_so == l_keep
    for k in w_keep:
        assert torch.equal(w_off[k], w_keep[k]), k
        assert torch.equal(w_mix[k], w_keep[k]), k
        assert torch.equal(w_so[k], w_keep[k]), k


def test_offloader_frees_device_copies_and_reuses_host_buffers():
    """The block's saved tensors live only in the host buffer between forward and backward
    (the device copies are let go), the host buffers are reused step after step, weights and
    the block's inputs are never copied, and a second backward over a kept graph still works."""
    from trainer_core.ltx2.memory import ActivationOffloader

    c, root = _tree("2.0", layers=2)
    lin = root.transformer_blocks[0].attn1.to_q
    lin.weight.requires_grad_(True)
    off = ActivationOffloader(root.transformer_blocks, [0], "cpu", min_bytes=0)
    x = torch.randn(3, lin.in_features, requires_grad=True)
    bufs = set()
    for step in range(3):
        with off.saving(0, (x,)):
            h = torch.tanh(lin(x * 2.0))
            y = (h * h).sum(dim=1)
        off.finish(0, (y,))
        saved = [r() for r in off.saved[0]]
        assert saved and all(s.dev is None and s.host is not None for s in saved)
        assert all(s.host.data_ptr() != x.data_ptr() and s.host.data_ptr() != lin.weight.data_ptr() for s in saved)
        bufs.add(off.host[0].data_ptr())
        y.sum().backward(retain_graph=True)
        g1 = x.grad.clone()
        x.grad = None
        y.sum().backward()  # second pass: served again from the host copies
        assert torch.equal(x.grad, g1)
        x.grad = None
        del saved  # the graph is gone: nothing holds the block's tensors, the buffer is reused
    assert len(bufs) == 1 and off.fetches == 3 and off.host_allocs == 1
    ref_x = x.detach().clone().requires_grad_(True)
    torch.tanh(lin(ref_x * 2.0)).pow(2).sum().backward()
    assert torch.allclose(ref_x.grad, g1)
    # two forwards before their backwards (e.g. two losses): the second forward must not
    # overwrite what the first graph still needs
    ys = []
    for scale in (2.0, -3.0):
        with off.saving(0, (x,)):
            y = torch.tanh(lin(x * scale)).pow(2).sum()
        off.finish(0, (y,))
        ys.append(y)
    g = [torch.autograd.grad(y, x)[0] for y in ys]
    for scale, gi in zip((2.0, -3.0), g):
        r = x.detach().clone().requires_grad_(True)
        torch.tanh(lin(r * scale)).pow(2).sum().backward()
        assert torch.allclose(r.grad, gi)
    off.release()
    assert not off.host


@pytest.mark.parametrize("variant", ["2.0", "2.3"])
def test_fp8_streaming_equals_a_resident_run_on_fp8_rounded_weights(variant):
    """transfer="fp8": the streamed blocks' linear weights travel as fp8 with per-row scales
    and are dequantized into the slots; training equals, bit for bit, a resident run whose
    same weights were rounded the same way, differs from the exact run only by that rounding,
    and the model's own weights come back untouched."""
    from trainer_core.ltx2.memory import fp8_eligible, fp8_roundtrip

    c, root = _tree(variant)
    ref_state = copy.deepcopy(root.state_dict())
    streamed_idx = [1, 2, 4, 5]
    streamed = MemoryPlan(["keep", "full", "full", "full", "full", "full"], streamed=streamed_idx, transfer="fp8")
    l_fp8, w_fp8, copies = _train(root, c, streamed)
    assert copies >= 12
    for k, v in root.state_dict().items():
        assert torch.equal(v, ref_state[k]), k
    rounded = copy.deepcopy(root)
    n_q = 0
    with torch.no_grad():
        for i in streamed_idx:
            for p in rounded.transformer_blocks[i].parameters():
                if fp8_eligible(p):
                    p.copy_(fp8_roundtrip(p))
                    n_q += 1
    assert n_q >= 4 * 8  # every attention projection and the feed-forwards of those blocks
    l_ref, w_ref, _ = _train(rounded, c, MemoryPlan(["keep", "full", "full", "full", "full", "full"]))
    assert l_fp8 == l_ref
    for k in w_ref:
        assert torch.equal(w_fp8[k], w_ref[k]), k
    l_exact, w_exact, _ = _train(root, c, MemoryPlan(["keep", "full", "full", "full", "full", "full"]))
    assert l_exact != l_fp8 and max(abs(a - b) / abs(a) for a, b in zip(l_exact, l_fp8)) < 0.05


def test_fp8_rounding_is_close_and_plans_count_the_staging():
    from trainer_core.ltx2.memory import fp8_roundtrip

    w = torch.randn(64, 128, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    r = fp8_roundtrip(w)
    assert r.dtype == w.dtype and not torch.equal(r, w)
    assert ((r.float() - w.float()).norm() / w.float().norm()).item() < 0.05
    blocks = [torch.nn.Linear(256, 256, bias=False) for _ in range(8)]
    bb = module_bytes(blocks[0])
    kw = dict(other_bytes=0, video_tokens=16, block_bytes=[bb] * 8, allow_keep=False, stream_for_speed=False)
    everything = plan_memory(blocks, budget_gib=None, **kw).expected_peak_gib * GIB
    tight = (everything - 1.5 * bb) / GIB
    p16 = plan_memory(blocks, budget_gib=tight, **kw)
    p8 = plan_memory(blocks, budget_gib=tight, transfer="fp8", **kw)
    assert p16.streamed and p16.transfer == "bf16" and p8.transfer == "fp8"
    assert len(p8.streamed) > len(p16.streamed)  # the fp8 staging takes room: more blocks stream
    assert "as fp8" in p8.summary() and "fp8" not in p16.summary()
    fits = plan_memory(blocks, budget_gib=100.0, transfer="fp8", **kw)
    assert not fits.streamed and fits.transfer == "bf16"  # nothing streams: nothing is rounded


def test_streamer_uses_the_right_block_weights():
    """A streamed block computes with its own weights: swapping two streamed blocks' weights
    in the host copies changes the output exactly as swapping them in the resident tree."""
    c, root = _tree("2.0", layers=4)
    inp = step_inputs(c, "text_to_audio_video", seed=5)
    swapped = copy.deepcopy(root)
    sd1, sd2 = swapped.transformer_blocks[1].state_dict(), swapped.transformer_blocks[2].state_dict()
    swapped.transformer_blocks[1].load_state_dict(sd2)
    swapped.transformer_blocks[2].load_state_dict(sd1)
    with torch.no_grad():
        ref = make_predict(checkpointing=False)(swapped, inp)
        plain = make_predict(checkpointing=False)(root, inp)
        pred = make_predict(memory_plan=MemoryPlan(["full"] * 4, streamed=[1, 2, 3]))
        out = pred(swapped, inp)
        pred.release()
    assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])
    assert not torch.equal(out[0], plain[0])


def test_parked_streamer_hands_back_host_weights_and_resumes():
    """park(): every streamed block back on its host copy (a sampler may run the model its
    own way meanwhile); the next forward reloads and gives the same output."""
    c, root = _tree("2.0", layers=4)
    inp = step_inputs(c, "text_to_audio_video", seed=6)
    with torch.no_grad():
        pred = make_predict(memory_plan=MemoryPlan(["full"] * 4, streamed=[1, 3]))
        first = pred(root, inp)
        st = pred.streamer
        hosts = {id(h) for items in st.params.values() for _, _, h in items}
        st.park()
        assert not st.slot_of and st.holder == [None, None]
        for items in st.params.values():
            for owner, leaf, h in items:
                assert owner._parameters[leaf].data.data_ptr() == h.data_ptr()
        n = st.copies
        again = pred(root, inp)
        assert st.copies > n and {id(h) for items in st.params.values() for _, _, h in items} == hosts
        pred.release()
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


def test_streaming_refuses_trainable_weights():
    c, root = _tree("2.0", layers=2)
    root.transformer_blocks[0].attn1.to_q.weight.requires_grad_(True)
    with pytest.raises(ValueError, match="trainable"):
        BlockStreamer(root.transformer_blocks, [0], "cpu")


def test_plan_memory_budgets():
    c, root = _tree("2.0", layers=8)
    blocks = root.transformer_blocks
    wb = sum(module_bytes(b) for b in blocks)
    # pretend each block is 0.8 GiB (full-size-like) through block_bytes
    sizes = [int(0.8 * GIB)] * 8
    tokens = 6144
    free = plan_memory(blocks, other_bytes=GIB, video_tokens=tokens, budget_gib=None, block_bytes=sizes)
    assert free.modes == ["keep"] * 8 and free.streamed == []
    plans = [plan_memory(blocks, other_bytes=GIB, video_tokens=tokens, budget_gib=b, block_bytes=sizes)
             for b in (80, 12, 9, 7, 5.5)]
    streamed = [len(p.streamed) for p in plans]
    keeps = [p.modes.count("keep") for p in plans]
    assert streamed == sorted(streamed) and streamed[0] == 0 and streamed[-1] > 0
    assert keeps == sorted(keeps, reverse=True)
    for p, b in zip(plans, (80, 12, 9, 7, 5.5)):
        assert all(p.modes[i] == "full" for i in p.streamed)
        if not p.notes:
            assert p.expected_peak_gib <= b + 1e-6
        assert "expected peak" in p.summary()
    impossible = plan_memory(blocks, other_bytes=GIB, video_tokens=tokens, budget_gib=1.0, block_bytes=sizes)
    assert impossible.notes and len(impossible.streamed) == 8
    assert wb > 0


def test_plans_offload_resident_blocks_only_when_weights_stream():
    """Where weights stream, the blocks whose weights stay resident keep their activations in
    host memory instead of recomputing ("offload"), within the host budget; streamed blocks
    always recompute; without streaming, or with offload off, nothing is offloaded."""
    blocks = [torch.nn.Identity()] * 48
    kw = dict(other_bytes=int(1.2e9), video_tokens=6144, audio_tokens=126, trainable_bytes=int(0.3e9),
              compiled=True, block_bytes=[int(0.872e9)] * 48)
    p = plan_memory(blocks, budget_gib=24, **kw)
    off = [i for i, m in enumerate(p.modes) if m == "offload"]
    assert p.streamed and len(off) >= 2
    assert not set(off) & set(p.streamed)
    assert all(p.modes[i] == "full" for i in p.streamed)
    assert p.expected_peak_gib <= 24 + 1e-6
    assert "keep them in host memory" in p.summary() and any("GiB of RAM" in n for n in p.notes)
    plain = plan_memory(blocks, budget_gib=24, offload=False, **kw)
    assert "offload" not in plain.modes and plain.expected_peak_gib <= 24 + 1e-6
    # one block's activations on the device for the fetch ahead: at most one more block streams
    assert len(plain.streamed) <= len(p.streamed) <= len(plain.streamed) + 1
    assert sum(m != "full" for m in p.modes) > sum(m != "full" for m in plain.modes)
    per_block = 121_000 * (6144 + 126)
    capped = plan_memory(blocks, budget_gib=24, host_budget_bytes=5 * per_block, **kw)
    assert capped.modes.count("offload") == 5
    none = plan_memory(blocks, budget_gib=24, host_budget_bytes=per_block, **kw)
    assert "offload" not in none.modes and none.modes == plain.modes  # one block is not worth it
    roomy = plan_memory(blocks, budget_gib=80, **kw)
    assert not roomy.streamed and "offload" not in roomy.modes
    # offload_streamed: some streamed blocks keep their activations too, as many as balance
    # backward's compute against its copies — more when weights travel as fp8 (cheaper)
    def streamed_off(plan):
        return sum(plan.modes[i] == "offload" for i in plan.streamed)

    assert streamed_off(p) == 0
    s16 = plan_memory(blocks, budget_gib=24, offload_streamed=True, **kw)
    s8 = plan_memory(blocks, budget_gib=24, offload_streamed=True, transfer="fp8", **kw)
    assert 0 < streamed_off(s16) < len(s16.streamed) and streamed_off(s8) > streamed_off(s16)
    # on the device, a second block's activations (a streamed block's come back next to its
    # weights while the next block's are on their way): here one more block streams for it
    assert len(s16.streamed) == len(p.streamed) + 1 and s16.expected_peak_gib <= 24 + 1e-6
    assert "of them streamed" in s16.notes[-1]
    p8 = plan_memory(blocks, budget_gib=24, transfer="fp8", **kw)
    tight_host = plan_memory(blocks, budget_gib=24, offload_streamed=True, transfer="fp8",
                             host_budget_bytes=(p8.modes.count("offload") + 2) * per_block, **kw)
    # the host budget caps the count; what it allows beyond the resident-only plan goes to streamed blocks
    assert tight_host.modes.count("offload") == p8.modes.count("offload") + 2 and streamed_off(tight_host) >= 2


def test_plan_weighs_compute_against_the_link_at_the_gpus_own_ratio():
    """A card that computes slowly over a slow link (4090-class: 165 TFLOP/s, 25 GB/s) is
    compute-bound in backward: its plan keeps more activations in host memory instead of
    recomputing them than the H200's plan does, and the step-time model says its own plan is
    the faster one there. The reference GPU's own figures change nothing."""
    from trainer_core.ltx2.memory import COMPUTE_REF_LINK_GBPS, COMPUTE_REF_TFLOPS, StepSpeed, compute_scale
    from trainer_core.ltx2 import LTX2Config, build_tree
    from trainer_core.tiny_checkpoint import full_config
    from trainer_core.ltx2.memory import module_bytes, predict_step_s

    c = LTX2Config.from_metadata({"config": full_config("ltx-2.0")})
    root = build_tree(c, device="meta", dtype=torch.bfloat16, init="meta")  # full-size 19B layout, no memory
    blocks = list(root.transformer_blocks)
    other = module_bytes(root) - sum(module_bytes(b) for b in blocks)
    ref = StepSpeed(COMPUTE_REF_TFLOPS, COMPUTE_REF_LINK_GBPS, "ref")
    slow = StepSpeed(165.0, 25.0, "4090-class")
    assert compute_scale(None) == 1.0 and compute_scale(ref) == pytest.approx(1.0)
    assert compute_scale(slow) == pytest.approx((COMPUTE_REF_TFLOPS / 165.0) * (25.0 / COMPUTE_REF_LINK_GBPS))
    kw = dict(video_tokens=6144, audio_tokens=126, budget_gib=24, trainable_bytes=int(0.3e9), compiled=True,
              offload_streamed=True)
    base = plan_memory(blocks, other, **kw)
    assert plan_memory(blocks, other, speed=ref, **kw).modes == base.modes
    mine = plan_memory(blocks, other, speed=slow, **kw)
    assert mine.modes.count("offload") > base.modes.count("offload")
    assert mine.modes.count("full") < base.modes.count("full")
    assert mine.expected_peak_gib <= 24 + 1e-6
    t_mine = predict_step_s(mine, blocks, 6144, 126, slow)
    t_base = predict_step_s(base, blocks, 6144, 126, slow)
    assert t_mine < t_base


@pytest.mark.parametrize("transfer", ["bf16", "fp8"])
def test_streamed_offloaded_blocks_take_their_weights_from_wherever_the_streamer_has_them(transfer):
    """A streamed block that keeps its activations saves its weights by reference to the
    streamer, not to the slot it ran in: with the slots emptied, scrambled and refilled in
    another order between forward and backward, the gradients still equal the resident run
    (fp8: the run that recomputes the same streamed, fp8-rounded blocks)."""
    c, root = _tree("2.0", layers=4)
    inp = step_inputs(c, "text_to_audio_video", seed=8)
    lora = LoRASet.for_model(root, LoRASpec(rank=4, alpha=4, preset="all attention"), seed=1)
    with torch.no_grad():
        for p in lora.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    lora.attach(root)

    def grads(plan, scramble):
        pred = make_predict(memory_plan=plan, offload_min_bytes=0)
        v, a = pred(root, inp)
        if scramble:
            st = pred.streamer
            st.park()
            with torch.no_grad():
                for slot in st.slots:
                    for t in slot:
                        t.normal_()
            st.last_slot = 1 - st.last_slot  # the next load goes to the other slot than before
        (v.float().square().mean() + a.float().square().mean()).backward()
        g = {k: p.grad.clone() for k, p in lora.named_parameters()}
        lora.zero_grad(set_to_none=True)
        pred.release()
        return g

    if transfer == "bf16":
        ref = grads(MemoryPlan(["keep"] * 4), False)
    else:
        ref = grads(MemoryPlan(["full"] * 4, streamed=[0, 1, 3], transfer="fp8"), False)
        assert not all(torch.equal(ref[k], v) for k, v in grads(MemoryPlan(["keep"] * 4), False).items())
    got = grads(MemoryPlan(["offload", "offload", "full", "offload"], streamed=[0, 1, 3], transfer=transfer), True)
    lora.detach()
    for k in ref:
        assert torch.equal(got[k], ref[k]), k


def test_plans_offload_instead_of_recomputing_where_the_copies_hide_behind_compute():
    """Between "the weights don't fit" and "everything fits", blocks that would recompute
    keep their activations in host memory instead — also when every weight stays resident
    (then instead of streaming recomputed blocks to make room for "keep" ones) — but only as
    many as the forward's compute hides the copies out behind (the plan's estimate)."""
    from trainer_core.ltx2.memory import COMPUTE_B_PER_TOKEN, KEEP_COMPILED_B_PER_TOKEN

    blocks = [torch.nn.Identity()] * 48
    kw = dict(other_bytes=int(1.2e9), video_tokens=6144, audio_tokens=126, trainable_bytes=int(0.3e9),
              compiled=True, block_bytes=[int(0.872e9)] * 48)
    for b in (40, 48, 56, 64, 72):
        p = plan_memory(blocks, budget_gib=b, **kw)
        q = plan_memory(blocks, budget_gib=b, offload=False, **kw)
        n_off = p.modes.count("offload")
        assert n_off >= 2 and p.expected_peak_gib <= b + 1e-6, b
        assert n_off * KEEP_COMPILED_B_PER_TOKEN <= 48 * COMPUTE_B_PER_TOKEN * 1.05, b
        assert p.modes.count("full") < q.modes.count("full"), b
        assert len(p.streamed) <= len(q.streamed) + 1, b
        if b >= 48:  # weights fit: no streaming needed, where the old plan streamed for speed
            assert not p.streamed and q.streamed and any("so that" in x for x in q.notes), b
    assert "offload" not in plan_memory(blocks, budget_gib=None, **kw).modes


def test_release_gives_pinned_host_memory_back(monkeypatch):
    """PyTorch caches freed pinned blocks for the life of the process; after training let go of
    the streamer's host copies and the activation buffers, ``release()`` must hand that cache
    back to the system (where CUDA is in use), once the copies are dropped."""
    import trainer_core.ltx2.memory as mem

    c, root = _tree("2.0", layers=4)
    inp = step_inputs(c, "text_to_audio_video", seed=8)
    lora = LoRASet.for_model(root, LoRASpec(rank=4, alpha=4, preset="all attention"), seed=1)
    lora.attach(root)
    pred = make_predict(memory_plan=MemoryPlan(["offload", "full", "offload", "full"], streamed=[1, 2]),
                        offload_min_bytes=0)
    v, a = pred(root, inp)
    (v.float().square().mean() + a.float().square().mean()).backward()
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch._C, "_host_emptyCache",
                        lambda: calls.append((pred.streamer, pred.offloader)), raising=False)
    assert pred.streamer is not None and pred.offloader is not None
    streamer = pred.streamer
    pred.release()
    # once the offloader is gone (its buffers), once per streamed block as the streamer hands
    # each block back, and once after both are gone
    assert calls == [(streamer, None)] * 3 + [(None, None)]
    mem.free_pinned_cache()
    assert len(calls) == 5
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    mem.free_pinned_cache()  # CUDA never used: nothing to give back, nothing touched
    assert len(calls) == 5
    lora.detach()


def test_weights_that_live_in_host_memory_come_back_pageable(monkeypatch):
    """Streamed blocks of a model kept in host memory (ComfyUI's streaming placement) get their
    weights back as ordinary memory, not as the streamer's pinned copies (pinned RAM cannot be
    swapped and escapes ComfyUI's own pinning limit). On this CPU-only machine nothing can be
    pinned, so every tensor reports pinned here; the values must come back unchanged."""
    c, root = _tree("2.0", layers=4)
    ref = {k: v.clone() for k, v in root.state_dict().items()}
    monkeypatch.setattr(torch.Tensor, "is_pinned", lambda self, *a, **k: True)
    streamer = BlockStreamer(root.transformer_blocks, [1, 3], "cpu", pin=False)
    held = [h for i in (1, 3) for _, _, h in streamer.params[i]]  # alive: their addresses stay theirs
    hosts = {h.data_ptr() for h in held}
    streamer.restore()
    for i in (1, 3):
        for p in root.transformer_blocks[i].parameters():
            assert p.data_ptr() not in hosts
    assert all(torch.equal(v, ref[k]) for k, v in root.state_dict().items())
    monkeypatch.undo()
    plain = BlockStreamer(root.transformer_blocks, [2], "cpu", pin=False)
    ptrs = [h.data_ptr() for _, _, h in plain.params[2]]
    plain.restore()  # not pinned: handed back as it is, no copy
    assert [p.data_ptr() for p in root.transformer_blocks[2].parameters()] == ptrs


def test_restore_never_holds_two_copies_of_the_streamed_weights(monkeypatch):
    """Handing the weights back to a model in host memory copies them out of pinned memory;
    each block's pinned copies must be gone before the next block is copied (at 24 GB on 19B
    both copies at once would be ~52 GB of RAM). Every tensor reports pinned here (CPU-only
    machine), so every weight is copied back."""
    import weakref

    import trainer_core.ltx2.memory as mem

    c, root = _tree("2.0", layers=4)
    ref = {k: v.clone() for k, v in root.state_dict().items()}
    monkeypatch.setattr(torch.Tensor, "is_pinned", lambda self, *a, **k: True)
    streamer = BlockStreamer(root.transformer_blocks, [0, 1, 3], "cpu", pin=False)
    hosts = {i: [weakref.ref(h) for _, _, h in streamer.params[i]] for i in (0, 1, 3)}
    alive_at_copy = []
    real = mem._pageable

    def pageable(host):
        mine = next(i for i, refs in hosts.items() if any(r() is host for r in refs))
        alive_at_copy.append(sorted(i for i, refs in hosts.items() if i != mine and any(r() is not None for r in refs)))
        return real(host)

    monkeypatch.setattr(mem, "_pageable", pageable)
    streamer.restore()
    n = len(streamer.layout)
    assert len(alive_at_copy) == 3 * n
    # while block 0 is copied, the others' copies are still needed; once a block is back, its gone
    assert alive_at_copy[:n] == [[1, 3]] * n and alive_at_copy[n:2 * n] == [[3]] * n and alive_at_copy[2 * n:] == [[]] * n
    assert all(r() is None for refs in hosts.values() for r in refs)
    assert all(torch.equal(v, ref[k]) for k, v in root.state_dict().items())


def test_plans_under_cuda_malloc_async_tell_the_user_what_the_pool_may_add():
    from trainer_core.ltx2.memory import ASYNC_OVER_CAP_GIB, allocator_note

    c, root = _tree("2.0", layers=8)
    sizes = [int(0.8 * GIB)] * 8
    kw = dict(other_bytes=GIB, video_tokens=6144, block_bytes=sizes)
    streamed = plan_memory(root.transformer_blocks, budget_gib=7, **kw)
    fp8 = plan_memory(root.transformer_blocks, budget_gib=7, transfer="fp8", **kw)
    resident = plan_memory(root.transformer_blocks, budget_gib=80, **kw)
    unlimited = plan_memory(root.transformer_blocks, budget_gib=None, **kw)
    assert streamed.streamed and fp8.streamed and fp8.transfer == "fp8" and not resident.streamed
    note = allocator_note("cudaMallocAsync", streamed)
    assert note and "--disable-cuda-malloc" in note and f"{ASYNC_OVER_CAP_GIB['bf16']:.1f} GiB" in note
    assert "7.0 GiB budget" in note
    assert f"{ASYNC_OVER_CAP_GIB['fp8']:.1f} GiB" in allocator_note("cudaMallocAsync", fp8)
    # the native allocator, and plans that stream nothing, need no word
    assert allocator_note("native", streamed) is None
    assert allocator_note("cudaMallocAsync", resident) is None
    assert allocator_note("cudaMallocAsync", unlimited) is None


# the 19B layout at 768×512×121 as plan_memory sees it (48 blocks of 0.8 GB, A+V tokens)
FULL_SIZE_PLAN_ARGS = dict(other_bytes=int(1.2e9), video_tokens=6144, audio_tokens=126, trainable_bytes=int(0.3e9),
                           block_bytes=[int(0.8e9)] * 48)


def test_plans_save_every_activation_where_the_whole_plan_fits_so():
    """Compiled blocks: where every weight is resident and every block can keep all its
    activations with nothing recomputed (AOTAutograd's budget 1.0) inside the headroom, that
    is the plan; a tighter budget gets the memory-saving 0.7 and the plan it had before. The
    step-time model counts the full-save plan's faster blocks."""
    from trainer_core.ltx2.memory import (DEFAULT_ACTIVATION_BUDGET, FULLSAVE_COMPUTE, FULLSAVE_HEADROOM,
                                          KEEP_FULLSAVE_B_PER_TOKEN, StepSpeed, predict_step_s)

    blocks = [torch.nn.Identity()] * 48
    tokens = 6144 + 126
    kw = FULL_SIZE_PLAN_ARGS
    roomy = plan_memory(blocks, budget_gib=137, compiled=True, **kw)
    assert roomy.activation_budget == 1.0 and roomy.modes == ["keep"] * 48 and not roomy.streamed
    assert roomy.expected_peak_gib * GIB >= 48 * KEEP_FULLSAVE_B_PER_TOKEN * tokens
    assert roomy.expected_peak_gib <= FULLSAVE_HEADROOM * 137
    assert "save every activation" in roomy.summary() and roomy.to_dict()["activation_budget"] == 1.0
    unlimited = plan_memory(blocks, budget_gib=None, compiled=True, **kw)
    assert unlimited.activation_budget == 1.0 and unlimited.modes == ["keep"] * 48
    # 80 GiB: all blocks keep at 0.7 (as before this plan existed), not at 1.0
    h100 = plan_memory(blocks, budget_gib=79, compiled=True, **kw)
    assert h100.activation_budget == DEFAULT_ACTIVATION_BUDGET and "save every" not in h100.summary()
    assert h100.modes.count("keep") > 0 and h100.expected_peak_gib <= 79
    # just over the full-save peak, but inside the headroom's margin: still 0.7
    edge = plan_memory(blocks, budget_gib=roomy.expected_peak_gib / FULLSAVE_HEADROOM - 0.5, compiled=True, **kw)
    assert edge.activation_budget == DEFAULT_ACTIVATION_BUDGET
    # eager blocks: the budget means nothing there
    eager = plan_memory(blocks, budget_gib=137, compiled=False, **kw)
    assert eager.activation_budget == DEFAULT_ACTIVATION_BUDGET
    # the model: the same all-keep plan at 1.0 predicts FULLSAVE_COMPUTE of the compute at 0.7
    sp = StepSpeed(700.0, 55.0, "test")
    blk = [torch.nn.Linear(64, 64)] * 4
    fast = MemoryPlan(["keep"] * 4, activation_budget=1.0)
    slow = MemoryPlan(["keep"] * 4)
    t_fast, t_slow = (predict_step_s(p, blk, 6144, 126, sp) for p in (fast, slow))
    assert t_fast < t_slow
    from trainer_core.ltx2.memory import BACKWARD_FACTOR, BLOCK_OVERHEAD_S
    overhead = (1 + BACKWARD_FACTOR) * 4 * BLOCK_OVERHEAD_S
    assert (t_fast - overhead) == pytest.approx(FULLSAVE_COMPUTE * (t_slow - overhead), rel=1e-9)


def test_plans_below_the_full_save_budget_save_attention_outputs_where_they_fit():
    """Between the 0.7 plan and the full-save one, compiled kept blocks also save their
    attention outputs (measured as fast as full-save at 768×512×121 for a sixth of a kept
    block's activations): the expected peak counts them, the plan says so, and the step-time
    model counts the faster kept blocks. Not where the extra does not fit, not for eager blocks,
    and never where blocks offload (their saved tensors would cross the host link)."""
    from trainer_core.ltx2.memory import (BACKWARD_FACTOR, BLOCK_OVERHEAD_S, KEEP_ATTENTION_B_PER_TOKEN,
                                          SAVE_ATTENTION_COMPUTE, StepSpeed, predict_step_s)

    blocks = [torch.nn.Identity()] * 48
    tokens = 6144 + 126
    kw = FULL_SIZE_PLAN_ARGS
    mid = plan_memory(blocks, budget_gib=100, compiled=True, **kw)
    assert mid.save_attention and mid.activation_budget == 0.7 and mid.modes == ["keep"] * 48
    assert "save their attention outputs" in mid.summary() and mid.to_dict()["save_attention"] is True
    # 79 GiB: the 0.7 plan fits, its attention outputs do not
    tight = plan_memory(blocks, budget_gib=79, compiled=True, **kw)
    assert not tight.save_attention and tight.modes == ["keep"] * 48 and "attention" not in tight.summary()
    extra = 48 * KEEP_ATTENTION_B_PER_TOKEN * tokens / GIB
    assert mid.expected_peak_gib == pytest.approx(tight.expected_peak_gib + extra, abs=1e-6)
    assert tight.expected_peak_gib + extra > 79 and mid.expected_peak_gib <= 100
    # where blocks offload, or stream, the plan does not save them; nor for eager blocks
    for p in (plan_memory(blocks, budget_gib=64, compiled=True, **kw),
              plan_memory(blocks, budget_gib=24, compiled=True, **kw)):
        assert "offload" in p.modes and not p.save_attention
    assert not plan_memory(blocks, budget_gib=100, compiled=False, **kw).save_attention
    # the model: kept blocks at SAVE_ATTENTION_COMPUTE of 0.7's compute; recomputed ones not
    sp = StepSpeed(700.0, 55.0, "test")
    blk = [torch.nn.Linear(64, 64)] * 4
    t_sa, t_plain = (predict_step_s(MemoryPlan(["keep"] * 4, save_attention=s), blk, 6144, 126, sp)
                     for s in (True, False))
    overhead = (1 + BACKWARD_FACTOR) * 4 * BLOCK_OVERHEAD_S
    assert (t_sa - overhead) == pytest.approx(SAVE_ATTENTION_COMPUTE * (t_plain - overhead), rel=1e-9)
    mixed = [predict_step_s(MemoryPlan(["keep", "full", "full", "full"], save_attention=s), blk, 6144, 126, sp)
             for s in (True, False)]
    assert t_plain - t_sa > mixed[1] - mixed[0] > 0  # only the one kept block is faster
