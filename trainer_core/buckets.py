"""Resolution/length buckets for LTX-2 and the dataset inspection report.

LTX-2's video VAE compresses 32x in space and 8x in time with a causal first frame, so a
training sample must be W x H x F with W and H multiples of 32 and F = 8n + 1.

Assignment rule, per segment: among the buckets whose frame count fits in the segment at the
target frame rate, take the one with the closest aspect ratio (compared in log space, so
2:1 and 1:2 are equally far from 1:1), then the most frames, then the largest area. Frames
are resized to cover the bucket and centre-cropped. Frame k of a sample is the source frame
shown at ``start + k / fps``; the audio span is exactly ``[start, start + F / fps)``.
Still images become one-frame samples at the closest-aspect bucket's size.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

from .dataset import Bucket, ClipSet, Dataset, Sample, Segment

PRESETS: dict[str, str] = {
    "LTX-2 standard (768x512, 121f, both orientations)": "768x512x121;512x768x121;640x640x121",
    "LTX-2 short (768x512, 49f, both orientations)": "768x512x49;512x768x49;640x640x49",
    "Low VRAM (512x320, 97f, both orientations)": "512x320x97;320x512x97;416x416x97",
    "Square (512x512, 121f)": "512x512x121",
    "HD (1280x704, 121f, both orientations)": "1280x704x121;704x1280x121;960x960x121",
    "Mixed lengths (768x512: 121/65/25f)": "768x512x121;768x512x65;768x512x25;512x768x121;512x768x65;512x768x25",
    "Images only (1024x576 stills)": "1024x576x1;576x1024x1;768x768x1",
}
DEFAULT_PRESET = next(iter(PRESETS))

FLAG_TEXT = {
    "too_short": "too short for any bucket",
    "no_audio": "no sound (no audio track, a still, or the track misses the span; audio training planned)",
    "partial_audio": "sound covers only part of the span (the rest is silence)",
    "static": "nearly static",
    "low_res": "below bucket resolution (will be upscaled)",
    "no_caption": "no caption",
    "long_caption": "caption is very long (shorten it)",
}
MAX_CAPTION_CHARS = 2000  # as media.MAX_CAPTION_CHARS: flagged past this
AUDIO_GAP_TOLERANCE = 0.1  # seconds of a sample's span the track may miss before it is flagged


def audio_overlap(clip, start: float, duration: float) -> float:
    """Seconds of ``[start, start + duration)`` that the clip's audio track covers."""
    a = clip.audio
    if a is None or duration <= 0:
        return 0.0
    a0 = float(getattr(a, "start", 0.0) or 0.0)
    return max(0.0, min(start + duration, a0 + a.duration) - max(start, a0))


class BucketError(ValueError):
    pass


def _nearest_multiples(v: int, m: int) -> list[int]:
    lo = max(m, (v // m) * m)
    hi = lo + m if lo < v else lo
    return sorted({lo, hi})


def _nearest_8n1(f: int) -> list[int]:
    lo = max(1, ((f - 1) // 8) * 8 + 1)
    hi = lo + 8 if lo < f else lo
    return sorted({lo, hi})


def parse_buckets(spec: str) -> list[Bucket]:
    """Parse ``"768x512x121;512x768x121"`` (``;``, ``,`` or newlines between entries).

    Raises BucketError naming the nearest valid values when a bucket is not W,H % 32 == 0
    and F = 8n+1.
    """
    entries = [e.strip() for e in re.split(r"[;,\n]+", spec or "") if e.strip()]
    if not entries:
        raise BucketError("no buckets given; write them as WxHxF, e.g. 768x512x121;512x768x121")
    out: list[Bucket] = []
    problems = []
    for e in entries:
        m = re.fullmatch(r"(\d+)\s*[xX×]\s*(\d+)\s*[xX×]\s*(\d+)", e)
        if not m:
            problems.append(f"'{e}' is not of the form WxHxF (e.g. 768x512x121)")
            continue
        w, h, f = (int(g) for g in m.groups())
        bad = []
        if w <= 0 or w % 32:
            bad.append(f"width {w} is not a multiple of 32 (nearest: {' or '.join(map(str, _nearest_multiples(w, 32)))})")
        if h <= 0 or h % 32:
            bad.append(f"height {h} is not a multiple of 32 (nearest: {' or '.join(map(str, _nearest_multiples(h, 32)))})")
        if f <= 0 or (f - 1) % 8:
            bad.append(f"frame count {f} is not 8n+1 (nearest: {' or '.join(map(str, _nearest_8n1(f)))})")
        if bad:
            problems.append(f"bucket {e}: " + "; ".join(bad))
            continue
        b = Bucket(w, h, f)
        if b not in out:
            out.append(b)
    if problems:
        raise BucketError("invalid bucket list — " + " | ".join(problems))
    return out


def frames_available(duration: float, fps: float) -> int:
    """How many frames at ``fps`` fit in ``duration`` seconds with the audio span inside it."""
    if fps <= 0 or duration <= 0:
        return 0
    return int(math.floor(duration * fps + 1e-6))


def choose_bucket(width: int, height: int, n_frames: int, buckets: list[Bucket]) -> Optional[Bucket]:
    """Closest aspect among buckets that fit ``n_frames``, then most frames, then largest area."""
    if width <= 0 or height <= 0:
        return None
    ar = math.log(width / height)
    fitting = [b for b in buckets if b.frames <= n_frames]
    if not fitting:
        return None
    return min(fitting, key=lambda b: (round(abs(ar - math.log(b.aspect)), 6), -b.frames, -(b.width * b.height)))


def choose_image_bucket(width: int, height: int, buckets: list[Bucket]) -> Bucket:
    """A one-frame bucket for a still: the closest-aspect bucket's size, F = 1."""
    ar = math.log(width / height)
    b = min(buckets, key=lambda b: (round(abs(ar - math.log(b.aspect)), 6), -(b.width * b.height)))
    return Bucket(b.width, b.height, 1)


def cover_crop(src_w: int, src_h: int, dst_w: int, dst_h: int) -> tuple[int, int, int, int]:
    """Resize-to-cover then centre-crop plan: (resized_w, resized_h, crop_x, crop_y)."""
    scale = max(dst_w / src_w, dst_h / src_h)
    rw = max(dst_w, int(math.ceil(src_w * scale - 1e-6)))
    rh = max(dst_h, int(math.ceil(src_h * scale - 1e-6)))
    return rw, rh, (rw - dst_w) // 2, (rh - dst_h) // 2


@dataclass
class ReportEntry:
    key: str
    clip: int
    segment: int
    duration: float
    bucket: Optional[str]
    flags: list[str] = field(default_factory=list)
    kept: bool = True
    caption: Optional[str] = None
    audio_coverage: Optional[float] = None  # share of the sample's span with sound (None: not video)


@dataclass
class InspectionReport:
    entries: list[ReportEntry]
    counts: dict[str, int]
    skipped_files: list[tuple[str, str]]
    target_fps: float
    audio_planned: bool
    warnings: list[tuple[str, str]] = field(default_factory=list)  # files used with a caveat (captions)

    def flagged(self, flag: str) -> list[ReportEntry]:
        return [e for e in self.entries if flag in e.flags]

    @property
    def kept(self) -> int:
        return sum(e.kept for e in self.entries)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["skipped_files"] = [list(s) for s in self.skipped_files]
        d["warnings"] = [list(w) for w in self.warnings]
        return d

    def soundless(self) -> list[ReportEntry]:
        """Kept samples with no sound at all (stills, clips without a track, spans the track misses)."""
        return [e for e in self.entries if e.kept and "no_audio" in e.flags]

    def summary(self) -> str:
        lines = [f"{self.kept} samples from {len(self.entries)} segments at {self.target_fps:g} fps"]
        for b, n in sorted(self.counts.items(), key=lambda kv: -kv[1]):
            lines.append(f"  bucket {b}: {n}")
        silent = self.soundless()
        if self.audio_planned and silent:
            names = ", ".join(e.key for e in silent[:4]) + (" …" if len(silent) > 4 else "")
            lines.append(f"!! {len(silent)} of {self.kept} samples have no sound ({names}): audio-video training "
                         "refuses a cache with soundless samples — drop them, give them sound, or train video only "
                         "(turn 'audio' off here to stop this check)")
        for flag, text in FLAG_TEXT.items():
            hits = self.flagged(flag)
            if hits:
                if flag == "partial_audio":
                    names = ", ".join(f"{e.key} ({100 * (e.audio_coverage or 0):.0f}%)" for e in hits[:8])
                else:
                    names = ", ".join(e.key for e in hits[:8])
                names += " …" if len(hits) > 8 else ""
                verb = "dropped" if flag == "too_short" else "flagged"
                lines.append(f"{len(hits)} {verb} — {text}: {names}")
        for path, why in self.skipped_files:
            lines.append(f"skipped file {path}: {why}")
        for path, why in self.warnings:
            lines.append(f"warning {path}: {why}")
        return "\n".join(lines)


def build_dataset(
    clipset: ClipSet,
    buckets: list[Bucket],
    target_fps: float = 24.0,
    audio_planned: bool = True,
    static_threshold: float = 1.0,
    measure_motion: Optional[Callable[[int, Segment], Optional[float]]] = None,
    progress: Optional[Callable[..., None]] = None,
    reference_scale: int = 1,
) -> tuple[Dataset, InspectionReport]:
    """Place every segment in a bucket and inspect the result.

    ``target_fps`` <= 0 keeps each clip's own frame rate. ``measure_motion(clip_index,
    segment)`` is asked for a motion score (mean abs frame difference, 0..255) when the
    segment has none yet; segments below ``static_threshold`` are flagged as nearly static.
    ``progress(i, n, text)`` is called before each segment (a host's cancel check runs there;
    inside a long clip the measurer's own ``should_stop`` does, see :func:`motion_measurer`).
    """
    from .media import _caller

    report_progress = _caller(progress)
    if not buckets:
        raise BucketError("no buckets given")
    reference_scale = int(reference_scale)
    if reference_scale < 1:
        raise BucketError(f"reference_scale {reference_scale} must be 1, 2 or 4")
    if reference_scale > 1 and any(c.reference for c in clipset.clips):
        bad = [str(b) for b in buckets if b.width % (32 * reference_scale) or b.height % (32 * reference_scale)]
        if bad:
            raise BucketError(f"a reference at 1/{reference_scale} size needs bucket sides that are multiples of "
                              f"{32 * reference_scale} (the VAE's 32 × the scale); {', '.join(bad)} are not — choose "
                              "other buckets or reference_scale 1")
    video_buckets = [b for b in buckets if b.frames > 1] or buckets
    segments = clipset.all_segments()
    samples: list[Sample] = []
    entries: list[ReportEntry] = []
    counts: dict[str, int] = {}
    for si, seg in enumerate(segments):
        clip = clipset.clips[seg.clip]
        caption = seg.caption if seg.caption is not None else clip.caption
        key = seg.key(clipset.clips)
        report_progress(si, len(segments), f"inspecting {key}")
        flags: list[str] = []
        coverage: Optional[float] = None
        sound = False
        if clip.kind == "image":
            bucket: Optional[Bucket] = choose_image_bucket(clip.width, clip.height, buckets)
            fps = target_fps if target_fps > 0 else 1.0
            if audio_planned:
                flags.append("no_audio")  # a still is a one-frame sample without sound
        else:
            fps = target_fps if target_fps > 0 else clip.fps
            n_avail = frames_available(seg.duration, fps)
            bucket = choose_bucket(clip.width, clip.height, n_avail, video_buckets)
            if bucket is None:
                flags.append("too_short")
            if bucket is not None and clip.has_audio:
                span = bucket.frames / fps
                covered = audio_overlap(clip, seg.start, span)
                coverage = covered / span if span > 0 else 0.0
                sound = covered >= AUDIO_GAP_TOLERANCE or covered >= 0.5 * span
                if audio_planned and sound and span - covered > AUDIO_GAP_TOLERANCE:
                    flags.append("partial_audio")
            elif clip.has_audio:
                sound = True
            if audio_planned and not sound:
                flags.append("no_audio")
            motion = seg.motion
            if motion is None and measure_motion is not None and bucket is not None:
                motion = measure_motion(seg.clip, seg)
                seg.motion = motion
            if motion is not None and motion < static_threshold:
                flags.append("static")
        if bucket is not None and (clip.width < bucket.width or clip.height < bucket.height):
            flags.append("low_res")  # covering the bucket needs upscaling
        if not caption or not caption.strip():
            flags.append("no_caption")
        elif len(caption) > MAX_CAPTION_CHARS:
            flags.append("long_caption")
        kept = bucket is not None
        entries.append(ReportEntry(key=key, clip=seg.clip, segment=si, duration=seg.duration,
                                   bucket=str(bucket) if bucket else None, flags=flags,
                                   kept=kept, caption=caption, audio_coverage=coverage))
        if kept:
            counts[str(bucket)] = counts.get(str(bucket), 0) + 1
            ref_b = None
            if clip.reference:  # the pair stays together: the reference at the bucket's (scaled) size
                ref_b = Bucket(bucket.width // reference_scale, bucket.height // reference_scale, bucket.frames)
            samples.append(Sample(clip=seg.clip, segment=si, bucket=bucket, start=seg.start, fps=fps,
                                  caption=caption, has_audio=sound and bucket.frames > 1,
                                  flags=list(flags), reference_bucket=ref_b,
                                  reference_scale=reference_scale if ref_b else 1,
                                  reference_audio=bool(clip.reference_audio) and bucket.frames > 1,
                                  video_mask=clip.video_mask, audio_mask=clip.audio_mask))
    used = sorted({s.bucket for s in samples}, key=lambda b: (-b.frames, -(b.width * b.height), b.width))
    ds = Dataset(clipset=clipset, segments=segments, buckets=used, samples=samples,
                 target_fps=target_fps,
                 settings={"buckets": ";".join(map(str, buckets)), "target_fps": target_fps,
                           "audio_planned": audio_planned, "static_threshold": static_threshold,
                           "reference_scale": reference_scale,
                           "soundless": [segments[s.segment].key(clipset.clips) for s in samples
                                         if not s.has_audio]})
    report = InspectionReport(entries=entries, counts=counts,
                              skipped_files=[(s.path, s.reason) for s in clipset.skipped],
                              warnings=[(w.path, w.reason) for w in getattr(clipset, "warnings", [])],
                              target_fps=target_fps, audio_planned=audio_planned)
    return ds, report


def sample_times(sample: Sample) -> list[float]:
    """Presentation times of the sample's frames on the clip's timeline."""
    return [sample.start + k / sample.fps for k in range(sample.bucket.frames)]


def motion_score(frames) -> float:
    """Mean absolute difference between consecutive frames (0..255) of a [N,H,W,3] array."""
    import numpy as np

    f = np.asarray(frames, dtype=np.float32)
    if f.shape[0] < 2:
        return 0.0
    return float(np.abs(np.diff(f, axis=0)).mean())


def motion_measurer(clipset: ClipSet, samples: int = 8, size: tuple[int, int] = (64, 64),
                    should_stop: Optional[Callable[[], bool]] = None):
    """A ``measure_motion`` for build_dataset that decodes a few small frames per segment.

    ``should_stop()`` is asked before each segment and while its frames decode (every 16
    frames); True raises ``media.Cancelled``. A segment that fails to decode gets no score."""
    from . import media

    def measure(ci: int, seg: Segment) -> Optional[float]:
        clip = clipset.clips[ci]
        if clip.kind != "video" or seg.duration <= 0:
            return None
        if should_stop is not None and should_stop():
            raise media.Cancelled("motion measurement cancelled")
        times = [seg.start + seg.duration * (k + 0.5) / samples for k in range(samples)]
        try:
            return motion_score(media.frames_at(clip.path, times, size=size, should_stop=should_stop))
        except media.Cancelled:
            raise
        except Exception as e:
            if e.__class__.__name__ in ("InterruptProcessingException", "KeyboardInterrupt"):
                raise
            return None

    return measure


def crop_to_bucket(frame, bucket: Bucket, height: Optional[int] = None):
    """Resize-to-cover and centre-crop one HxWx3 uint8 frame to the bucket (or a smaller
    thumbnail of the same aspect when ``height`` is given). Returns a PIL image."""
    from PIL import Image

    img = Image.fromarray(frame) if not isinstance(frame, Image.Image) else frame
    bw, bh = bucket.width, bucket.height
    if height:
        bw, bh = max(1, round(bw * height / bh)), height
    rw, rh, x, y = cover_crop(img.width, img.height, bw, bh)
    return img.resize((rw, rh), Image.BICUBIC).crop((x, y, x + bw, y + bh))
