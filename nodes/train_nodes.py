"""Train LTX-2 LoRA: runs trainer_core's engine inside ComfyUI on the MODEL the user loaded.

Three nodes: the Train node holds what a user decides per run (recipe, name, steps, rank,
learning rate, mode, resume, seed), with real values (the web extension fills them when a
recipe is picked). Everything else plugs into it through two typed option nodes, as core
ComfyUI and trainer packs chain typed values: LTX-2 Training Options (optimizer, schedule,
checkpoints, precision, memory, LoRA shape, loss weights, init LoRA) and LTX-2 Validation
(samples during training). Not connected, the Training Options node's defaults apply and
the recipe decides targets and audio weight.
"""
from __future__ import annotations

import logging

from comfy_api.latest import io

from ._common import CAT_TRAIN, LatentsT, LossT, image_batch, make_progress, send_text

# typed values between the option nodes and the Train node (ids are permanent: workflows store them)
TrainOptionsT = io.Custom("LTX2_TRAIN_OPTIONS")
ValidationT = io.Custom("LTX2_VALIDATION")

CUSTOM_RECIPE = "Custom"
DEFAULT_MODE = "text_to_audio_video"


def _recipe_names():
    from ..trainer_core.engine import RECIPES

    return [*RECIPES, CUSTOM_RECIPE]


def recipe_fields() -> dict:
    """What picking a recipe puts in the Train node's fields (and a connected Training
    Options node's targets / audio weight): shipped to the web extension in object_info."""
    from ..trainer_core.engine import RECIPES

    keep = ("steps", "rank", "learning_rate", "mode", "targets", "audio_weight")
    return {name: {k: r[k] for k in keep if k in r} for name, r in RECIPES.items()}


NO_INIT_LORA = "none"
MAX_BATCH = 16


def _lora_options():
    import folder_paths

    try:
        return [NO_INIT_LORA, *folder_paths.get_filename_list("loras")]
    except Exception:
        return [NO_INIT_LORA]


# Training Options: widget name -> (TrainConfig field, default). targets and audio_weight have no
# default here: without an options node the recipe decides them.
OPTION_FIELDS = {
    "optimizer": ("optimizer", "adamw"),
    "scheduler": ("scheduler", "constant"),
    "warmup_steps": ("warmup_steps", 0),
    "grad_accum": ("grad_accum", 1),
    "max_grad_norm": ("max_grad_norm", 1.0),
    "checkpoint_every": ("checkpoint_every", 250),
    "keep_checkpoints": ("keep_checkpoints", 3),
    "precision": ("mixed_precision", "bf16"),
    "gradient_checkpointing": ("grad_checkpointing", True),
    "vram_budget_gb": ("vram_budget_gb", 0.0),
    "stream_weights_as": ("stream_transfer", "bf16"),
    "alpha_ratio": (None, 1.0),          # alpha = alpha_ratio x rank
    "dropout": ("dropout", 0.0),
    "targets": ("targets", None),
    "target_patterns": ("target_patterns", ""),
    "audio_weight": ("audio_weight", None),
    "first_frame_prob": ("first_frame_prob", 0.5),
    "caption_dropout": ("caption_dropout", 0.05),
    "init_lora": (None, NO_INIT_LORA),
    "devices": (None, "this GPU"),      # read by the Train node, not a TrainConfig field
    "batch_size": (None, 1),            # read by the Train node: clips per GPU per step
    "conditions": ("conditions", ""),
    "extension_frames": ("extension_frames", 0),
    "audio_reference_positions": ("audio_reference_positions", "official"),
}
# LTX-2 Validation: widget / socket names (the old single Train node called them validation_<name>)
VALIDATION_NAMES = ("every", "prompts", "clip", "positive", "negative", "vae", "audio_vae", "image", "width",
                    "height", "frames", "steps", "cfg", "seed", "conditioning")
VALIDATION_DEFAULTS = dict(every=250, prompts="", clip=None, positive=None, negative=None, vae=None,
                           audio_vae=None, image=None, width=512, height=320, frames=49, steps=20, cfg=4.0,
                           seed=42, conditioning=None)


def build_config(recipe: str, run: dict, options: dict | None):
    """TrainConfig from a recipe, the Train node's values (``run``: steps, learning_rate,
    rank, mode, seed, ...) and a Training Options node's values (None: its defaults; targets
    and audio weight then from the recipe). TrainConfig checks every setting
    (trainer_core.engine.validate_config) — the same check the CLI makes — and raises
    SettingsError listing what is wrong."""
    from ..trainer_core.engine import RECIPES, TrainConfig

    base = dict(RECIPES.get(recipe, {}))
    base.update({k: v for k, v in run.items() if v is not None})
    opts = {k: d for k, (_, d) in OPTION_FIELDS.items() if d is not None}
    opts.update({k: v for k, v in (options or {}).items() if v is not None})
    for name, (field, _) in OPTION_FIELDS.items():
        if field is not None and name in opts:
            base[field] = opts[name]
    ratio = opts.get("alpha_ratio", 1.0)
    rank = base.get("rank", 32)
    if isinstance(rank, int) and isinstance(ratio, (int, float)):
        base["alpha"] = round(float(ratio) * rank, 6)  # (an old alpha / rank ratio gives the alpha back exactly)
    return TrainConfig(**base)


def flat_inputs(**flat) -> dict:
    """The Train node's inputs from the names of the old single Train node (``targets``,
    ``precision``, ``validation_every``, ``validation_clip``, ...): what old callers and
    tests pass, split into the Train node's own values, an ``options`` dict and a
    ``validation`` dict (None when validation_every is 0 or absent)."""
    flat = dict(flat)
    opts = {k: flat.pop(k) for k in list(flat) if k in OPTION_FIELDS}
    if "alpha" in flat:
        a = flat.pop("alpha")
        if a:
            opts["alpha_ratio"] = float(a) / float(flat.get("rank") or 32)
    val = {k[len("validation_"):]: flat.pop(k) for k in list(flat) if k.startswith("validation_")}
    if opts:
        flat["options"] = opts
    if val.get("every"):
        flat["validation"] = {**VALIDATION_DEFAULTS, **val}
    return flat


# the old single Train node's API inputs that are not on the Train node any more
_OLD_ONLY = set(OPTION_FIELDS) - {"alpha_ratio"} | {"alpha"} | {f"validation_{k}" for k in VALIDATION_NAMES}


def upgrade_old_prompt(prompt: dict, recipes: dict) -> list[str]:
    """Rewrite, in place, the Train nodes of an API prompt made for the old single Train node
    (``targets``, ``precision``, ``validation_every``, ... on the Train node; 0 / -1 /
    "recipe default" for "the recipe's value"): their settings go to a new LTX-2 Training
    Options node and, when validation was on, a new LTX-2 Validation node (links included).
    ``recipes``: :func:`recipe_fields`. Returns the ids of the Train nodes rewritten."""
    done = []
    ids = [int(k) for k in prompt if str(k).isdigit()]
    next_id = max(ids, default=0) + 1000
    for nid, node in list(prompt.items()):
        if not isinstance(node, dict) or node.get("class_type") != "LTX2TrainLoRA":
            continue
        ins = node.get("inputs") or {}
        if not (_OLD_ONLY & set(ins)) or "options" in ins or "validation" in ins:
            continue
        r = recipes.get(ins.get("recipe"), {})
        fallback = dict(steps=2000, rank=32, learning_rate=1e-4, mode=DEFAULT_MODE, targets="all attention",
                        audio_weight=1.0)

        def recipe_value(k, unset):
            v = ins.get(k)
            return r.get(k, fallback[k]) if v is None or (not isinstance(v, list) and unset(v)) else v

        for k in ("steps", "rank", "learning_rate"):
            ins[k] = recipe_value(k, lambda v: not v)
        ins["mode"] = recipe_value("mode", lambda v: v == "recipe default")
        opts = {k: ins.pop(k) for k in list(ins) if k in OPTION_FIELDS}
        opts["targets"] = recipe_value("targets", lambda v: v == "recipe default") if "targets" not in opts or \
            opts["targets"] == "recipe default" else opts["targets"]
        aw = opts.get("audio_weight")
        opts["audio_weight"] = r.get("audio_weight", fallback["audio_weight"]) if aw is None or (
            not isinstance(aw, list) and aw < 0) else aw
        alpha = ins.pop("alpha", 0)
        opts["alpha_ratio"] = float(alpha) / float(ins["rank"]) if alpha and not isinstance(alpha, list) \
            and not isinstance(ins["rank"], list) else 1.0
        defaults = {k: d for k, (_, d) in OPTION_FIELDS.items() if d is not None}
        oid = str(next_id)
        next_id += 1
        prompt[oid] = {"class_type": "LTX2TrainOptions", "inputs": {**defaults, **opts}}
        ins["options"] = [oid, 0]
        val = {k[len("validation_"):]: ins.pop(k) for k in list(ins) if k.startswith("validation_")}
        if val.get("every"):
            vid = str(next_id)
            next_id += 1
            plain = {k: v for k, v in VALIDATION_DEFAULTS.items() if v is not None}
            prompt[vid] = {"class_type": "LTX2TrainValidation", "inputs": {**plain, **val}}
            ins["validation"] = [vid, 0]
        done.append(str(nid))
    return done


class TrainLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        from ..trainer_core import modes as md

        return io.Schema(
            node_id="LTX2TrainLoRA",
            display_name="Train LTX-2 LoRA",
            search_aliases=["lora training", "train lora", "ltx-2 lora", "finetune"],
            category=CAT_TRAIN,
            description=(
                "Teaches the LTX-2 model you loaded your character, style, motion or sound from the latents "
                "Encode Latents made. Pick a recipe (it fills steps, rank, learning rate and mode), name the LoRA "
                "and queue: the loss chart shows progress, cancel keeps a checkpoint (queue again to continue), "
                "and the LoRA lands in models/loras/ltx2 for Load LoRA. More settings: plug in LTX-2 Training "
                "Options; samples during training: plug in LTX-2 Validation."),
            inputs=[
                io.Model.Input("model", tooltip="The LTX-2 model from Load Checkpoint (dev, not distilled)."),
                LatentsT.Input("latents", tooltip="From Encode Latents."),
                io.Combo.Input("recipe", options=_recipe_names(), default="Character",
                               extra_dict={"ltx2_recipes": recipe_fields()},
                               tooltip="Picking a recipe fills steps, rank, learning rate and mode (and a "
                                       "connected Training Options node's targets and audio weight) with its "
                                       "values; change any of them afterwards. Custom: your own values."),
                io.String.Input("lora_name", default="my_ltx2_lora",
                                tooltip="Name of the LoRA; files are numbered (my_ltx2_lora_00001.safetensors)."),
                io.Int.Input("steps", default=2000, min=1, max=100000,
                             tooltip="Optimizer steps (recipes: Character 2000, Style 1500, Motion 3000, Audio 2000)."),
                io.Int.Input("rank", default=32, min=1, max=256, tooltip="LoRA rank: its capacity (32 typical; "
                                                                        "Motion 64). The file grows with it."),
                io.Float.Input("learning_rate", default=1e-4, min=1e-7, max=1.0, step=1e-6, round=1e-7,
                               tooltip="Step size of the optimizer (1e-4 for every recipe)."),
                io.Combo.Input("mode", options=[*md.PRESETS, *md.LEGACY], default=DEFAULT_MODE,
                               tooltip="What the LoRA learns (Lightricks' 13 training modes; the older names "
                                       "still work):\n" + "\n".join(f"{k}: {d}" for k, d in md.table())),
                io.Combo.Input("resume", options=["none", "latest"], default="latest",
                               tooltip="latest: continue this LoRA name's run from its newest checkpoint, if any."),
                io.Int.Input("seed", default=42, min=0, max=2**31 - 1, control_after_generate=io.ControlAfterGenerate.fixed,
                             tooltip="Same seed, same run."),
                TrainOptionsT.Input("options", optional=True,
                                    tooltip="From LTX-2 Training Options: optimizer, schedule, checkpoints, "
                                            "precision, memory, LoRA targets, loss weights, init LoRA."),
                ValidationT.Input("validation", optional=True,
                                  tooltip="From LTX-2 Validation: sample prompts every N steps with the LoRA "
                                          "as it is then."),
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
    def validate_inputs(cls, lora_name="my_ltx2_lora"):
        """Before the prompt runs: the LoRA name makes a valid file name everywhere. (Numbers
        are range-checked by ComfyUI from the input definitions, and every setting again by
        TrainConfig before anything loads.)"""
        from ..trainer_core.fsutil import UnsafePathError, check_name

        if isinstance(lora_name, str):  # a linked input arrives later; execute checks it then
            try:
                check_name(lora_name, "lora_name")
            except UnsafePathError as e:
                return str(e)
        return True

    @classmethod
    def execute(cls, model, latents, recipe, lora_name, steps=2000, rank=32, learning_rate=1e-4, mode=DEFAULT_MODE,
                resume="latest", seed=42, options=None, validation=None) -> io.NodeOutput:
        import torch

        import comfy.model_management as mm
        import folder_paths

        from ..trainer_core import engine as en
        from ..trainer_core.fsutil import check_name, next_numbered, safe_join
        from ..trainer_core.run import run_training
        from . import live
        from .comfy_model import apply_lora_file, model_variant, prepare_training_model
        from .multi_gpu import parse_devices, train_on_devices

        lora_name = check_name(lora_name, "lora_name")
        options = dict(options or {})
        devices = options.pop("devices", None) or "this GPU"
        batch = int(options.pop("batch_size", None) or 1)
        if not 1 <= batch <= MAX_BATCH:
            raise ValueError(f"batch_size must be between 1 and {MAX_BATCH}, not {batch}")
        multi = parse_devices(devices)  # None: in this process, on ComfyUI's GPU
        init_lora = options.get("init_lora") or NO_INIT_LORA
        init_path = ""
        if init_lora != NO_INIT_LORA:
            init_path = folder_paths.get_full_path_or_raise("loras", init_lora)
        cfg = build_config(recipe, dict(
            steps=steps, learning_rate=learning_rate, rank=rank, mode=mode, seed=seed, init_lora=init_path,
            trigger_word=latents.get("trigger_word", "") if isinstance(latents, dict) else ""), options)
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

        spec = _validation_spec(**{**VALIDATION_DEFAULTS, **validation}) if validation else None
        callbacks = en.Callbacks(on_step=on_step, should_stop=mm.processing_interrupted, on_event=on_event,
                                 is_interrupt=_is_comfy_interrupt)
        if multi is None:
            root, predict, device, base, release, patcher = prepare_training_model(model, cfg, cache_dir=cache_dir,
                                                                                   batch_size=batch)
        else:  # the workers load their own copies: ComfyUI's GPU is freed for the run
            if spec is not None:
                raise ValueError(f"validation samples need devices = this GPU (bypass the Validation node to "
                                 f"train on {devices})")
            base, release = model_variant(model), (lambda: None)
            mm.unload_all_models()
            mm.soft_empty_cache()
            send_text(f"training on {len(multi[1])} {'CPU processes' if multi[0] == 'cpu' else 'GPUs'} "
                      f"({', '.join(multi[1])})", node_id)
        if base.get("memory_plan"):
            send_text(base["memory_plan"], node_id)
        if spec is not None:
            callbacks.on_validate = _validator(spec, patcher, root, predict, run_dir, progress, node_id,
                                                  base.get("budget_gib") or cfg.vram_budget_gb or 0.0, device)
            callbacks.validate_every = spec.every
        try:
            with torch.inference_mode(False):
                mm.in_training = True
                try:
                    if multi is None:
                        outcome = run_training(root, predict, cache_dir, cfg, run_dir, lora_path, device=device,
                                               callbacks=callbacks, resume=resume, base=base, batch_size=batch)
                    else:
                        outcome = train_on_devices(multi, base.get("checkpoint", ""), cfg, cache_dir, run_dir,
                                                   lora_path, resume, callbacks, base,
                                                   should_stop=mm.processing_interrupted, batch_per_device=batch)
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
        text += f"\nto use it: LoraLoaderModelOnly (Load LoRA) → {name}, or this node's model output"
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
        raise ValueError("LTX-2 Validation needs vae and audio_vae connected (the LTX-2 video and audio VAEs)")
    if (frames - 1) % 8:
        raise ValueError(f"LTX-2 Validation: frames must be 8·n + 1 (9, 17, ..., 49), not {frames}")
    lines = [p.strip() for p in (prompts or "").splitlines() if p.strip()]
    default_negative = "blurry, low quality, still frame, frames, watermark, overlay, titles"
    if lines:
        if clip is None:
            raise ValueError("LTX-2 Validation: prompts need clip connected (the LTX-2 text encoder)")
        positives, neg = encode_prompts(clip, lines, default_negative)
        negative = negative if negative is not None else neg
    elif positive is not None:
        positives = [positive]
        if negative is None:
            if clip is None:
                raise ValueError("LTX-2 Validation: positive needs negative (or clip) connected")
            negative = encode_prompts(clip, [], default_negative)[1]
    else:
        raise ValueError("LTX-2 Validation has no prompt: write prompts (with clip connected) or connect "
                         "positive")
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


class TrainingOptions(io.ComfyNode):
    """Everything about a run that is not decided per run, as one typed value for the Train
    node's ``options`` input."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        from ..trainer_core.lora import TARGET_PRESETS

        return io.Schema(
            node_id="LTX2TrainOptions",
            display_name="LTX-2 Training Options",
            search_aliases=["lora training options", "optimizer", "vram budget", "checkpoint every"],
            category=CAT_TRAIN,
            description=(
                "More settings for Train LTX-2 LoRA: optimizer and schedule, checkpoints, precision and memory, "
                "which layers get the LoRA, loss weights, a LoRA to start from. Connect it to the Train node's "
                "options input; without it the defaults shown here apply and the recipe picks targets and audio "
                "weight. Picking a recipe on a connected Train node fills targets and audio weight here."),
            inputs=[
                io.Combo.Input("optimizer", options=["adamw", "adamw8bit"], default="adamw",
                               tooltip="adamw8bit (bitsandbytes) stores optimizer state in 8 bits."),
                io.Combo.Input("scheduler", options=["constant", "linear", "cosine"], default="constant",
                               tooltip="Learning-rate schedule after warmup."),
                io.Int.Input("warmup_steps", default=0, min=0, max=10000, tooltip="Linear warmup, in steps."),
                io.Int.Input("grad_accum", default=1, min=1, max=64,
                             tooltip="Gradient accumulation (micro-batches per step)."),
                io.Float.Input("max_grad_norm", default=1.0, min=0.0, max=100.0, tooltip="Gradient clipping (0 = off)."),
                io.Int.Input("checkpoint_every", default=250, min=0, max=100000,
                             tooltip="Save a resumable checkpoint every N steps (0 = only on cancel and at the "
                                     "end). Cancel always saves the last finished step."),
                io.Int.Input("keep_checkpoints", default=3, min=1, max=100, tooltip="Keep the newest N checkpoints."),
                io.Combo.Input("precision", options=["bf16", "fp32"], default="bf16",
                               tooltip="bf16 autocast with fp32 LoRA weights (bf16), or full fp32."),
                io.Boolean.Input("gradient_checkpointing", default=True,
                                 tooltip="On: a memory plan recomputes blocks in backward only where the VRAM "
                                         "budget needs it (and streams weights when they don't fit). Off: keep "
                                         "every block's activations and every weight on the card, whatever the "
                                         "budget (most memory; where the budget allows it anyway the plan is the "
                                         "same as with it on)."),
                io.Float.Input("vram_budget_gb", default=0.0, min=0.0, max=1024.0, step=0.5,
                               tooltip="GPU memory training may use, in GB. 0 = automatic: what ComfyUI reports "
                                       "free once the other models are unloaded. When the 19B/22B weights don't "
                                       "fit, blocks stream from host memory (RAM ≥ 64 GB recommended)."),
                io.Combo.Input("stream_weights_as", options=["bf16", "fp8"], default="bf16",
                               tooltip="How streamed blocks' frozen weights travel from host memory (only when the "
                                       "budget makes blocks stream). bf16: exact. fp8 (experimental): half the "
                                       "bytes per copy, not yet reliably faster; those blocks' frozen weights are "
                                       "rounded to fp8 while training."),
                io.Float.Input("alpha_ratio", default=1.0, min=0.01, max=16.0, step=0.05,
                               tooltip="LoRA alpha as a multiple of rank: 1 = alpha equals rank (the recipes, "
                                       "and what Lightricks' loader assumes)."),
                io.Float.Input("dropout", default=0.0, min=0.0, max=0.9, step=0.05, tooltip="LoRA dropout."),
                io.Combo.Input("targets", options=list(TARGET_PRESETS), default="all attention",
                               tooltip="Which linear layers get LoRA adapters (recipes: Character all attention, "
                                       "Style video attention, Motion all attention + feed-forward, Audio audio "
                                       "attention)."),
                io.String.Input("target_patterns", default="",
                                tooltip="Extra targets: regexes or globs over module names, comma separated "
                                        "(e.g. *.attn1.to_q)."),
                io.Float.Input("audio_weight", default=0.5, min=0.0, max=10.0, step=0.05,
                               tooltip="Weight of the audio loss (recipes: 0.5; Audio 1.0). The audio term "
                                       "otherwise dominates."),
                io.Float.Input("first_frame_prob", default=0.5, min=0.0, max=1.0, step=0.05,
                               tooltip="image→video: probability that a sample conditions on its first frame."),
                io.Float.Input("caption_dropout", default=0.05, min=0.0, max=1.0, step=0.01,
                               tooltip="Probability of training on the empty caption (helps CFG)."),
                io.Combo.Input("init_lora", options=_lora_options(), default=NO_INIT_LORA,
                               tooltip="Start from this LoRA (loras folder): this pack's, the official "
                                       "ltx-trainer's or any ComfyUI-format LTX-2 LoRA — e.g. carry a 2.3 LoRA to "
                                       "2.5 with a short run. Its modules, rank and alpha replace rank, alpha and "
                                       "targets; modules the model lacks are skipped and named."),
                io.String.Input("conditions", default="",
                                tooltip="Compose the mode's conditions (replaces the preset's), joined by '+': "
                                        "first_frame, prefix:N, suffix:N, mask, spatial_crop[y1,x1,y2,x2], "
                                        "reference; '@p' a probability, 'audio.' for the audio stream. E.g. "
                                        "'reference + first_frame@0.2', 'prefix:4@0.5 + suffix:4@0.5'. "
                                        "Empty: the mode's own."),
                io.Int.Input("extension_frames", default=0, min=0, max=64,
                             tooltip="Extension modes: the kept boundary in latent frames (8 pixel frames each; "
                                     "audio: latent steps, 25 per second). 0 = the preset's 8."),
                io.Combo.Input("audio_reference_positions", options=["official", "comfyui"], default="official",
                               tooltip="Audio IC-LoRA (a2a, av2av): where the reference sound sits in time. "
                                       "official: on the target's timeline, as Lightricks' trainer; comfyui: just "
                                       "before it, as ComfyUI's LTXV Reference Audio node samples — pick comfyui "
                                       "to sample the LoRA with that node."),
                io.String.Input("devices", default="this GPU",
                                tooltip="Where to train: this GPU (the one ComfyUI uses), all GPUs, or GPU "
                                        "numbers such as 0,1. With several GPUs each one trains on its own clips "
                                        "at the same time, so every step learns from batch_size clips per GPU (2 "
                                        "GPUs: twice the clips per step). ComfyUI's GPU is freed while they train. "
                                        "cpu:2 trains on 2 CPU processes (for tests). Needs the model from Load "
                                        "Checkpoint."),
                io.Int.Input("batch_size", default=1, min=1, max=MAX_BATCH, optional=True,  # older prompts lack it
                             tooltip="Clips of one bucket trained together in each step, per GPU. Small buckets "
                                     "train faster per clip in a batch (H200, 19B, 512×512×33: 0.24 s per clip "
                                     "alone, 0.18 s in batches of 4); a step then learns from that many clips. "
                                     "The memory plan makes room for the whole batch of the largest bucket."),
            ],
            outputs=[TrainOptionsT.Output(display_name="options", tooltip="To the Train node's options input.")],
        )

    @classmethod
    def validate_inputs(cls, init_lora=NO_INIT_LORA):
        if isinstance(init_lora, str) and init_lora and init_lora != NO_INIT_LORA:
            import folder_paths

            if folder_paths.get_full_path("loras", init_lora) is None:
                return (f"init_lora {init_lora!r} is not in the loras folder; choose one of the list (or none) "
                        "and press R to refresh it")
        return True

    @classmethod
    def execute(cls, **values) -> io.NodeOutput:
        return io.NodeOutput(dict(values))


class Validation(io.ComfyNode):
    """Validation samples during training, as one typed value for the Train node's
    ``validation`` input (bypass the node to train without them)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LTX2TrainValidation",
            display_name="LTX-2 Validation",
            search_aliases=["validation samples", "preview during training", "lora validation"],
            category=CAT_TRAIN,
            description=(
                "Samples during training: every N steps the Train node makes a short video of each prompt with the "
                "LoRA as it is then (saved in the run folder, frames in its validation sheet), so you can pick the "
                "best checkpoint. Connect it to the Train node's validation input; bypass it to train without."),
            inputs=[
                io.Int.Input("every", default=250, min=1, max=100000, tooltip="Sample every N steps."),
                io.String.Input("prompts", multiline=True, default="",
                                tooltip="One prompt per line (start with the trigger word). Needs clip."),
                io.Vae.Input("vae", tooltip="The LTX-2 video VAE, to decode samples."),
                io.Vae.Input("audio_vae", tooltip="The LTX-2 audio VAE."),
                io.Clip.Input("clip", optional=True,
                              tooltip="The LTX-2 text encoder: encodes the prompts once, before training."),
                io.Conditioning.Input("positive", optional=True,
                                      tooltip="Instead of prompts + clip: one prompt's conditioning."),
                io.Conditioning.Input("negative", optional=True,
                                      tooltip="Negative conditioning (default: the stock negative prompt through clip)."),
                io.Image.Input("image", optional=True, tooltip="First frame (image → video samples)."),
                _sample_conditioning_type().Input(
                    "conditioning", optional=True,
                    tooltip="What validation samples start from in your training mode (IC-LoRA reference, "
                            "prefix, mask, audio…): a Sample Conditioning node."),
                io.Int.Input("width", default=512, min=64, max=2048, step=32, tooltip="Width (multiple of 32)."),
                io.Int.Input("height", default=320, min=64, max=2048, step=32, tooltip="Height (multiple of 32)."),
                io.Int.Input("frames", default=49, min=9, max=513, step=8, tooltip="Frames (8·n + 1; 49 ≈ 2 s)."),
                io.Int.Input("steps", default=20, min=1, max=100, tooltip="Sampling steps per sample."),
                io.Float.Input("cfg", default=4.0, min=0.0, max=30.0, step=0.1,
                               tooltip="Guidance (4 = the stock workflow)."),
                io.Int.Input("seed", default=42, min=0, max=0xFFFFFFFF, control_after_generate=io.ControlAfterGenerate.fixed,
                             tooltip="The same seeds at every validation step, so samples compare."),
            ],
            outputs=[ValidationT.Output(display_name="validation", tooltip="To the Train node's validation input.")],
        )

    @classmethod
    def execute(cls, **values) -> io.NodeOutput:
        frames = values.get("frames", 49)
        if (frames - 1) % 8:
            raise ValueError(f"LTX-2 Validation: frames must be 8·n + 1 (9, 17, ..., 49), not {frames}")
        return io.NodeOutput({**VALIDATION_DEFAULTS, **values})


TRAIN_NODES = [TrainLoRA, TrainingOptions, Validation]
