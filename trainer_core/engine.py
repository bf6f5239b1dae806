"""The training loop: LoRA on a frozen LTX-2 transformer over cached latents.

The engine knows nothing of ComfyUI. It is given
- ``root``: the transformer's module tree (ComfyUI's ``diffusion_model`` or our plain tree),
- ``predict(root, inputs) -> (video_pred, audio_pred)``: the training forward,
- a ``LatentSource`` (cached samples),
- a ``TrainConfig``, a run folder, and callbacks for progress, events and interrupts.

Repeatability: every random draw of step ``k`` comes from generators seeded by
``(seed, k)`` — one per sample of the batch, by its position in the global batch (noise, σ,
caption dropout, first-frame draws; see distributed.sample_generator), so several processes
sharing a batch draw what one would — plus LoRA dropout, and the data order of epoch ``e``
from ``(seed, e)``. A checkpoint therefore holds the LoRA, the optimizer,
the scheduler, the step, the seed and the data order, and a run resumed from step k ends
with the same LoRA, bit for bit on CPU, as one that never stopped.
"""
from __future__ import annotations

import contextlib
import gc
import json
import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional, Protocol

import torch

from . import objective as ob
from .fsutil import atomic_path
from .lora import LoRASet, LoRASpec, split_patterns


class TrainingStopped(RuntimeError):
    """Raised when training ends early: cancelled, NaN, divergence."""

    def __init__(self, message: str, step: int, checkpoint: Optional[str] = None, reason: str = "stopped"):
        super().__init__(message)
        self.step, self.checkpoint, self.reason = step, checkpoint, reason
        self.interrupt: Optional[BaseException] = None  # the host's cancel exception, when that stopped it


@dataclass
class TrainConfig:
    steps: int = 2000
    learning_rate: float = 1e-4
    rank: int = 32
    alpha: Optional[float] = None  # None: = rank (Lightricks' loader ignores .alpha; alpha = rank agrees with it)
    dropout: float = 0.0
    targets: str = "all attention"
    target_patterns: str = ""
    optimizer: str = "adamw"  # adamw | adamw8bit
    weight_decay: float = 0.0
    betas: tuple = (0.9, 0.999)
    scheduler: str = "constant"  # constant | linear | cosine
    warmup_steps: int = 0
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    seed: int = 42
    mixed_precision: str = "bf16"  # bf16 | fp32
    mode: str = "text_to_audio_video"  # a trainer_core.modes preset (13 official names + the older ones)
    conditions: str = ""  # composition replacing the preset's conditions, e.g. "reference + first_frame@0.2"
    extension_frames: int = 0  # prefix/suffix boundary in latent frames (0: the preset's, 8)
    # reference audio's place in time: official (from 0, ltx-trainer) | comfyui (before 0, as
    # ComfyUI's LTXV Reference Audio samples it)
    audio_reference_positions: str = "official"
    first_frame_prob: float = 0.5  # image→video's first-frame probability
    audio_weight: float = 1.0
    caption_dropout: float = 0.0
    sigma_sampler: str = "shifted_logit_normal"
    checkpoint_every: int = 250
    keep_checkpoints: int = 3
    grad_checkpointing: bool = True
    vram_budget_gb: float = 0.0  # 0 = automatic (the free memory the host reports); see ltx2.memory
    compile_blocks: str = "auto"  # auto (on for CUDA) | on | off
    stream_transfer: str = "bf16"  # how streamed block weights travel: bf16 (exact) | fp8 (half the bytes)
    offload_activations: bool = True  # blocks that would recompute keep activations in host RAM (plan estimate)
    offload_streamed_activations: bool = False  # some streamed blocks too (measured not faster at 24 GiB)
    divergence_factor: float = 10.0
    trigger_word: str = ""
    init_lora: str = ""  # a LoRA file to start from (its modules, rank and alpha replace rank/alpha/targets)

    def __post_init__(self):
        if isinstance(self.betas, list):
            self.betas = tuple(self.betas)
        if self.alpha is None and isinstance(self.rank, int) and not isinstance(self.rank, bool):
            self.alpha = float(self.rank)
        validate_config(self)

    def lora_spec(self) -> LoRASpec:
        return LoRASpec(rank=self.rank, alpha=self.alpha, dropout=self.dropout,
                        preset=self.targets or None, patterns=tuple(split_patterns(self.target_patterns)))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown training settings: {', '.join(sorted(unknown))}")
        d = dict(d)
        if isinstance(d.get("betas"), list):
            d["betas"] = tuple(d["betas"])
        return cls(**d)


class SettingsError(ValueError):
    """Training settings that are out of range, of the wrong type, or would train nothing."""


_CHOICES = {
    "optimizer": ("adamw", "adamw8bit"),
    "scheduler": ("constant", "linear", "cosine"),
    "mixed_precision": ("bf16", "fp32"),
    "sigma_sampler": ("shifted_logit_normal", "uniform"),
    "compile_blocks": ("auto", "on", "off"),
    "stream_transfer": ("bf16", "fp8"),
    "audio_reference_positions": ("official", "comfyui"),
}
# (low, high, low inclusive, high inclusive, why) — None: unbounded
_RANGES = {
    "steps": (1, 10_000_000, True, True, "the number of optimizer steps"),
    "learning_rate": (0.0, 1.0, False, True, "0 trains nothing; above 1 a LoRA only diverges"),
    "rank": (1, 1024, True, True, ""),
    "alpha": (0.0, 100_000.0, False, True, "0 scales the LoRA to nothing"),
    "dropout": (0.0, 1.0, True, False, "1 drops every input: the LoRA learns nothing"),
    "weight_decay": (0.0, 10.0, True, True, ""),
    "warmup_steps": (0, None, True, True, ""),
    "grad_accum": (1, 1024, True, True, "micro-batches per optimizer step"),
    "max_grad_norm": (0.0, None, True, True, "0 = no clipping"),
    "seed": (0, 2**63 - 1, True, True, ""),
    "first_frame_prob": (0.0, 1.0, True, True, "a probability"),
    "extension_frames": (0, 10_000, True, True, "latent frames; 0 = the preset's"),
    "audio_weight": (0.0, 1000.0, True, True, "0 leaves audio out of the loss"),
    "caption_dropout": (0.0, 1.0, True, True, "a probability"),
    "checkpoint_every": (0, None, True, True, "0 = only on cancel and at the end"),
    "keep_checkpoints": (1, 100_000, True, True, ""),
    "vram_budget_gb": (0.0, 1_000_000.0, True, True, "0 = automatic"),
    "divergence_factor": (0.0, None, True, True, "0 = off"),
}
_INTS = {"steps", "rank", "warmup_steps", "grad_accum", "seed", "checkpoint_every", "keep_checkpoints",
         "extension_frames"}
_BOOLS = {"grad_checkpointing", "offload_activations", "offload_streamed_activations"}
_STRS = {"targets", "target_patterns", "mode", "conditions", "trigger_word", "init_lora", *_CHOICES}


def _type_problem(name: str, v) -> Optional[str]:
    tn = type(v).__name__
    if name in _INTS:
        if isinstance(v, bool) or not isinstance(v, int):
            hint = f" (write {name}: {v.strip()} without quotes)" if isinstance(v, str) and v.strip().lstrip("-").isdigit() else ""
            return f"{name} must be a whole number, not {v!r} ({tn}){hint}"
    elif name in _BOOLS:
        if not isinstance(v, bool):
            return f"{name} must be true or false, not {v!r} ({tn})"
    elif name in _STRS:
        if not isinstance(v, str):
            return f"{name} must be text, not {v!r} ({tn})"
    elif name == "betas":
        if (not isinstance(v, tuple) or len(v) != 2
                or any(isinstance(b, bool) or not isinstance(b, (int, float)) for b in v)):
            return f"betas must be two numbers such as [0.9, 0.999], not {v!r}"
    elif name in _RANGES:  # floats
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            hint = " (write it without quotes)" if isinstance(v, str) else ""
            return f"{name} must be a number, not {v!r} ({tn}){hint}"
        if not math.isfinite(v):
            return f"{name} must be a finite number, not {v!r}"
    return None


def training_mode(cfg: "TrainConfig"):
    """The run's modes.TrainingMode from its settings (mode, conditions, extension_frames,
    first_frame_prob)."""
    from . import modes

    return modes.resolve(cfg.mode, cfg.conditions, cfg.extension_frames, cfg.first_frame_prob)


def validate_config(cfg: "TrainConfig") -> None:
    """Every training setting's type and range, and combinations that would train nothing —
    the one check the Train node and the CLI share, made before anything loads. Raises
    SettingsError listing every problem."""
    from .lora import TARGET_PRESETS, LoRAError, _compile

    problems: list[str] = []
    for f in fields(cfg):
        p = _type_problem(f.name, getattr(cfg, f.name))
        if p:
            problems.append(p)
    bad_type = {p.split(" ")[0] for p in problems}
    for name, (lo, hi, lo_in, hi_in, why) in _RANGES.items():
        if name in bad_type:
            continue
        v = getattr(cfg, name)
        if (lo is not None and (v < lo or (v == lo and not lo_in))) or (hi is not None and (v > hi or (v == hi and not hi_in))):
            lo_s = "" if lo is None else f"{'≥' if lo_in else '>'} {lo:g}"
            hi_s = "" if hi is None else f"{'≤' if hi_in else '<'} {hi:g}"
            rng = " and ".join(x for x in (lo_s, hi_s) if x)
            problems.append(f"{name} = {v!r} is out of range: it must be {rng}" + (f" ({why})" if why else ""))
    for name, options in _CHOICES.items():
        v = getattr(cfg, name)
        if isinstance(v, str) and v not in options:
            extra = " (fp16 is not supported: LTX-2 overflows in fp16; use bf16)" if v == "fp16" else ""
            problems.append(f"{name} = {v!r} is not one of {', '.join(options)}{extra}")
    if "betas" not in bad_type and not all(0.0 <= b < 1.0 for b in cfg.betas):
        problems.append(f"betas = {list(cfg.betas)} must each be in [0, 1)")
    if isinstance(cfg.targets, str) and cfg.targets and cfg.targets not in TARGET_PRESETS:
        problems.append(f"targets = {cfg.targets!r} is not one of {', '.join(TARGET_PRESETS)}")
    if isinstance(cfg.target_patterns, str):
        try:
            _compile(split_patterns(cfg.target_patterns))
        except LoRAError as e:
            problems.append(str(e))
        if isinstance(cfg.targets, str) and not cfg.targets and not split_patterns(cfg.target_patterns) \
                and not cfg.init_lora:
            problems.append("no LoRA targets: choose a targets preset or give target_patterns")
    mode = None
    if isinstance(cfg.mode, str) and isinstance(cfg.conditions, str) and "extension_frames" not in bad_type \
            and "first_frame_prob" not in bad_type:
        try:
            mode = training_mode(cfg)
        except ValueError as e:
            problems.append(str(e))
    gen_v = mode is not None and mode.video is not None and mode.video.role == "generated"
    gen_a = mode is not None and mode.audio is not None and mode.audio.role == "generated"
    if mode is not None and "audio_weight" not in bad_type and cfg.audio_weight == 0 and gen_a and not gen_v:
        problems.append(f"audio_weight = 0 with mode {cfg.mode} (which learns only audio) trains nothing; "
                        "set audio_weight above 0")
    if problems:
        raise SettingsError("training settings refused:\n- " + "\n- ".join(problems))


RECIPES: dict[str, dict[str, Any]] = {
    # Starting points from Lightricks' configs and community practice; every field overridable.
    "Character": dict(rank=32, alpha=32, learning_rate=1e-4, steps=2000, targets="all attention",
                      audio_weight=0.5, mode="text_to_audio_video"),
    "Style": dict(rank=32, alpha=32, learning_rate=1e-4, steps=1500, targets="video attention",
                  audio_weight=0.0, mode="video_only"),
    "Motion": dict(rank=64, alpha=64, learning_rate=1e-4, steps=3000, targets="all attention + feed-forward",
                   audio_weight=0.5, mode="text_to_audio_video"),
    "Audio": dict(rank=32, alpha=32, learning_rate=1e-4, steps=2000, targets="audio attention",
                  audio_weight=1.0, mode="audio_only"),
}


# ----------------------------------------------------------------------------- data

@dataclass
class LatentItem:
    """One cached training sample, as the engine consumes it.

    video: [128, F', H', W'] clean latents (or None), audio: [8, T, 16] (or None),
    text: conditioning tensors the ``predict`` function understands (per-sample, no batch
    dim), empty_text: the same for the empty caption (caption dropout).
    """

    key: str
    video: Optional[torch.Tensor]
    audio: Optional[torch.Tensor]
    text: dict[str, torch.Tensor]
    fps: float = 24.0
    bucket: str = ""
    # IC-LoRA and inpainting (None when the cache has none): reference video latents
    # [128, F_r, H_r, W_r] (H_r = H' / reference_scale), reference audio latents [8, T_r, 16],
    # masks on the latent grid (1 = conditioning): video [F', H', W'], audio [T]
    reference: Optional[torch.Tensor] = None
    reference_audio: Optional[torch.Tensor] = None
    video_mask: Optional[torch.Tensor] = None
    audio_mask: Optional[torch.Tensor] = None
    reference_scale: int = 1


class LatentSource(Protocol):
    def __len__(self) -> int: ...

    def get(self, index: int) -> LatentItem: ...

    def bucket_of(self, index: int) -> str: ...

    def empty_text(self) -> dict[str, torch.Tensor]: ...


class ItemSource:
    """A LatentSource over samples held in memory (benchmarks, tests): ``items`` and the
    empty caption's conditioning ``empty``."""

    def __init__(self, items: list[LatentItem], empty: dict[str, torch.Tensor]):
        self.items, self.empty = items, empty

    def __len__(self) -> int:
        return len(self.items)

    def get(self, index: int) -> LatentItem:
        return self.items[index]

    def bucket_of(self, index: int) -> str:
        return self.items[index].bucket

    def empty_text(self) -> dict[str, torch.Tensor]:
        return self.empty


@dataclass
class ModalityInput:
    tokens: torch.Tensor  # [B, N, C] noised target tokens (conditioning tokens clean)
    sigma: torch.Tensor  # [B, N] per token (0 on conditioning tokens)
    noised: Any  # modes.StreamInputs (target, loss_mask, sample_sigma, references)
    grid: tuple  # video: (F', H', W'); audio: (T,)
    # IC-LoRA: (tokens [B, R, C], RoPE positions [1, n, R, 2]) put in front of the target
    # sequence, clean, no loss (read by make_predict); None: no reference this step
    reference: Optional[tuple] = None


@dataclass
class StepInputs:
    video: Optional[ModalityInput]
    audio: Optional[ModalityInput]
    text: dict[str, torch.Tensor]
    fps: float
    mode: Any  # modes.TrainingMode
    inputs: Any = None  # modes.ModeInputs (the loss: inputs.loss(v_pred, a_pred, audio_weight))


def video_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """[B, C, F, H, W] -> [B, F·H·W, C] (LTX-2 uses patch size 1)."""
    b, c = x.shape[:2]
    return x.reshape(b, c, -1).transpose(1, 2)


def audio_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """[B, 8, T, 16] -> [B, T, 8·16] (channels then mel bins)."""
    b, c, t, f = x.shape
    return x.permute(0, 2, 1, 3).reshape(b, t, c * f)


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(_mix(seed, 0x5EED, epoch))
    return torch.randperm(n, generator=g).tolist()


def _mix(*xs: int) -> int:
    h = 1469598103934665603
    for x in xs:
        h = ((h ^ (int(x) & 0xFFFFFFFFFFFF)) * 1099511628211) % (1 << 63)
    return h


# The order of a step's random draws (modes.draw: per modality σ, ε, each condition's draw;
# then caption dropout). Version 1 (before the modes of trainer_core.modes) drew image→video's
# first-frame choice before σ; modes without conditions draw the same numbers in both.
DRAW_ORDER = 2


def _stack_opt(items: list, name: str, mode_name: str, why: str):
    vals = [getattr(it, name) for it in items]
    if all(v is None for v in vals):
        return None
    missing = [it.key for it, v in zip(items, vals) if v is None]
    if missing:
        raise ValueError(f"sample {missing[0]} has no cached {name.replace('_', ' ')}; mode {mode_name} needs it "
                         f"({why}) — run Encode Latents again with the pairs in place")
    return torch.stack(vals)


def _stack_needed(items: list, name: str, mode_name: str, what: str, fix: str) -> torch.Tensor:
    """``_stack_opt`` for what the mode cannot train without: none cached says how to get it."""
    got = _stack_opt(items, name, mode_name, what)
    if got is None:
        raise ValueError(f"mode {mode_name} needs {what} per sample and the cache has none: {fix}, then Encode "
                         "Latents")
    return got


def build_step_inputs(items: list[LatentItem], mode, cfg: TrainConfig, gen: torch.Generator,
                      empty_text: Optional[dict], device, dtype, config=None) -> StepInputs:
    """Stack a same-bucket batch, noise and condition it per the mode (trainer_core.modes:
    every draw through ``gen``), apply caption dropout. ``mode``: a modes.TrainingMode (an
    objective.Mode is converted). ``config``: the model's LTX2Config (video reference
    positions need it)."""
    from . import modes as md

    if isinstance(mode, ob.Mode):
        mode = md.from_objective(mode)
    B = len(items)
    latents, grids, masks, refs = {}, {}, {}, {}
    if mode.needs_video:
        missing = [it.key for it in items if it.video is None]
        if missing:
            raise ValueError(f"{missing[0]} has no video latents; mode {mode.name} needs video")
        x = ob.to_device(torch.stack([it.video for it in items]), device)
        _, _, F, H, W = x.shape
        latents["video"], grids["video"] = video_to_tokens(x).to(dtype), (F, H, W)
        if mode.needs("video", "mask"):
            masks["video"] = _stack_needed(items, "video_mask", mode.name, "a video mask",
                                           "give Load Clips mask files (clip.mask.png / the video_mask column) or "
                                           "generated masks").reshape(B, -1)
        if mode.needs("video", "reference"):
            r = _stack_needed(items, "reference", mode.name, "a reference video",
                              "pair the clips in Load Clips (clip.reference.mp4, the reference_video column or a "
                              "reference folder)")
            r = ob.to_device(r, device)
            refs["video"] = md.VideoRef(video_to_tokens(r).to(dtype), tuple(r.shape[2:]), items[0].fps)
    if mode.needs_audio:
        missing = [it.key for it in items if it.audio is None]
        if missing:
            raise ValueError(f"{missing[0]} has no audio latents; mode {mode.name} needs audio — "
                             "mute training (video_only) or drop clips without sound")
        a = ob.to_device(torch.stack([it.audio for it in items]), device)
        latents["audio"], grids["audio"] = audio_to_tokens(a).to(dtype), (a.shape[2],)
        if mode.needs("audio", "mask"):
            masks["audio"] = _stack_needed(items, "audio_mask", mode.name, "an audio mask",
                                           "give Load Clips audio mask files (clip.audio_mask.wav / the audio_mask "
                                           "column) or generated masks").reshape(B, -1)
        if mode.needs("audio", "reference"):
            r = _stack_needed(items, "reference_audio", mode.name, "reference audio",
                              "pair the clips with references that have sound (or clip.reference_audio.wav)")
            refs["audio"] = audio_to_tokens(ob.to_device(r, device)).to(dtype)
    mi = md.prepare(mode, latents, grids, gen, masks=masks or None, references=refs or None, config=config,
                    fps=float(items[0].fps), sampler=cfg.sigma_sampler,
                    audio_reference_at=cfg.audio_reference_positions)

    def wrap(si):
        if si is None:
            return None
        ref = (si.ref_tokens, si.ref_positions) if si.ref_tokens is not None else None
        return ModalityInput(si.x_t, si.sigma, si, si.grid, ref)

    texts = []
    for it in items:
        drop = cfg.caption_dropout > 0 and torch.rand((), generator=gen, device=gen.device).item() < cfg.caption_dropout
        texts.append(empty_text if (drop and empty_text is not None) else it.text)
    return StepInputs(wrap(mi.video), wrap(mi.audio), stack_texts(texts, device), items[0].fps, mode, mi)


TEXT_LENGTHS = "context_lengths"


def stack_texts(texts: list[dict], device=None) -> dict:
    """One batch's text conditioning from per-sample ones (``{"context": [L, D], ...}``).
    Captions of different lengths (and the empty caption of caption dropout) are padded with
    zeros to the longest, and ``text["context_lengths"]`` [B] (int64) says how many tokens of
    each sample are real: the forward prepares each sample's text on its own tokens only
    (LTX-2's connectors fill everything after them with their learnable registers), so a
    batch gives what each sample gives alone. Equal lengths: a plain stack, no lengths."""
    if not texts:
        return {}
    ctx = [t.get("context") for t in texts]
    lengths = None
    if all(torch.is_tensor(c) and c.ndim == 2 for c in ctx) and len({c.shape[0] for c in ctx}) > 1:
        lengths = [c.shape[0] for c in ctx]
    out = {}
    for k in texts[0]:
        vals = [t[k] for t in texts]
        if k == "context" and lengths is not None:
            top = max(lengths)
            vals = [torch.nn.functional.pad(v, (0, 0, 0, top - v.shape[0])) for v in vals]
        out[k] = torch.stack(vals)
        if device is not None:
            out[k] = ob.to_device(out[k], device)
    if lengths is not None:
        out[TEXT_LENGTHS] = torch.tensor(lengths, dtype=torch.int64)  # host memory: the forward reads them as ints
    return out


def pad_batch_texts(parts: list) -> list:
    """Per-sample StepInputs whose text contexts will be joined into one batch: each part's
    ``text`` brought to the batch's longest context, with ``context_lengths`` (see
    :func:`stack_texts`), so :func:`~trainer_core.distributed.concat_samples` can join them."""
    ctxs = [p.text.get("context") for p in parts]
    if len(parts) < 2 or not all(torch.is_tensor(c) and c.ndim == 3 for c in ctxs):
        return parts
    if len({c.shape[1] for c in ctxs}) == 1 and not any(TEXT_LENGTHS in p.text for p in parts):
        return parts
    top = max(c.shape[1] for c in ctxs)
    out = []
    for p, c in zip(parts, ctxs):
        lens = p.text.get(TEXT_LENGTHS)
        if lens is None:
            lens = torch.full((c.shape[0],), c.shape[1], dtype=torch.int64)
        text = dict(p.text, context=torch.nn.functional.pad(c, (0, 0, 0, top - c.shape[1])), **{TEXT_LENGTHS: lens})
        out.append(replace(p, text=text))
    return out


def learned_streams(inputs: StepInputs) -> tuple[bool, bool]:
    """(video, audio): which modalities this step learns (has a target for)."""
    mi = inputs.inputs
    return (mi.video is not None and mi.video.target is not None,
            mi.audio is not None and mi.audio.target is not None)


def step_losses(inputs: StepInputs, v_pred, a_pred) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Per-sample [B] video and audio losses of a step (ModeInputs' masked MSE over the target
    tokens; reference tokens carry none), None for a modality not learned."""
    mi = inputs.inputs
    video, audio = learned_streams(inputs)
    return (mi.video.loss(v_pred) if video else None), (mi.audio.loss(a_pred) if audio else None)


def clip_and_step(opt, grads, max_grad_norm: float) -> torch.Tensor:
    """Clip the gradients of ``grads`` to ``max_grad_norm`` (0: measure only), step the
    optimizer and unset the gradients; the norm before clipping, on the device (no wait)."""
    if max_grad_norm > 0:
        gnorm = torch.nn.utils.clip_grad_norm_(grads, max_grad_norm)
    else:
        gnorm = torch.nn.utils.get_total_norm([p.grad for p in grads if p.grad is not None])
    opt.step()
    opt.zero_grad(set_to_none=True)
    return gnorm


# ----------------------------------------------------------------------------- optim

def make_optimizer(params, cfg: TrainConfig):
    """The run's optimizer over the LoRA's ``params``. AdamW on a CUDA device is PyTorch's
    fused kernel: one launch over every tensor, where the default (foreach) loops in Python
    over the 2,304 tensors of a 19B all-attention LoRA — at batch 1 the GPU waited on that
    loop (bench/results/engine_step_H200_round6.json). The same update to rounding (tested
    against the default on the CPU, where PyTorch has the fused kernel too); a checkpoint
    of one resumes in the other."""
    params = list(params)
    if cfg.optimizer == "adamw":
        fused = bool(params) and all(p.device.type == "cuda" for p in params)
        return torch.optim.AdamW(params, lr=cfg.learning_rate, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay,
                                 fused=fused or None)
    if cfg.optimizer == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except Exception as e:  # pragma: no cover - depends on the install
            raise RuntimeError(f"8-bit AdamW needs bitsandbytes ({e}); pip install bitsandbytes or use adamw") from e
        return bnb.optim.AdamW8bit(params, lr=cfg.learning_rate, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r} (adamw or adamw8bit)")


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    p = min(1.0, (step - cfg.warmup_steps) / span)
    if cfg.scheduler == "constant":
        return 1.0
    if cfg.scheduler == "linear":
        return max(0.0, 1.0 - p)
    if cfg.scheduler == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    raise ValueError(f"unknown scheduler {cfg.scheduler!r} (constant, linear or cosine)")


# ----------------------------------------------------------------------------- checkpoints

def _flatten_optimizer(opt) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state -> (tensors for safetensors, JSON-able structure pointing at them)."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(obj, name):
        if torch.is_tensor(obj):
            tensors[name] = obj.detach().to("cpu", copy=True)  # (views into one buffer: copies)
            return {"__tensor__": name}
        if isinstance(obj, dict):
            return {"__dict__": [[walk(k, f"{name}.k{i}"), walk(v, f"{name}.{i}")] for i, (k, v) in enumerate(obj.items())]}
        if isinstance(obj, (list, tuple)):
            return {"__list__": [walk(v, f"{name}.{i}") for i, v in enumerate(obj)], "tuple": isinstance(obj, tuple)}
        return obj

    sd = opt.state_dict()
    for g in sd.get("param_groups", []):  # a capturable optimizer's tensor learning rate: saved as a number
        for k, v in list(g.items()):
            if torch.is_tensor(v) and v.numel() == 1:
                g[k] = float(v)
    return tensors, walk(sd, "opt")


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta) -> dict:
    def build(obj):
        if isinstance(obj, dict):
            if "__tensor__" in obj:
                return tensors[obj["__tensor__"]]
            if "__dict__" in obj:
                return {build(k): build(v) for k, v in obj["__dict__"]}
            if "__list__" in obj:
                items = [build(v) for v in obj["__list__"]]
                return tuple(items) if obj.get("tuple") else items
        return obj

    return build(meta)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, damaged, or of a different run."""

    def __init__(self, message: str, path: Optional[str] = None):
        super().__init__(message)
        self.path = path


def payload_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes (sorted by name)."""
    import hashlib

    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().to("cpu").contiguous()
        h.update(f"{k}|{t.dtype}|{list(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(path: Path, lora: LoRASet, opt, step: int, epoch: int, pos: int, cfg: TrainConfig,
                    history: list[dict], fingerprint: Optional[dict] = None) -> None:
    from safetensors.torch import save_file

    # copies: the LoRA's tensors (and the optimizer's, below) can be views into one buffer
    tensors = {f"lora.{k}": v.detach().to("cpu", copy=True) for k, v in lora.state_dict().items()}
    ot, ometa = _flatten_optimizer(opt)
    tensors.update(ot)
    meta = {"format": "ltx2-train-checkpoint", "step": str(step), "epoch": str(epoch), "pos": str(pos),
            "config": json.dumps(cfg.to_dict()), "optimizer": json.dumps(ometa),
            "history": json.dumps(history), "lora_names": json.dumps(lora.names),
            "sha256": payload_digest(tensors)}
    if fingerprint is not None:
        meta["fingerprint"] = json.dumps(fingerprint, sort_keys=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def read_checkpoint(path: Path, verify: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """The checkpoint's tensors and metadata. Anything unreadable or damaged (truncated, bytes
    changed: the payload's sha256 differs) raises CheckpointError naming the file."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != "ltx2-train-checkpoint":
                raise CheckpointError(f"{path.name} is not a training checkpoint of this pack", str(path))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except CheckpointError:
        raise
    except Exception as e:  # SafetensorError, OSError, a bad header: one message naming the file
        raise CheckpointError(f"checkpoint {path.name} cannot be read ({type(e).__name__}: {e}); it is damaged "
                              "(an interrupted copy or a full disk?)", str(path)) from e
    want = meta.get("sha256")
    if verify and want and payload_digest(tensors) != want:
        raise CheckpointError(f"checkpoint {path.name} is damaged: its contents do not match the checksum "
                              "saved with it", str(path))
    for k in ("step", "epoch", "pos", "config", "optimizer", "history"):
        if k not in meta:
            raise CheckpointError(f"checkpoint {path.name} lacks its {k!r} record; it is not usable", str(path))
    return tensors, meta


def list_checkpoints(run_dir: Path) -> list[Path]:
    return sorted((Path(run_dir) / "checkpoints").glob("step_*.safetensors"))


@dataclass
class LoadedCheckpoint:
    path: Path
    tensors: dict
    meta: dict
    notes: list[str] = field(default_factory=list)


def load_resume_checkpoint(run_dir: Path, resume: Optional[str]) -> Optional[LoadedCheckpoint]:
    """The checkpoint to resume from, read and verified. ``None``/"none": no resume;
    "latest": the newest good checkpoint (a damaged newer one is reported by name in
    ``notes`` and the previous good one used); a file name: that one (if damaged, the error
    names the previous good one to ask for instead)."""
    if not resume or resume == "none":
        return None
    run_dir = Path(run_dir)
    cks = list_checkpoints(run_dir)
    if resume == "latest":
        bad: list[str] = []
        for c in reversed(cks):
            try:
                tensors, meta = read_checkpoint(c)
            except CheckpointError as e:
                bad.append(str(e))
                continue
            notes = [f"{b}; resuming from {c.name} (step {meta['step']}) instead" for b in bad]
            return LoadedCheckpoint(c, tensors, meta, notes)
        if bad:
            raise CheckpointError("no usable checkpoint to resume from: " + "; ".join(bad)
                                  + ". Set resume to none to start again (or delete the damaged files)")
        return None
    chosen = next((c for c in cks if c.name == resume or c.stem == resume), None)
    if chosen is None:
        raise FileNotFoundError(f"no checkpoint {resume!r} in {run_dir / 'checkpoints'}; "
                                f"available: {', '.join(c.name for c in cks) or 'none'}")
    try:
        tensors, meta = read_checkpoint(chosen)
    except CheckpointError as e:
        older = [c for c in cks if c < chosen]
        good = None
        for c in reversed(older):
            try:
                read_checkpoint(c)
                good = c
                break
            except CheckpointError:
                continue
        raise CheckpointError(f"{e}. " + (f"The previous good checkpoint is {good.name}: resume from it"
                                         if good else "There is no earlier good checkpoint: set resume to none"),
                              str(chosen)) from e
    return LoadedCheckpoint(chosen, tensors, meta)


# ----------------------------------------------------------------------------- run identity

_HASHED = ("patchify_proj.bias", "audio_patchify_proj.bias", "scale_shift_table", "audio_scale_shift_table",
           "transformer_blocks.0.attn1.to_q.bias", "transformer_blocks.0.scale_shift_table")


def base_model_identity(root: torch.nn.Module) -> dict:
    """What identifies a base model: its sizes and a hash of a few weight tensors' values
    (rounded to bf16, so the same checkpoint loaded in bf16 or fp32 has the same identity)."""
    import hashlib

    params = dict(root.named_parameters())
    blocks = getattr(root, "transformer_blocks", None)
    n = len(blocks) if blocks is not None else 0
    names = [k for k in _HASHED if k in params]
    if n:
        names += [k for k in (f"transformer_blocks.{n - 1}.attn1.to_q.bias", f"transformer_blocks.{n - 1}.scale_shift_table")
                  if k in params and k not in names]
    if not names:
        names = sorted(params)[:4]
    from .distributed import full_tensor

    h = hashlib.sha256()
    for k in names:
        t = full_tensor(params[k].detach())  # FSDP-sharded: the whole tensor (every rank asks alike)
        try:
            t = t.reshape(-1)[:65536].to("cpu", torch.bfloat16).contiguous()
            h.update(k.encode() + t.view(torch.int16).numpy().tobytes())
        except Exception:  # a quantized tensor: its shape at least
            h.update(f"{k}{list(params[k].shape)}".encode())
    shapes = {}
    for k in ("patchify_proj", "audio_patchify_proj", "proj_out", "audio_proj_out"):
        m = getattr(root, k, None)
        if m is not None and hasattr(m, "in_features"):
            shapes[k] = [m.in_features, m.out_features]
    return {"blocks": n, "shapes": shapes, "weights": h.hexdigest()[:32]}


def data_identity(data) -> Any:
    ident = getattr(data, "identity", None)
    if callable(ident):
        return ident()
    return {"samples": len(data), "buckets": sorted({data.bucket_of(i) for i in range(len(data))})}


def run_fingerprint(root, data, cfg: TrainConfig, lora: LoRASet, batch_size: int, init_digest: str = "") -> dict:
    """What makes a run the same run: a checkpoint resumes only into a run with all of it
    equal (the learning rate may change; it is reported)."""
    import hashlib

    return {
        "base model": base_model_identity(root),
        "latent cache": data_identity(data),
        "mode": cfg.mode,
        "mode spec": _mode_spec(cfg),
        **({"audio reference positions": cfg.audio_reference_positions}
           if cfg.audio_reference_positions != "official" else {}),
        "draw order": DRAW_ORDER,
        "LoRA modules": hashlib.sha256("\n".join(lora.names).encode()).hexdigest()[:16] + f" ({len(lora.names)})",
        "targets": [cfg.targets, cfg.target_patterns] if not init_digest else "init LoRA",
        "rank": lora.rank,
        "alpha": lora.alpha,
        "init LoRA": init_digest,
        "grad_accum": cfg.grad_accum,
        "batch size": batch_size,
        "schedule": [cfg.scheduler, cfg.warmup_steps, None if cfg.scheduler == "constant" else cfg.steps],
        "optimizer": [cfg.optimizer, list(cfg.betas), cfg.weight_decay],
        "dropouts": {"lora": cfg.dropout, "caption": cfg.caption_dropout, "first_frame_prob": cfg.first_frame_prob},
        "seed": cfg.seed,
        "audio_weight": cfg.audio_weight,
        "sigma_sampler": cfg.sigma_sampler,
        "max_grad_norm": cfg.max_grad_norm,
        "mixed_precision": cfg.mixed_precision,
    }


def _mode_spec(cfg: TrainConfig) -> dict:
    from . import modes

    return modes.spec(training_mode(cfg))


def _legacy_fingerprint(saved: TrainConfig) -> dict:
    """What a checkpoint made before fingerprints can still be compared on (its config)."""
    return {"mode": saved.mode, "targets": [saved.targets, saved.target_patterns], "rank": saved.rank,
            "alpha": saved.alpha, "grad_accum": saved.grad_accum,
            "schedule": [saved.scheduler, saved.warmup_steps, None if saved.scheduler == "constant" else saved.steps],
            "optimizer": [saved.optimizer, list(saved.betas), saved.weight_decay], "seed": saved.seed}


def _show(field_name: str, v) -> str:
    if field_name == "base model" and isinstance(v, dict):
        return f"{v.get('blocks')} blocks, weights {v.get('weights', '')[:12]}"
    if field_name == "latent cache" and isinstance(v, dict) and "digest" in v:
        return f"{v.get('samples')} samples, {v['digest'][:12]}"
    if field_name == "schedule" and isinstance(v, list) and len(v) == 3:
        return f"{v[0]}, warmup {v[1]}" + (f", over {v[2]} steps" if v[2] is not None else "")
    if field_name == "optimizer" and isinstance(v, list) and len(v) == 3:
        return f"{v[0]} (betas {v[1]}, weight decay {v[2]})"
    return json.dumps(v) if not isinstance(v, str) else v


def check_resume(ck: "LoadedCheckpoint", fingerprint: dict, cfg: TrainConfig) -> list[str]:
    """Refuse a checkpoint of a different run, naming what differs and how to start fresh;
    returns notes on allowed changes (the learning rate)."""
    meta = ck.meta
    try:
        saved_cfg = json.loads(meta["config"])
    except (KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint {ck.path.name} has no readable settings record", str(ck.path)) from e
    if "fingerprint" in meta:
        saved = json.loads(meta["fingerprint"])
    else:
        try:
            saved = _legacy_fingerprint(TrainConfig.from_dict(saved_cfg))
        except (ValueError, TypeError):
            saved = {}
    notes = []
    if "draw order" not in saved:
        # made before DRAW_ORDER 2: the same numbers only for modes without conditions
        from . import modes

        mode = training_mode(cfg)
        if modes.has_conditions(mode):
            raise CheckpointError(
                f"cannot resume from {ck.path.name}: it was made by an earlier version of the trainer whose random "
                f"draws for mode {cfg.mode} came in another order (draw order 1; this version uses "
                f"{DRAW_ORDER}), so it cannot continue bit for bit. To keep its weights, start a new run from them: "
                f"set init_lora to the LoRA file this run saved and give the LoRA a new name (the optimizer "
                "state starts afresh); or set resume to none to start again", str(ck.path))
        notes.append(f"{ck.path.name} was made by an earlier version (draw order 1); mode {cfg.mode} has no "
                     "conditions, so its draws are unchanged and it continues exactly")
    diffs = [k for k in saved if k in fingerprint and saved[k] != json.loads(json.dumps(fingerprint[k]))]
    if diffs:
        lines = [f"{k}: checkpoint {_show(k, saved[k])}, this run {_show(k, fingerprint[k])}" for k in diffs]
        raise CheckpointError(
            f"cannot resume from {ck.path.name}: it belongs to a different run ({'; '.join(lines)}). To continue it, "
            "change those settings back; to start fresh, give the LoRA a new name or set resume to none "
            "(CLI: --resume none)", str(ck.path))
    old_lr = saved_cfg.get("learning_rate")
    if old_lr is not None and old_lr != cfg.learning_rate:
        notes.append(f"learning rate changed on resume: {old_lr:g} -> {cfg.learning_rate:g} (from step {meta['step']})")
    if saved_cfg.get("steps") is not None and saved_cfg.get("steps") != cfg.steps:
        notes.append(f"steps changed on resume: {saved_cfg['steps']} -> {cfg.steps}")
    return notes


# ----------------------------------------------------------------------------- the loop

@dataclass
class Callbacks:
    on_step: Optional[Callable[[dict], None]] = None  # {"step","steps","loss","lr","s_per_step",...}
    should_stop: Optional[Callable[[], bool]] = None
    on_event: Optional[Callable[[str, dict], None]] = None  # "checkpoint", "plateau", "resumed", ...
    # every ``validate_every`` steps, after on_step: on_validate(step, optimizer) — e.g. sample
    # previews (wrap the work in ``optimizer_offloaded(optimizer)`` to free the GPU meanwhile)
    on_validate: Optional[Callable[[int, Any], None]] = None
    validate_every: int = 0
    # is this exception the host's cancel (ComfyUI's InterruptProcessingException, raised from
    # a progress hook or from inside a layer's forward)? KeyboardInterrupt always is.
    is_interrupt: Optional[Callable[[BaseException], bool]] = None


@contextlib.contextmanager
def optimizer_offloaded(opt):
    """Move the optimizer's state tensors to host memory for the duration (e.g. while
    sampling validation previews) and back to where they were, bit for bit."""
    moved = []
    for st in opt.state.values():
        for k, v in list(st.items()):
            if torch.is_tensor(v) and v.device.type != "cpu":
                moved.append((st, k, v.device))
                st[k] = v.to("cpu")
    try:
        yield len(moved)
    finally:
        for st, k, dev in moved:
            st[k] = st[k].to(dev)


@dataclass(slots=True)
class _Pending:
    """A step whose optimizer update is queued and whose numbers are on their way to host
    memory. ``host``: loss sum, video sum, audio sum, gradient norm, largest LoRA weight;
    ``ready``: the CUDA event after its copy (None off CUDA); ``queued_at``: the clock when it
    was queued — a step's time runs from one step's queueing to the next, the same rhythm
    whenever its numbers are read."""

    step: int  # the step count after it
    epoch: int
    pos: int
    lr: float
    counts: list  # video, audio samples
    host: torch.Tensor
    ready: Optional[torch.cuda.Event]
    queued_at: float


@dataclass
class TrainResult:
    lora: LoRASet
    history: list[dict]
    steps_done: int
    checkpoints: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _phase(name: str):
    """A named range of the training step in a torch.profiler trace (``ltx2.data``, ``.inputs``,
    ``.forward``, ``.backward``, ``.optimizer``, ``.readback``; bench_engine_step.py reads them)."""
    return torch.profiler.record_function(name)


class QuietGC:
    """Keeps Python's cyclic garbage collector out of the training steps.

    Measured at full size (bench/results/profile_offload_H200.json, "gc_ms_per_step"): the
    collector runs inside the step about 10 ms per step, and every few steps a full collection
    takes 0.4–0.6 s. No kernels are launched meanwhile, and a streamed step, whose host keeps
    pace with its copies, loses that time whole (a 0.6 s collection made a 1.93 s step of
    neighbours at 1.24–1.32 s).

    ``settle()`` (after the first step, when everything long-lived exists: compiled graphs,
    the streamer's host copies, ComfyUI's own objects) collects once, moves what exists then
    out of the collector's reach (``gc.freeze``) and turns automatic collection off.
    ``tick()`` (between steps, where the host waits for the device anyway) collects the young
    generations, which is where a step's garbage is, and every ``full_every`` ticks everything
    not frozen (cycles that outlived a tick; cheap, as the old objects are frozen) — so
    nothing accumulates over a long run. ``release()`` gives everything back as it was.
    Does nothing when the collector is already off (then its owner decides). Where something
    else has frozen objects already, their freeze is left alone (nothing more frozen, nothing
    unfrozen) but automatic collection still goes off for the steps: on the H200 machines
    here, 375 objects were frozen before training started, and with the collector left on
    full collections of 0.44–0.73 s ran inside every tenth step or so
    (bench/results/train_step_H200_round4.json, ``gc``).
    """

    def __init__(self, full_every: int = 100):
        self.active = False
        self.froze = False
        self.full_every = max(1, int(full_every))
        self.ticks = 0

    def settle(self) -> None:
        if self.active or not gc.isenabled():
            return
        gc.collect()
        if not gc.get_freeze_count():
            gc.freeze()
            self.froze = True
        gc.disable()
        self.active = True

    def tick(self, full: bool = False) -> None:
        if self.active:
            self.ticks += 1
            gc.collect(2 if full or self.ticks % self.full_every == 0 else 1)

    def release(self) -> None:
        if self.active:
            gc.enable()
            if self.froze:
                gc.unfreeze()
            self.active = self.froze = False


class Trainer:
    # Steps are queued back to back: a step's numbers (loss, gradient norm, largest weight)
    # are read while the next step's forward and backward run, so the CPU never waits for
    # the GPU between steps. Steps that validate, save a checkpoint or end the run are read
    # at once. False: every step read at its end (the bench's comparison).
    pipelined = True
    # The LoRA's tensors that get gradients live in one buffer once the first backward has
    # shown which they are (trainer_core.flat): clipping, norms and AdamW are one operation
    # each. False: per-tensor AdamW throughout (the bench's comparison).
    flat = True
    # The whole step as one CUDA graph where the run allows it (trainer_core.step_graph:
    # one process, one micro-batch a step, plain AdamW, no LoRA dropout, every block keeping
    # its activations on the card); asked for with LTX2_TRAINER_STEP_GRAPH=1 (run.step_graph_wanted).
    step_graph = False

    def __init__(self, root: torch.nn.Module, predict: Callable, data: LatentSource, cfg: TrainConfig,
                 run_dir: str | Path, device: torch.device | str = "cpu", callbacks: Optional[Callbacks] = None,
                 batch_size: int = 1, dist=None):
        from .distributed import LOCAL

        self.root, self.predict, self.data, self.cfg = root, predict, data, cfg
        # this process's place in a multi-process run (trainer_core.distributed); one process by default
        self.dist = dist if dist is not None else LOCAL
        if self.dist.active or self.dist.exact:
            self.dist.check_batch(batch_size)
        self.run_dir = Path(run_dir)
        self.device = torch.device(device)
        self.cb = callbacks or Callbacks()
        self.batch_size = batch_size
        self.mode = training_mode(cfg)
        self._config: Any = None
        if len(data) == 0:
            raise ValueError("the latent cache is empty: nothing to train on")
        self.buckets = self._group_by_bucket()

    def model_config(self):
        """The transformer's LTX2Config (video reference positions), None for a model that is
        not an LTX-2 tree (a test's toy model)."""
        if self._config is None:
            try:
                from .ltx2 import LTX2Config

                self._config = LTX2Config.from_module(self.root)
            except Exception:
                self._config = False
        return self._config or None

    def _group_by_bucket(self) -> dict[str, list[int]]:
        """Sample indices by bucket. With batches of more than one clip, a bucket whose clips
        cannot share a forward (another frame rate — a different audio length — or no sound;
        the source's ``batch_key``) is split by that key: "768x512x121 (30 fps)". Batch size
        1, and buckets whose clips all agree, keep the bucket's own name (and its order)."""
        groups: dict[str, list[int]] = {}
        for i in range(len(self.data)):
            groups.setdefault(self.data.bucket_of(i), []).append(i)
        key_of = getattr(self.data, "batch_key", None)
        if self.batch_size <= 1 or key_of is None:
            return groups
        out: dict[str, list[int]] = {}
        for bucket, idx in groups.items():
            keys = {i: key_of(i) for i in idx}
            if len(set(keys.values())) == 1:
                out[bucket] = idx
                continue
            for i in idx:
                out.setdefault(f"{bucket} ({keys[i]})", []).append(i)
        return out

    def _batches(self, epoch: int) -> list[list[int]]:
        """The epoch's batches: same-bucket groups, in an order drawn from (seed, epoch)."""
        batches = []
        for bucket in sorted(self.buckets):
            idx = self.buckets[bucket]
            order = [idx[j] for j in epoch_order(len(idx), self.cfg.seed, epoch * 7919 + len(batches))]
            batches += [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        perm = epoch_order(len(batches), self.cfg.seed, epoch)
        return [batches[j] for j in perm]

    def _emit(self, name: str, payload: dict) -> None:
        if self.cb.on_event and self.dist.is_main:
            self.cb.on_event(name, payload)

    def check_data(self) -> None:
        """Before the first step: the cache's files are all readable with their recorded
        shapes, and the latents and text conditioning fit this model — so a damaged file or a
        cache of another variant is reported now, naming the file, not steps later."""
        verify = getattr(self.data, "verify", None)
        if callable(verify):
            verify(self.mode)
        shapes_of = getattr(self.data, "entry_shapes", None)
        root = self.root
        if not callable(shapes_of) or not hasattr(root, "audio_adaln_single"):
            return  # not a cache over an LTX-2 tree (a test's toy model): nothing more to compare
        from .cache import CacheError

        where = getattr(getattr(self.data, "cache", None), "root", "the latent cache")
        want_v = getattr(getattr(root, "patchify_proj", None), "in_features", None)
        want_a = getattr(getattr(root, "audio_patchify_proj", None), "in_features", None)
        widths: dict[int, int] = {}
        for i in range(len(self.data)):
            sh = shapes_of(i)
            v, a, t = sh.get("video"), sh.get("audio"), sh.get("text")
            key = getattr(self.data.samples[i], "key", str(i)) if hasattr(self.data, "samples") else str(i)
            if self.mode.needs_video and v and want_v and v[0] != want_v:
                raise CacheError(f"sample {key} in {where}: video latents have {v[0]} channels, this model takes "
                                 f"{want_v}; encode the clips again with this model's LTX-2 video VAE")
            if self.mode.needs_audio and a and want_a and a[0] * a[-1] != want_a:
                raise CacheError(f"sample {key} in {where}: audio latents {a} do not fit this model "
                                 f"({want_a} features per frame); encode again with this model's LTX-2 audio VAE")
            if t:
                widths.setdefault(int(t[-1]), i)
        for w, i in widths.items():
            self._probe_text(self.data.get(i), w, where)

    def _probe_text(self, item: LatentItem, width: int, where) -> None:
        """Run the model's text preparation (connectors only, no grad) on one cached caption of
        each width: a cache of another LTX-2 variant fails here with a message that says so."""
        from .cache import CacheError
        from .ltx2 import LTX2Config, prepare_text
        from .ltx2.forward import _compute_dtype

        ctx = item.text.get("context")
        if ctx is None:
            raise CacheError(f"sample {item.key} in {where}: the cached text conditioning has no 'context' tensor; "
                             "encode the captions again with the LTX-2 text encoder")
        try:
            c = LTX2Config.from_module(self.root)
            x = ctx[None].to(self.device)
            use_bf16 = self.cfg.mixed_precision == "bf16"
            with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_bf16):
                cd, plain = _compute_dtype(self.root, x, None)
                with torch.autocast(self.device.type, enabled=False) if plain else contextlib.nullcontext():
                    prepare_text(self.root, c, x, cd)
        except (ValueError, RuntimeError) as e:
            variant = getattr(locals().get("c"), "variant", "?")
            raise CacheError(f"the latent cache at {where} does not fit this model (LTX-2 {variant}): its text "
                             f"conditioning (sample {item.key}) is {width} wide and the model's text input "
                             f"refuses it ({type(e).__name__}: {str(e)[:200]}). The cache was encoded for another "
                             "LTX-2 variant: run Encode Latents again with this model's text encoder, or train "
                             "the model the cache was made for") from e

    def step_graph_blockers(self, lora: Optional[LoRASet] = None) -> list[str]:
        """Why this run cannot step as one CUDA graph (empty: it can)."""
        cfg, why = self.cfg, []
        if self.device.type != "cuda":
            why.append("it runs on the CPU" if self.device.type == "cpu" else f"it runs on {self.device.type}")
        if self.dist.active or self.dist.exact:
            why.append("it runs on several processes")
        if cfg.grad_accum != 1:
            why.append("it accumulates gradients over several micro-batches")
        if cfg.optimizer != "adamw":
            why.append(f"its optimizer is {cfg.optimizer}")
        if cfg.dropout > 0:
            why.append("its LoRA dropout would draw the same mask at every replay")
        if not getattr(self.predict, "whole_step_graphs", False):
            why.append("its forward cannot leave out its per-block graphs")
        plan = getattr(self.predict, "memory_plan", None)
        if plan is not None and (plan.streamed or any(m != "keep" for m in plan.modes)):
            why.append("its memory plan recomputes, offloads or streams blocks")
        elif plan is None and getattr(self.predict, "checkpointing", False):
            why.append("it recomputes blocks in backward")
        if lora is not None and any("embeddings_connector" in k for k in lora.adapters):
            why.append("its LoRA trains the text connectors (captions of each length would need their own graph)")
        return why

    def build_lora(self) -> tuple[LoRASet, str, list[str]]:
        """The run's adapters: from the init LoRA file when the settings name one (its modules,
        rank and alpha), else fresh ones on the settings' targets. Returns (lora, the init
        file's digest or "", notes)."""
        cfg = self.cfg
        if not cfg.init_lora:
            return LoRASet.for_model(self.root, cfg.lora_spec(), seed=cfg.seed), "", []
        from .lora import init_lora_from_file

        lora, digest, notes = init_lora_from_file(self.root, cfg.init_lora, dropout=cfg.dropout)
        return lora, digest, notes

    def sample_inputs(self, items: list[LatentItem], positions: list[int], step: int, micro: int, dtype) -> StepInputs:
        """One forward's inputs: each sample drawn from its own generator (seeded by its
        global position in the step's batch, see distributed.sample_generator), joined into
        a batch — so a sample is noised alike whichever rank computes it."""
        from .distributed import concat_samples, sample_generator

        empty = self.data.empty_text()
        config = self.model_config()
        return concat_samples(pad_batch_texts(
            [build_step_inputs([it], self.mode, self.cfg, sample_generator(self.cfg.seed, step, micro, j),
                               empty, self.device, dtype, config=config)
             for it, j in zip(items, positions)]))

    def train(self, resume_from: Optional[str | Path | LoadedCheckpoint] = None) -> TrainResult:
        from .distributed import RankFailure, dropout_seed, exact_reduce, flat_grads, set_grads
        from .flat import FlatAdamW, flat_fits, largest_weight
        from .step_graph import StepGraph, graph_optimizer, set_lr, tensor_lr

        cfg = self.cfg
        dist = self.dist
        torch.manual_seed(cfg.seed)
        for p in self.root.parameters():
            p.requires_grad_(False)
        self.check_data()
        lora, init_digest, notes = self.build_lora()
        for n in notes:
            self._emit("notice", {"message": n})
        lora = lora.to(self.device)
        params = [p for p in lora.parameters()]
        fingerprint = run_fingerprint(self.root, self.data, cfg, lora, self.batch_size, init_digest)
        self.fingerprint = fingerprint
        step, epoch, pos, history = 0, 0, 0, []
        if resume_from is not None:
            ck = resume_from if isinstance(resume_from, LoadedCheckpoint) else None
            if ck is None:
                tensors, meta = read_checkpoint(Path(resume_from))
                ck = LoadedCheckpoint(Path(resume_from), tensors, meta)
            for n in ck.notes:
                notes.append(n)
                self._emit("notice", {"message": n})
            for n in check_resume(ck, fingerprint, cfg):
                notes.append(n)
                self._emit("notice", {"message": n})
        graphed = False
        if self.step_graph:
            blockers = self.step_graph_blockers(lora)
            test_cpu = blockers == ["it runs on the CPU"] and self.step_graph == "cpu"  # (the tests' dry run)
            graphed = not blockers or test_cpu
            if not graphed:
                n = "the whole-step CUDA graph is off for this run: " + "; ".join(blockers)
                notes.append(n)
                self._emit("notice", {"message": n})
        if graphed:
            opt = graph_optimizer(params, cfg.learning_rate, cfg.betas, cfg.weight_decay, self.device)
        else:
            opt = make_optimizer(params, cfg)
        flatten = self.flat and not graphed and flat_fits(params, cfg.optimizer)  # one buffer after the first backward
        if resume_from is not None:
            try:
                lora.load_state_dict({k[5:]: v for k, v in ck.tensors.items() if k.startswith("lora.")})
                opt.load_state_dict(_unflatten_optimizer(ck.tensors, json.loads(ck.meta["optimizer"])))
                if graphed:
                    tensor_lr(opt, self.device)
            except (KeyError, RuntimeError, ValueError) as e:
                raise CheckpointError(f"cannot resume from {ck.path.name}: its LoRA or optimizer state does not fit "
                                      f"this run ({type(e).__name__}: {e}); give the LoRA a new name or set resume "
                                      "to none to start fresh", str(ck.path)) from e
            step, epoch, pos = int(ck.meta["step"]), int(ck.meta["epoch"]), int(ck.meta["pos"])
            history = json.loads(ck.meta["history"])
            self._emit("resumed", {"step": step, "checkpoint": str(ck.path)})
            del ck
        lora.attach(self.root)
        ckpts: list[str] = []
        use_bf16 = cfg.mixed_precision == "bf16"
        dtype = torch.float32
        batches = self._batches(epoch)
        t_last = time.perf_counter()
        acc_dtype = torch.float32 if self.device.type == "mps" else torch.float64  # (MPS has no float64)
        quiet = QuietGC()
        done = (step, epoch, pos)  # the state after the last finished step (what a cancel saves)
        pending: Optional[_Pending] = None  # a step queued whose numbers have not been read yet
        sg: Optional[StepGraph] = None
        if graphed:
            def graph_body(si) -> torch.Tensor:
                """The whole step on ``si`` (what the graph records): its numbers as one tensor."""
                opt.zero_grad(set_to_none=True)  # (a no-op but after a capture that failed part-way)
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    v_pred, a_pred = self.predict(self.root, si, block_graphs=False)
                lv, la = step_losses(si, v_pred, a_pred)
                zero = torch.zeros((), dtype=acc_dtype, device=self.device)
                sums = [lv.detach().sum().to(acc_dtype) if lv is not None else zero,
                        la.detach().sum().to(acc_dtype) if la is not None else zero]
                loss = ob.combine_losses(lv, la, cfg.audio_weight)
                loss.backward()
                gnorm = clip_and_step(opt, params, cfg.max_grad_norm)  # (gradients unset: a replay writes them afresh)
                with torch.no_grad():
                    wmax = largest_weight(params)
                    return torch.stack([loss.detach().to(acc_dtype), *sums, gnorm.to(acc_dtype), wmax.to(acc_dtype)])

            def watched() -> list:
                return ([*self.root.parameters(), *self.root.buffers(), *params]
                        + [v for st in opt.state.values() for v in st.values() if torch.is_tensor(v)]
                        + [g["lr"] for g in opt.param_groups if torch.is_tensor(g["lr"])])

            sg = StepGraph(graph_body, watched, capture=self.device.type == "cuda")
            self.step_graph_state = sg

        def settle() -> Optional[dict]:
            """Read the queued step's numbers and record it (NaN and divergence stop the run)."""
            nonlocal pending, done, t_last
            pk, pending = pending, None
            if pk is None:
                return None
            if pk.ready is not None:
                pk.ready.synchronize()
            loss_sum, v_sum, a_sum, gnorm_f, wmax_f = pk.host.tolist()
            if not math.isfinite(loss_sum):
                # found after the update (which is why the step reads back once): the LoRA in memory
                # is spoilt, the run stops, and it resumes from the last checkpoint on disk
                self._stop(pk.step - 1, "nan", lambda where: (
                    f"loss became {loss_sum} at step {pk.step}: training stopped. Likely causes: the "
                    f"learning rate ({cfg.learning_rate:g}) is too high, or a cached latent is corrupt; "
                    f"lower the learning rate or re-encode the cache, then resume from {where}"))
            quiet.tick()
            quiet.settle()  # the first step built what stays: out of the collector's way
            rec = {"step": pk.step, "loss": loss_sum, "lr": pk.lr, "s_per_step": pk.queued_at - t_last}
            t_last = pk.queued_at
            if pk.counts[0]:
                rec["loss_video"] = v_sum / pk.counts[0]
            if pk.counts[1]:
                rec["loss_audio"] = a_sum / pk.counts[1]
            rec["grad_norm"] = gnorm_f
            rec["lora_max"] = wmax_f
            history.append(rec)
            done = (pk.step, pk.epoch, pk.pos)
            self._check_divergence(history, pk.step)
            return rec

        def finish() -> None:
            """``settle`` and tell the progress callback."""
            rec = settle()
            if rec is not None and self.cb.on_step and dist.is_main:
                self.cb.on_step(dict(rec, steps=cfg.steps, smoothed=smoothed(history)))

        try:
            while step < cfg.steps:
                if dist.any(bool(self.cb.should_stop and self.cb.should_stop())):
                    finish()  # the last step's numbers and progress first: it is the one saved
                    raise _StopRequested()
                lr_now = cfg.learning_rate * lr_factor(step, cfg)
                set_lr(opt, lr_now)
                # the step's loss and per-stream loss sums stay on the device (float64, summed as
                # Python floats would be) until the optimizer step is queued: read back once, during
                # the next step (``pipelined``), so the GPU never waits on the CPU inside a step or
                # between two
                acc = torch.zeros(3, dtype=acc_dtype, device=self.device)  # loss, video sum, audio sum
                counts = [0, 0]  # video samples, audio samples
                per_micro = []  # exact reduction: this rank's per-sample flat gradients, per micro-batch
                had = [False] * len(params)  # which parameters got a gradient (on any rank, after the reduce)
                for micro in range(cfg.grad_accum):
                    if pos >= len(batches):
                        epoch, pos = epoch + 1, 0
                        batches = self._batches(epoch)
                    batch = batches[pos]  # the global batch: the same on every rank
                    pos += 1
                    n = len(batch)
                    mine = dist.share(n, self.batch_size) if dist.active else list(range(n))
                    groups = [[j] for j in mine] if dist.exact else ([mine] if mine else [])
                    leaves = []
                    for js in groups:
                        # sequence parallel: every rank runs the same batch, so the same LoRA dropout draws
                        torch.manual_seed(dropout_seed(cfg.seed, step, micro,
                                                       js[0] if dist.exact else (0 if dist.sp else dist.rank)))
                        with _phase("ltx2.data"):
                            items = [self.data.get(batch[j]) for j in js]
                        with _phase("ltx2.inputs"):
                            inputs = self.sample_inputs(items, js, step, micro, dtype)
                        if sg is not None:  # the whole step, one graph (one micro-batch, one process)
                            connect = getattr(self.predict, "connected_inputs", None)
                            if connect is not None:  # captions of any length: one shape after the connectors
                                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_bf16):
                                    inputs = connect(self.root, inputs)
                            video, audio = learned_streams(inputs)
                            counts[0] += len(js) if video else 0
                            counts[1] += len(js) if audio else 0
                            with _phase("ltx2.step_graph"):  # (the last step's numbers read just before)
                                graph_vals = sg.step(inputs, before=finish)
                            del items, inputs
                            continue
                        with _phase("ltx2.forward"), torch.autocast(self.device.type, dtype=torch.bfloat16,
                                                                     enabled=use_bf16):
                            v_pred, a_pred = self.predict(self.root, inputs)
                        lv, la = step_losses(inputs, v_pred, a_pred)  # per sample [B], the mode's masked MSE
                        if lv is not None:
                            acc[1] += lv.detach().sum().to(acc_dtype)
                            counts[0] += lv.numel()
                        if la is not None:
                            acc[2] += la.detach().sum().to(acc_dtype)
                            counts[1] += la.numel()
                        # this share's part of the global batch mean (× 1 for a whole batch)
                        loss = ob.combine_losses(lv, la, cfg.audio_weight) * (len(js) / n) / cfg.grad_accum
                        with _phase("ltx2.backward"):
                            loss.backward()
                        acc[0] += loss.detach().to(acc_dtype)
                        if dist.active or dist.exact:
                            had = [h or p.grad is not None for h, p in zip(had, params)]
                        if dist.exact:
                            leaves.append(flat_grads(params))
                            for p in params:
                                p.grad = None
                        del items, inputs, v_pred, a_pred, lv, la, loss
                    per_micro.append(leaves)
                # the last step's numbers, read while this step's forward and backward are queued
                # (before its optimizer step, so a stop there saves the LoRA of the step it names)
                finish()
                if sg is not None:
                    for n in sg.notes:
                        notes.append(n)
                        self._emit("notice", {"message": n})
                    sg.notes.clear()
                    with torch.no_grad():
                        host = graph_vals.to("cpu", non_blocking=graph_vals.is_cuda)
                        ready = None
                        if graph_vals.is_cuda:
                            ready = torch.cuda.Event()
                            ready.record()
                    del graph_vals
                else:  # the plain step: reduce across ranks, then the optimizer
                    if dist.active and not dist.sp:  # (sequence parallel: every rank computed the same loss)
                        tot = dist.all_reduce_sum(torch.tensor([*acc.tolist(), *counts, *map(float, had)],
                                                               dtype=torch.float64)).tolist()
                        acc, counts = torch.tensor(tot[:3], dtype=acc_dtype), tot[3:5]
                        had = [v > 0 for v in tot[5:]]
                    if dist.exact:
                        size = sum(p.numel() for p in params)
                        set_grads(params, exact_reduce(dist, per_micro, self.batch_size // dist.world, size,
                                                       params[0].device), had)
                    elif dist.active and dist.sp:
                        # sequence parallel: each rank's gradient is world × its share (trainer_core.distributed)
                        set_grads(params, dist.all_reduce_sum(flat_grads(params)) / dist.world, had)
                    elif dist.active:
                        set_grads(params, dist.all_reduce_sum(flat_grads(params)), had)
                    del per_micro
                    if flatten:
                        flatten = False
                        opt = FlatAdamW.adopt(opt, params) or opt
                    flat = isinstance(opt, FlatAdamW)
                    with _phase("ltx2.optimizer"):
                        grads = opt.grad_tensors() if flat else params  # (flat: gathered into the buffer)
                        gnorm = clip_and_step(opt, grads, cfg.max_grad_norm)
                    with torch.no_grad(), _phase("ltx2.readback"):
                        wmax = opt.largest() if flat else largest_weight(params)
                        # the one read-back of the step, queued: copied to host memory behind the
                        # optimizer step and read before the next step's optimizer step (or now, below)
                        vals = torch.cat([acc.to(wmax.device),
                                          torch.stack([gnorm.to(wmax.device, acc_dtype), wmax.to(acc_dtype)])])
                        host = vals.to("cpu", non_blocking=vals.is_cuda)
                        ready = None
                        if vals.is_cuda:
                            ready = torch.cuda.Event()
                            ready.record()
                step += 1
                pending = _Pending(step, epoch, pos, lr_now, list(counts), host, ready,
                                   time.perf_counter())
                validate_now = bool(self.cb.on_validate and dist.is_main and self.cb.validate_every > 0
                                    and step % self.cb.validate_every == 0)
                save_now = cfg.checkpoint_every > 0 and step % cfg.checkpoint_every == 0 and step < cfg.steps
                if not self.pipelined or validate_now or save_now or step >= cfg.steps:
                    finish()  # these need the LoRA of this step: no later step queued before them
                if validate_now:
                    if sg is not None:
                        sg.drop()  # its memory to the previews (the next step captures again)
                    self.cb.on_validate(step, opt)
                    quiet.tick(full=True)  # what sampling left in cycles (GPU tensors too) goes now
                if save_now:
                    self._checkpoint(lora, opt, step, epoch, pos, history, ckpts)
            # the end is a checkpoint too: queue again with more steps to continue
            if not ckpts or not ckpts[-1].endswith(f"step_{step:06d}.safetensors"):
                self._checkpoint(lora, opt, step, epoch, pos, history, ckpts)
            p = plateau(history)
            if p:
                notes.append(p)
                self._emit("plateau", {"message": p})
        except TrainingStopped:
            raise
        except RankFailure as e:
            # another rank died (or hangs): the lowest surviving rank saves the last finished
            # step — the LoRA and optimizer are the same on every rank — and every survivor stops
            settle()
            opt.zero_grad(set_to_none=True)
            _drop_frames(e)
            s, ep, ps = done
            alive = [r for r in range(dist.world) if r not in e.dead]
            saver = alive[0] if alive else dist.rank
            ck = self._checkpoint(lora, opt, s, ep, ps, history[:s], ckpts, write=dist.rank == saver)
            who = ", ".join(f"rank {r}" for r in e.dead) or "a rank that stopped answering"
            msg = (f"{who} of {dist.world} failed at step {s + 1}: training stopped on every rank, checkpoint of step "
                   f"{s} saved ({Path(ck).name}) — run the same command again to resume, on as many processes or "
                   f"fewer at the same global batch ({self.batch_size}). [{e}]")
            err = TrainingStopped(msg, s, ck, reason="rank_failed")
            err.saved_here = dist.rank == saver
            raise err from None
        except BaseException as e:
            stop = isinstance(e, (_StopRequested, KeyboardInterrupt)) or bool(self.cb.is_interrupt and self.cb.is_interrupt(e))
            if not stop and not (self.cb.should_stop and _safe_call(self.cb.should_stop)):
                raise
            settle()  # a step whose numbers were still on their way is finished: it is saved
            # cancelled: drop what the unfinished step built (its activations live in the
            # exception's frames), save the last finished step, and say how to go on
            opt.zero_grad(set_to_none=True)
            _drop_frames(e)
            s, ep, ps = done
            ck = self._checkpoint(lora, opt, s, ep, ps, history[:s], ckpts)
            msg = (f"cancelled at step {s} of {cfg.steps}, checkpoint saved ({Path(ck).name}) — queue again with "
                   "resume = latest to continue")
            self._emit("cancelled", {"step": s, "path": ck, "message": msg})
            err = TrainingStopped(msg, s, ck, reason="cancelled")
            err.interrupt = None if isinstance(e, _StopRequested) else e
            raise err from None
        finally:
            quiet.release()
            if sg is not None:
                sg.drop()
            lora.detach()
            if isinstance(opt, FlatAdamW):
                opt.zero_grad()  # (its gradient buffer goes with the gradients)
        return TrainResult(lora=lora, history=history, steps_done=step, checkpoints=ckpts, notes=notes)

    def _checkpoint(self, lora, opt, step, epoch, pos, history, ckpts, write: Optional[bool] = None) -> str:
        """Save (rank 0 only, unless ``write`` says otherwise: every rank holds the same state)."""
        path = self.run_dir / "checkpoints" / f"step_{step:06d}.safetensors"
        ckpts.append(str(path))
        if not (self.dist.is_main if write is None else write):
            return str(path)
        save_checkpoint(path, lora, opt, step, epoch, pos, self.cfg, history, getattr(self, "fingerprint", None))
        existing = list_checkpoints(self.run_dir)
        for old in existing[:-max(1, self.cfg.keep_checkpoints)]:
            old.unlink(missing_ok=True)
        self._emit("checkpoint", {"step": step, "path": str(path)})
        return str(path)

    def _checkpoint_if_any(self) -> Optional[str]:
        existing = list_checkpoints(self.run_dir)
        return str(existing[-1]) if existing else None

    def _stop(self, step: int, reason: str, message: Callable[[str], str]) -> NoReturn:
        """Stop a run that went wrong: it resumes from the last checkpoint on disk, which
        ``message`` is given the name of ("the start" when there is none)."""
        ck = self._checkpoint_if_any()
        raise TrainingStopped(message(ck or "the start"), step, ck, reason=reason)

    # LoRA weights beyond this are runaway (Adam moves each weight by about the learning rate
    # per step: a healthy run stays within a few units)
    MAX_LORA_WEIGHT = 50.0

    def _check_divergence(self, history, step) -> None:
        cfg = self.cfg
        h = history[-1]
        if cfg.divergence_factor <= 0:
            return
        if not math.isfinite(h["lora_max"]) or h["lora_max"] > self.MAX_LORA_WEIGHT:
            self._stop(step, "diverged", lambda where: (
                f"LoRA weights ran away at step {step}: the largest is {h['lora_max']:.4g} (healthy runs stay under "
                f"a few units). The learning rate ({cfg.learning_rate:g}) is far too high; lower it (1e-4 is "
                f"typical) and resume from {where}"))
        norms = [x.get("grad_norm") for x in history]
        if len(norms) >= 4 and all(v is not None for v in norms[-3:]):
            ref = max(v for v in norms[:-3] if v is not None) if any(v is not None for v in norms[:-3]) else 0.0
            if ref > 0 and all(v <= 1e-7 * ref for v in norms[-3:]):
                self._stop(step, "diverged", lambda where: (
                    f"the gradient vanished at step {step}: its norm fell from {ref:.3g} to {norms[-1]:.3g} for three "
                    f"steps, so training no longer changes the LoRA. Usually the learning rate "
                    f"({cfg.learning_rate:g}) was too high and the model saturated; lower it and resume from "
                    f"{where}"))
        n = len(history)
        if n < 8:
            return
        # the baseline: the early median, or the first three steps' (the LoRA starts as a no-op,
        # so they are the base model's loss) when the run blew up right away
        early = sorted(x["loss"] for x in history[: max(10, n // 5)])
        first = sorted(x["loss"] for x in history[:3])[1]
        base = min(early[len(early) // 2], first)
        recent = sorted(x["loss"] for x in history[-5:])[2]
        if base > 0 and recent > cfg.divergence_factor * base:
            self._stop(step, "diverged", lambda where: (
                f"loss diverged at step {step}: {recent:.4g} is over {cfg.divergence_factor:g}× the early "
                f"median {base:.4g}. Likely cause: the learning rate ({cfg.learning_rate:g}) is too high "
                f"for rank {cfg.rank}; lower it (e.g. halve it) and resume from {where}"))


class _StopRequested(Exception):
    """The host asked to stop (should_stop): handled like an interrupt."""


def _safe_call(fn) -> bool:
    try:
        return bool(fn())
    except BaseException:
        return False


def _drop_frames(e: BaseException) -> None:
    """Let go of the frames an exception holds (and with them the tensors of an unfinished step)."""
    import traceback

    tb = e.__traceback__
    if tb is not None:
        try:
            traceback.clear_frames(tb)
        except Exception:
            pass
    e.__traceback__ = None
    gc.collect()


def smoothed(history: list[dict], beta: float = 0.9) -> float:
    s, w = 0.0, 0.0
    for h in history:
        s = beta * s + (1 - beta) * h["loss"]
        w = beta * w + (1 - beta)
    return s / w if w else float("nan")


def plateau(history: list[dict], window: float = 0.3, min_steps: int = 50, tol: float = 0.01) -> Optional[str]:
    """A note when the loss of the last ``window`` of the run is no lower than before it."""
    n = len(history)
    if n < min_steps:
        return None
    k = max(5, int(n * window))
    before = sum(h["loss"] for h in history[-2 * k:-k]) / k
    last = sum(h["loss"] for h in history[-k:]) / k
    if last > before * (1 - tol):
        return (f"the loss plateaued over the last {k} steps ({before:.4g} -> {last:.4g}); more steps are "
                "unlikely to help — compare the validation samples and pick the best checkpoint")
    return None
