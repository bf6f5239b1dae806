"""Every training mode of Lightricks' ltx-trainer, as data.

A mode says, for each modality (video, audio), whether it is *generated* (noised, learned) or
*frozen* (clean, σ = 0, no loss: cross-modal conditioning) or absent (None), plus a list of
composable conditions — the official ``flexible`` strategy's configuration
(ltx-trainer ``training_strategies/flexible.py``, docs ``training-modes.md``) without its
directory plumbing:

- ``first_frame``   video: latent frame 0 clean (image→video)
- ``prefix`` / ``suffix``  the first / last ``frames`` latent frames (video) or latent steps
  (audio) clean (extension forward / backward)
- ``mask``          per-sample masks on the latent grid, > 0.5 = conditioning (inpainting)
- ``spatial_crop``  video: a pixel rectangle (y1, x1, y2, x2), mapped onto the latent grid
  (floor division by the VAE's spatial factor, clamped), clean in every frame (outpainting)
- ``reference``     IC-LoRA: clean reference latents put in front of the target sequence,
  σ = 0, no loss, with their own RoPE positions (downscaled references: positions scaled up by
  the spatial factor, time shifted so the last frames align, as the official strategy does)

Every intrinsic condition has a probability drawn per sample; a reference's is drawn once per
batch (it changes the sequence length). Conditioning tokens get σ = 0 and no loss. All random
draws go through one ``torch.Generator`` in the official strategy's order (per modality: σ,
ε, then each intrinsic condition's per-sample draw, then each reference's batch draw).

``draw`` makes the random numbers, ``build`` turns (clean latents, draws, masks, references)
into model inputs deterministically — so a test can feed the official strategy's own draws.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch

from . import objective as ob

GENERATED, FROZEN = "generated", "frozen"
KINDS = ("first_frame", "prefix", "suffix", "mask", "spatial_crop", "reference")
VIDEO_ONLY_KINDS = ("first_frame", "spatial_crop")


@dataclass(frozen=True)
class Condition:
    kind: str
    probability: float = 1.0
    frames: int = 0  # prefix / suffix: latent frames (video) or latent steps (audio)
    region: Optional[tuple] = None  # spatial_crop: (y1, x1, y2, x2) in pixels

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown condition {self.kind!r}; choose one of {', '.join(KINDS)}")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"condition {self.kind}: probability {self.probability} is not in [0, 1]")
        if self.kind in ("prefix", "suffix") and self.frames < 1:
            raise ValueError(f"condition {self.kind}: frames (the temporal boundary) must be ≥ 1")
        if self.kind == "spatial_crop" and (self.region is None or len(self.region) != 4):
            raise ValueError("condition spatial_crop needs region=(y1, x1, y2, x2) in pixels")

    @property
    def intrinsic(self) -> bool:
        return self.kind != "reference"


@dataclass(frozen=True)
class Stream:
    role: str = GENERATED
    conditions: tuple = ()

    def __post_init__(self):
        if self.role not in (GENERATED, FROZEN):
            raise ValueError(f"modality role {self.role!r}: generated or frozen")

    def has(self, kind: str) -> bool:
        return any(c.kind == kind for c in self.conditions)


@dataclass(frozen=True)
class TrainingMode:
    name: str
    video: Optional[Stream]
    audio: Optional[Stream]
    description: str = ""

    def __post_init__(self):
        if not any(s is not None and s.role == GENERATED for s in (self.video, self.audio)):
            raise ValueError(f"mode {self.name}: at least one modality must be generated")
        if self.audio is not None:
            for c in self.audio.conditions:
                if c.kind in VIDEO_ONLY_KINDS:
                    raise ValueError(f"mode {self.name}: {c.kind} is video-only "
                                     "(audio takes prefix, suffix, mask, reference)")

    @property
    def needs_video(self) -> bool:
        return self.video is not None

    @property
    def needs_audio(self) -> bool:
        return self.audio is not None

    def needs(self, modality: str, kind: str) -> bool:
        s = getattr(self, modality)
        return s is not None and s.has(kind)


def _m(name, video, audio, description):
    return TrainingMode(name, video, audio, description)


G, F_ = Stream(GENERATED), Stream(FROZEN)

# The 13 modes of ltx-trainer's docs/training-modes.md (their example configs' defaults), then
# the pack's own names kept for settings files and workflows.
PRESETS: dict[str, TrainingMode] = {m.name: m for m in [
    _m("t2v", G, G, "text → video + audio: learns to generate both from the prompt"),
    _m("i2v", Stream(GENERATED, (Condition("first_frame", 0.5),)), G,
       "image → video: learns to continue a given first frame (half the steps; the rest text → video)"),
    _m("video_extension", Stream(GENERATED, (Condition("prefix", 1.0, frames=8),)), G,
       "extend a clip forward: learns to continue its first latent frames"),
    _m("video_extension_backward", Stream(GENERATED, (Condition("suffix", 1.0, frames=8),)), G,
       "extend a clip backward: learns what leads up to its last latent frames"),
    _m("v2v_ic_lora", Stream(GENERATED, (Condition("reference"), Condition("first_frame", 0.2))), None,
       "IC-LoRA video → video: learns a transformation from paired reference clips (depth, pose, style …)"),
    _m("a2v", G, F_, "audio → video: learns video that fits a given soundtrack"),
    _m("v2a", F_, G, "video → audio (Foley): learns the sound of a given video"),
    _m("video_inpainting", Stream(GENERATED, (Condition("mask"),)), None,
       "video inpainting: learns to fill the masked regions (mask ≤ 0.5) of each clip"),
    _m("video_outpainting", Stream(GENERATED, (Condition("spatial_crop", region=(0, 0, 288, 576)),)), None,
       "video outpainting: learns to extend a kept pixel rectangle to the whole frame"),
    _m("t2a", None, G, "text → audio: learns sound alone from the prompt"),
    _m("audio_extension", None, Stream(GENERATED, (Condition("prefix", 1.0, frames=8),)),
       "extend audio: learns to continue its first latent steps"),
    _m("audio_inpainting", None, Stream(GENERATED, (Condition("mask"),)),
       "audio inpainting: learns to fill the masked stretches of each clip's audio"),
    _m("a2a_ic_lora", None, Stream(GENERATED, (Condition("reference"),)),
       "IC-LoRA audio → audio: learns a transformation from paired reference audio (voice, style …)"),
    _m("av2av_ic_lora", Stream(GENERATED, (Condition("reference"),)), Stream(GENERATED, (Condition("reference"),)),
       "IC-LoRA audio+video → audio+video: learns a joint transformation from paired reference clips"),
]}
# the 13 rows of the official docs' quick-reference table (video_extension_backward is the
# suffix form of its "Video Extension" row; video_only is the pack's own)
OFFICIAL = ("t2v", "i2v", "video_extension", "v2v_ic_lora", "a2v", "v2a", "video_inpainting", "video_outpainting",
            "t2a", "audio_extension", "audio_inpainting", "a2a_ic_lora", "av2av_ic_lora")
# the pack's first six names (trainer_core.objective.MODES), stored in settings.yaml files
LEGACY = {
    "text_to_audio_video": "t2v",
    "image_to_video": "i2v",
    "audio_to_video": "a2v",
    "video_to_audio": "v2a",
    "audio_only": "t2a",
}
PRESETS["video_only"] = _m("video_only", G, None, "text → video, silent: learns video alone from the prompt")


def get(name: str) -> TrainingMode:
    """A preset by its official short name (t2v, i2v, …) or the pack's older names."""
    key = LEGACY.get(name, name)
    if key not in PRESETS:
        raise ValueError(f"unknown training mode {name!r}; choose one of {', '.join(list(PRESETS) + list(LEGACY))}")
    return PRESETS[key]


def from_objective(m: "ob.Mode") -> TrainingMode:
    """The same mode from trainer_core.objective's Mode (what the engine holds today)."""
    def s(role, conds=()):
        return None if role == ob.ABSENT else Stream(GENERATED if role == ob.GENERATED else FROZEN, conds)
    vc = (Condition("first_frame", m.first_frame_prob),) if m.first_frame_prob > 0 else ()
    desc = get(m.name).description if m.name in LEGACY or m.name in PRESETS else ""
    return TrainingMode(m.name, s(m.video, vc), s(m.audio), desc)


def parse_conditions(text: str, mode: TrainingMode) -> dict:
    """The composition a user writes, e.g. ``reference + first_frame@0.2`` or
    ``prefix:4@0.5 + suffix:4@0.5`` or ``audio.prefix:8`` or ``spatial_crop[0,0,256,512]``:
    conditions joined by ``+``; ``video.``/``audio.`` picks the modality (default video when
    the mode has video, else audio); ``:N`` a prefix/suffix boundary in latent frames
    (default 8), ``@p`` the probability (default 1), ``[y1,x1,y2,x2]`` a spatial crop in
    pixels. Returns {"video": (Condition, …), "audio": (…)} for the modalities named."""
    import re

    out: dict[str, list] = {}
    for raw in text.replace(",", " , ").split("+"):
        tok = "".join(raw.split()).replace(",", ",")
        if not tok:
            continue
        m = re.fullmatch(r"(?:(video|audio)\.)?([a-z_]+)(?::(\d+))?(?:\[([\d,]+)\])?(?:@([0-9.]+))?", tok)
        if m is None:
            raise ValueError(f"conditions: cannot read {raw.strip()!r}; write e.g. 'reference + first_frame@0.2', "
                             "'prefix:8', 'audio.mask', 'spatial_crop[0,0,256,512]'")
        key, kind, frames, region, prob = m.groups()
        key = key or ("video" if mode.video is not None else "audio")
        if kind not in KINDS:
            raise ValueError(f"conditions: unknown condition {kind!r}; choose from {', '.join(KINDS)}")
        if getattr(mode, key) is None:
            raise ValueError(f"conditions: {key}.{kind} — mode {mode.name} has no {key}")
        reg = tuple(int(v) for v in region.split(",")) if region else None
        if kind == "spatial_crop" and reg is None:
            reg = next((c.region for c in (mode.video.conditions if mode.video else ()) if c.kind == kind),
                       (0, 0, 288, 576))
        out.setdefault(key, []).append(Condition(kind, float(prob) if prob else 1.0,
                                                 frames=int(frames) if frames else (8 if kind in ("prefix", "suffix") else 0),
                                                 region=reg))
    return {k: tuple(v) for k, v in out.items()}


def resolve(name: str, conditions: str = "", extension_frames: int = 0,
            first_frame_prob: Optional[float] = None) -> TrainingMode:
    """The mode a run trains: the preset ``name`` (official short names or the pack's older
    ones), its conditions replaced per modality by ``conditions`` when given (see
    :func:`parse_conditions`), prefix/suffix boundaries set to ``extension_frames`` when > 0,
    and for image→video (``i2v`` / ``image_to_video``) the first-frame probability
    ``first_frame_prob`` (the older setting)."""
    import dataclasses

    m = get(name)
    streams = {"video": m.video, "audio": m.audio}
    if first_frame_prob is not None and LEGACY.get(name, name) == "i2v":
        conds = tuple(c for c in m.video.conditions if c.kind != "first_frame")
        if first_frame_prob > 0:
            conds = (Condition("first_frame", float(first_frame_prob)),) + conds
        streams["video"] = Stream(m.video.role, conds)
    if conditions and conditions.strip():
        for key, conds in parse_conditions(conditions, m).items():
            streams[key] = Stream(streams[key].role, conds)
    if extension_frames and extension_frames > 0:
        for key, st in streams.items():
            if st is not None:
                streams[key] = Stream(st.role, tuple(dataclasses.replace(c, frames=int(extension_frames))
                                                     if c.kind in ("prefix", "suffix") else c for c in st.conditions))
    return TrainingMode(m.name, streams["video"], streams["audio"], m.description)


def spec(mode: TrainingMode) -> dict:
    """The mode as plain data (run fingerprints, settings files)."""
    def st(s):
        if s is None:
            return None
        return {"role": s.role, "conditions": [[c.kind, c.probability, c.frames, list(c.region) if c.region else None]
                                               for c in s.conditions]}
    return {"name": mode.name, "video": st(mode.video), "audio": st(mode.audio)}


def has_conditions(mode: TrainingMode) -> bool:
    return any(s is not None and s.conditions for s in (mode.video, mode.audio))


def table() -> list[tuple[str, str]]:
    """(name, one-line description) of every preset, for help pages and node tooltips."""
    return [(k, v.description) for k, v in PRESETS.items()]


# ---------------------------------------------------------------------------- inputs


@dataclass
class VideoRef:
    """Reference latents for one modality, token layout [B, R, C]; for video also its latent
    grid (F, H, W) and fps (the official strategy uses the reference's own fps)."""
    tokens: torch.Tensor
    grid: tuple
    fps: Optional[float] = None


@dataclass
class StreamDraws:
    sigma: Optional[torch.Tensor]  # [B] (None for a frozen modality)
    eps: Optional[torch.Tensor]  # [B, N, C]
    apply: list = field(default_factory=list)  # per condition: [B] bool (intrinsic) or bool (reference)


@dataclass
class Draws:
    video: Optional[StreamDraws] = None
    audio: Optional[StreamDraws] = None


@dataclass
class StreamInputs:
    """One modality ready for the forward and the loss. ``x_t``/``sigma``/``target``/
    ``loss_mask`` cover the target tokens only; reference tokens (if drawn) come separately
    and go in front of them in the sequence (the official order)."""
    x_t: torch.Tensor  # [B, N, C]
    sigma: torch.Tensor  # [B, N] per-token σ (0 on conditioning tokens)
    grid: tuple  # (F, H, W) or (T,)
    target: Optional[torch.Tensor]  # [B, N, C] (None: frozen)
    loss_mask: Optional[torch.Tensor]  # [B, N] bool (None: frozen)
    sample_sigma: torch.Tensor  # [B]
    ref_tokens: Optional[torch.Tensor] = None  # [B, R, C]
    ref_positions: Optional[torch.Tensor] = None  # [1, 3, R, 2] (video) or [1, 1, R, 2] (audio)

    @property
    def n_ref(self) -> int:
        return 0 if self.ref_tokens is None else self.ref_tokens.shape[1]

    def sequence(self):
        """(tokens, per-token σ, loss mask) of the whole sequence, references first."""
        if self.ref_tokens is None:
            return self.x_t, self.sigma, self.loss_mask
        B, R = self.ref_tokens.shape[:2]
        z = torch.zeros(B, R, dtype=self.sigma.dtype, device=self.sigma.device)
        lm = None if self.loss_mask is None else torch.cat(
            [torch.zeros(B, R, dtype=torch.bool, device=self.loss_mask.device), self.loss_mask], 1)
        return torch.cat([self.ref_tokens.to(self.x_t.dtype), self.x_t], 1), torch.cat([z, self.sigma], 1), lm

    def loss(self, pred: torch.Tensor) -> Optional[torch.Tensor]:
        """[B] masked MSE; ``pred`` may include the reference tokens' outputs (dropped)."""
        if self.target is None:
            return None
        return ob.masked_mse(pred[:, pred.shape[1] - self.target.shape[1]:], self.target, self.loss_mask)


@dataclass
class ModeInputs:
    video: Optional[StreamInputs]
    audio: Optional[StreamInputs]

    def loss(self, v_pred, a_pred, audio_weight: float = 1.0) -> torch.Tensor:
        """[B]: video loss + audio_weight · audio loss (the official sum at audio_weight 1)."""
        parts = []
        if self.video is not None and self.video.target is not None:
            parts.append(self.video.loss(v_pred))
        if self.audio is not None and self.audio.target is not None:
            parts.append(audio_weight * self.audio.loss(a_pred))
        if not parts:
            raise ValueError("nothing to learn: no generated modality in this step")
        return sum(parts)


def draw(mode: TrainingMode, shapes: dict, generator: torch.Generator, sampler: str = "shifted_logit_normal") -> Draws:
    """Every random number of one step. ``shapes``: {"video": (B, N, C), "audio": (B, T, C)}."""
    out = Draws()
    for key in ("video", "audio"):
        s = getattr(mode, key)
        if s is None:
            continue
        B, N, C = shapes[key]
        d = StreamDraws(None, None, [])
        dev = generator.device
        if s.role == GENERATED:
            d.sigma = ob.sample_sigmas(B, N, generator, kind=sampler)
            d.eps = torch.randn((B, N, C), generator=generator, device=dev)
            for c in s.conditions:
                if c.intrinsic:
                    d.apply.append(torch.rand(B, generator=generator, device=dev) < c.probability)
        for c in s.conditions:
            if not c.intrinsic:
                d.apply.append(bool(torch.rand((), generator=generator, device=dev).item() < c.probability))
        setattr(out, key, d)
    return out


def spatial_crop_mask(grid: tuple, region: tuple, scale: tuple) -> torch.Tensor:
    """[F·H·W] bool: the pixel rectangle (y1, x1, y2, x2) on the latent grid (floor division by
    the VAE's spatial factors, clamped to the grid), in every frame."""
    f, h, w = grid
    y1, x1, y2, x2 = region
    ly1, ly2 = (max(0, min(v // scale[1], h)) for v in (y1, y2))
    lx1, lx2 = (max(0, min(v // scale[2], w)) for v in (x1, x2))
    m = torch.zeros(h, w, dtype=torch.bool)
    m[ly1:ly2, lx1:lx2] = True
    return m.flatten().repeat(f)


def _cond_mask(c: Condition, grid: tuple, B: int, n: int, masks, key: str, scale: tuple) -> torch.Tensor:
    per = math.prod(grid[1:]) if len(grid) == 3 else 1
    if c.kind in ("first_frame", "prefix", "suffix"):
        k = (1 if c.kind == "first_frame" else c.frames) * per
        m = torch.zeros(n, dtype=torch.bool)
        if c.kind == "suffix":
            m[max(n - k, 0):] = True
        else:
            m[:k] = True
        return m.expand(B, n)
    if c.kind == "spatial_crop":
        return spatial_crop_mask(grid, c.region, scale).expand(B, n)
    if masks is None or masks.get(key) is None:
        raise ValueError(f"the {key} mask condition needs a per-sample {key} mask (on the latent grid, > 0.5 = keep)")
    return masks[key].reshape(B, n).cpu() > 0.5


def scale_factors(ref_grid: tuple, grid: tuple) -> tuple[int, int]:
    """(spatial, temporal) scale of a reference against its target, as the official strategy
    infers them (whole-number ratio of heights = widths; of latent frame groups F − 1)."""
    _, rh, rw = ref_grid
    f, h, w = grid
    if (rh, rw) == (h, w):
        sp = 1
    else:
        sh, sw = (h // rh if rh else 1), (w // rw if rw else 1)
        if sh != sw:
            raise ValueError(f"reference grid {ref_grid} and target grid {grid} do not scale uniformly ({sh} vs {sw})")
        sp = sh
    rf = ref_grid[0]
    if rf == f or rf - 1 <= 0 or f - 1 <= 0:
        return sp, 1
    if (f - 1) % (rf - 1):
        raise ValueError(f"target latent frame groups ({f - 1}) are not a multiple of the reference's ({rf - 1})")
    return sp, (f - 1) // (rf - 1)


def reference_video_positions(ref_grid: tuple, grid: tuple, config, fps: float, ref_fps: Optional[float] = None,
                              device=None) -> torch.Tensor:
    """[1, 3, R, 2] RoPE positions of video reference tokens: the reference's own grid at its
    own fps; a downscaled reference's spatial positions multiplied by the scale factor, a
    temporally downscaled one's times shifted back by (S − 1) / fps (clamped at 0) so its last
    frames line up with the target's (ltx-trainer flexible.py ``_apply_reference_condition``)."""
    from .ltx2.forward import video_positions
    pos = video_positions(tuple(ref_grid), config, ref_fps or fps, device).clone()
    sp, tp = scale_factors(tuple(ref_grid), tuple(grid))
    if tp != 1:
        t_first = video_positions(tuple(grid), config, fps, device)[:, 0, 0:1, 1:2]  # the target's 1/fps
        pos[:, 0] = torch.clamp(pos[:, 0] - (tp - 1) * t_first, min=0)
    if sp != 1:
        pos[:, 1:] = pos[:, 1:] * sp
    return pos


AUDIO_REFERENCE_POSITIONS = ("official", "comfyui")


def audio_reference_positions(r: int, device, convention: str = "official") -> torch.Tensor:
    """[1, 1, R, 2] positions of R reference-audio tokens. ``official``: on the target's own
    timeline from 0, as ltx-trainer's flexible strategy trains them; ``comfyui``: shifted to
    end one latent step before 0, as ComfyUI's LTXV Reference Audio node places them when
    sampling (its ID-LoRA convention) — train with that one to sample in ComfyUI."""
    from .ltx2.forward import AUDIO_HOP_LENGTH, AUDIO_LATENT_DOWNSAMPLE, AUDIO_SAMPLE_RATE, audio_positions

    pos = audio_positions(r, device)
    if convention == "official":
        return pos
    if convention != "comfyui":
        raise ValueError(f"audio_reference_positions must be one of {AUDIO_REFERENCE_POSITIONS}, not {convention!r}")
    step = AUDIO_HOP_LENGTH * AUDIO_LATENT_DOWNSAMPLE / AUDIO_SAMPLE_RATE
    return pos - (pos[0, 0, -1, 1] + step)


def build(mode: TrainingMode, latents: dict, draws: Draws, grids: dict, *, masks: Optional[dict] = None,
          references: Optional[dict] = None, config=None, fps: float = 25.0,
          audio_reference_at: str = "official") -> ModeInputs:
    """Model inputs of one step, deterministic given ``draws``.

    latents: {"video": [B, N, C], "audio": [B, T, C]} clean tokens; grids: {"video": (F, H, W),
    "audio": (T,)}; masks: {"video"|"audio": per-sample masks reshapable to [B, N]};
    references: {"video"|"audio": VideoRef}; config: the LTX2Config (VAE factors, positions);
    audio_reference_at: where reference audio sits in time (``audio_reference_positions``).
    """
    scale = tuple(getattr(config, "vae_scale_factors", (8, 32, 32)))
    res = {}
    for key in ("video", "audio"):
        s = getattr(mode, key)
        if s is None:
            res[key] = None
            continue
        x0 = latents[key]
        grid = tuple(int(g) for g in grids[key])
        B, N, _ = x0.shape
        d = getattr(draws, key)
        apply = list(d.apply)
        if s.role == GENERATED:
            sig = ob.to_device(d.sigma, x0.device, torch.float32)
            eps = ob.to_device(d.eps, x0.device, torch.float32)
            x0f = x0.float()
            sv = sig.view(B, 1, 1)
            x_t = (1 - sv) * x0f + sv * eps
            target = eps - x0f
            sig_tok = sig.view(B, 1).expand(B, N).clone()
            cond = torch.zeros(B, N, dtype=torch.bool)
            for c in s.conditions:
                if c.intrinsic:
                    a = apply.pop(0).cpu()
                    cond |= _cond_mask(c, grid, B, N, masks, key, scale) & a[:, None]
            cond = ob.to_device(cond, x0.device)
            x_t = torch.where(cond[..., None], x0f, x_t)
            sig_tok = torch.where(cond, torch.zeros_like(sig_tok), sig_tok)
            si = StreamInputs(x_t.to(x0.dtype), sig_tok, grid, target, ~cond, sig)
        else:
            z = torch.zeros(B, N, dtype=torch.float32, device=x0.device)
            si = StreamInputs(x0, z, grid, None, None, torch.zeros(B, device=x0.device))
        for c in s.conditions:
            if c.intrinsic:
                continue
            if not apply.pop(0):
                continue
            ref = (references or {}).get(key)
            if ref is None:
                raise ValueError(f"mode {mode.name}: the {key} reference condition needs reference latents "
                                 "for every sample")
            toks = ref.tokens if isinstance(ref, VideoRef) else ref
            if key == "video":
                if config is None:
                    raise ValueError("video references need the model config (positions)")
                pos = reference_video_positions(ref.grid, grid, config, fps, ref.fps, x0.device)
            else:
                pos = audio_reference_positions(toks.shape[1], x0.device, audio_reference_at)
            if si.ref_tokens is not None:  # a second reference condition goes in front again
                toks = torch.cat([toks, si.ref_tokens], 1)
                pos = torch.cat([pos, si.ref_positions], 2)
            si.ref_tokens, si.ref_positions = ob.to_device(toks, x0.device), pos
        res[key] = si
    return ModeInputs(res["video"], res["audio"])


def prepare(mode: TrainingMode, latents: dict, grids: dict, generator: torch.Generator, *, masks=None,
            references=None, config=None, fps: float = 25.0, sampler: str = "shifted_logit_normal",
            audio_reference_at: str = "official") -> ModeInputs:
    """``draw`` then ``build``: one step's inputs, every random draw through ``generator``."""
    shapes = {k: tuple(v.shape) for k, v in latents.items() if v is not None}
    return build(mode, latents, draw(mode, shapes, generator, sampler), grids, masks=masks,
                 references=references, config=config, fps=fps, audio_reference_at=audio_reference_at)
