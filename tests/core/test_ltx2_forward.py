"""The training forward on trainer_core's plain-torch LTX-2 tree (no ComfyUI).

Tiny LTX-2.0 and LTX-2.3 trees built from a config: output shapes in every mode,
checkpointed LoRA gradients equal to the un-checkpointed ones, the inference-mode
guarantees, config parsing, and state-dict keys equal to a tiny checkpoint's
``model.diffusion_model.*`` keys (trainer_core.tiny_checkpoint).
"""
from __future__ import annotations

import json

import pytest
import torch

from trainer_core import objective as ob
from trainer_core import tiny_checkpoint
from trainer_core.engine import ModalityInput, StepInputs, audio_to_tokens, video_to_tokens
from trainer_core.lora import LoRASet, LoRASpec
from trainer_core.ltx2 import (
    ConfigError, InferenceWeightsError, LTX2Config, build_tree, ensure_trainable_weights, find_inference_tensors,
    load_tree_from_checkpoint, make_predict,
)

# The project's tiny checkpoints' configs: 2 blocks, small widths, every switch of the
# variant. LTX-2.0: caption projection after the connectors (connector width = caption
# channels). LTX-2.3: projection in the text encoder (context = video ‖ audio widths),
# gated attention, cross-attention AdaLN.
TINY = {v: tiny_checkpoint.tiny_config(v)["transformer"] for v in ("2.0", "2.3", "2.5")}


def tiny_config(variant: str) -> LTX2Config:
    return LTX2Config.from_transformer_config(TINY[variant])


def context_width(c: LTX2Config) -> int:
    return c.cross_attention_dim + c.audio_cross_attention_dim if c.caption_proj_before_connector else c.caption_channels


def step_inputs(c: LTX2Config, mode: str, B=2, F=2, H=2, W=3, T=5, L=7, seed=0, first_frame=True) -> StepInputs:
    """Engine inputs as build_step_inputs makes them (noised tokens, per-token σ)."""
    g = torch.Generator().manual_seed(seed)
    m = ob.get_mode(mode)
    vid = aud = None
    if m.needs_video:
        x0 = video_to_tokens(torch.randn(B, 128, F, H, W, generator=g))
        cond = None
        if first_frame and m.video == ob.GENERATED:
            cond = torch.zeros(B, F * H * W, dtype=torch.bool)
            cond[0, :H * W] = True  # sample 0 has first-frame conditioning (σ = 0 there)
        n = ob.noise_modality(x0, m.video, g, "uniform", cond_tokens=cond)
        vid = ModalityInput(n.x_t, n.sigma, n, (F, H, W))
    if m.needs_audio:
        a0 = audio_to_tokens(torch.randn(B, 8, T, 16, generator=g))
        n = ob.noise_modality(a0, m.audio, g, "uniform")
        aud = ModalityInput(n.x_t, n.sigma, n, (T,))
    text = {"context": torch.randn(B, L, context_width(c), generator=g)}
    return StepInputs(vid, aud, text, 24.0, m)


MODES = ["text_to_audio_video", "video_only", "audio_only", "video_to_audio"]


@pytest.mark.parametrize("variant", ["2.0", "2.3", "2.5"])
@pytest.mark.parametrize("mode", MODES)
def test_output_shapes(variant, mode):
    c = tiny_config(variant)
    root = build_tree(c, seed=1)
    inp = step_inputs(c, mode)
    v, a = make_predict(checkpointing=False)(root, inp)
    if inp.video is not None:
        assert v.shape == inp.video.tokens.shape and torch.isfinite(v).all()
    else:
        assert v is None
    if inp.audio is not None:
        assert a.shape == inp.audio.tokens.shape and torch.isfinite(a).all()
    else:
        assert a is None


def _loss(inp, v, a):
    g = torch.Generator().manual_seed(123)
    total = 0.0
    if v is not None:
        total = total + (v * torch.randn(v.shape, generator=g)).sum()
    if a is not None:
        total = total + (a * torch.randn(a.shape, generator=g)).sum()
    return total


def _lora_grads(root, lora, predict, inp, seed=7):
    torch.manual_seed(seed)  # LoRA dropout
    lora.zero_grad(set_to_none=True)
    v, a = predict(root, inp)
    _loss(inp, v, a).backward()
    out = {}
    for n in lora.names:
        ad = lora.adapter(n)
        if ad.lora_A.grad is not None:
            out[n] = torch.cat([ad.lora_A.grad.flatten(), ad.lora_B.grad.flatten()])
    return out


def _rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def _random_lora(root, preset, dropout=0.0, seed=0):
    for p in root.parameters():
        p.requires_grad_(False)
    lora = LoRASet.for_model(root, LoRASpec(rank=4, alpha=4, dropout=dropout, preset=preset), seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for n in lora.names:  # B ≠ 0 so that every A receives a gradient too
            lora.adapter(n).lora_B.copy_(torch.randn(lora.adapter(n).lora_B.shape, generator=g) * 0.1)
    return lora.attach(root)


@pytest.mark.parametrize("variant", ["2.0", "2.3"])
@pytest.mark.parametrize("mode", ["text_to_audio_video", "video_only", "audio_only"])
def test_checkpointing_gives_the_same_lora_gradients(variant, mode):
    c = tiny_config(variant)
    root = build_tree(c, seed=2)
    lora = _random_lora(root, "all attention + feed-forward", dropout=0.1)
    inp = step_inputs(c, mode, seed=3)
    ref = _lora_grads(root, lora, make_predict(checkpointing=False), inp)
    got = _lora_grads(root, lora, make_predict(checkpointing=True), inp)
    assert set(got) == set(ref) and len(ref) > 0
    worst = max(_rel(got[n], ref[n]) for n in ref)
    assert worst < 1e-5, worst
    # gradients reached every adapter of the streams this mode runs
    assert all(ref[n].abs().sum() > 0 for n in ref)


def test_compiled_blocks_trace_the_same_computation():
    """compile_blocks: the block function traced by torch.compile (LoRA hooks, dataclass
    arguments, checkpointing) gives the eager gradients (aot_eager: no code generation)."""
    c = tiny_config("2.3")
    root = build_tree(c, seed=2)
    lora = _random_lora(root, "all attention")
    inp = step_inputs(c, "text_to_audio_video", seed=3)
    ref = _lora_grads(root, lora, make_predict(checkpointing=True), inp)
    got = _lora_grads(root, lora, make_predict(checkpointing=True, compile_blocks="aot_eager"), inp)
    assert max(_rel(got[n], ref[n]) for n in ref) < 1e-5


@pytest.mark.parametrize("name,which", [
    ("transformer_blocks.1.audio_to_video_attn.to_q", "lora_B"),  # a layer's own hook
    ("transformer_blocks.0.attn1.to_k", "lora_A"),  # q/k/v projection group: stacked down-projection
    ("transformer_blocks.1.video_to_audio_attn.to_v", "lora_B"),  # k/v group: batched up-projection
])
def test_gradients_match_finite_differences(name, which):
    """The forward's own autograd is right (not just self-consistent): a LoRA direction
    derivative agrees with central differences in float64."""
    c = tiny_config("2.3")
    root = build_tree(c, seed=4).double()
    lora = _random_lora(root, "all attention").double()
    inp = step_inputs(c, "text_to_audio_video", seed=5)
    inp = StepInputs(*(ModalityInput(m.tokens.double(), m.sigma.double(), m.noised, m.grid) for m in (inp.video, inp.audio)),
                     {"context": inp.text["context"].double()}, inp.fps, inp.mode)
    predict = make_predict(checkpointing=True)
    assert lora.grouped == 6 * c.num_layers
    w = getattr(lora.adapter(name), which)
    lora.zero_grad(set_to_none=True)
    _loss(inp, *predict(root, inp)).backward()
    d = torch.randn(w.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    analytic = (w.grad * d).sum().item()
    eps = 1e-6
    with torch.no_grad():
        base = w.clone()
        w.copy_(base + eps * d)
        up = _loss(inp, *predict(root, inp)).item()
        w.copy_(base - eps * d)
        down = _loss(inp, *predict(root, inp)).item()
        w.copy_(base)
    numeric = (up - down) / (2 * eps)
    assert abs(analytic - numeric) <= 1e-6 * max(1.0, abs(numeric)), (analytic, numeric)


@pytest.mark.parametrize("variant", ["2.0", "2.3", "2.5"])
def test_projection_groups_give_the_per_layer_forward(variant, monkeypatch):
    """The training forward with the LoRA's projection groups (one down-projection for the
    layers that read one input) equals the forward through each layer's hook: outputs and
    every adapter's gradient; and it does go through the groups (fewer adapter calls)."""
    from trainer_core import lora as lora_mod

    c = tiny_config(variant)
    root = build_tree(c, seed=2)
    lora = _random_lora(root, "all attention")
    inp = step_inputs(c, "text_to_audio_video", seed=3)
    calls = []
    real = lora_mod.LoRAAdapter.forward
    monkeypatch.setattr(lora_mod.LoRAAdapter, "forward", lambda self, x: calls.append(1) or real(self, x))
    results = {}
    for grouped in (True, False):
        lora.attach(root, group=grouped)
        assert (lora.grouped > 0) == grouped
        calls.clear()
        v, a = make_predict(checkpointing=True)(root, inp)
        results[grouped] = (v.detach(), a.detach(), len(calls))
        results[grouped] += (_lora_grads(root, lora, make_predict(checkpointing=True), inp),)
    (vg, ag, ng, gg), (vr, ar, nr, gr) = results[True], results[False]
    assert _rel(vg, vr) < 1e-6 and _rel(ag, ar) < 1e-6
    assert set(gg) == set(gr) == set(lora.names)
    assert max(_rel(gg[n], gr[n]) for n in gr) < 1e-5
    # per block: 6 attentions × 4 adapters by hook; grouped: the 6 out-projections and the 4 cross-attention queries
    assert nr == 24 * c.num_layers and ng == 10 * c.num_layers


def test_inference_mode_weights_and_inputs():
    """Called inside torch.inference_mode with a tree loaded inside it: trains, saves no
    inference tensor for backward, and equals the normal tree's gradients."""
    c = tiny_config("2.0")
    ref_root = build_tree(c, seed=6)
    sd = ref_root.state_dict()
    with torch.inference_mode():
        inf_root = build_tree(c, init="empty")
        inf_root.load_state_dict(sd)
        inp_inf = step_inputs(c, "text_to_audio_video", seed=8)
    assert find_inference_tensors(inf_root)
    inp = step_inputs(c, "text_to_audio_video", seed=8)
    ref_lora = _random_lora(ref_root, "all attention")
    ref = _lora_grads(ref_root, ref_lora, make_predict(checkpointing=False), inp)

    with pytest.raises(InferenceWeightsError, match="inference tensors"):
        with torch.inference_mode():
            make_predict(fix_inference_weights=False)(inf_root, inp_inf)

    lora = _random_lora(inf_root, "all attention")
    saved = []

    def pack(t):
        saved.append(t.is_inference())
        return t

    predict = make_predict(checkpointing=False)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.inference_mode():
            v, a = predict(inf_root, inp_inf)
    assert not v.is_inference() and v.requires_grad
    _loss(inp_inf, v, a).backward()
    assert saved and not any(saved)
    assert not find_inference_tensors(inf_root)
    got = {n: torch.cat([lora.adapter(n).lora_A.grad.flatten(), lora.adapter(n).lora_B.grad.flatten()])
           for n in lora.names}
    assert max(_rel(got[n], ref[n]) for n in ref) < 1e-6


def test_weights_moved_out_of_inference_mode_are_repaired():
    """A tree built inside inference mode and moved with ``Module.to()`` outside it (what
    ComfyUI's loader does for plain torch layers): the parameters report is_inference() ==
    False yet have no version counter, so any view of them (``weight.t()`` in a 3-D linear on
    CUDA) fails. They are found, replaced, and the forward runs and equals the normal tree."""
    c = tiny_config("2.0")
    ref_root = build_tree(c, seed=6)
    with torch.inference_mode():
        root = build_tree(c, init="empty")
        root.load_state_dict(ref_root.state_dict())
    root.to(torch.float64).to(torch.float32)  # .data replaced outside inference mode
    w = root.transformer_blocks[0].attn1.to_q.weight
    assert not w.is_inference()
    with pytest.raises(RuntimeError, match="version counter"):
        w.t()
    assert "transformer_blocks.0.attn1.to_q.weight" in find_inference_tensors(root)
    inp = step_inputs(c, "text_to_audio_video", seed=8)
    with torch.no_grad():
        want = make_predict(checkpointing=False)(ref_root, inp)
        got = make_predict(checkpointing=False)(root, inp)
    assert not find_inference_tensors(root)
    root.transformer_blocks[0].attn1.to_q.weight.t()
    assert torch.allclose(got[0], want[0], atol=1e-6) and torch.allclose(got[1], want[1], atol=1e-6)


def test_ensure_trainable_weights_keeps_requires_grad_and_values():
    c = tiny_config("2.3")
    with torch.inference_mode():
        root = build_tree(c, seed=1)
        root.proj_out.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in root.state_dict().items()}
    n = ensure_trainable_weights(root)
    assert n == len(before)
    assert not find_inference_tensors(root)
    for k, v in root.state_dict().items():
        assert torch.equal(v, before[k])
    assert not root.proj_out.weight.requires_grad and root.proj_out.bias.requires_grad
    assert ensure_trainable_weights(root) == 0


def test_rope_cache_reused_and_keyed_by_fps():
    c = tiny_config("2.0")
    root = build_tree(c, seed=1)
    predict = make_predict(checkpointing=False)
    inp = step_inputs(c, "text_to_audio_video")
    with torch.no_grad():
        v1, _ = predict(root, inp)
        n = len(predict.rope_cache._d)
        predict(root, inp)
        assert len(predict.rope_cache._d) == n  # same shapes: reused
        inp2 = StepInputs(inp.video, inp.audio, inp.text, 12.0, inp.mode)
        v2, _ = predict(root, inp2)
    assert len(predict.rope_cache._d) > n  # another fps: new video tables
    assert not torch.allclose(v1, v2)  # time positions depend on fps


def test_per_sample_semantics():
    """A batch equals its samples run one by one (σ differs per sample and per token)."""
    c = tiny_config("2.3")
    root = build_tree(c, seed=3)
    inp = step_inputs(c, "text_to_audio_video", B=2, seed=4)
    predict = make_predict(checkpointing=False)
    with torch.no_grad():
        v, a = predict(root, inp)
        for i in range(2):
            sl = slice(i, i + 1)
            one = StepInputs(ModalityInput(inp.video.tokens[sl], inp.video.sigma[sl], inp.video.noised, inp.video.grid),
                             ModalityInput(inp.audio.tokens[sl], inp.audio.sigma[sl], inp.audio.noised, inp.audio.grid),
                             {"context": inp.text["context"][sl]}, inp.fps, inp.mode)
            vi, ai = predict(root, one)
            assert _rel(vi, v[sl]) < 1e-5 and _rel(ai, a[sl]) < 1e-5


@pytest.mark.parametrize("variant", ["2.0", "2.3", "2.5"])
def test_batch_of_captions_of_different_lengths_equals_samples_alone(variant):
    """Captions of 7, 3 and 5 tokens in one batch (stack_texts pads them and records their
    lengths): each sample's prediction equals its prediction alone — the connectors fill each
    caption's own tail with their registers. Zero padding without the lengths gives other
    predictions (the check can fail)."""
    from trainer_core.engine import TEXT_LENGTHS, stack_texts

    c = tiny_config(variant)
    root = build_tree(c, seed=5)
    lens = [7, 3, 5]
    inp = step_inputs(c, "text_to_audio_video", B=3, L=7, seed=6)
    g = torch.Generator().manual_seed(7)
    ctxs = [torch.randn(n, context_width(c), generator=g) for n in lens]
    text = stack_texts([{"context": t} for t in ctxs])
    assert text["context"].shape[:2] == (3, 7) and text[TEXT_LENGTHS].tolist() == lens
    predict = make_predict(checkpointing=False)
    with torch.no_grad():
        v, a = predict(root, StepInputs(inp.video, inp.audio, text, inp.fps, inp.mode))
        vz, az = predict(root, StepInputs(inp.video, inp.audio, {"context": text["context"]}, inp.fps, inp.mode))
        for i, t in enumerate(ctxs):
            sl = slice(i, i + 1)
            one = StepInputs(ModalityInput(inp.video.tokens[sl], inp.video.sigma[sl], inp.video.noised, inp.video.grid),
                             ModalityInput(inp.audio.tokens[sl], inp.audio.sigma[sl], inp.audio.noised, inp.audio.grid),
                             {"context": t[None]}, inp.fps, inp.mode)
            vi, ai = predict(root, one)
            assert _rel(vi, v[sl]) < 1e-5 and _rel(ai, a[sl]) < 1e-5
            if lens[i] < 7:
                assert _rel(vi, vz[sl]) > 1e-3
    # equal lengths: a plain stack, nothing added
    assert TEXT_LENGTHS not in stack_texts([{"context": ctxs[0]}, {"context": ctxs[0] * 2}])


def test_batch_of_prepared_text_of_different_lengths_is_refused():
    """Text whose prepared length differs per sample (captions over the connectors' 1024
    tokens) cannot share a batch: a clear error, not a wrong forward."""
    from trainer_core.engine import stack_texts
    from trainer_core.ltx2.forward import CONNECTOR_MIN_TOKENS

    c = tiny_config("2.0")
    root = build_tree(c, seed=5)
    inp = step_inputs(c, "video_only", B=2, seed=6)
    text = stack_texts([{"context": torch.randn(CONNECTOR_MIN_TOKENS + 130, context_width(c))},
                        {"context": torch.randn(4, context_width(c))}])
    with pytest.raises(ValueError, match="cannot share a batch"), torch.no_grad():
        make_predict(checkpointing=False)(root, StepInputs(inp.video, None, text, inp.fps, inp.mode))


def test_block_inputs_keep_their_shapes_whatever_the_conditioning_draw(monkeypatch):
    """The per-token modulation tables a block gets have the same shapes with and without
    first-frame conditioning tokens (σ = 0) in the batch — so torch.compile, which keys the
    compiled blocks on their input shapes, never builds them again for a new draw — and the
    predictions are those of the unpadded tables (the parity tests check those)."""
    from trainer_core.ltx2 import forward as fw

    c = tiny_config("2.0")
    root = build_tree(c, seed=2)
    seen = []
    plain = fw.block_forward

    def record(block, cfg, vx, ax, v, a):
        seen.append((tuple(v.mod.values.shape), tuple(a.mod.values.shape), tuple(v.cross_ss.values.shape)))
        return plain(block, cfg, vx, ax, v, a)

    monkeypatch.setattr(fw, "block_forward", record)
    predict = make_predict(checkpointing=False)
    with torch.no_grad():
        for first_frame in (False, True):
            predict(root, step_inputs(c, "text_to_audio_video", B=2, seed=8, first_frame=first_frame))
    assert len(seen) == 4 and len(set(seen)) == 1, seen
    assert seen[0][0][0] == 4  # 2 samples: their σ and 0
    u = torch.tensor([0.0, 0.5, 0.75])
    assert fw.sigma_levels(u, 2).tolist() == [0.0, 0.5, 0.75, 0.0]
    assert fw.sigma_levels(torch.arange(5.0), 2).shape == (8,)  # more levels than 2·B: a power of two


def test_sigma_levels_on_device_equal_unique():
    """The GPU's σ table (no read-back: a sort and a scatter into 2·B slots) is torch.unique's
    padded table and index, for batches with and without conditioning tokens (σ = 0) and
    with equal σ in two samples; more distinct values than slots give NaN levels (never a
    wrong table), with every index inside the table. Every mode preset's σ fits: at most
    its σ and 0 per sample."""
    from trainer_core import modes as md
    from trainer_core.ltx2 import forward as fw

    g = torch.Generator().manual_seed(4)
    for B in (1, 2, 3, 4):
        for trial in range(20):
            sig = torch.rand(B, generator=g)
            if trial % 5 == 0 and B > 1:
                sig[1] = sig[0]
            tok = sig[:, None].expand(B, 37).clone()
            tok[torch.rand(B, 37, generator=g) < (0.3 if trial % 2 else 0.0)] = 0
            flat = tok.reshape(-1) * 1000
            u, inv = torch.unique(flat, return_inverse=True)
            levels, index = fw.levels_on_device(flat, 2 * B)
            assert torch.equal(levels, fw.sigma_levels(u, B)) and torch.equal(index, inv)
    levels, index = fw.levels_on_device(torch.arange(5.0), 4)
    assert torch.isnan(levels).all() and int(index.max()) < 4
    for name, mode in md.PRESETS.items():
        B = 3
        latents = {"video": torch.randn(B, 2 * 2 * 3, 128), "audio": torch.randn(B, 5, 128)}
        grids = {"video": (2, 2, 3), "audio": (5,)}
        refs = {"video": md.VideoRef(torch.randn(B, 12, 128), (2, 2, 3), 24.0), "audio": torch.randn(B, 5, 128)}
        masks = {"video": torch.rand(B, 12) < 0.5, "audio": torch.rand(B, 5) < 0.5}
        mi = md.prepare(md.resolve(name, extension_frames=1) if "extension" in name else mode,
                        {k: v for k, v in latents.items() if getattr(mode, k) is not None}, grids,
                        torch.Generator().manual_seed(1), masks=masks, references=refs, config=tiny_config("2.0"),
                        fps=24.0, sampler="uniform")
        for si in (mi.video, mi.audio):
            if si is not None:
                assert torch.unique(si.sigma).numel() <= 2 * B, name


def test_config_parsing():
    c = tiny_config("2.3")
    assert c.variant == "2.3" and c.apply_gated_attention and c.cross_attention_adaln
    assert tiny_config("2.0").variant == "2.0"
    # the variant is what the checkpoint declares
    meta = {"config": json.dumps({"transformer": TINY["2.0"]}), "model_version": "2.3.0"}
    assert LTX2Config.from_metadata(meta).variant == "2.3"
    # a state dict's shapes give back the dimensions and switches (RoPE switches from the config)
    for v in ("2.0", "2.3"):
        cfg = tiny_config(v)
        shapes = {f"model.diffusion_model.{k}": tuple(t.shape) for k, t in build_tree(cfg, init="meta").state_dict().items()}
        got = LTX2Config.from_state_dict_shapes(shapes, TINY[v])
        assert got == cfg, (got, cfg)
        got2 = LTX2Config.from_metadata({"config": {"transformer": TINY[v]}}, shapes)
        assert got2 == cfg
    with pytest.raises(ConfigError, match="no 'config' metadata"):
        LTX2Config.from_metadata({})
    with pytest.raises(ConfigError, match="rope_type"):
        LTX2Config.from_transformer_config({"rope_type": "spiral"})


def test_context_width_mismatch_is_explained():
    c = tiny_config("2.3")
    root = build_tree(c, seed=1)
    inp = step_inputs(tiny_config("2.0"), "video_only")  # 2.0-width conditioning on a 2.3 model
    with pytest.raises(ValueError, match="another LTX-2 variant|width"):
        make_predict(checkpointing=False)(root, inp)


def test_full_size_layout_on_meta():
    """The full 19B / 22B layouts build (no storage) with the documented widths."""
    for variant, tc in (("2.0", {}), ("2.3", dict(caption_proj_before_connector=True, caption_projection_first_linear=False,
                                                    apply_gated_attention=True, connector_num_attention_heads=32,
                                                    audio_connector_num_attention_heads=32,
                                                    audio_connector_attention_head_dim=64))):
        c = LTX2Config.from_transformer_config(dict(tc, rope_type="split"))
        root = build_tree(c, init="meta")
        assert len(root.transformer_blocks) == 48
        b0 = root.transformer_blocks[0]
        assert b0.attn1.to_q.weight.shape == (4096, 4096) and b0.audio_attn1.to_q.weight.shape == (2048, 2048)
        assert b0.audio_to_video_attn.to_k.weight.shape == (2048, 2048)
        assert (b0.attn1.to_gate_logits is not None) == (variant == "2.3")
        n = sum(p.numel() for p in root.parameters())
        assert 18e9 < n < 23e9, n


# ----------------------------------------------------------------- tiny checkpoints


def test_config_parsing_25():
    """LTX-2.5: the variant from ``model_version`` (pre-release tags count as their
    generation), else from ``gemma_source_checkpoint``, else from the 2.5 switches; the
    switches themselves from the config, the state dict's keys and the module tree."""
    c = tiny_config("2.5")
    assert c.variant == "2.5"
    assert (c.ff_bias, c.audio_ff_bias, c.use_prompt_adaln_single, c.use_keyframes_abs_pos_embedding) == \
        (False, True, True, True)
    assert c.has_prompt_adaln and c.cross_attention_adaln and c.apply_gated_attention
    t23 = TINY["2.3"]
    for mv, want in (("2.5.0", "2.5"), ("2.5-rc2", "2.5"), ("2.5.rc1", "2.5"), ("2.4.0", "2.4"), ("2.3.0", "2.3")):
        assert LTX2Config.from_metadata({"config": {"transformer": t23}, "model_version": mv}).variant == want
    assert LTX2Config.from_metadata({"config": {"transformer": t23},
                                     "gemma_source_checkpoint": '{"gemma_version": "x"}'}).variant == "2.5"
    assert LTX2Config.from_metadata({"config": {"transformer": t23}}).variant == "2.3"
    assert LTX2Config.from_transformer_config({**t23, "ff_bias": False}).variant == "2.5"
    # ComfyUI's rule: the keyframe embedding exists iff its key does, whatever the config says
    shapes = {f"model.diffusion_model.{k}": tuple(v.shape) for k, v in build_tree(c, init="meta").state_dict().items()}
    no_kf = {k: v for k, v in shapes.items() if not k.endswith("keyframes_abs_pos_embedding")}
    assert LTX2Config.from_metadata({"config": {"transformer": TINY["2.5"]}}, shapes) == c
    got = LTX2Config.from_metadata({"config": {"transformer": TINY["2.5"]}}, no_kf)
    assert not got.use_keyframes_abs_pos_embedding and got.variant == "2.5"  # ff_bias false still says 2.5
    # shapes alone show every 2.5 switch
    assert LTX2Config.from_state_dict_shapes(shapes, TINY["2.5"]) == c
    alone = LTX2Config.from_state_dict_shapes(shapes)
    assert (alone.ff_bias, alone.audio_ff_bias, alone.use_prompt_adaln_single, alone.use_keyframes_abs_pos_embedding,
            alone.variant) == (False, True, True, True, "2.5")
    # use_prompt_adaln_single false: no prompt AdaLN modules, told by shapes too
    c2 = LTX2Config.from_transformer_config({**TINY["2.5"], "use_prompt_adaln_single": False})
    tree2 = build_tree(c2, init="meta")
    assert not hasattr(tree2, "prompt_adaln_single") and not hasattr(tree2, "audio_prompt_adaln_single")
    assert hasattr(tree2.transformer_blocks[0], "prompt_scale_shift_table")  # the per-block tables stay
    sh2 = {k: tuple(v.shape) for k, v in tree2.state_dict().items()}
    assert LTX2Config.from_state_dict_shapes(sh2, TINY["2.5"]).use_prompt_adaln_single is False
    # ComfyUI's constructor names: transformer_config() carries every switch
    tcfg = c.transformer_config()
    assert {k: tcfg[k] for k in ("ff_bias", "audio_ff_bias", "use_prompt_adaln_single",
                                 "use_keyframes_abs_pos_embedding")} == \
        {"ff_bias": False, "audio_ff_bias": True, "use_prompt_adaln_single": True,
         "use_keyframes_abs_pos_embedding": True}
    assert LTX2Config.from_transformer_config(tcfg) == c


def test_tree_25_structure_and_keyframe_embedding():
    c = tiny_config("2.5")
    root = build_tree(c, seed=2)
    b0 = root.transformer_blocks[0]
    assert b0.ff.net[0].proj.bias is None and b0.ff.net[2].bias is None
    assert b0.audio_ff.net[0].proj.bias is not None
    assert tuple(root.keyframes_abs_pos_embedding.shape) == (1, c.inner_dim)
    assert LTX2Config.from_module(root) == c
    # the embedding reaches exactly the first latent frame's tokens: zeroing it changes the
    # output; with one block, the first frame's tokens are the ones that change most
    inp = step_inputs(c, "video_only", B=1, F=3, first_frame=False)
    with torch.no_grad():
        v1, _ = make_predict(checkpointing=False)(root, inp)
        root.keyframes_abs_pos_embedding.zero_()
        v0, _ = make_predict(checkpointing=False)(root, inp)
    assert _rel(v1, v0) > 1e-3
    from trainer_core.ltx2.forward import keyframes_mask

    m = keyframes_mask((3, 2, 3), c, torch.device("cpu"))
    assert m.tolist() == [True] * 6 + [False] * 12
    c_nc = LTX2Config.from_transformer_config({**TINY["2.5"], "causal_temporal_positioning": False})
    assert keyframes_mask((3, 2, 3), c_nc, torch.device("cpu")).tolist() == [True] * 6 + [False] * 12


def test_tiny_25_transformer_file_loads_into_the_tree(tmp_path):
    paths = tiny_checkpoint.make_tiny_set(tmp_path, "ltx-2.5", seed=0)
    root = load_tree_from_checkpoint(paths["transformer"])
    c = root.ltx2_config
    assert c.variant == "2.5" and c.model_version == "2.5.0"
    inp = step_inputs(c, "text_to_audio_video")
    v, a = make_predict(checkpointing=True)(root, inp)
    assert torch.isfinite(v).all() and torch.isfinite(a).all()


@pytest.mark.parametrize("variant", ["2.0", "2.3"])
def test_tree_keys_equal_tiny_checkpoint(tmp_path, variant):
    tc = tiny_checkpoint
    from safetensors import safe_open

    path = tmp_path / f"tiny_{variant}.safetensors"
    tc.make_tiny_checkpoint(path, variant, seed=0)
    with safe_open(str(path), framework="pt") as f:
        keys = {k[len("model.diffusion_model."):]: tuple(f.get_slice(k).get_shape())
                for k in f.keys() if k.startswith("model.diffusion_model.")}
    root = load_tree_from_checkpoint(path)
    assert root.ltx2_config.variant == variant
    mine = {k: tuple(v.shape) for k, v in root.state_dict().items()}
    assert mine == keys
    c = root.ltx2_config
    inp = step_inputs(c, "text_to_audio_video")
    v, a = make_predict(checkpointing=True)(root, inp)
    assert torch.isfinite(v).all() and torch.isfinite(a).all()


def _partition_probe():
    """A compile backend that partitions as inductor does (its joint-graph post pass, when
    one is configured, then AOTAutograd's min-cut partitioner under the configured budget)
    without generating code, and records the activation budget of each partition and, per
    backward graph, the attention forwards it runs again and the bytes the forward saves for
    it."""
    import torch._functorch.config as fcfg
    import torch._inductor.config as icfg
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd
    from torch._functorch.partitioners import min_cut_rematerialization_partition

    from trainer_core.ltx2.forward import _is_attention_forward

    seen, budgets = [], []

    def partition(joint, inputs, **kw):
        budgets.append(fcfg.activation_memory_budget)  # (the backward compiles later, outside predict)
        if icfg.joint_custom_post_pass is not None:
            icfg.joint_custom_post_pass(joint.graph)
        return min_cut_rematerialization_partition(joint, inputs, **kw)

    def bw(g, _):
        saved = sum(n.meta["val"].numel() * n.meta["val"].element_size() for n in g.graph.nodes
                    if n.op == "placeholder" and not n.name.startswith("tangents")
                    and isinstance(n.meta.get("val"), torch.Tensor))
        seen.append((sum(_is_attention_forward(n) for n in g.graph.nodes), saved))
        return make_boxed_func(g)

    def backend(gm, example_inputs):
        return aot_autograd(fw_compiler=lambda g, _: make_boxed_func(g), bw_compiler=bw,
                            partition_fn=partition)(gm, example_inputs)

    return backend, seen, budgets


def test_compiled_blocks_take_the_plans_activation_budget_and_can_save_attention():
    """make_predict hands the memory plan's activation budget to AOTAutograd's partitioner
    while the blocks compile (1.0 for a full-save plan, 0.7 otherwise; an explicit argument
    wins). Under 0.7 the partitioner recomputes attention forwards in backward (PyTorch does
    not count cuDNN's or the CPU's attention as compute-intensive): with ``save_attention``
    the backward runs none and the blocks still save less than at 1.0 (the plan's
    ``save_attention`` turns it on unless the argument says otherwise). Whatever is saved or
    recomputed, the LoRA gradients stay the eager ones."""
    from trainer_core.ltx2.memory import MemoryPlan

    c = tiny_config("2.0")
    root = build_tree(c, seed=2)
    lora = _random_lora(root, "all attention")
    inp = step_inputs(c, "text_to_audio_video", seed=3)
    n = len(root.transformer_blocks)
    ref = _lora_grads(root, lora, make_predict(memory_plan=MemoryPlan(["keep"] * n)), inp)
    runs = {}
    for name, ab, sa in (("lean", 0.7, False), ("lean+attention", 0.7, True), ("full", 1.0, True)):
        torch._dynamo.reset()
        backend, seen, budgets = _partition_probe()
        pred = make_predict(memory_plan=MemoryPlan(["keep"] * n, activation_budget=ab), save_attention=sa,
                            compile_blocks={"backend": backend})
        got = _lora_grads(root, lora, pred, inp)
        assert max(_rel(got[k], ref[k]) for k in ref) < 1e-5, name
        assert seen, name
        assert set(budgets) == {ab}, (name, budgets)
        assert pred.activation_budget == ab and pred.save_attention == sa
        runs[name] = (sum(a for a, _ in seen), sum(b for _, b in seen))
    torch._dynamo.reset()
    # the plan's budget unless one is given; a plan-less predict (and an ordinary plan's) 0.7
    assert make_predict(memory_plan=MemoryPlan(["keep"] * n, activation_budget=1.0),
                        activation_budget=0.5).activation_budget == 0.5
    assert make_predict().activation_budget == 0.7
    assert make_predict(memory_plan=MemoryPlan(["keep"] * n)).activation_budget == 0.7
    # save_attention: the plan's unless one is given; only compiled blocks under a budget below 1.0
    def saved(plan, **kw):
        return make_predict(memory_plan=plan, **kw).attention_saved

    assert saved(MemoryPlan(["keep"] * n, save_attention=True), compile_blocks=True)
    assert not saved(MemoryPlan(["keep"] * n, save_attention=True), compile_blocks=True, save_attention=False)
    assert not saved(MemoryPlan(["keep"] * n), compile_blocks=True)
    assert not saved(MemoryPlan(["keep"] * n, save_attention=True))  # eager blocks
    assert not saved(MemoryPlan(["keep"] * n, activation_budget=1.0, save_attention=True), compile_blocks=True)
    assert runs["lean"][0] > 0  # the waste this option exists for, reproduced on the CPU
    assert runs["lean+attention"][0] == 0 and runs["full"][0] == 0
    assert runs["lean"][1] < runs["lean+attention"][1] < runs["full"][1], runs
