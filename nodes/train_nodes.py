"""Train LTX-2 LoRA: runs trainer_core's engine inside ComfyUI on the MODEL the user loaded."""
from __future__ import annotations

import logging

from comfy_api.latest import io

from ._common import CAT_TRAIN, LatentsT, LossT, image_batch, make_progress, send_text

RECIPE_DEFAULT = "recipe default"


def _recipe_names():
    from ..trainer_core.engine import RECIPES

    return [*RECIPES, "Custom"]


NO_INIT_LORA = "none"


def _lora_options():
    import folder_paths

    try:
        return [NO_INIT_LORA, *folder_paths.get_filename_list("loras")]
    except Exception:
        return [NO_INIT_LORA]


def build_config(recipe: str, overrides: dict):
    """TrainConfig from a recipe plus the node's overrides (0 / "recipe default" / -1 keep the recipe).
    TrainConfig checks every setting (trainer_core.engine.validate_config) — the same check the
    CLI makes — and raises SettingsError listing what is wrong."""
    from ..trainer_core.engine import RECIPES, TrainConfig

    base = dict(RECIPES.get(recipe, {}))
    for k, v in overrides.items():
        if v is None or v == RECIPE_DEFAULT:
            continue
        if k in ("steps", "rank", "learning_rate", "alpha") and v == 0:
            continue
        if k == "audio_weight" and v < 0:
            continue
        base[k] = v
    return TrainConfig(**base)


class TrainLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        from ..trainer_core.engine import RECIPES
        from ..trainer_core.lora import TARGET_PRESETS
        from ..trainer_core import modes as md

        return io.Schema(
            node_id="LTX2TrainLoRA",
            display_name="Train LTX-2 LoRA",
            search_aliases=["lora training", "train lora", "ltx-2 lora", "finetune"],
            category=CAT_TRAIN,
            description=(
                "Teaches the LTX-2 model you loaded your character, style, motion or sound from the latents "
                "Encode Latents made. Pick a recipe, name the LoRA and queue: the loss chart shows progress, "
                "cancel keeps a checkpoint (queue again to continue), and the LoRA lands in models/loras/ltx2 "
                "for Load LoRA. The model output has the LoRA applied, ready for Sample with LoRA."),
            inputs=[
                io.Model.Input("model", tooltip="The LTX-2 model from Load Checkpoint (dev, not distilled)."),
                LatentsT.Input("latents", tooltip="From Encode Latents."),
                io.Combo.Input("recipe", options=_recipe_names(), default="Character",
                               tooltip="Starting point: rank, learning rate, steps, targets, audio weight, mode. "
                                       "Every field below overrides it when set."),
                io.String.Input("lora_name", default="my_ltx2_lora",
                                tooltip="Name of the LoRA; files are numbered (my_ltx2_lora_00001.safetensors)."),
                io.Int.Input("steps", default=0, min=0, max=100000,
                             tooltip="Optimizer steps (0 = recipe: Character 2000, Style 1500, Motion 3000, Audio 2000)."),
                io.Float.Input("learning_rate", default=0.0, min=0.0, max=1.0, step=1e-5,
                               tooltip="0 = recipe (1e-4)."),
                io.Int.Input("rank", default=0, min=0, max=256, tooltip="LoRA rank (0 = recipe; 32 typical)."),
                io.Combo.Input("mode", options=[RECIPE_DEFAULT, *md.PRESETS, *md.LEGACY], default=RECIPE_DEFAULT,
                               tooltip="What the LoRA learns (Lightricks' 13 training modes; the older names "
                                       "still work):\n" + "\n".join(f"{k}: {d}" for k, d in md.table())),
                io.String.Input("conditions", default="", optional=True, advanced=True,
                                tooltip="Compose the mode's conditions (replaces the preset's), joined by '+': "
                                        "first_frame, prefix:N, suffix:N, mask, spatial_crop[y1,x1,y2,x2], "
                                        "reference; '@p' a probability, 'audio.' for the audio stream. E.g. "
                                        "'reference + first_frame@0.2', 'prefix:4@0.5 + suffix:4@0.5'."),
                io.Int.Input("extension_frames", default=0, min=0, max=64, optional=True, advanced=True,
                             tooltip="Extension modes: the kept boundary in latent frames (8 pixel frames each; "
                                     "audio: latent steps, 25 per second). 0 = the preset's 8."),
                io.Combo.Input("targets", options=[RECIPE_DEFAULT, *TARGET_PRESETS], default=RECIPE_DEFAULT,
                               tooltip="Which linear layers get LoRA adapters."),
                io.Int.Input("seed", default=42, min=0, max=2**31 - 1, tooltip="Same seed, same run."),
                io.Combo.Input("resume", options=["none", "latest"], default="latest",
                               tooltip="latest: continue this LoRA name's run from its newest checkpoint, if any."),
                io.Float.Input("alpha", default=0.0, min=0.0, max=512.0, advanced=True,
                               tooltip="LoRA alpha (0 = recipe, usually = rank)."),
                io.Float.Input("dropout", default=0.0, min=0.0, max=0.9, step=0.05, advanced=True,
                               tooltip="LoRA dropout."),
                io.String.Input("target_patterns", default="", advanced=True, optional=True,
                                tooltip="Extra targets: regexes or globs over module names, comma separated "
                                        "(e.g. *.attn1.to_q)."),
                io.Float.Input("audio_weight", default=-1.0, min=-1.0, max=10.0, step=0.05, advanced=True,
                               tooltip="Weight of the audio loss (-1 = recipe). The audio term otherwise dominates."),
                io.Float.Input("first_frame_prob", default=0.5, min=0.0, max=1.0, step=0.05, advanced=True,
                               tooltip="image→video: probability that a sample conditions on its first frame."),
                io.Float.Input("caption_dropout", default=0.05, min=0.0, max=1.0, step=0.01, advanced=True,
                               tooltip="Probability of training on the empty caption (helps CFG)."),
                io.Combo.Input("optimizer", options=["adamw", "adamw8bit"], default="adamw", advanced=True,
                               tooltip="adamw8bit (bitsandbytes) stores optimizer state in 8 bits."),
                io.Combo.Input("scheduler", options=["constant", "linear", "cosine"], default="constant",
                               advanced=True, tooltip="Learning-rate schedule after warmup."),
                io.Int.Input("warmup_steps", default=0, min=0, max=10000, advanced=True, tooltip="Linear warmup."),
                io.Int.Input("grad_accum", default=1, min=1, max=64, advanced=True,
                             tooltip="Gradient accumulation (micro-batches per step)."),
                io.Float.Input("max_grad_norm", default=1.0, min=0.0, max=100.0, advanced=True,
                               tooltip="Gradient clipping (0 = off)."),
                io.Int.Input("checkpoint_every", default=250, min=0, max=100000, advanced=True,
                             tooltip="Save a resumable checkpoint every N steps (0 = only on cancel and at the "
                                     "end). Cancel always saves the last finished step."),
                io.Int.Input("keep_checkpoints", default=3, min=1, max=100, advanced=True,
                             tooltip="Keep the newest N checkpoints."),
                io.Combo.Input("precision", options=["bf16", "fp32"], default="bf16", advanced=True,
                               tooltip="bf16 autocast with fp32 LoRA weights (bf16), or full fp32."),
                io.Boolean.Input("gradient_checkpointing", default=True, advanced=True,
                                 tooltip="On: a memory plan recomputes blocks in backward only where the VRAM "
                                         "budget needs it (and streams weights when they don't fit). Off: keep "
                                         "every block's activations (fastest, most memory)."),
                io.Float.Input("vram_budget_gb", default=0.0, min=0.0, max=1024.0, step=0.5, advanced=True,
                               tooltip="GPU memory training may use, in GB. 0 = automatic: what ComfyUI reports "
                                       "free once the other models are unloaded. When the 19B/22B weights don't "
                                       "fit, blocks stream from host memory (RAM ≥ 64 GB recommended)."),
                io.Combo.Input("stream_weights_as", options=["bf16", "fp8"], default="bf16", advanced=True,
                               tooltip="How streamed blocks' frozen weights travel from host memory (only when the "
                                       "budget makes blocks stream). bf16: exact, the same LoRA as a resident run. "
                                       "fp8 (experimental): half the bytes per copy, but not yet reliably faster "
                                       "(H200, 19B, 24 GB budget: 1.38–1.58 s/step against 1.46–1.56 for bf16); "
                                       "those blocks' frozen weights are rounded to fp8 (per-row scales) while "
                                       "training. Host memory: 1.5× the streamed weights."),
                io.Int.Input("validation_every", default=0, min=0, max=100000, optional=True,
                             tooltip="Every N steps, sample the validation prompts with the LoRA as it is then "
                                     "(saved as <run>/samples/step_000500_0.mp4, shown in the node). 0 = off."),
                io.String.Input("validation_prompts", multiline=True, default="", optional=True,
                                tooltip="One prompt per line (start with the trigger word). Needs validation_clip."),
                io.Clip.Input("validation_clip", optional=True,
                              tooltip="The LTX-2 text encoder: encodes the validation prompts once, before training."),
                io.Conditioning.Input("validation_positive", optional=True,
                                      tooltip="Instead of prompts + clip: one prompt's conditioning."),
                io.Conditioning.Input("validation_negative", optional=True,
                                      tooltip="Negative conditioning for validation samples (default: the stock "
                                              "negative prompt through validation_clip)."),
                io.Vae.Input("validation_vae", optional=True, tooltip="The LTX-2 video VAE, to decode samples."),
                io.Vae.Input("validation_audio_vae", optional=True, tooltip="The LTX-2 audio VAE."),
                io.Image.Input("validation_image", optional=True, tooltip="First frame (image → video samples)."),
                _sample_conditioning_type().Input(
                    "validation_conditioning", optional=True,
                    tooltip="What validation samples start from in your training mode (IC-LoRA reference, "
                            "prefix, mask, audio…): a Sample Conditioning node."),
                io.Int.Input("validation_width", default=512, min=64, max=2048, step=32, optional=True, advanced=True,
                             tooltip="Width of validation samples (multiple of 32)."),
                io.Int.Input("validation_height", default=320, min=64, max=2048, step=32, optional=True,
                             advanced=True, tooltip="Height of validation samples (multiple of 32)."),
                io.Int.Input("validation_frames", default=49, min=9, max=513, step=8, optional=True, advanced=True,
                             tooltip="Frames of validation samples (8·n + 1; 49 ≈ 2 s)."),
                io.Int.Input("validation_steps", default=20, min=1, max=100, optional=True, advanced=True,
                             tooltip="Sampling steps per validation sample."),
                io.Float.Input("validation_cfg", default=4.0, min=0.0, max=30.0, step=0.1, optional=True,
                               advanced=True, tooltip="Guidance of validation samples (4 = the stock workflow)."),
                io.Int.Input("validation_seed", default=42, min=0, max=0xFFFFFFFF, optional=True, advanced=True,
                             tooltip="The same seeds at every validation step, so samples compare."),
                io.Combo.Input("init_lora", options=_lora_options(), default=NO_INIT_LORA, optional=True,
                               tooltip="Start from this LoRA (loras folder): this pack's, the official "
                                       "ltx-trainer's or any ComfyUI-format LTX-2 LoRA — e.g. carry a 2.3 LoRA to "
                                       "2.5 with a short run. Its modules, rank and alpha (rank when it stores "
                                       "none) replace rank, alpha and targets; modules the model lacks are "
                                       "skipped and named."),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="The input model with the trained LoRA applied."),
                io.String.Output(display_name="lora_name",
                                 tooltip="The LoRA file name in the loras folder (for Load LoRA nodes)."),
                LossT.Output(display_name="loss_history", tooltip="Per-step loss, learning rate and timing."),
                io.Image.Output(display_name="loss_curve", tooltip="Loss, smoothed loss and learning rate."),
                io.Image.Output(display_name="validation_sheet",
                                tooltip="Frames of every validation sample, one row per step: pick the best "
                                        "checkpoint at a glance."),
            ],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,
            not_idempotent=True,
        )

    @classmethod
    def validate_inputs(cls, lora_name="my_ltx2_lora", init_lora=NO_INIT_LORA):
        """Before the prompt runs: the LoRA name makes a valid file name everywhere, the init
        LoRA exists. (Numbers are range-checked by ComfyUI from the input definitions, and every
        setting again by TrainConfig before anything loads.)"""
        from ..trainer_core.fsutil import UnsafePathError, check_name

        if isinstance(lora_name, str):  # a linked input arrives later; execute checks it then
            try:
                check_name(lora_name, "lora_name")
            except UnsafePathError as e:
                return str(e)
        if isinstance(init_lora, str) and init_lora and init_lora != NO_INIT_LORA:
            import folder_paths

            if folder_paths.get_full_path("loras", init_lora) is None:
                return (f"init_lora {init_lora!r} is not in the loras folder; choose one of the list (or none) "
                        "and press R to refresh it")
        return True

    @classmethod
    def execute(cls, model, latents, recipe, lora_name, steps=0, learning_rate=0.0, rank=0, mode=RECIPE_DEFAULT,
                conditions="", extension_frames=0, targets=RECIPE_DEFAULT, seed=42, resume="latest", alpha=0.0, dropout=0.0, target_patterns="",
                audio_weight=-1.0, first_frame_prob=0.5, caption_dropout=0.05, optimizer="adamw",
                scheduler="constant", warmup_steps=0, grad_accum=1, max_grad_norm=1.0, checkpoint_every=250,
                keep_checkpoints=3, precision="bf16", gradient_checkpointing=True,
                vram_budget_gb=0.0, stream_weights_as="bf16", validation_every=0, validation_prompts="", validation_clip=None,
                validation_positive=None, validation_negative=None, validation_vae=None, validation_audio_vae=None,
                validation_image=None, validation_conditioning=None, validation_width=512, validation_height=320, validation_frames=49,
                validation_steps=20, validation_cfg=4.0, validation_seed=42,
                init_lora=NO_INIT_LORA) -> io.NodeOutput:
        import torch

        import comfy.model_management as mm
        import folder_paths

        from ..trainer_core import engine as en
        from ..trainer_core.fsutil import check_name, next_numbered, safe_join
        from ..trainer_core.run import run_training
        from . import live
        from .comfy_model import apply_lora_file, prepare_training_model

        lora_name = check_name(lora_name, "lora_name")
        init_path = ""
        if init_lora and init_lora != NO_INIT_LORA:
            init_path = folder_paths.get_full_path_or_raise("loras", init_lora)
        cfg = build_config(recipe, dict(
            steps=steps, learning_rate=learning_rate, rank=rank, alpha=alpha or (rank if rank else 0), mode=mode,
            conditions=conditions or "", extension_frames=int(extension_frames or 0), targets=targets, seed=seed, dropout=dropout, target_patterns=target_patterns or "",
            audio_weight=audio_weight, first_frame_prob=first_frame_prob, caption_dropout=caption_dropout,
            optimizer=optimizer, scheduler=scheduler, warmup_steps=warmup_steps, grad_accum=grad_accum,
            max_grad_norm=max_grad_norm, checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints,
            mixed_precision=precision, grad_checkpointing=gradient_checkpointing, vram_budget_gb=vram_budget_gb,
            stream_transfer=stream_weights_as, init_lora=init_path,
            trigger_word=latents.get("trigger_word", "") if isinstance(latents, dict) else ""))
        safe_name = safe_join(folder_paths.get_output_directory(), lora_name, allow_subdirs=False).name
        run_dir = safe_join(folder_paths.get_output_directory(), f"ltx2_lora_runs/{safe_name}")
        lora_dir = safe_join(folder_paths.get_folder_paths("loras")[0], "ltx2")
        lora_path = next_numbered(lora_dir, safe_name, ".safetensors")
        cache_dir = latents["path"] if isinstance(latents, dict) else str(latents)

        progress = make_progress(cfg.steps, cls)
        node_id = progress.node_id

        live.start(node_id, cfg.steps, lora_path.stem)

        def on_step(rec: dict) -> None:
            live.push(node_id, rec)
            progress.bar.update_absolute(rec["step"], rec["steps"])
            progress.text(f"step {rec['step']}/{rec['steps']}  loss {rec['loss']:.4f} "
                          f"(smoothed {rec['smoothed']:.4f})  lr {rec['lr']:.2e}  {rec['s_per_step']:.2f} s/step")

        def on_event(name: str, payload: dict) -> None:
            if name == "checkpoint":
                live.marker(node_id, payload["step"], "checkpoint")
                send_text(f"checkpoint saved: step {payload['step']}", node_id)
            elif name == "resumed":
                send_text(f"resumed from step {payload['step']}", node_id)
            elif name in ("notice", "cancelled"):
                logging.info("[LTX-2 Trainer] %s", payload["message"])
                send_text(payload["message"], node_id)

        spec = _validation_spec(validation_every, validation_prompts, validation_clip, validation_positive,
                                validation_negative, validation_vae, validation_audio_vae, validation_image,
                                validation_width, validation_height, validation_frames, validation_steps,
                                validation_cfg, validation_seed, validation_conditioning)
        callbacks = en.Callbacks(on_step=on_step, should_stop=mm.processing_interrupted, on_event=on_event,
                                 is_interrupt=_is_comfy_interrupt)
        root, predict, device, base, release, patcher = prepare_training_model(model, cfg, cache_dir=cache_dir)
        if base.get("memory_plan"):
            send_text(base["memory_plan"], node_id)
        if spec is not None:
            callbacks.on_validate = _validator(spec, patcher, root, predict, run_dir, progress, node_id,
                                                  base.get("budget_gib") or vram_budget_gb or 0.0, device)
            callbacks.validate_every = spec.every
        try:
            with torch.inference_mode(False):
                mm.in_training = True
                try:
                    outcome = run_training(root, predict, cache_dir, cfg, run_dir, lora_path, device=device,
                                           callbacks=callbacks, resume=resume, base=base)
                except en.TrainingStopped as e:
                    send_text(str(e), node_id)
                    if e.reason == "cancelled":
                        # ComfyUI shows a cancel only for its own exception: re-raise it (the one
                        # that stopped training, or a fresh one when the flag did)
                        logging.info("[LTX-2 Trainer] %s", e)
                        mm.interrupt_current_processing(False)
                        if isinstance(e.interrupt, mm.InterruptProcessingException):
                            raise e.interrupt.with_traceback(None) from None
                        raise mm.InterruptProcessingException() from None
                    raise RuntimeError(str(e)) from None
                finally:
                    mm.in_training = False
        finally:
            live.finish(node_id)
            release()
        patched = apply_lora_file(model, outcome.lora_path)
        img = image_batch(outcome.loss_image)
        name = f"ltx2/{lora_path.name}"
        notes = "\n".join(outcome.notes + ([base["memory_plan"]] if base.get("memory_plan") else []))
        text = (f"saved {name} after {outcome.result.steps_done} steps; final loss "
                f"{outcome.result.history[-1]['loss']:.4f}" if outcome.result.history else f"saved {name}")
        from ._common import preview_ui

        from .validation import comparison_sheet

        sheet = image_batch(comparison_sheet(spec))
        return io.NodeOutput(patched, name, outcome.result.history, img, sheet,
                             ui=preview_ui(img, text + ("\n" + notes if notes else ""), cls))


def _is_comfy_interrupt(e: BaseException) -> bool:
    """ComfyUI's cancel: its InterruptProcessingException, raised by the progress hook or by a
    layer call (comfy.ops), possibly wrapped by autograd on the way out of backward."""
    import comfy.model_management as mm

    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, mm.InterruptProcessingException) or type(e).__name__ == "InterruptProcessingException":
            return True
        e = e.__cause__ or e.__context__
        seen += 1
    return False


def _sample_conditioning_type():
    from .sample_nodes import CONDITIONING_TYPE

    return CONDITIONING_TYPE


def _validation_spec(every, prompts, clip, positive, negative, vae, audio_vae, image, width, height, frames, steps,
                     cfg, seed, conditioning=None):
    """The validation settings, prompts encoded now (before training takes the memory), or
    None when validation is off. Missing pieces are reported before any training starts."""
    if not every:
        return None
    from .validation import ValidationSpec, encode_prompts

    if vae is None or audio_vae is None:
        raise ValueError("validation needs validation_vae and validation_audio_vae (the LTX-2 video and audio VAEs)")
    if (frames - 1) % 8:
        raise ValueError(f"validation_frames must be 8·n + 1, not {frames}")
    lines = [p.strip() for p in (prompts or "").splitlines() if p.strip()]
    default_negative = "blurry, low quality, still frame, frames, watermark, overlay, titles"
    if lines:
        if clip is None:
            raise ValueError("validation prompts need validation_clip (the LTX-2 text encoder)")
        positives, neg = encode_prompts(clip, lines, default_negative)
        negative = negative if negative is not None else neg
    elif positive is not None:
        positives = [positive]
        if negative is None:
            if clip is None:
                raise ValueError("validation_positive needs validation_negative (or validation_clip)")
            negative = encode_prompts(clip, [], default_negative)[1]
    else:
        raise ValueError("validation is on (validation_every > 0) but there is no prompt: write validation_prompts "
                         "(with validation_clip) or connect validation_positive")
    return ValidationSpec(positives=positives, negative=negative, vae=vae, audio_vae=audio_vae, every=int(every),
                          width=width, height=height, frames=frames, steps=steps, cfg=cfg, seed=seed,
                          first_frame=image, conditioning=conditioning)


def _validator(spec, patcher, root, predict, run_dir, progress, node_id, budget_gib, device):
    """The engine's on_validate: a validation round, the optimizer state in host memory meanwhile."""
    from pathlib import Path

    from ..trainer_core.engine import optimizer_offloaded
    from . import live
    from .validation import run_validation

    def preview(frame):
        try:
            from PIL import Image

            progress.bar.update_absolute(progress.bar.current, None, ("JPEG", Image.fromarray(frame), 512))
        except Exception:  # previews are best-effort
            pass

    def step_hook(step: int, optimizer) -> None:
        import torch

        import comfy.model_management as mm

        from ..trainer_core.ltx2 import ensure_trainable_weights
        from .comfy_model import sampling_within_budget

        send_text(f"step {step}: sampling {len(spec.positives)} validation prompt(s)…", node_id)
        streamer = getattr(predict, "streamer", None)
        with optimizer_offloaded(optimizer):
            if streamer is not None:
                # the streaming plan's budget holds while ComfyUI samples
                with sampling_within_budget(root, streamer, budget_gib, device):
                    paths = run_validation(spec, patcher, step, Path(run_dir), progress=preview)
            else:
                from ..trainer_core.ltx2 import quantized_weights_for_inference

                quantized_weights_for_inference(root)
                paths = run_validation(spec, patcher, step, Path(run_dir), progress=preview)
                # decoding may have made ComfyUI move the model: bring it back as training needs it
                with torch.inference_mode(False):
                    mm.load_models_gpu([patcher], memory_required=0, force_full_load=True)
                    ensure_trainable_weights(root)
        live.marker(node_id, step, "validation")
        send_text(f"step {step}: validation saved ({', '.join(Path(p).name for p in paths)})", node_id)

    return step_hook


TRAIN_NODES = [TrainLoRA]
