"""Train LTX-2 LoRA: runs trainer_core's engine inside ComfyUI on the MODEL the user loaded."""
from __future__ import annotations

import time

from comfy_api.latest import io

from ._common import CAT_TRAIN, LatentsT, LossT, image_batch, make_progress, send_text

RECIPE_DEFAULT = "recipe default"


def _recipe_names():
    from ..trainer_core.engine import RECIPES

    return [*RECIPES, "Custom"]


def build_config(recipe: str, overrides: dict):
    """TrainConfig from a recipe plus the node's overrides (0 / "recipe default" / -1 keep the recipe)."""
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
        from ..trainer_core.objective import MODES

        return io.Schema(
            node_id="LTX2TrainLoRA",
            display_name="Train LTX-2 LoRA (LTX-2 Trainer)",
            category=CAT_TRAIN,
            description=(
                "Trains a LoRA for LTX-2 (audio-video) on the encoded cache, in this ComfyUI process, on the "
                "model you loaded. Uses an out-of-place, checkpoint-safe forward over ComfyUI's own LTX-2 "
                "modules so gradients are exact. Saves checkpoints (resumable), stops cleanly on cancel, and "
                "writes the LoRA to models/loras/ltx2 plus its settings as YAML for headless re-runs. Returns "
                "the model with the LoRA applied for immediate sampling."),
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
                io.Combo.Input("mode", options=[RECIPE_DEFAULT, *MODES], default=RECIPE_DEFAULT,
                               tooltip="What the LoRA learns: text→audio+video, video only, audio only, image→video "
                                       "(first-frame conditioning), video→audio, audio→video."),
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
                             tooltip="Save a resumable checkpoint every N steps (0 = only on cancel)."),
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
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="The input model with the trained LoRA applied."),
                io.String.Output(display_name="lora_name",
                                 tooltip="The LoRA file name in the loras folder (for Load LoRA nodes)."),
                LossT.Output(display_name="loss_history", tooltip="Per-step loss, learning rate and timing."),
                io.Image.Output(display_name="loss_curve", tooltip="Loss, smoothed loss and learning rate."),
            ],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,
            not_idempotent=True,
        )

    @classmethod
    def execute(cls, model, latents, recipe, lora_name, steps=0, learning_rate=0.0, rank=0, mode=RECIPE_DEFAULT,
                targets=RECIPE_DEFAULT, seed=42, resume="latest", alpha=0.0, dropout=0.0, target_patterns="",
                audio_weight=-1.0, first_frame_prob=0.5, caption_dropout=0.05, optimizer="adamw",
                scheduler="constant", warmup_steps=0, grad_accum=1, max_grad_norm=1.0, checkpoint_every=250,
                keep_checkpoints=3, precision="bf16", gradient_checkpointing=True,
                vram_budget_gb=0.0) -> io.NodeOutput:
        import torch

        import comfy.model_management as mm
        import folder_paths

        from ..trainer_core import engine as en
        from ..trainer_core.fsutil import next_numbered, safe_join
        from ..trainer_core.lora import load_lora
        from ..trainer_core.run import run_training
        from . import live
        from .comfy_model import apply_lora_file, prepare_training_model

        cfg = build_config(recipe, dict(
            steps=steps, learning_rate=learning_rate, rank=rank, alpha=alpha or (rank if rank else 0), mode=mode,
            targets=targets, seed=seed, dropout=dropout, target_patterns=target_patterns or "",
            audio_weight=audio_weight, first_frame_prob=first_frame_prob, caption_dropout=caption_dropout,
            optimizer=optimizer, scheduler=scheduler, warmup_steps=warmup_steps, grad_accum=grad_accum,
            max_grad_norm=max_grad_norm, checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints,
            mixed_precision=precision, grad_checkpointing=gradient_checkpointing, vram_budget_gb=vram_budget_gb,
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

        callbacks = en.Callbacks(on_step=on_step, should_stop=mm.processing_interrupted, on_event=on_event)
        root, predict, device, base, release = prepare_training_model(model, cfg, cache_dir=cache_dir)
        if base.get("memory_plan"):
            send_text(base["memory_plan"], node_id)
        try:
            with torch.inference_mode(False):
                mm.in_training = True
                try:
                    outcome = run_training(root, predict, cache_dir, cfg, run_dir, lora_path, device=device,
                                           callbacks=callbacks, resume=resume, base=base)
                except en.TrainingStopped as e:
                    send_text(str(e), node_id)
                    if e.reason == "cancelled":
                        mm.throw_exception_if_processing_interrupted()
                    raise RuntimeError(str(e)) from e
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

        return io.NodeOutput(patched, name, outcome.result.history, img,
                             ui=preview_ui(img, text + ("\n" + notes if notes else ""), cls))


TRAIN_NODES = [TrainLoRA]
