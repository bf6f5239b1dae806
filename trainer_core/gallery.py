"""The dataset gallery behind Bucket's inspection output: for each training sample, a
thumbnail and a short playable clip of exactly what training will see (the sample's frames
at its frame rate, resized to cover its bucket and centre-cropped, with the sound of the same
span), plus its caption and flags. The web extension shows them as a grid; a click plays the
clip.

Files are written atomically (temporary name, then rename) into a folder the caller owns
(the pack uses ComfyUI's temp folder); the list of entries refers to them by file name.
"""
from __future__ import annotations

import hashlib
import json
from fractions import Fraction
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .buckets import FLAG_TEXT, crop_to_bucket, sample_times
from .fsutil import atomic_path

AUDIO_RATE = 48000
GALLERY_CAPTION_CHARS = 600  # captions longer than this reach the web gallery shortened


def short_caption(text: Optional[str], limit: int = GALLERY_CAPTION_CHARS) -> str:
    """``text`` cut at a word boundary to at most ``limit`` characters, with the length said."""
    text = text or ""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    if " " in cut[limit // 2:]:
        cut = cut[:cut.rindex(" ")]
    return f"{cut.rstrip()} … [{len(text):,} characters in all]"


def _even(v: int) -> int:
    return max(2, v - (v % 2))


def sample_key(dataset, index: int) -> str:
    """A name that changes when the sample (file, span, bucket, rate) changes."""
    s = dataset.samples[index]
    clip = dataset.clipset.clips[s.clip]
    try:
        st = Path(clip.path).stat()
        stamp = [st.st_size, st.st_mtime_ns]
    except OSError:
        stamp = [clip.size_bytes, None]
    raw = json.dumps([str(clip.path), *stamp, round(s.start, 4), s.fps, str(s.bucket), s.has_audio])
    return hashlib.sha1(raw.encode()).hexdigest()[:16]


def write_sample_clip(dataset, index: int, target: Path, height: int = 192) -> tuple[int, int, bool]:
    """Encode sample ``index`` as a small H.264 (+AAC when it has sound) mp4 at ``target``.
    Returns (width, height, has_audio)."""
    import av

    from . import media

    s = dataset.samples[index]
    clip = dataset.clipset.clips[s.clip]
    bw = _even(round(s.bucket.width * height / s.bucket.height))
    bh = _even(height)
    times = sample_times(s)
    size = None
    if clip.width and clip.height:
        scale = max(bw / clip.width, bh / clip.height)
        if scale < 1.0:
            size = (max(2, int(np.ceil(clip.width * scale))), max(2, int(np.ceil(clip.height * scale))))
    frames = media.frames_at(clip.path, times, size=size)
    pcm = None
    if s.has_audio:
        try:
            pcm, _ = media.read_audio(clip.path, s.start, s.duration, sample_rate=AUDIO_RATE, channels=2)
        except Exception:
            pcm = None
    rate = Fraction(s.fps).limit_denominator(1001)
    with atomic_path(target) as tmp:
        with av.open(str(tmp), "w", format="mp4") as out:
            vs = out.add_stream("libx264", rate=rate)
            vs.width, vs.height, vs.pix_fmt = bw, bh, "yuv420p"
            vs.options = {"crf": "28", "preset": "veryfast"}
            aus = None
            if pcm is not None:
                aus = out.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
            for fr in frames:
                img = crop_to_bucket(fr, s.bucket, height=bh).resize((bw, bh))
                for pkt in vs.encode(av.VideoFrame.from_ndarray(np.asarray(img), format="rgb24")):
                    out.mux(pkt)
            for pkt in vs.encode():
                out.mux(pkt)
            if aus is not None:
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm.astype(np.float32)), format="fltp",
                                                layout="stereo")
                af.sample_rate = AUDIO_RATE
                for pkt in aus.encode(af):
                    out.mux(pkt)
                for pkt in aus.encode():
                    out.mux(pkt)
    return bw, bh, pcm is not None


def build_gallery(dataset, folder: str | Path, *, max_items: int = 48, thumb_height: int = 96,
                  clip_height: int = 192, progress: Optional[Callable[[int, int], None]] = None,
                  cancelled: Optional[Callable[[], bool]] = None) -> dict:
    """Thumbnails and playable clips for the first ``max_items`` samples, written into
    ``folder`` (files already there for an unchanged sample are reused). Returns
    ``{"total": N, "shown": n, "items": [...]}``; each item has ``thumb`` and ``clip`` file
    names (``clip`` is None for stills — ``still`` is True — and where the clip could not be
    made, with ``error`` saying why),
    ``caption`` (shortened past GALLERY_CAPTION_CHARS; ``caption_chars`` is the full length),
    ``flags`` (readable text), ``bucket``, ``fps``, ``source``, ``start``,
    ``duration``, ``audio``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n = min(len(dataset.samples), max_items)
    items = []
    for i in range(n):
        if cancelled is not None and cancelled():
            break
        s = dataset.samples[i]
        clip = dataset.clipset.clips[s.clip]
        key = sample_key(dataset, i)
        item = {"index": i, "caption": short_caption(s.caption), "caption_chars": len(s.caption or ""),
                "flags": [FLAG_TEXT.get(f, f) for f in s.flags],
                "bucket": str(s.bucket), "fps": s.fps, "source": clip.name,
                "start": round(s.start, 3), "duration": round(s.duration, 3), "audio": bool(s.has_audio),
                "thumb": None, "clip": None}
        thumb, mp4 = folder / f"{key}.jpg", folder / f"{key}.mp4"
        item["still"] = clip.kind != "video" or s.bucket.frames <= 1 or s.fps <= 0
        if not item["still"]:
            try:
                if not mp4.exists():
                    write_sample_clip(dataset, i, mp4, height=clip_height)
                item["clip"] = mp4.name
            except Exception as e:  # a sample that cannot be previewed still shows its facts
                item["error"] = f"{type(e).__name__}: {e}"[:200]
        try:
            if not thumb.exists():
                from . import media

                fr = media.frames_at(clip.path, [s.start + 1e-3])[0]
                img = crop_to_bucket(fr, s.bucket, height=clip_height if item["still"] else thumb_height)
                with atomic_path(thumb) as tmp:
                    img.convert("RGB").save(tmp, "JPEG", quality=85)
            item["thumb"] = thumb.name
        except Exception as e:
            item.setdefault("error", f"{type(e).__name__}: {e}"[:200])
        items.append(item)
        if progress is not None:
            progress(i + 1, n)
    return {"total": len(dataset.samples), "shown": len(items), "items": items}
