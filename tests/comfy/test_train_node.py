"""Train LTX-2 LoRA in real ComfyUI on CPU with tiny LTX-2 checkpoints.

The latent cache is written directly (Encode Latents has its own tests); the text
conditioning stands in for Gemma 3 12B at its own boundary, with the true layout
([L, caption width] as the LTX-AV text encoder outputs it).
"""
from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path

import pytest
import torch

from trainer_core.lora import LoRASet, load_lora
from trainer_core.tiny_checkpoint import make_tiny_cache, make_tiny_checkpoint, text_context_width


def flat_inputs(node, **flat) -> dict:
    """The old single-node argument names (targets, precision, validation_*) -> the Train
    node's inputs (its own values, an options dict, a validation dict)."""
    import sys

    return sys.modules[node.__module__].flat_inputs(**flat)


def _cache(root: Path, variant: str, n: int = 2, seed: int = 0) -> str:
    return str(make_tiny_cache(root, variant, n, seed))


@pytest.fixture(scope="module", params=["ltx-2.0", "ltx-2.3"])
def tiny_model(request, comfy):
    variant = request.param
    name = f"tiny_{variant}.safetensors"
    make_tiny_checkpoint(comfy.base / "models" / "checkpoints" / name, variant=variant, seed=1)
    loader = comfy.nodes.NODE_CLASS_MAPPINGS["CheckpointLoaderSimple"]()
    with torch.inference_mode():
        model = loader.load_checkpoint(name)[0]
    return variant, model


def _fixed_loss(root, cache, lora=None) -> float:
    """Mean loss over a few fixed (seeded) noise/σ draws, for before/after comparisons."""
    from trainer_core import objective as ob
    from trainer_core.cache import CachedLatents
    from trainer_core.engine import TrainConfig, build_step_inputs
    from trainer_core.ltx2 import make_predict

    src = CachedLatents(cache)
    items = [src.get(i) for i in range(len(src))]
    predict = make_predict(checkpointing=False)
    mode = ob.get_mode("text_to_audio_video")
    total = 0.0
    if lora is not None:
        lora.attach(root)
    try:
        for seed in range(6):
            g = torch.Generator().manual_seed(seed)
            inp = build_step_inputs(items, mode, TrainConfig(sigma_sampler="uniform"), g, src.empty_text(), "cpu",
                                    torch.float32)
            with torch.no_grad():
                v, a = predict(root, inp)
            total += float(ob.masked_mse(v, inp.video.noised.target, inp.video.noised.loss_mask).mean()
                           + ob.masked_mse(a, inp.audio.noised.target, inp.audio.noised.loss_mask).mean())
    finally:
        if lora is not None:
            lora.detach()
    return total / 6


def _assert_same_lora(comfy, a, b, rel: float = 0.0) -> None:
    """The two Train node results saved the same LoRA: bit for bit, or within ``rel`` of each
    tensor's largest value (LoRA files are bf16: one unit in the last place is up to 0.4%)."""
    sa, _ = load_lora(Path(comfy.folder_paths.get_full_path("loras", a.result[1])))
    sb, _ = load_lora(Path(comfy.folder_paths.get_full_path("loras", b.result[1])))
    assert sa.keys() == sb.keys() and sa
    for k in sa:
        if rel == 0.0:
            assert torch.equal(sa[k], sb[k]), k
        else:
            d = float((sa[k].float() - sb[k].float()).abs().max()) / max(1e-12, float(sb[k].float().abs().max()))
            assert d < rel, (k, d)


def _assert_weights_back(root, before: dict) -> None:
    """The model's weights are where and what they were before training."""
    after = root.state_dict()
    for k, v in before.items():
        assert after[k].device == v.device and torch.equal(after[k], v), k


def _validation_inputs(comfy, ckpt: str, variant: str, every: int) -> dict:
    """The Train node's validation inputs for a tiny checkpoint: its VAEs, fixed random
    conditioning of the LTX-AV text encoder's true layout, 64x64x9 samples in 2 steps."""
    with torch.inference_mode():
        vae = comfy.nodes.NODE_CLASS_MAPPINGS["CheckpointLoaderSimple"]().load_checkpoint(ckpt)[2]
        audio_vae = comfy.nodes.NODE_CLASS_MAPPINGS["LTXVAudioVAELoader"].execute(ckpt_name=ckpt).result[0]
    w = text_context_width(variant, processed=False)
    g = torch.Generator().manual_seed(9)
    return dict(validation_every=every,
                validation_positive=[[torch.randn(1, 5, w, generator=g), {"unprocessed_ltxav_embeds": True}]],
                validation_negative=[[torch.randn(1, 3, w, generator=g), {"unprocessed_ltxav_embeds": True}]],
                validation_vae=vae, validation_audio_vae=audio_vae, validation_width=64, validation_height=64,
                validation_frames=9, validation_steps=2)


def _train(comfy, model, cache, name, **kw):
    node = comfy.pack["LTX2TrainLoRA"]
    args = dict(model=model, latents={"path": cache}, recipe="Character", lora_name=name, steps=24,
                learning_rate=2e-3, rank=4, mode="text_to_audio_video", seed=7, resume="none",
                caption_dropout=0.0, precision="fp32", checkpoint_every=8, targets="all attention")
    args.update(kw)
    with torch.inference_mode():  # as ComfyUI runs every node
        return node.execute(**flat_inputs(node, **args))


def test_train_saves_a_lora_stock_loader_applies_exactly(comfy, tiny_model, tmp_path):
    variant, model = tiny_model
    cache = _cache(tmp_path / "cache", variant)
    tag = variant.replace(".", "")
    out = _train(comfy, model, cache, f"t{tag}", steps=30, learning_rate=3e-3)
    patched, lora_name, history, curve, _sheet = out.result
    assert lora_name == f"ltx2/t{tag}_00001.safetensors"
    path = Path(comfy.folder_paths.get_full_path("loras", lora_name))
    assert path.exists() and path.with_suffix(".yaml").exists()
    assert len(history) == 30 and curve.shape[-1] == 3
    sd, meta = load_lora(path)
    # overfitting two samples: on fixed noise draws, the trained LoRA lowers the loss
    root = model.model.diffusion_model
    before = _fixed_loss(root, cache)
    after = _fixed_loss(root, cache, LoRASet.from_comfy_state_dict(sd))
    assert after < 0.99 * before, (before, after)

    assert meta["base_model"] == variant.replace("ltx-", "") and meta["rank"] == "4" and meta["steps"] == "30"
    assert all(k.startswith("diffusion_model.") for k in sd)

    # the stock LoraLoaderModelOnly: every key used ...
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda r: lines.append(r.getMessage())
    logging.getLogger().addHandler(handler)
    try:
        loaded = comfy.nodes.NODE_CLASS_MAPPINGS["LoraLoaderModelOnly"]().load_lora_model_only(model, lora_name, 1.0)[0]
    finally:
        logging.getLogger().removeHandler(handler)
    assert not [m for m in lines if "lora key not loaded" in m.lower()], lines[:5]
    # ... and the patched weights equal base + B·A·alpha/rank for every target (= the in-memory LoRA)
    n_targets = sum(k.endswith(".lora_A.weight") for k in sd)
    assert len(loaded.patches) == n_targets
    base_sd = model.model.diffusion_model.state_dict()
    for key in list(loaded.patches)[:6]:
        w = loaded.patch_weight_to_device(key, return_weight=True) if hasattr(loaded, "patch_weight_to_device") else None
        mod = key[len("diffusion_model."):-len(".weight")]
        a = sd[f"diffusion_model.{mod}.lora_A.weight"].float()
        b = sd[f"diffusion_model.{mod}.lora_B.weight"].float()
        alpha = float(sd[f"diffusion_model.{mod}.alpha"])
        want = base_sd[mod + ".weight"].float() + (b @ a) * (alpha / a.shape[0])
        import comfy.lora

        got = comfy.lora.calculate_weight(loaded.patches[key], base_sd[mod + ".weight"].float().clone(), key)
        assert torch.allclose(got, want, atol=1e-5), mod
        assert w is None or torch.allclose(w.float(), want, atol=1e-4)
    # the node's own MODEL output carries the same patches
    assert set(patched.patches) == set(loaded.patches)


def test_cancel_saves_checkpoint_and_resume_finishes(comfy, tiny_model, tmp_path):
    import comfy.model_management as mm

    variant, model = tiny_model
    cache = _cache(tmp_path / "cache", variant, seed=3)
    tag = variant.replace(".", "")
    run = Path(comfy.folder_paths.get_output_directory()) / "ltx2_lora_runs" / f"c{tag}"
    stop = threading.Event()

    def interrupt_after_first_checkpoint():
        t0 = time.time()
        while not stop.is_set() and time.time() - t0 < 120:
            if (run / "checkpoints" / "step_000008.safetensors").exists():
                mm.interrupt_current_processing(True)
                return
            time.sleep(0.01)

    th = threading.Thread(target=interrupt_after_first_checkpoint)
    th.start()
    try:
        with pytest.raises(mm.InterruptProcessingException):
            _train(comfy, model, cache, f"c{tag}", steps=200)
    finally:
        stop.set()
        th.join()
        mm.interrupt_current_processing(False)
    cks = sorted(p.name for p in (run / "checkpoints").glob("step_*.safetensors"))
    assert cks and cks[-1] != "step_000200.safetensors"
    stopped_at = int(cks[-1][5:11])
    assert 8 <= stopped_at < 200
    out = _train(comfy, model, cache, f"c{tag}", steps=stopped_at + 4, resume="latest")
    history = out.result[2]
    assert history[-1]["step"] == stopped_at + 4 and len(history) == stopped_at + 4
    # the resumed LoRA equals, bit for bit, a run of the same length that never stopped
    ref = _train(comfy, model, cache, f"u{tag}", steps=stopped_at + 4)
    resumed_sd, _ = load_lora(comfy.folder_paths.get_full_path("loras", out.result[1]))
    ref_sd, _ = load_lora(comfy.folder_paths.get_full_path("loras", ref.result[1]))
    assert resumed_sd.keys() == ref_sd.keys()
    assert all(torch.equal(resumed_sd[k], ref_sd[k]) for k in ref_sd)
    assert [h["loss"] for h in history] == [h["loss"] for h in ref.result[2]]


def test_vram_budget_streams_and_gives_the_same_lora(comfy, tiny_model, tmp_path):
    """A budget smaller than the weights makes the node plan streamed blocks (reported to
    the user); the LoRA equals the one trained with every weight resident, and the model's
    weights are back on ComfyUI's offload device, unchanged, afterwards."""
    variant, model = tiny_model
    cache = _cache(tmp_path / "cache", variant)
    tag = variant.replace(".", "")
    root = model.model.diffusion_model
    before = {k: v.detach().clone() for k, v in root.state_dict().items()}
    a = _train(comfy, model, cache, f"res{tag}", steps=6, checkpoint_every=0)
    b = _train(comfy, model, cache, f"str{tag}", steps=6, checkpoint_every=0, vram_budget_gb=0.001)
    text_a = a.ui["text"][0]
    text_b = b.ui["text"][0]
    assert "memory plan" in text_a and "stream" not in text_a.split("memory plan")[1].split(";")[1]
    assert "blocks stream their weights" in text_b
    _assert_same_lora(comfy, a, b)
    _assert_weights_back(root, before)


def test_gradient_checkpointing_off_keeps_every_block_whatever_the_budget(comfy, tiny_model, tmp_path):
    """Training Options' gradient_checkpointing off: where the budget's plan keeps every block
    anyway that plan is used as it is (on a large GPU its faster saving of activations comes
    with it); under a budget whose plan would stream and recompute, every block still keeps its
    activations with every weight resident, and the plan line says so. The LoRA is the same."""
    variant, model = tiny_model
    cache = _cache(tmp_path / "cache", variant)
    tag = variant.replace(".", "")
    on = _train(comfy, model, cache, f"ckon{tag}", steps=4, checkpoint_every=0)
    off = _train(comfy, model, cache, f"ckoff{tag}", steps=4, checkpoint_every=0, gradient_checkpointing=False)
    tight = _train(comfy, model, cache, f"cktight{tag}", steps=4, checkpoint_every=0, gradient_checkpointing=False,
                   vram_budget_gb=0.001)

    def plan_line(r):  # (the automatic budget follows the free memory of the moment)
        line = next(line for line in r.ui["text"][0].splitlines() if "memory plan" in line)
        return re.sub(r"budget [0-9.]+ GiB", "budget", line)

    n = len(model.model.diffusion_model.transformer_blocks)
    assert plan_line(off) == plan_line(on) and f"{n}/{n} blocks keep" in plan_line(on)
    t = plan_line(tight)
    assert f"{n}/{n} blocks keep" in t and "all weights resident" in t and "stream their" not in t, t
    assert "gradient checkpointing is off" in t and "streaming" in t
    _assert_same_lora(comfy, on, tight)
    _assert_same_lora(comfy, on, off)


def test_batch_size_trains_batches_of_one_bucket_and_plans_for_them(comfy, tiny_model, tmp_path):
    """Training Options' batch_size: the run trains batches of that many clips (captions of
    different lengths among them: caption dropout), the memory plan is made for the batch and
    says so, settings.yaml records it for a headless resume, and the LoRA differs from a
    batch-1 run's (each step learns from two clips)."""
    from trainer_core.run import read_settings

    variant, model = tiny_model
    cache = _cache(tmp_path / "cache", variant, n=3)
    tag = variant.replace(".", "")
    b2 = _train(comfy, model, cache, f"b2{tag}", steps=4, checkpoint_every=0, batch_size=2, caption_dropout=0.5)
    b1 = _train(comfy, model, cache, f"b1{tag}", steps=4, checkpoint_every=0, caption_dropout=0.5)
    assert len(b2.result[2]) == 4
    text = b2.ui["text"][0]
    assert "planned for batches of 2 clips of the largest bucket (64x64x9)" in text, text
    assert "batches of" not in b1.ui["text"][0]
    run = Path(comfy.folder_paths.get_output_directory()) / "ltx2_lora_runs" / f"b2{tag}"
    assert read_settings(run / "settings.yaml").get("batch_size") == 2
    sd2, _ = load_lora(comfy.folder_paths.get_full_path("loras", b2.result[1]))
    sd1, _ = load_lora(comfy.folder_paths.get_full_path("loras", b1.result[1]))
    assert any(not torch.equal(sd2[k], sd1[k]) for k in sd1)


def test_validation_samples_at_their_steps_and_leave_the_lora_unchanged(comfy, tiny_model, tmp_path):
    """validation_every=4 over 8 steps: step_000004_0.mp4 and step_000008_0.mp4 (PyAV reads
    them back with sound), a comparison sheet with one row per validation step, and the very
    same LoRA as the run without validation."""
    import av
    import numpy as np

    variant, model = tiny_model
    cache = _cache(tmp_path / "cache", variant)
    tag = variant.replace(".", "")
    plain = _train(comfy, model, cache, f"nov{tag}", steps=8, checkpoint_every=0)
    val = _train(comfy, model, cache, f"val{tag}", steps=8, checkpoint_every=0,
                 **_validation_inputs(comfy, f"tiny_{variant}.safetensors", variant, every=4))
    run = Path(comfy.folder_paths.get_output_directory()) / "ltx2_lora_runs" / f"val{tag}" / "samples"
    files = sorted(p.name for p in run.glob("*.mp4"))
    assert files == ["step_000004_0.mp4", "step_000008_0.mp4"], files
    with av.open(str(run / files[0])) as c:
        assert c.streams.video[0].width == 64 and c.streams.audio
        assert sum(1 for _ in c.decode(video=0)) == 9
    _assert_same_lora(comfy, plain, val)
    sheet = val.result[4]
    assert sheet.ndim == 4 and sheet.shape[0] == 1
    # two rows of 64-px frames (plus a 2-px gap), four frames across, a label column
    assert sheet.shape[1] == 2 * 64 + 2 and sheet.shape[2] == 86 + 4 * 64
    assert float(np.asarray(plain.result[4]).std()) >= 0.0  # the no-validation placeholder exists


def test_validation_needs_its_inputs(comfy, tiny_model, tmp_path):
    variant, model = tiny_model
    cache = _cache(tmp_path / "cache", variant)
    with pytest.raises(ValueError, match="needs vae and audio_vae"):
        _train(comfy, model, cache, "vbad", steps=2, validation_every=1)


def test_validation_under_a_streaming_plan(comfy, tiny_model, tmp_path):
    """A budget that streams block weights: validation still samples at its steps (ComfyUI's
    sampler, within the budget), and the run ends with the same LoRA as the streamed run
    without validation; the model's weights are back on the offload device, unchanged."""
    import av

    variant, model = tiny_model
    cache = _cache(tmp_path / "cache", variant)
    tag = variant.replace(".", "")
    root = model.model.diffusion_model
    before = {k: v.detach().clone() for k, v in root.state_dict().items()}
    plain = _train(comfy, model, cache, f"snov{tag}", steps=6, checkpoint_every=0, vram_budget_gb=0.001)
    val = _train(comfy, model, cache, f"sval{tag}", steps=6, checkpoint_every=0, vram_budget_gb=0.001,
                 **_validation_inputs(comfy, f"tiny_{variant}.safetensors", variant, every=3))
    assert "blocks stream their weights" in val.ui["text"][0]
    run = Path(comfy.folder_paths.get_output_directory()) / "ltx2_lora_runs" / f"sval{tag}" / "samples"
    files = sorted(p.name for p in run.glob("*.mp4"))
    assert files == ["step_000003_0.mp4", "step_000006_0.mp4"], files
    with av.open(str(run / files[0])) as c:
        assert sum(1 for _ in c.decode(video=0)) == 9
    _assert_same_lora(comfy, plain, val)
    _assert_weights_back(root, before)


@pytest.mark.parametrize("budget", [0.0, 0.001], ids=["resident", "streamed"])
def test_trains_on_comfyui_fp8_checkpoints(comfy, tmp_path, budget):
    """ComfyUI's fp8 checkpoint layout (transformer linears stored as float8_e4m3fn with
    scales, loaded by the stock loader as its mixed-precision ops with quantized weights):
    the Train node trains on it — resident, and with every block streamed — and the LoRA
    equals the one trained on the same weights dequantized to float32."""
    from trainer_core.tiny_checkpoint import quantize_checkpoint_fp8, save_safetensors, tiny_state_dict

    sd, meta = tiny_state_dict("ltx-2.0", 4, torch.float32)
    q, qmeta, ref = quantize_checkpoint_fp8(sd, meta)
    assert sum(1 for t in q.values() if t.dtype == torch.float8_e4m3fn) >= 40
    ck = comfy.base / "models" / "checkpoints"
    save_safetensors(q, ck / "tiny_fp8.safetensors", qmeta)
    save_safetensors(ref, ck / "tiny_fp8_ref.safetensors", meta)
    loader = comfy.nodes.NODE_CLASS_MAPPINGS["CheckpointLoaderSimple"]()
    with torch.inference_mode():
        m8 = loader.load_checkpoint("tiny_fp8.safetensors")[0]
        mref = loader.load_checkpoint("tiny_fp8_ref.safetensors")[0]
    w = m8.model.diffusion_model.transformer_blocks[0].attn1.to_q.weight
    assert type(w).__name__ == "QuantizedTensor" or w.dtype == torch.float8_e4m3fn  # really quantized
    cache = _cache(tmp_path / "cache", "ltx-2.0")
    tag = "s" if budget else "r"
    val = _validation_inputs(comfy, "tiny_fp8.safetensors", "ltx-2.0", every=3)
    a = _train(comfy, m8, cache, f"fp8{tag}", steps=6, checkpoint_every=0, vram_budget_gb=budget, **val)
    b = _train(comfy, mref, cache, f"fp8ref{tag}", steps=6, checkpoint_every=0, vram_budget_gb=budget)
    assert "fp8 checkpoint: its quantized weights stay quantized" in a.ui["text"][0]
    assert "fp8 checkpoint" not in b.ui["text"][0]
    if budget:
        assert "blocks stream their weights" in a.ui["text"][0]
    samples = Path(comfy.folder_paths.get_output_directory()) / "ltx2_lora_runs" / f"fp8{tag}" / "samples"
    assert sorted(p.name for p in samples.glob("*.mp4")) == ["step_000003_0.mp4", "step_000006_0.mp4"]
    _assert_same_lora(comfy, a, b, rel=1e-2)
    assert [h["loss"] for h in a.result[2]] == pytest.approx([h["loss"] for h in b.result[2]], rel=1e-4)


@pytest.mark.parametrize("budget", [0.0, 0.001], ids=["resident", "streamed"])
def test_trains_with_comfyui_fp8_weight_dtype(comfy, tmp_path, budget):
    """"Keep frozen weights in fp8" the ComfyUI way: Load Diffusion Model with weight_dtype
    fp8_e4m3fn stores the transformer's weights as fp8 and casts per layer. The Train node
    trains on it (resident and streamed) to the LoRA of a model whose weights are those same
    fp8 values in float32."""
    name = "tiny_unet_fp8.safetensors"
    folder = Path(comfy.folder_paths.get_folder_paths("diffusion_models")[0])
    make_tiny_checkpoint(folder / name, variant="ltx-2.0", seed=5)
    loader = comfy.nodes.NODE_CLASS_MAPPINGS["UNETLoader"]()
    with torch.inference_mode():
        m8 = loader.load_unet(name, "fp8_e4m3fn")[0]
        mref = loader.load_unet(name, "default")[0]
    r8, rref = m8.model.diffusion_model, mref.model.diffusion_model
    n8 = 0
    with torch.inference_mode():
        p8 = dict(r8.named_parameters())
        for k, p in rref.named_parameters():
            if p8[k].dtype == torch.float8_e4m3fn:
                p.data = p8[k].data.to(p.dtype)  # the reference computes with the same fp8 values
                n8 += 1
    assert n8 >= 40  # the block linears really are fp8
    cache = _cache(tmp_path / "cache", "ltx-2.0")
    tag = "s" if budget else "r"
    a = _train(comfy, m8, cache, f"wd8{tag}", steps=6, checkpoint_every=0, vram_budget_gb=budget)
    b = _train(comfy, mref, cache, f"wd8ref{tag}", steps=6, checkpoint_every=0, vram_budget_gb=budget)
    if budget:
        assert "blocks stream their weights" in a.ui["text"][0]
    _assert_same_lora(comfy, a, b, rel=1e-2)
    assert [h["loss"] for h in a.result[2]] == pytest.approx([h["loss"] for h in b.result[2]], rel=1e-4)
    assert all(p.dtype == torch.float8_e4m3fn for k, p in r8.named_parameters() if k in p8 and p8[k].dtype == torch.float8_e4m3fn)


def test_quantized_streamed_blocks_recompute_when_planned_to_keep_activations(comfy, tmp_path):
    """A plan that asks streamed blocks to keep their activations in host memory falls back
    to recomputing them when their weights are ComfyUI's quantized tensors (those cannot be
    re-viewed from a slot in backward): no offloader, and the same output as recomputing."""
    from tests.core.test_ltx2_forward import step_inputs
    from trainer_core.ltx2 import LTX2Config, make_predict
    from trainer_core.ltx2.memory import MemoryPlan
    from trainer_core.tiny_checkpoint import quantize_checkpoint_fp8, save_safetensors, tiny_state_dict

    sd, meta = tiny_state_dict("ltx-2.0", 4, torch.float32)
    q, qmeta, _ = quantize_checkpoint_fp8(sd, meta)
    save_safetensors(q, comfy.base / "models" / "checkpoints" / "tiny_fp8_offload.safetensors", qmeta)
    with torch.inference_mode():
        m8 = comfy.nodes.NODE_CLASS_MAPPINGS["CheckpointLoaderSimple"]().load_checkpoint("tiny_fp8_offload.safetensors")[0]
    root = m8.model.diffusion_model
    root.requires_grad_(False)
    inp = step_inputs(LTX2Config.from_module(root), "text_to_audio_video", seed=4)
    n = len(root.transformer_blocks)
    outs = []
    for modes in (["offload"] * n, ["full"] * n):
        pred = make_predict(memory_plan=MemoryPlan(modes, streamed=list(range(n))), offload_min_bytes=0)
        outs.append(pred(root, inp))
        assert pred.offloader is None and pred.streamer is not None
        pred.release()
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


_UNINTERRUPTED: dict = {}


def _uninterrupted(comfy, model, cache, variant, steps):
    """One uninterrupted run per variant (the reference the cancel tests compare with)."""
    key = (variant, steps)
    if key not in _UNINTERRUPTED:
        tag = variant.replace(".", "")
        _UNINTERRUPTED[key] = _train(comfy, model, cache, f"ref{tag}", steps=steps, checkpoint_every=10)
    return _UNINTERRUPTED[key]


@pytest.mark.parametrize("how", ["hook_raises", "flag_only", "in_layer"])
def test_cancel_between_checkpoints_saves_the_step_and_resumes_bit_exact(comfy, tiny_model, tmp_path, how,
                                                                        monkeypatch):
    """ComfyUI's own cancel at step 7 (or the first progress call after it) of 30 with
    checkpoint_every 10. hook_raises: the progress
    hook calls comfy.model_management.interrupt_current_processing() and then, as the server's
    hook does, throw_exception_if_processing_interrupted(). flag_only: the hook only sets the
    flag. in_layer: the flag is set in the middle of the forward after the hook saw 7, so
    ComfyUI's own layer call (comfy.ops run_every_op) raises inside that step. Every time the
    node raises ComfyUI's InterruptProcessingException and saves the last finished step (the
    periodic checkpoint at step 10 is never reached): step 7 when the hook raises; step 8
    otherwise — a step's progress is reported while the next one runs (the engine reads its
    numbers one step late), so step 8 had finished when the run saw the flag (flag_only reports
    it first; in_layer stops inside step 9). Resume = latest ends with the LoRA and losses of a
    run that never stopped."""
    import comfy.model_management as mm
    import comfy.utils as cu

    variant, model = tiny_model
    cache = _cache(tmp_path / "cache", variant, seed=5)
    tag = variant.replace(".", "") + how[:4]
    run = Path(comfy.folder_paths.get_output_directory()) / "ltx2_lora_runs" / f"k{tag}"
    seen, fired = [], []

    # ComfyUI throttles its progress hook (one call per 100 ms); unthrottled here so the hook
    # sees step 7 whatever the machine's speed (the logic still takes the first call ≥ 7)
    monkeypatch.setattr(cu, "PROGRESS_THROTTLE_MIN_INTERVAL", 0.0)
    def hook(value, total, preview, prompt_id=None, node_id=None):
        seen.append(value)
        if value >= 7 and not fired and how != "in_layer":
            fired.append(value)
            mm.interrupt_current_processing()
        if how == "hook_raises":
            mm.throw_exception_if_processing_interrupted()

    def in_forward(mod, args):
        if seen and max(seen) >= 7 and not fired:
            fired.append(max(seen))  # now inside the step after it
            mm.interrupt_current_processing()  # the next ComfyUI op raises

    # (the out-projection: a foreign hook on to_q would keep that attention's q/k/v adapters out
    # of their projection group in the first run only, and the float sums would differ from the
    # uninterrupted run's)
    layer = model.model.diffusion_model.transformer_blocks[0].attn1.to_out[0]
    handle = layer.register_forward_pre_hook(in_forward) if how == "in_layer" else None
    cu.set_progress_bar_global_hook(hook)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            _train(comfy, model, cache, f"k{tag}", steps=30, checkpoint_every=10)
    finally:
        cu.set_progress_bar_global_hook(None)
        mm.interrupt_current_processing(False)
        if handle is not None:
            handle.remove()
    saved = 7 if how == "hook_raises" else 8
    assert fired == [7] and max(seen) == (8 if how == "flag_only" else 7)
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*.safetensors")) == [f"step_{saved:06d}.safetensors"]
    assert not mm.processing_interrupted()
    out = _train(comfy, model, cache, f"k{tag}", steps=30, checkpoint_every=10, resume="latest")
    ref = _uninterrupted(comfy, model, cache, variant, 30)
    assert [h["loss"] for h in out.result[2]] == [h["loss"] for h in ref.result[2]]
    _assert_same_lora(comfy, out, ref)


def test_train_node_refuses_bad_names_before_running(comfy):
    node = comfy.pack["LTX2TrainLoRA"]
    assert node.validate_inputs(lora_name="my_lora") is True
    for bad, says in [(".", "not a name"), ("CON", "Windows device name"), ("nul.txt", "Windows device name"),
                      ("x" * 300, "300 characters"), ("a/b", "folder separator"), ("", "empty"), ("bad:name", "characters")]:
        msg = node.validate_inputs(lora_name=bad)
        assert isinstance(msg, str) and says in msg, (bad, msg)
    msg = comfy.pack["LTX2TrainOptions"].validate_inputs(init_lora="not_there.safetensors")
    assert isinstance(msg, str) and "not in the loras folder" in msg


def test_train_node_refuses_settings_before_loading(comfy, tiny_model, tmp_path):
    variant, model = tiny_model
    cache = _cache(tmp_path / "cache", variant)
    # (the pack's own copy of trainer_core, as ComfyUI imported it: match the class by name)
    with pytest.raises(ValueError, match="grad_accum = 0 is out of range") as e:
        _train(comfy, model, cache, "refused", steps=2, grad_accum=0)
    assert type(e.value).__name__ == "SettingsError"
    run = Path(comfy.folder_paths.get_output_directory()) / "ltx2_lora_runs" / "refused"
    assert not run.exists()  # nothing written, nothing loaded


def test_train_node_starts_from_an_official_trainer_lora(comfy, tiny_model, tmp_path):
    """init_lora: a file in ltx-trainer's layout (PEFT keys under diffusion_model., no alpha) in
    the loras folder: the run's LoRA has its modules and rank, alpha = rank, and its first loss
    is lower than a fresh LoRA's would allow only if the weights were really used (differs)."""
    from safetensors.torch import save_file

    from trainer_core.lora import resolve_targets

    variant, model = tiny_model
    root = model.model.diffusion_model
    cache = _cache(tmp_path / "cache", variant)
    g = torch.Generator().manual_seed(3)
    mods = dict(root.named_modules())
    sd = {}
    for n in resolve_targets(root, "video attention"):
        sd[f"diffusion_model.{n}.lora_A.weight"] = (torch.randn(2, mods[n].in_features, generator=g) * 0.3).bfloat16()
        sd[f"diffusion_model.{n}.lora_B.weight"] = (torch.randn(mods[n].out_features, 2, generator=g) * 0.3).bfloat16()
    tag = variant.replace(".", "")
    save_file(sd, str(Path(comfy.folder_paths.get_folder_paths("loras")[0]) / f"official_{tag}.safetensors"))
    a = _train(comfy, model, cache, f"init{tag}", steps=2, checkpoint_every=0, init_lora=f"official_{tag}.safetensors")
    b = _train(comfy, model, cache, f"noinit{tag}", steps=2, checkpoint_every=0)
    got, meta = load_lora(Path(comfy.folder_paths.get_full_path("loras", a.result[1])))
    assert meta["rank"] == "2" and meta["alpha"] == "2.0" and meta["init_lora"] == f"official_{tag}.safetensors"
    assert {k for k in got if k.endswith("lora_A.weight")} == {k for k in sd if k.endswith("lora_A.weight")}
    assert a.result[2][0]["loss"] != b.result[2][0]["loss"]
    assert f"starting from official_{tag}.safetensors: " in a.ui["text"][0]


def test_a_node_run_resumes_headless_from_its_settings(comfy, tiny_model, tmp_path, capsys):
    """The run folder's settings.yaml continues in the CLI (trainer_core's own tree read from
    the same checkpoint): the fingerprint of the base model is the same in both, so the
    CLI resumes the node's checkpoint instead of refusing it — and refuses another model."""
    from trainer_core import cli
    from trainer_core.tiny_checkpoint import make_tiny_checkpoint

    variant, model = tiny_model
    cache = _cache(tmp_path / "cache", variant)
    tag = variant.replace(".", "")
    _train(comfy, model, cache, f"hl{tag}", steps=4, checkpoint_every=2)
    run = Path(comfy.folder_paths.get_output_directory()) / "ltx2_lora_runs" / f"hl{tag}"
    ckpt = comfy.base / "models" / "checkpoints" / f"tiny_{variant}.safetensors"
    out = tmp_path / "headless.safetensors"
    rc = cli.main(["train", str(run / "settings.yaml"), "--checkpoint", str(ckpt), "--device", "cpu",
                   "--dtype", "fp32", "--steps", "6", "--lora", str(out)])
    text = capsys.readouterr()
    assert rc == 0, text.err[-2000:]
    assert "resumed from step_000004.safetensors (step 4)" in text.out, text.out
    other = make_tiny_checkpoint(tmp_path / "other.safetensors", variant=variant, seed=99)
    rc = cli.main(["train", str(run / "settings.yaml"), "--checkpoint", str(other), "--device", "cpu",
                   "--dtype", "fp32", "--steps", "8", "--lora", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "belongs to a different run (base model:" in err, err
