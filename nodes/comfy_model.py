"""Hand ComfyUI's LTX-2 MODEL to trainer_core, and give the trained LoRA back to ComfyUI.

ComfyUI owns the GPU: we ask its model management to free what the graph no longer needs,
load the transformer the way ComfyUI loads it (its dtype, fp8 checkpoints included), and
run trainer_core's own training forward over ``model.model.diffusion_model`` — the same
modules and weights ComfyUI samples with. Afterwards the LoRA file goes back in through
ComfyUI's stock LoRA path, exactly as LoraLoaderModelOnly would apply it.
"""
from __future__ import annotations

import contextlib
from typing import Callable


def model_variant(model) -> dict:
    """Base-model identity for metadata: variant and sizes from the loaded diffusion model
    (``LTX2Config.from_module``: 2.0, 2.3 or 2.5 from what ComfyUI built — the 2.5 switches
    ``ff_bias`` / ``keyframes_abs_pos_embedding`` come from the checkpoint it loaded)."""
    from ..trainer_core.ltx2 import ConfigError, LTX2Config

    dm = model.model.diffusion_model
    name = type(dm).__name__
    if name != "LTXAVModel":
        raise ValueError(f"this is a {name} model; the trainer needs an LTX-2 audio-video model (LTXAVModel): "
                         "ltx-2-19b-dev / ltx-2.3-22b-dev with Load Checkpoint, or the LTX-2.5 transformer "
                         "(ltx-2.5-22b-*-transformer*.safetensors) with Load Diffusion Model")
    try:
        c = LTX2Config.from_module(dm)
    except ConfigError as e:
        raise ValueError(f"the MODEL is not an LTX-2 audio-video transformer the trainer knows: {e}") from e
    return {"variant": c.variant, "blocks": len(dm.transformer_blocks),
            "checkpoint": getattr(model, "cached_patcher_init", [None, [""]])[1][0]
            if isinstance(getattr(model, "cached_patcher_init", None), tuple) else ""}


def prepare_training_model(model, cfg, cache_dir=None, batch_size: int = 1) -> tuple:
    """Load ``model`` for training. Returns (root, predict, device, base, release, patcher) —
    ``patcher`` is the loaded ModelPatcher (samples taken during training use it).

    With a latent cache, a memory plan is made for the budget (``cfg.vram_budget_gb``, or
    what ComfyUI reports free once everything else is unloaded): per block keep or recompute
    activations, and which blocks stream their weights from host memory. Without streaming
    the transformer is loaded by ComfyUI's model management as for sampling; with streaming,
    the resident part goes to the GPU and the streamed blocks stay in (pinned) host memory,
    and ``release()`` returns every weight to ComfyUI's offload device. ``base["memory_plan"]``
    says what was chosen.
    """
    import torch

    import comfy.model_management as mm

    from ..trainer_core.ltx2 import ensure_trainable_weights, make_predict
    from ..trainer_core.ltx2.memory import GIB

    base = model_variant(model)
    mm.unload_all_models()  # text encoder, VAEs, captioner: training needs the memory
    mm.soft_empty_cache()
    device = mm.get_torch_device()
    mp = model.clone()
    root = mp.model.diffusion_model
    from ..trainer_core.ltx2.memory import is_quantized
    from ..trainer_core.run import compiles_blocks

    quantized = any(is_quantized(p) for p in root.parameters())
    compiled = compiles_blocks(cfg, device.type, quantized)
    plan = None
    if cache_dir is not None:
        from ..trainer_core.run import plan_for_training, without_checkpointing

        budget = float(cfg.vram_budget_gb or 0.0)
        if budget <= 0:
            budget = max(1.0, mm.get_free_memory(device) / GIB - 1.0)
        from ..trainer_core.ltx2.memory import calibrate_speed

        plan = plan_for_training(root, cache_dir, cfg, budget, compiled=compiled, batch_size=batch_size,
                                 speed=calibrate_speed(device) if device.type == "cuda" else None)
        if not cfg.grad_checkpointing:
            plan = without_checkpointing(plan)
        if device.type == "cuda":
            from ..trainer_core.ltx2.memory import allocator_note

            note = allocator_note(torch.cuda.get_allocator_backend(), plan)
            if note:
                plan.notes.append(note)
        base["budget_gib"] = plan.budget_gib
        base["memory_plan"] = plan.report()
        if quantized:
            base["memory_plan"] += ("; fp8 checkpoint: its quantized weights stay quantized"
                                    + ("" if compiled else ", blocks run eagerly (LTX2_TRAINER_COMPILE=on to compile)"))
    streamed = set(plan.streamed) if plan is not None else set()
    with torch.inference_mode(False):
        if not streamed:
            mm.load_models_gpu([mp], memory_required=0, force_full_load=True)
            root = mp.model.diffusion_model
        root.requires_grad_(False)
        ensure_trainable_weights(root)
        if streamed:
            place_resident(root, streamed, device)
    if plan is not None:
        predict = make_predict(memory_plan=plan, compile_blocks=compiled)
    else:
        predict = make_predict(checkpointing=cfg.grad_checkpointing, compile_blocks=compiled)

    def release() -> None:
        # outside inference mode: the weights are ordinary tensors now, and ComfyUI's
        # quantized (fp8) weights cannot be re-wrapped as parameters inside it
        try:
            with torch.inference_mode(False):
                predict.release()
                if streamed:
                    root.to(mm.unet_offload_device())
                mm.unload_all_models()
        finally:
            mm.soft_empty_cache()

    return root, predict, device, base, release, mp


def place_resident(root, streamed, device) -> None:
    """The resident part of a streaming plan onto ``device``: every weight except the
    streamed blocks' (those stay on the host; the streamer copies them in when needed)."""
    for name, child in root.named_children():
        if name != "transformer_blocks":
            child.to(device)
    for i, blk in enumerate(root.transformer_blocks):
        if i not in streamed:
            blk.to(device)
    for name, p in root.named_parameters(recurse=False):
        p.data = p.data.to(device)


@contextlib.contextmanager
def sampling_within_budget(root, streamer, budget_gib: float, device):
    """Let ComfyUI's sampler run a model that trains with a streaming plan, inside the same
    VRAM budget: the streamer parks (streamed weights back on their host copies), the resident
    part goes to ComfyUI's offload device, and ComfyUI's reserve is raised for the duration so
    that its partial loading puts at most the budget's worth on the GPU — what does not fit
    runs from host memory layer by layer, ComfyUI's own low-VRAM path. Afterwards ComfyUI
    lets go of the model and the training placement comes back (resident part on the GPU,
    streamed blocks on the host)."""
    import torch

    import comfy.model_management as mm

    from ..trainer_core.ltx2 import ensure_trainable_weights, quantized_weights_for_inference

    streamer.park()
    old_reserve = mm.EXTRA_RESERVED_VRAM
    cuda = torch.device(device).type == "cuda"
    try:
        with torch.inference_mode(False):
            root.to(mm.unet_offload_device())
        quantized_weights_for_inference(root)
        if cuda:
            mm.soft_empty_cache()
            total = mm.get_total_memory(device)
            mm.EXTRA_RESERVED_VRAM = max(old_reserve, int(total - budget_gib * (1 << 30)))
        yield
    finally:
        mm.EXTRA_RESERVED_VRAM = old_reserve
        with torch.inference_mode(False):
            mm.unload_all_models()
            place_resident(root, set(streamer.streamed), device)
            ensure_trainable_weights(root)
        mm.soft_empty_cache()


def apply_lora_file(model, path: str, strength: float = 1.0):
    """The MODEL with the saved LoRA applied through ComfyUI's own LoRA loader path."""
    import comfy.sd
    import comfy.utils

    sd, metadata = comfy.utils.load_torch_file(path, safe_load=True, return_metadata=True)
    # the metadata rides along as with Load LoRA (Get IC-LoRA Parameters reads it)
    patched, _ = comfy.sd.load_lora_for_models(model, None, sd, strength, 0, lora_metadata=metadata)
    return patched


ReleaseFn = Callable[[], None]
