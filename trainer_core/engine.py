"""The training loop: LoRA on a frozen LTX-2 transformer over cached latents.

The engine knows nothing of ComfyUI. It is given
- ``root``: the transformer's module tree (ComfyUI's ``diffusion_model`` or our plain tree),
- ``predict(root, inputs) -> (video_pred, audio_pred)``: the training forward,
- a ``LatentSource`` (cached samples),
- a ``TrainConfig``, a run folder, and callbacks for progress, events and interrupts.

Repeatability: every random draw of step ``k`` comes from generators seeded by
``(seed, k)`` (noise, σ, caption dropout, first-frame draws, LoRA dropout) and the data
order of epoch ``e`` from ``(seed, e)``. A checkpoint therefore holds the LoRA, the optimizer,
the scheduler, the step, the seed and the data order, and a run resumed from step k ends
with the same LoRA, bit for bit on CPU, as one that never stopped.
"""
from __future__ import annotations

import contextlib
import gc
import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

import torch

from . import objective as ob
from .fsutil import atomic_path
from .lora import LoRASet, LoRASpec, split_patterns


class TrainingStopped(RuntimeError):
    """Raised when training ends early: cancelled, NaN, divergence."""

    def __init__(self, message: str, step: int, checkpoint: Optional[str] = None, reason: str = "stopped"):
        super().__init__(message)
        self.step, self.checkpoint, self.reason = step, checkpoint, reason


@dataclass
class TrainConfig:
    steps: int = 2000
    learning_rate: float = 1e-4
    rank: int = 32
    alpha: float = 32.0
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
    mode: str = "text_to_audio_video"
    first_frame_prob: float = 0.5
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
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        return cls(**d)


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


class LatentSource(Protocol):
    def __len__(self) -> int: ...

    def get(self, index: int) -> LatentItem: ...

    def bucket_of(self, index: int) -> str: ...

    def empty_text(self) -> dict[str, torch.Tensor]: ...


@dataclass
class ModalityInput:
    tokens: torch.Tensor  # [B, N, C] noised tokens
    sigma: torch.Tensor  # [B, N]
    noised: ob.Noised
    grid: tuple  # video: (F', H', W'); audio: (T,)


@dataclass
class StepInputs:
    video: Optional[ModalityInput]
    audio: Optional[ModalityInput]
    text: dict[str, torch.Tensor]
    fps: float
    mode: ob.Mode


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


def build_step_inputs(items: list[LatentItem], mode: ob.Mode, cfg: TrainConfig, gen: torch.Generator,
                      empty_text: Optional[dict], device, dtype) -> StepInputs:
    """Stack a same-bucket batch, noise it per the mode, apply caption dropout."""
    B = len(items)
    vid = aud = None
    if mode.needs_video:
        missing = [it.key for it in items if it.video is None]
        if missing:
            raise ValueError(f"{missing[0]} has no video latents; mode {mode.name} needs video")
        x = torch.stack([it.video for it in items]).to(device)
        _, _, F, H, W = x.shape
        x0 = video_to_tokens(x).to(dtype)
        cond = None
        if mode.video == ob.GENERATED and mode.first_frame_prob > 0:
            cond = ob.first_frame_mask(B, F, H, W, mode.first_frame_prob, gen, device=device)
        n = ob.noise_modality(x0, mode.video, gen, cfg.sigma_sampler, cond_tokens=cond)
        vid = ModalityInput(n.x_t, n.sigma, n, (F, H, W))
    if mode.needs_audio:
        missing = [it.key for it in items if it.audio is None]
        if missing:
            raise ValueError(f"{missing[0]} has no audio latents; mode {mode.name} needs audio — "
                             "mute training (video_only) or drop clips without sound")
        a = torch.stack([it.audio for it in items]).to(device)
        a0 = audio_to_tokens(a).to(dtype)
        n = ob.noise_modality(a0, mode.audio, gen, cfg.sigma_sampler)
        aud = ModalityInput(n.x_t, n.sigma, n, (a.shape[2],))
    texts = []
    for it in items:
        drop = cfg.caption_dropout > 0 and torch.rand((), generator=gen, device=gen.device).item() < cfg.caption_dropout
        texts.append(empty_text if (drop and empty_text is not None) else it.text)
    text = {k: torch.stack([t[k] for t in texts]).to(device) for k in texts[0]}
    return StepInputs(vid, aud, text, items[0].fps, mode)


# ----------------------------------------------------------------------------- optim

def make_optimizer(params, cfg: TrainConfig):
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.learning_rate, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
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
            tensors[name] = obj.detach().cpu().contiguous()
            return {"__tensor__": name}
        if isinstance(obj, dict):
            return {"__dict__": [[walk(k, f"{name}.k{i}"), walk(v, f"{name}.{i}")] for i, (k, v) in enumerate(obj.items())]}
        if isinstance(obj, (list, tuple)):
            return {"__list__": [walk(v, f"{name}.{i}") for i, v in enumerate(obj)], "tuple": isinstance(obj, tuple)}
        return obj

    return tensors, walk(opt.state_dict(), "opt")


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


def save_checkpoint(path: Path, lora: LoRASet, opt, step: int, epoch: int, pos: int, cfg: TrainConfig,
                    history: list[dict]) -> None:
    from safetensors.torch import save_file

    tensors = {f"lora.{k}": v.detach().cpu().contiguous() for k, v in lora.state_dict().items()}
    ot, ometa = _flatten_optimizer(opt)
    tensors.update(ot)
    meta = {"format": "ltx2-train-checkpoint", "step": str(step), "epoch": str(epoch), "pos": str(pos),
            "config": json.dumps(cfg.to_dict()), "optimizer": json.dumps(ometa),
            "history": json.dumps(history), "lora_names": json.dumps(lora.names)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != "ltx2-train-checkpoint":
            raise ValueError(f"{path} is not a training checkpoint of this pack")
        return {k: f.get_tensor(k) for k in f.keys()}, meta


def list_checkpoints(run_dir: Path) -> list[Path]:
    return sorted((Path(run_dir) / "checkpoints").glob("step_*.safetensors"))


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


@dataclass
class TrainResult:
    lora: LoRASet
    history: list[dict]
    steps_done: int
    checkpoints: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


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
    Does nothing when the collector is already off or something else has frozen objects
    (then that owner decides).
    """

    def __init__(self, full_every: int = 100):
        self.active = False
        self.full_every = max(1, int(full_every))
        self.ticks = 0

    def settle(self) -> None:
        if self.active or not gc.isenabled() or gc.get_freeze_count():
            return
        gc.collect()
        gc.freeze()
        gc.disable()
        self.active = True

    def tick(self, full: bool = False) -> None:
        if self.active:
            self.ticks += 1
            gc.collect(2 if full or self.ticks % self.full_every == 0 else 1)

    def release(self) -> None:
        if self.active:
            gc.enable()
            gc.unfreeze()
            self.active = False


class Trainer:
    def __init__(self, root: torch.nn.Module, predict: Callable, data: LatentSource, cfg: TrainConfig,
                 run_dir: str | Path, device: torch.device | str = "cpu", callbacks: Optional[Callbacks] = None,
                 batch_size: int = 1):
        self.root, self.predict, self.data, self.cfg = root, predict, data, cfg
        self.run_dir = Path(run_dir)
        self.device = torch.device(device)
        self.cb = callbacks or Callbacks()
        self.batch_size = batch_size
        self.mode = ob.get_mode(cfg.mode, first_frame_prob=cfg.first_frame_prob)
        if len(data) == 0:
            raise ValueError("the latent cache is empty: nothing to train on")
        self.buckets = self._group_by_bucket()

    def _group_by_bucket(self) -> dict[str, list[int]]:
        groups: dict[str, list[int]] = {}
        for i in range(len(self.data)):
            groups.setdefault(self.data.bucket_of(i), []).append(i)
        return groups

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
        if self.cb.on_event:
            self.cb.on_event(name, payload)

    def train(self, resume_from: Optional[str | Path] = None) -> TrainResult:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        for p in self.root.parameters():
            p.requires_grad_(False)
        lora = LoRASet.for_model(self.root, cfg.lora_spec(), seed=cfg.seed).to(self.device)
        params = [p for p in lora.parameters()]
        opt = make_optimizer(params, cfg)
        step, epoch, pos, history = 0, 0, 0, []
        if resume_from:
            tensors, meta = read_checkpoint(Path(resume_from))
            saved = TrainConfig.from_dict(json.loads(meta["config"]))
            for k in ("rank", "alpha", "targets", "target_patterns", "seed", "mode"):
                if getattr(saved, k) != getattr(cfg, k):
                    raise ValueError(f"cannot resume: the checkpoint was trained with {k}={getattr(saved, k)!r}, "
                                     f"this run asks {getattr(cfg, k)!r}")
            lora.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("lora.")})
            opt.load_state_dict(_unflatten_optimizer(tensors, json.loads(meta["optimizer"])))
            step, epoch, pos = int(meta["step"]), int(meta["epoch"]), int(meta["pos"])
            history = json.loads(meta["history"])
            self._emit("resumed", {"step": step, "checkpoint": str(resume_from)})
        lora.attach(self.root)
        ckpts: list[str] = []
        notes: list[str] = []
        use_bf16 = cfg.mixed_precision == "bf16"
        dtype = torch.float32
        batches = self._batches(epoch)
        t_last = time.perf_counter()
        quiet = QuietGC()
        try:
            while step < cfg.steps:
                if self.cb.should_stop and self.cb.should_stop():
                    ck = self._checkpoint(lora, opt, step, epoch, pos, history, ckpts)
                    raise TrainingStopped(f"training cancelled at step {step}; checkpoint saved to {ck}",
                                          step, ck, reason="cancelled")
                for g in opt.param_groups:
                    g["lr"] = cfg.learning_rate * lr_factor(step, cfg)
                loss_sum = 0.0
                parts_v, parts_a = [], []
                for micro in range(cfg.grad_accum):
                    if pos >= len(batches):
                        epoch, pos = epoch + 1, 0
                        batches = self._batches(epoch)
                    batch = batches[pos]
                    pos += 1
                    gen = torch.Generator().manual_seed(_mix(cfg.seed, step, micro))
                    torch.manual_seed(_mix(cfg.seed, step, micro, 1))  # LoRA dropout
                    items = [self.data.get(i) for i in batch]
                    inputs = build_step_inputs(items, self.mode, cfg, gen, self.data.empty_text(), self.device, dtype)
                    with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_bf16):
                        v_pred, a_pred = self.predict(self.root, inputs)
                    lv = la = None
                    if inputs.video is not None and inputs.video.noised.target is not None:
                        lv = ob.masked_mse(v_pred, inputs.video.noised.target, inputs.video.noised.loss_mask)
                        parts_v.append(lv.mean().item())
                    if inputs.audio is not None and inputs.audio.noised.target is not None:
                        la = ob.masked_mse(a_pred, inputs.audio.noised.target, inputs.audio.noised.loss_mask)
                        parts_a.append(la.mean().item())
                    loss = ob.combine_losses(lv, la, cfg.audio_weight) / cfg.grad_accum
                    loss.backward()
                    loss_sum += loss.item()
                if not math.isfinite(loss_sum):
                    ck = self._checkpoint_if_any(ckpts)
                    raise TrainingStopped(
                        f"loss became {loss_sum} at step {step + 1}: training stopped. Likely causes: the "
                        f"learning rate ({cfg.learning_rate:g}) is too high, or a cached latent is corrupt; "
                        f"lower the learning rate or re-encode the cache, then resume from {ck or 'the start'}",
                        step, ck, reason="nan")
                gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm) if cfg.max_grad_norm > 0 else None
                opt.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                quiet.tick()
                quiet.settle()  # the first step built what stays: out of the collector's way
                now = time.perf_counter()
                rec = {"step": step, "loss": loss_sum, "lr": opt.param_groups[0]["lr"],
                       "s_per_step": now - t_last}
                t_last = now
                if parts_v:
                    rec["loss_video"] = sum(parts_v) / len(parts_v)
                if parts_a:
                    rec["loss_audio"] = sum(parts_a) / len(parts_a)
                if gnorm is not None:
                    rec["grad_norm"] = float(gnorm)
                history.append(rec)
                self._check_divergence(history, step, ckpts)
                if self.cb.on_step:
                    self.cb.on_step(dict(rec, steps=cfg.steps, smoothed=smoothed(history)))
                if self.cb.on_validate and self.cb.validate_every > 0 and step % self.cb.validate_every == 0:
                    self.cb.on_validate(step, opt)
                    quiet.tick(full=True)  # what sampling left in cycles (GPU tensors too) goes now
                if cfg.checkpoint_every > 0 and step % cfg.checkpoint_every == 0 and step < cfg.steps:
                    self._checkpoint(lora, opt, step, epoch, pos, history, ckpts)
            p = plateau(history)
            if p:
                notes.append(p)
                self._emit("plateau", {"message": p})
        finally:
            quiet.release()
            lora.detach()
        return TrainResult(lora=lora, history=history, steps_done=step, checkpoints=ckpts, notes=notes)

    def _checkpoint(self, lora, opt, step, epoch, pos, history, ckpts) -> str:
        path = self.run_dir / "checkpoints" / f"step_{step:06d}.safetensors"
        save_checkpoint(path, lora, opt, step, epoch, pos, self.cfg, history)
        ckpts.append(str(path))
        existing = list_checkpoints(self.run_dir)
        for old in existing[:-max(1, self.cfg.keep_checkpoints)]:
            old.unlink(missing_ok=True)
        self._emit("checkpoint", {"step": step, "path": str(path)})
        return str(path)

    def _checkpoint_if_any(self, ckpts) -> Optional[str]:
        existing = list_checkpoints(self.run_dir)
        return str(existing[-1]) if existing else None

    def _check_divergence(self, history, step, ckpts) -> None:
        n = len(history)
        if n < 20 or self.cfg.divergence_factor <= 0:
            return
        early = sorted(h["loss"] for h in history[: max(10, n // 5)])
        base = early[len(early) // 2]
        recent = sorted(h["loss"] for h in history[-5:])[2]
        if base > 0 and recent > self.cfg.divergence_factor * base:
            ck = self._checkpoint_if_any(ckpts)
            raise TrainingStopped(
                f"loss diverged at step {step}: {recent:.4g} is over {self.cfg.divergence_factor:g}× the early "
                f"median {base:.4g}. Likely cause: the learning rate ({self.cfg.learning_rate:g}) is too high "
                f"for rank {self.cfg.rank}; lower it (e.g. halve it) and resume from {ck or 'the start'}",
                step, ck, reason="diverged")


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
