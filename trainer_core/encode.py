"""Encode a bucketed dataset into the latent cache (the logic of Encode Latents).

The encoders come from the caller (the node passes ComfyUI's VAEs and text encoder):

- ``encode_video(frames uint8 [F, H, W, 3]) -> [128, F', H', W']``
- ``encode_audio(waveform float32 [C, N], rate) -> [8, T, 16]``; ``audio_rate`` is the rate
  the audio is read at (the audio VAE's input rate)
- ``encode_text(caption) -> {"context": [L, D]}``
- ``identity``: names of the models, part of every key

Keys hash everything an entry depends on, so a second run encodes nothing, a changed caption
re-encodes one text entry, and a damaged file (size or shapes off) is re-encoded. The manifest
is saved after every sample, so an interrupted run resumes where it stopped.

Audio length rule: the audio span is exactly the video's ``[start, start + F / fps)``; its
latent is trimmed or zero-padded to ``T = round(F / fps · 25)`` so every sample of a bucket
has the same audio length (LTX-2's audio latents run at 25 per second).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

from .buckets import crop_to_bucket, sample_times
from .cache import LatentCache, file_digest, key_for
from .dataset import Dataset

AUDIO_LATENT_RATE = 25.0


@dataclass
class Encoders:
    encode_video: Callable[[np.ndarray], torch.Tensor]
    encode_text: Callable[[str], dict]
    encode_audio: Optional[Callable[[np.ndarray, int], torch.Tensor]] = None
    audio_rate: int = 16000
    identity: dict = field(default_factory=dict)


@dataclass
class EncodeReport:
    samples: int = 0
    encoded: dict = field(default_factory=lambda: {"video": 0, "audio": 0, "text": 0})
    skipped: dict = field(default_factory=lambda: {"video": 0, "audio": 0, "text": 0})
    paired: dict = field(default_factory=dict)  # "reference" / "reference audio" / "video mask" / "audio mask": n
    failures: list = field(default_factory=list)
    silent: list = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{self.samples} samples cached; encoded " + ", ".join(f"{k} {v}" for k, v in self.encoded.items())
                 + "; reused " + ", ".join(f"{k} {v}" for k, v in self.skipped.items())]
        if self.paired:
            lines.append("paired: " + ", ".join(f"{k} {v}" for k, v in self.paired.items()))
        if self.silent:
            lines.append(f"{len(self.silent)} without audio (video-only training only): {', '.join(self.silent[:6])}")
        for key, why in self.failures:
            lines.append(f"failed {key}: {why}")
        return "\n".join(lines)


def with_trigger(caption: str, trigger: str) -> str:
    caption = (caption or "").strip()
    trigger = (trigger or "").strip()
    if trigger and not caption.lower().startswith(trigger.lower()):
        return f"{trigger}, {caption}" if caption else trigger
    return caption


def fit_audio_latent(lat: torch.Tensor, t: int) -> torch.Tensor:
    """[8, T', 16] trimmed or zero-padded to T frames."""
    if lat.shape[1] >= t:
        return lat[:, :t].contiguous()
    pad = torch.zeros(lat.shape[0], t - lat.shape[1], lat.shape[2], dtype=lat.dtype)
    return torch.cat([lat, pad], dim=1)


def _src(spec: str, digests: dict) -> str:
    """What a paired entry's key hashes for its source: a file's content, or a generated spec."""
    return spec if spec.startswith("generated:") else file_digest(spec, digests)


def encode_pairs(cache: LatentCache, rep: EncodeReport, enc: Encoders, clip, s, skey: str, span: dict,
                 digests: dict) -> dict:
    """The sample's IC-LoRA reference (video latents at its reference bucket, audio latents)
    and its masks on the latent grid (trainer_core.pairs: as ltx-trainer's preprocessing),
    each an entry hashed by its source, the span and the models like the rest. Returns the
    manifest fields (reference, reference_audio, video_mask, audio_mask, reference_scale)."""
    from . import media, pairs

    out: dict = {}
    times = sample_times(s)
    grid = s.bucket.latent_shape[1:]
    t_lat = int(round(s.duration * AUDIO_LATENT_RATE))

    def count(name):
        rep.paired[name] = rep.paired.get(name, 0) + 1

    if s.reference_bucket is not None and clip.reference:
        rb = s.reference_bucket
        k = key_for(kind="video", role="reference", **{**span, "src": _src(clip.reference, digests), "bucket": str(rb)})
        if not cache.valid("video", k):
            fr = pairs.frames_at(clip.reference, times, clip.fps)
            fr = np.stack([np.asarray(crop_to_bucket(f, rb)) for f in fr])
            cache.put("video", k, {"latents": enc.encode_video(fr).detach().float().cpu()})
            rep.encoded["video"] += 1
        else:
            rep.skipped["video"] += 1
        out["reference"], out["reference_scale"] = k, int(s.reference_scale)
        count("reference")
    if s.reference_audio and clip.reference_audio and enc.encode_audio is not None:
        k = key_for(kind="audio", role="reference", rate=enc.audio_rate,
                    **{**span, "src": _src(clip.reference_audio, digests)})
        if not cache.valid("audio", k):
            pcm, rate = media.read_audio(clip.reference_audio, s.start, s.duration, sample_rate=enc.audio_rate,
                                         channels=2)
            lat = fit_audio_latent(enc.encode_audio(pcm, rate).detach().float().cpu(), t_lat)
            cache.put("audio", k, {"latents": lat})
            rep.encoded["audio"] += 1
        else:
            rep.skipped["audio"] += 1
        out["reference_audio"] = k
        count("reference audio")
    if s.video_mask and s.bucket.frames >= 1:
        k = key_for(kind="mask", role="video", src=_src(s.video_mask, digests), start=span["start"], fps=s.fps,
                    bucket=str(s.bucket), grid=list(grid), key=skey if s.video_mask.startswith("generated:") else "")
        if not cache.valid("mask", k):
            px = pairs.video_mask_pixels(s.video_mask, times, (s.bucket.width, s.bucket.height), clip.fps, key=skey)
            cache.put("mask", k, {"mask": pairs.video_mask_to_latent(px, grid)})
        out["video_mask"] = k
        count("video mask")
    if s.audio_mask and s.bucket.frames > 1 and t_lat > 0:
        k = key_for(kind="mask", role="audio", src=_src(s.audio_mask, digests), start=span["start"],
                    dur=round(s.duration, 6), t=t_lat, key=skey if s.audio_mask.startswith("generated:") else "")
        if not cache.valid("mask", k):
            vals = pairs.audio_mask_values(s.audio_mask, s.start, s.duration, key=skey, n_hint=t_lat)
            if s.audio_mask.endswith(".safetensors") and clip.duration > 0:  # over the whole clip: its span
                n = len(vals)
                a, b = int(s.start / clip.duration * n), int(np.ceil((s.start + s.duration) / clip.duration * n))
                vals = vals[max(0, a):max(a + 1, min(n, b))]
            cache.put("mask", k, {"mask": pairs.audio_mask_to_latent(vals, t_lat)})
        out["audio_mask"] = k
        count("audio mask")
    return out


def encode_dataset(dataset: Dataset, cache_root, enc: Encoders, trigger_word: str = "",
                   progress: Optional[Callable[..., None]] = None) -> EncodeReport:
    from . import media

    cache = LatentCache(cache_root)
    m = cache.manifest
    m.models = dict(enc.identity)
    rep = EncodeReport()
    ident = key_for(**enc.identity)

    def text_entry(caption: str) -> str:
        k = key_for(kind="text", caption=caption, model=ident)
        if cache.valid("text", k):
            rep.skipped["text"] += 1
        else:
            cache.put("text", k, {kk: v.detach().float().cpu() for kk, v in enc.encode_text(caption).items()})
            rep.encoded["text"] += 1
        return k

    m.empty_text = text_entry("")
    samples = []
    n = len(dataset.samples)
    for i, s in enumerate(dataset.samples):
        clip = dataset.clipset.clips[s.clip]
        skey = dataset.segments[s.segment].key(dataset.clipset.clips)
        if progress:
            progress(i, n, f"encoding {skey} ({s.bucket})")
        try:
            digest = file_digest(clip.path, m.digests)
            span = dict(src=digest, start=round(s.start, 6), fps=s.fps, bucket=str(s.bucket), model=ident)
            vkey = key_for(kind="video", **span)
            if cache.valid("video", vkey):
                rep.skipped["video"] += 1
            else:
                frames = media.frames_at(clip.path, sample_times(s))
                frames = np.stack([np.asarray(crop_to_bucket(f, s.bucket)) for f in frames])
                lat = enc.encode_video(frames).detach().float().cpu()
                first = enc.encode_video(frames[:1]).detach().float().cpu()
                cache.put("video", vkey, {"latents": lat, "first_frame": first})
                rep.encoded["video"] += 1
            akey = None
            if s.has_audio and enc.encode_audio is not None and s.bucket.frames > 1:
                akey = key_for(kind="audio", rate=enc.audio_rate, **span)
                if cache.valid("audio", akey):
                    rep.skipped["audio"] += 1
                else:
                    pcm, rate = media.read_audio(clip.path, s.start, s.duration, sample_rate=enc.audio_rate, channels=2)
                    lat = enc.encode_audio(pcm, rate).detach().float().cpu()
                    lat = fit_audio_latent(lat, int(round(s.duration * AUDIO_LATENT_RATE)))
                    cache.put("audio", akey, {"latents": lat})
                    rep.encoded["audio"] += 1
            else:
                rep.silent.append(skey)
            paired = encode_pairs(cache, rep, enc, clip, s, skey, span, m.digests)
            tkey = text_entry(with_trigger(s.caption or "", trigger_word))
            samples.append(dict(key=skey, video=vkey, audio=akey, text=tkey, bucket=str(s.bucket), fps=s.fps,
                                caption=with_trigger(s.caption or "", trigger_word), source=clip.name,
                                start=s.start, has_audio=akey is not None, **paired))
        except Exception as e:  # one bad sample is reported; the rest go on
            if e.__class__.__name__ in ("InterruptProcessingException", "KeyboardInterrupt"):
                raise
            rep.failures.append((skey, f"{e.__class__.__name__}: {e}"))
        m.samples = samples
        cache.save_manifest()
    from .cache import CacheSample

    keep = {f"text/{m.empty_text}"} | {f"{k}/{s[k]}" for s in samples for k in ("video", "audio", "text") if s[k]}
    keep |= {f"{CacheSample.PAIR_KINDS[k]}/{s[k]}" for s in samples for k in CacheSample.PAIRED if s.get(k)}
    cache.prune(keep)
    cache.save_manifest()
    rep.samples = len(samples)
    if progress:
        progress(n, n)
    return rep
