"""One training run, start to finish: the part shared by the Train node and the headless CLI.

A run folder holds ``settings.yaml`` (everything needed to repeat the run headless from the
cache), ``checkpoints/``, ``history.json`` and ``loss.png``. The final LoRA goes where the
caller says (the node: ComfyUI's ``loras`` folder, numbered) with the same settings as YAML
beside it.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

from .cache import CachedLatents
from .engine import Callbacks, TrainConfig, Trainer, TrainResult, load_resume_checkpoint
from .fsutil import atomic_write_text, clean_temp_files
from .lora import save_lora


def settings_document(cfg: TrainConfig, cache_dir: str, base: dict, lora_path: Optional[str], run_dir: str,
                      batch_size: int = 1) -> dict:
    doc = {"ltx2_lora_trainer": 1, "train": cfg.to_dict(), "cache": str(cache_dir), "base_model": base,
           "lora": str(lora_path) if lora_path else None, "run_dir": str(run_dir)}
    if batch_size != 1:  # the global batch (over every process); the CLI takes it as its default
        doc["batch_size"] = int(batch_size)
    return doc


def write_yaml(path: Path, doc: dict) -> None:
    import yaml

    atomic_write_text(path, yaml.safe_dump(doc, sort_keys=False))


def read_settings(path: str | Path) -> dict:
    import yaml

    doc = yaml.safe_load(Path(path).read_text())
    if not isinstance(doc, dict) or "train" not in doc or "cache" not in doc:
        raise ValueError(f"{path} is not a run settings file of this pack (needs 'train' and 'cache')")
    return doc


@dataclass
class RunOutcome:
    result: TrainResult
    lora_path: Optional[str]
    settings_path: str
    loss_image: "object"
    notes: list[str] = field(default_factory=list)


def clean_leftovers(run_dir: Path, lora_path: Optional[str | Path] = None) -> list[Path]:
    """Delete what an interrupted earlier run left half-written: temp files of checkpoints,
    settings, history and plots in the run folder, and of this LoRA name's outputs."""
    run_dir = Path(run_dir)
    gone = clean_temp_files(run_dir) + clean_temp_files(run_dir / "checkpoints")
    if lora_path:
        lp = Path(lora_path)
        stem = lp.stem
        base = stem.rsplit("_", 1)[0] if stem.rsplit("_", 1)[-1].isdigit() else stem
        gone += clean_temp_files(lp.parent, prefix=base)
    return gone


def run_training(root: torch.nn.Module, predict: Callable, cache_dir: str, cfg: TrainConfig, run_dir: str | Path,
                 lora_path: Optional[str | Path], *, device="cpu", callbacks: Optional[Callbacks] = None,
                 resume: Optional[str] = None, base: Optional[dict] = None, batch_size: int = 1,
                 dist=None, step_graph: Optional[bool] = None) -> RunOutcome:
    """``dist``: this process's place in a multi-process run (trainer_core.distributed); only
    its rank 0 writes the run folder and the LoRA and reports (every rank gets ``should_stop``). ``batch_size`` is
    the global batch (over all ranks). ``step_graph``: step as one CUDA graph where the run allows it
    (trainer_core.step_graph); None: as ``LTX2_TRAINER_STEP_GRAPH`` says (:func:`step_graph_wanted`)."""
    from .distributed import LOCAL
    from .plots import loss_curve

    dist = dist if dist is not None else LOCAL
    main = dist.is_main
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    base = base or {}
    early_notes = []
    gone = clean_leftovers(run_dir, lora_path) if main else []
    if gone:
        early_notes.append(f"removed {len(gone)} temporary files an interrupted earlier run left "
                           f"({', '.join(g.name for g in gone[:3])}{' …' if len(gone) > 3 else ''})")
    doc = settings_document(cfg, cache_dir, base, lora_path, run_dir, batch_size)
    if main:
        write_yaml(run_dir / "settings.yaml", doc)
    dist.barrier()  # the folder is clean before any rank reads a checkpoint from it
    from .engine import training_mode

    mode = training_mode(cfg)
    data = CachedLatents(cache_dir, require_audio=mode.needs_audio)
    ck = load_resume_checkpoint(run_dir, resume)
    trainer = Trainer(root, predict, data, cfg, run_dir, device=device, callbacks=callbacks,
                      batch_size=batch_size, dist=dist)
    trainer.step_graph = step_graph_wanted() if step_graph is None else bool(step_graph)
    if callbacks is not None and callbacks.on_event:
        for n in early_notes:
            callbacks.on_event("notice", {"message": n})
    t0 = time.time()
    result = trainer.train(resume_from=ck)
    del ck
    result.notes[:0] = early_notes
    elapsed = time.time() - t0
    if not main:
        return RunOutcome(result, None, str(run_dir / "settings.yaml"), None, list(result.notes))
    atomic_write_text(run_dir / "history.json", json.dumps(result.history))
    img = loss_curve(result.history, title=f"{Path(lora_path).stem if lora_path else run_dir.name}")
    try:
        from PIL import Image

        from .fsutil import atomic_path

        with atomic_path(run_dir / "loss.png") as tmp:
            Image.fromarray(img).save(tmp, format="PNG")
    except Exception:
        pass
    out_path = None
    if lora_path:
        meta = {"base_model": base.get("variant", "unknown"), "base_checkpoint": base.get("checkpoint", ""),
                "rank": result.lora.rank, "alpha": result.lora.alpha,
                "targets": cfg.targets if not cfg.init_lora else f"from {Path(cfg.init_lora).name}",
                "target_patterns": cfg.target_patterns,
                "init_lora": Path(cfg.init_lora).name if cfg.init_lora else "",
                "steps": result.steps_done, "trigger_word": cfg.trigger_word, "mode": cfg.mode,
                "settings": cfg.to_dict(), "train_seconds": round(elapsed, 1),
                "final_loss": result.history[-1]["loss"] if result.history else None}
        if training_mode(cfg).needs("video", "reference"):
            # what ComfyUI's Get IC-LoRA Parameters reads to size the guide (1: full-size references)
            from .cache import LatentCache

            scales = [int(s.get("reference_scale") or 1) for s in LatentCache(cache_dir).manifest.samples]
            meta["reference_downscale_factor"] = max(scales or [1])
        save_lora(lora_path, result.lora, meta)
        write_yaml(Path(lora_path).with_suffix(".yaml"), doc)
        out_path = str(lora_path)
    return RunOutcome(result, out_path, str(run_dir / "settings.yaml"), img, list(result.notes))


def bucket_tokens(bucket: str, fps: float = 24.0) -> tuple[int, int]:
    """(video tokens, audio tokens) of one sample of a ``WxHxF`` bucket."""
    w, h, f = (int(v) for v in bucket.lower().split("x"))
    return (w // 32) * (h // 32) * (1 + (f - 1) // 8), int(round(f / max(fps, 1e-6) * 25))


def plan_for_training(root: torch.nn.Module, cache_dir: str, cfg: TrainConfig, budget_gib: Optional[float],
                      batch_size: int = 1, compiled: bool = False, speed=None):
    """The memory plan for training ``root`` on the cache's largest bucket within
    ``budget_gib`` (None: no limit). LoRA weights, gradients and optimizer state are counted
    (fp32 weights + grads, two moments: fp32 for AdamW, 8-bit for AdamW 8-bit). With a
    ``speed`` (:func:`~trainer_core.ltx2.memory.calibrate_speed`), the plan also carries its
    predicted step time (shown by its summary)."""
    from .cache import LatentCache
    from .engine import training_mode
    from .lora import resolve_targets

    mode = training_mode(cfg)
    ref_v = mode.needs("video", "reference")
    ref_a = mode.needs("audio", "reference")
    samples = LatentCache(cache_dir).manifest.samples
    if not samples:
        raise ValueError(f"the latent cache at {cache_dir} has no samples; run Encode Latents first")
    worst, worst_bucket = (0, 0), ""
    for s in samples:
        v, a = bucket_tokens(s["bucket"], float(s.get("fps") or 24.0))
        v = v if mode.needs_video else 0
        a = a if mode.needs_audio else 0
        sc = max(1, int(s.get("reference_scale") or 1))
        v += v // (sc * sc) if ref_v else 0  # IC-LoRA: the reference tokens ride along
        a += a if ref_a else 0
        if v + a > sum(worst):
            worst, worst_bucket = (v, a), s["bucket"]
    spec = cfg.lora_spec()
    mods = dict(root.named_modules())
    names = resolve_targets(root, spec.preset, spec.patterns)
    n_lora = sum(cfg.rank * (mods[n].in_features + mods[n].out_features) for n in names)
    plan = plan_for_tokens(root, worst[0] * batch_size, worst[1] * batch_size, budget_gib, lora_params=n_lora,
                           optimizer=cfg.optimizer, compiled=compiled,
                           transfer=getattr(cfg, "stream_transfer", "bf16") or "bf16",
                           offload=bool(getattr(cfg, "offload_activations", True)),
                           offload_streamed=bool(getattr(cfg, "offload_streamed_activations", False)), speed=speed)
    if batch_size > 1:
        plan.notes.append(f"planned for batches of {batch_size} clips of the largest bucket ({worst_bucket})")
    return plan


def compiles_blocks(cfg: TrainConfig, device_type: str, quantized: bool = False) -> bool:
    """Whether a run compiles its blocks: ``LTX2_TRAINER_COMPILE`` over the settings'
    ``compile_blocks`` — on, off, or auto (on CUDA, unless the weights are quantized: an fp8
    checkpoint trains eagerly unless compile is forced on)."""
    import os

    choice = os.environ.get("LTX2_TRAINER_COMPILE", cfg.compile_blocks or "auto").strip().lower()
    return choice == "on" or (choice == "auto" and device_type == "cuda" and not quantized)


def step_graph_wanted() -> bool:
    """``LTX2_TRAINER_STEP_GRAPH=1`` (on, true, yes): runs that allow it step as one CUDA graph
    (trainer_core.step_graph). Off by default until the engine's graph step has been measured on
    a GPU (the benchmark's has: bench/bench_step_graph.py)."""
    import os

    return os.environ.get("LTX2_TRAINER_STEP_GRAPH", "").strip().lower() in ("1", "on", "true", "yes")


def without_checkpointing(plan):
    """The plan for a run with gradient checkpointing off: ``plan`` itself where it keeps every
    block's activations with every weight resident anyway (its faster saving of activations
    with it), else every block keeping them and every weight on the device whatever the budget,
    saying what the budget's plan would have done."""
    from .ltx2.memory import MemoryPlan

    if not plan.streamed and all(m == "keep" for m in plan.modes):
        return plan
    budget = f"{plan.budget_gib:.1f} GiB" if plan.budget_gib else "the budget"
    return MemoryPlan(["keep"] * len(plan.modes), budget_gib=plan.budget_gib,
                      notes=[f"gradient checkpointing is off: every block keeps its activations and every weight "
                             f"stays on the card, more than the plan for {budget} would "
                             f"({plan.modes.count('keep')} blocks keeping, {len(plan.streamed)} streaming); "
                             "a run that does not fit stops with out of memory"])


def plan_for_tokens(root: torch.nn.Module, video_tokens: int, audio_tokens: int, budget_gib: Optional[float], *,
                    lora_params: int, optimizer: str = "adamw", compiled: bool = False, transfer: str = "bf16",
                    offload: bool = True, offload_streamed: bool = False, host_budget_bytes: Optional[int] = None,
                    speed=None):
    """The memory plan of one step of ``video_tokens`` + ``audio_tokens`` (a whole batch) on
    ``root`` within ``budget_gib``: the accounting the Train node and the benchmarks share.
    The LoRA's ``lora_params`` count fp32 weights + grads and two moments (fp32 for AdamW,
    8-bit for AdamW 8-bit); host memory for activations: half of what the system reports
    available unless ``host_budget_bytes`` says; with a ``speed`` the plan carries its
    predicted step time."""
    from .ltx2.memory import host_available_bytes, module_bytes, plan_memory, predict_step_s

    per_param = 4 + 4 + (2 if optimizer == "adamw8bit" else 8)
    blocks = root.transformer_blocks
    other = module_bytes(root) - sum(module_bytes(b) for b in blocks)
    plan = plan_memory(blocks, other, video_tokens, audio_tokens, budget_gib=budget_gib,
                       trainable_bytes=lora_params * per_param, compiled=compiled, allow_keep=True,
                       transfer=transfer, offload=offload, offload_streamed=offload_streamed,
                       host_budget_bytes=host_available_bytes() // 2 if host_budget_bytes is None else host_budget_bytes,
                       speed=speed)
    if speed is not None:
        predict_step_s(plan, blocks, video_tokens, audio_tokens, speed)
    return plan
