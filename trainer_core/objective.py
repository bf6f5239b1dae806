"""The training objective: rectified flow on LTX-2's video and audio token sequences.

As in Lightricks' ltx-trainer:
  x_t = (1 - σ) · x0 + σ · ε,   target v = ε − x0,
σ per token (conditioning tokens get σ = 0 and no loss), σ drawn from a shifted logit-normal
whose shift grows linearly with the modality's own token count (video: all F'·H'·W' tokens,
first-frame conditioning ones included; audio: its T tokens), video and audio drawing their
own σ (ltx-trainer's flexible strategy: ``timestep_sampler.sample_for(latents)`` per
modality), and a masked MSE normalised by the masked fraction.

Then better:
- every random draw goes through an explicit ``torch.Generator`` so a run repeats exactly and
  resumes bit for bit (the official trainer draws from the global RNG);
- an audio loss weight (the audio term otherwise dominates the sum);
- the training mode is data, not code: each modality is ``generated``, ``condition`` (clean,
  σ = 0, no loss) or ``absent``, and video may condition on its first latent frame with a
  probability — which covers text→audio+video, video only, audio only, image→video,
  video→audio and audio→video.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

GENERATED, CONDITION, ABSENT = "generated", "condition", "absent"


@dataclass(frozen=True)
class Mode:
    """What each modality does in a training step."""

    name: str
    video: str
    audio: str
    first_frame_prob: float = 0.0

    @property
    def needs_audio(self) -> bool:
        return self.audio != ABSENT

    @property
    def needs_video(self) -> bool:
        return self.video != ABSENT


MODES: dict[str, Mode] = {
    "text_to_audio_video": Mode("text_to_audio_video", GENERATED, GENERATED),
    "video_only": Mode("video_only", GENERATED, ABSENT),
    "audio_only": Mode("audio_only", ABSENT, GENERATED),
    "image_to_video": Mode("image_to_video", GENERATED, GENERATED, first_frame_prob=0.5),
    "video_to_audio": Mode("video_to_audio", CONDITION, GENERATED),
    "audio_to_video": Mode("audio_to_video", GENERATED, CONDITION),
}


def get_mode(name: str, first_frame_prob: Optional[float] = None, audio: Optional[bool] = None) -> Mode:
    """Look up a mode; ``first_frame_prob`` overrides image→video's probability, and
    ``audio=False`` drops a generated audio stream (e.g. image→video on silent clips)."""
    if name not in MODES:
        raise ValueError(f"unknown training mode {name!r}; choose one of {', '.join(MODES)}")
    m = MODES[name]
    ffp = m.first_frame_prob if first_frame_prob is None or m.name != "image_to_video" else first_frame_prob
    a = m.audio
    if audio is False and a == GENERATED and m.video != ABSENT:
        a = ABSENT
    return Mode(m.name, m.video, a, ffp)


def shift_for_tokens(n_tokens: int, min_tokens: int = 1024, max_tokens: int = 4096,
                     min_shift: float = 0.95, max_shift: float = 2.05) -> float:
    """μ of the logit-normal: the line through (min_tokens, min_shift) and (max_tokens,
    max_shift), with no cap on either side — as ltx-trainer's
    ``ShiftedLogitNormalTimestepSampler._get_shift_for_sequence_length`` (2.05 at 4096 tokens,
    ≈2.78 at 6144, ≈4.98 at 12288)."""
    slope = (max_shift - min_shift) / (max_tokens - min_tokens)
    return min_shift + slope * (n_tokens - min_tokens)


def to_device(t: torch.Tensor, device, dtype=None) -> torch.Tensor:
    """``t.to(device, dtype)`` without waiting for the GPU: a copy from host memory to a CUDA
    device is queued (``non_blocking``: CUDA stages pageable memory before the call returns,
    so the host tensor may go right after), where a blocking copy would first wait for
    everything queued on the stream — the previous step's backward and optimizer."""
    dev = torch.device(device) if device is not None else t.device
    return t.to(dev, dtype, non_blocking=dev.type == "cuda" and t.device.type == "cpu")


# standard-normal quantiles used to stretch the logit-normal onto [0, 1]
_Q999 = 3.0902
_Q005 = -2.5758


def sample_sigmas(batch: int, n_tokens: int, generator: torch.Generator, kind: str = "shifted_logit_normal",
                  std: float = 1.0, eps: float = 1e-3, uniform_prob: float = 0.1) -> torch.Tensor:
    """σ per sample, shape [batch], float32 on the generator's device.

    ``shifted_logit_normal``: sigmoid(N(μ(n_tokens), std)) stretched between its 0.5th and
    99.9th percentiles onto [0, 1], small values reflected about ``eps``, and mixed with a
    uniform draw ``uniform_prob`` of the time (the official sampler). ``uniform``: U(eps, 1).
    """
    dev = generator.device
    if kind == "uniform":
        return (1 - eps) * torch.rand(batch, generator=generator, device=dev) + eps
    if kind != "shifted_logit_normal":
        raise ValueError(f"unknown σ sampler {kind!r} (shifted_logit_normal or uniform)")
    mu = shift_for_tokens(n_tokens)
    z = torch.randn(batch, generator=generator, device=dev) * std + mu
    s = torch.sigmoid(z)
    lo = 1.0 / (1.0 + math.exp(-(mu + _Q005 * std)))
    hi = 1.0 / (1.0 + math.exp(-(mu + _Q999 * std)))
    s = (s - lo) / (hi - lo)
    s = torch.where(s >= eps, s, 2 * eps - s).clamp(0.0, 1.0)
    u = (1 - eps) * torch.rand(batch, generator=generator, device=dev) + eps
    pick_uniform = torch.rand(batch, generator=generator, device=dev) <= uniform_prob
    return torch.where(pick_uniform, u, s)


@dataclass
class Noised:
    """One modality prepared for the model and the loss (token layout [B, N, C])."""

    x_t: torch.Tensor
    sigma: torch.Tensor  # [B, N] per-token σ (0 for conditioning tokens)
    target: Optional[torch.Tensor]  # [B, N, C] or None for a conditioning modality
    loss_mask: Optional[torch.Tensor]  # [B, N] bool or None
    sample_sigma: torch.Tensor  # [B]


def noise_modality(x0: torch.Tensor, role: str, generator: torch.Generator, sampler: str = "shifted_logit_normal",
                   cond_tokens: Optional[torch.Tensor] = None, n_tokens_for_shift: Optional[int] = None) -> Noised:
    """Noise one modality's clean tokens ``x0`` [B, N, C].

    ``role`` is GENERATED or CONDITION. ``cond_tokens`` [B, N] bool marks tokens that are
    conditioning inside a generated modality (e.g. the first latent frame for image→video):
    they stay clean, get σ = 0 and no loss.
    """
    B, N, _ = x0.shape
    if role == CONDITION:
        z = torch.zeros(B, N, dtype=x0.dtype, device=x0.device)
        return Noised(x0, z, None, None, torch.zeros(B, dtype=x0.dtype, device=x0.device))
    sig = to_device(sample_sigmas(B, n_tokens_for_shift or N, generator, kind=sampler), x0.device, torch.float32)
    eps = to_device(torch.randn(x0.shape, generator=generator, device=generator.device, dtype=torch.float32),
                    x0.device)
    x0f = x0.float()
    sig_tok = sig[:, None].expand(B, N)
    mask = torch.ones(B, N, dtype=torch.bool, device=x0.device)
    if cond_tokens is not None:
        sig_tok = torch.where(cond_tokens, torch.zeros_like(sig_tok), sig_tok)
        mask = ~cond_tokens
    s = sig_tok[..., None]
    x_t = (1 - s) * x0f + s * eps
    target = eps - x0f
    return Noised(x_t.to(x0.dtype), sig_tok.to(x0.dtype), target, mask, sig.to(x0.dtype))


def first_frame_mask(batch: int, frames: int, height: int, width: int, prob: float,
                     generator: torch.Generator, device=None) -> Optional[torch.Tensor]:
    """[B, F'·H'·W'] bool, True on the first latent frame's tokens for the samples that drew
    first-frame conditioning (each sample draws on its own, with probability ``prob``)."""
    if prob <= 0:
        return None
    apply = torch.rand(batch, generator=generator, device=generator.device) < prob
    per_frame = height * width
    m = torch.zeros(batch, frames * per_frame, dtype=torch.bool)
    m[:, :per_frame] = True
    m &= apply.cpu()[:, None]
    return to_device(m, device) if device is not None else m


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Per-sample MSE over (tokens, channels), masked, normalised by the masked fraction: [B]."""
    err = (pred.float() - target.float()).pow(2)
    if mask is None:
        return err.mean(dim=(-2, -1))
    m = mask.to(err.dtype)[..., None]
    return (err * m).mean(dim=(-2, -1)) / m.mean(dim=(-2, -1)).clamp(min=1e-8)


def combine_losses(video: Optional[torch.Tensor], audio: Optional[torch.Tensor], audio_weight: float = 1.0) -> torch.Tensor:
    """Batch-mean of video loss + audio_weight · audio loss (either may be None)."""
    parts = []
    if video is not None:
        parts.append(video.mean())
    if audio is not None:
        parts.append(audio_weight * audio.mean())
    if not parts:
        raise ValueError("nothing to learn: no generated modality in this step")
    return sum(parts)
