"""Preview images for the dataset nodes: contact sheets with labels, drawn with Pillow.

Every function returns an HxWx3 uint8 array (what ComfyUI's IMAGE type is made from). Sheets
are capped in size: past ``max_items`` thumbnails a "+N more" tile says what was left out.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

import numpy as np

BG = (22, 22, 26)
FG = (230, 230, 230)
DIM = (150, 150, 160)
WARN = (255, 170, 60)
LABEL_PX = 14  # contact-sheet labels: readable in a node at the default zoom
LINE_H = 17


def _thumb(img, height: int):
    from PIL import Image

    im = img if isinstance(img, Image.Image) else Image.fromarray(np.asarray(img, dtype=np.uint8))
    w = max(1, round(im.width * height / max(1, im.height)))
    return im.convert("RGB").resize((min(w, 3 * height), height), Image.BILINEAR)


def contact_sheet(items: Sequence[tuple[object, str]], cols: Optional[int] = None, thumb_height: int = 96,
                  max_items: int = 48, title: Optional[str] = None) -> np.ndarray:
    """Thumbnails in a grid, each with its (multi-line) label underneath. ``items`` are
    (image or None, label); a None image draws a grey placeholder (e.g. an unreadable frame)."""
    from PIL import Image, ImageDraw

    from .fonts import draw_text

    shown = list(items[:max_items])
    more = len(items) - len(shown)
    if more > 0:
        shown.append((None, f"+{more} more"))
    if not shown:
        shown = [(None, "nothing to show")]
    thumbs = [(_thumb(im, thumb_height) if im is not None else None, label) for im, label in shown]
    cell_w = max(thumb_height * 16 // 9, max((t.width for t, _ in thumbs if t is not None), default=thumb_height))
    # labels in a readable size: a cell is wide enough for a label line of ~26 characters
    cell_w = max(cell_w, 16 * LABEL_PX)
    lines = max(len(label.splitlines()) for _, label in thumbs)
    cell_h = thumb_height + 6 + LINE_H * lines + 6
    n = len(thumbs)
    cols = cols or min(n, 6)
    rows = (n + cols - 1) // cols
    top = LINE_H + 10 if title else 0
    sheet = Image.new("RGB", (cols * (cell_w + 8) + 8, top + rows * (cell_h + 8) + 8), BG)
    d = ImageDraw.Draw(sheet)
    if title:
        draw_text(d, (8, 5), title, fill=FG, size=LABEL_PX + 2)
    for i, (t, label) in enumerate(thumbs):
        x = 8 + (i % cols) * (cell_w + 8)
        y = top + 8 + (i // cols) * (cell_h + 8)
        if t is None:
            d.rectangle([x, y, x + cell_w - 1, y + thumb_height - 1], fill=(55, 55, 62))
        else:
            sheet.paste(t, (x + (cell_w - t.width) // 2, y))
        for j, line in enumerate(label.splitlines()):
            colour = WARN if line.startswith("!") else (FG if j == 0 else DIM)
            draw_text(d, (x + 2, y + thumb_height + 4 + LINE_H * j), line.lstrip("!"), fill=colour, size=LABEL_PX)
    return np.asarray(sheet)


def _short(name: str, n: int = 28) -> str:
    return name if len(name) <= n else "…" + name[-(n - 1):]


def thumbnail_size(width: int, height: int, thumb_height: int = 96) -> tuple[int, int]:
    """(w, h) of a thumbnail ``thumb_height`` tall with the source aspect (width capped at 3x)."""
    w = max(1, round(width * thumb_height / max(1, height)))
    return min(w, 3 * thumb_height), thumb_height


def frame_thumbnails(clip, times: Sequence[float], thumb_height: int = 96) -> list:
    """Thumbnails (HxWx3 uint8, or None when unreadable) of ``clip`` at ``times``: one decode
    pass, shrunk inside the decoder's converter."""
    from . import media

    if not times:
        return []
    try:
        size = thumbnail_size(clip.width, clip.height, thumb_height) if clip.width and clip.height else None
        frames = media.frames_at(clip.path, [max(0.0, t) for t in times], size=size)
        return list(frames)
    except Exception:
        return [None] * len(times)


def fmt_duration(seconds: float) -> str:
    """``4.4s``, ``1:05``, ``1:02:03``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def clip_label(clip) -> str:
    """Multi-line label: name; duration, fps, size (or 'still WxH'); audio yes/no; caption.
    Lines starting with '!' are drawn as warnings by :func:`contact_sheet`."""
    if clip.kind == "image":
        info = f"still {clip.width}x{clip.height}"
    else:
        info = f"{fmt_duration(clip.duration)} {clip.fps:.3g}fps{' VFR' if clip.vfr else ''} {clip.width}x{clip.height}"
    lines = [_short(clip.name), info]
    if clip.kind == "video":
        lines.append(f"audio {clip.audio.sample_rate // 1000}kHz" if clip.has_audio else "!no audio")
    if clip.caption:
        lines.append("captioned")
    return "\n".join(lines)


def segment_label(clipset, seg) -> str:
    """Label of one segment: ``name#i``; time range and length; motion when measured."""
    c = clipset.clips[seg.clip]
    lines = [f"{_short(c.name, 24)}#{seg.index}"]
    if c.kind == "image":
        lines.append("still")
    else:
        lines.append(f"{seg.start:.2f}-{seg.end:.2f}s ({seg.duration:.1f}s)")
    if seg.motion is not None:
        lines.append(f"motion {seg.motion:.1f}")
    return "\n".join(lines)


def segment_thumbnails(clipset, segments=None, thumb_height: int = 96) -> list:
    """First frame of each segment (one decode pass per clip), in the order of ``segments``."""
    segs = clipset.all_segments() if segments is None else list(segments)
    out: list = [None] * len(segs)
    by_clip: dict[int, list[int]] = {}
    for i, sg in enumerate(segs):
        by_clip.setdefault(sg.clip, []).append(i)
    for ci, idx in by_clip.items():
        thumbs = frame_thumbnails(clipset.clips[ci], [segs[i].start + 1e-3 for i in idx], thumb_height)
        for i, t in zip(idx, thumbs):
            out[i] = t
    return out


def clips_contact_sheet(clipset, thumb_height: int = 96, max_items: int = 48) -> np.ndarray:
    """First frame of every clip with :func:`clip_label` under it."""
    clips = clipset.clips[:max_items]
    items = [(frame_thumbnails(c, [0.0], thumb_height)[0], clip_label(c)) for c in clips]
    items += [(None, "")] * (len(clipset.clips) - len(clips))  # counted into "+N more"
    return contact_sheet(items, title=f"{len(clipset.clips)} clips from {_short(clipset.root, 60)}",
                         thumb_height=thumb_height, max_items=max_items)


def clips_summary(clipset) -> str:
    vids = [c for c in clipset.clips if c.kind == "video"]
    stills = [c for c in clipset.clips if c.kind == "image"]
    lines = [f"{len(vids)} videos ({sum(c.duration for c in vids):.1f} s), {len(stills)} stills, "
             f"{sum(c.has_audio for c in vids)} with audio, {sum(bool(c.caption) for c in clipset.clips)} captioned"]
    vfr = [c.name for c in vids if c.vfr]
    if vfr:
        lines.append(f"variable frame rate (read by timestamp): {', '.join(vfr[:6])}")
    for s in clipset.skipped:
        lines.append(f"skipped {_rel(clipset, s.path)}: {s.reason}")
    for s in getattr(clipset, "warnings", []):
        lines.append(f"warning {_rel(clipset, s.path)}: {s.reason}")
    return "\n".join(lines)


def _rel(clipset, path: str) -> str:
    """``path`` relative to the dataset folder when inside it, else its file name."""
    import os

    try:
        rel = os.path.relpath(path, clipset.root)
    except ValueError:
        return os.path.basename(path)
    return os.path.basename(path) if rel.startswith("..") else rel.replace(os.sep, "/")


def segments_contact_sheet(clipset, thumb_height: int = 96, max_items: int = 48) -> np.ndarray:
    """First frame of every segment (scene thumbnails) with :func:`segment_label`."""
    segs = clipset.all_segments()
    shown = segs[:max_items]
    thumbs = segment_thumbnails(clipset, shown, thumb_height)
    items = [(t, segment_label(clipset, sg)) for t, sg in zip(thumbs, shown)]
    items += [(None, "")] * (len(segs) - len(shown))
    return contact_sheet(items, title=f"{len(segs)} segments", thumb_height=thumb_height, max_items=max_items)


def segments_summary(clipset) -> str:
    segs = clipset.all_segments()
    per: dict[int, list] = {}
    for s in segs:
        per.setdefault(s.clip, []).append(s)
    lines = [f"{len(segs)} segments from {len(per)} clips, {sum(s.duration for s in segs):.1f} s in all"]
    for ci, ss in per.items():
        spans = ", ".join(f"{s.start:.2f}-{s.end:.2f}" for s in ss[:8]) + (" …" if len(ss) > 8 else "")
        lines.append(f"{clipset.clips[ci].name}: {len(ss)} ({spans})")
    dropped = [c.name for i, c in enumerate(clipset.clips) if i not in per]
    if dropped:
        lines.append(f"no segment kept (all shorter than the minimum): {', '.join(dropped[:8])}")
    return "\n".join(lines)


def dataset_gallery(dataset, report=None, thumb_height: int = 96, max_items: int = 48) -> np.ndarray:
    """Each sample's first frame cropped exactly as training will see it (resize to cover the
    bucket, centre crop), labelled with its segment, bucket, frame rate and flags. Only the
    first ``max_items`` samples are decoded (one pass per clip, at the size the thumbnail
    needs); the rest are counted in a "+N more" tile."""
    from .buckets import FLAG_TEXT, crop_to_bucket

    samples = list(dataset.samples)
    shown = samples[:max_items]
    # one decode per clip, at a size that covers every bucket thumbnail of that clip
    by_clip: dict[int, list[int]] = {}
    for i, s in enumerate(shown):
        by_clip.setdefault(s.clip, []).append(i)
    frames: list = [None] * len(shown)
    for ci, idx in by_clip.items():
        c = dataset.clipset.clips[ci]
        size = None
        if c.width and c.height:
            scale = max(max(thumb_height * shown[i].bucket.width / shown[i].bucket.height / c.width,
                            thumb_height / c.height) for i in idx)
            if scale < 1.0:
                size = (max(2, int(np.ceil(c.width * scale))), max(2, int(np.ceil(c.height * scale))))
        try:
            got = media_frames(c.path, [shown[i].start + 1e-3 for i in idx], size)
        except Exception:
            continue
        for i, fr in zip(idx, got):
            frames[i] = fr
    items = []
    for s, fr in zip(shown, frames):
        img = crop_to_bucket(fr, s.bucket, height=thumb_height) if fr is not None else None
        seg = dataset.segments[s.segment]
        if img is not None and (s.video_mask or s.reference_bucket is not None):
            img = _with_pairs(img, dataset, s, seg.key(dataset.clipset.clips), thumb_height)
        label = f"{_short(seg.key(dataset.clipset.clips))}\n{s.bucket} @ {s.fps:g}fps"
        for f in s.flags:
            label += f"\n!{FLAG_TEXT.get(f, f)}"
        items.append((img, label))
    items += [(None, "")] * (len(samples) - len(shown))  # counted into "+N more"
    title = f"{len(samples)} samples"
    if report is not None:
        title += "  |  " + "  ".join(f"{b}: {n}" for b, n in sorted(report.counts.items()))
    return contact_sheet(items, title=title, thumb_height=thumb_height, max_items=max_items)


def _with_pairs(img, dataset, s, key: str, thumb_height: int):
    """The sample's thumbnail with its inpainting mask over it (the region to fill tinted red,
    as Encode Latents will read the mask) and its IC-LoRA reference beside it."""
    from PIL import Image

    from . import pairs
    from .buckets import crop_to_bucket

    clip = dataset.clipset.clips[s.clip]
    t = s.start + 1e-3
    try:
        if s.video_mask:
            m = pairs.video_mask_pixels(s.video_mask, [t], (s.bucket.width, s.bucket.height), clip.fps, key=key)[0]
            m = np.asarray(Image.fromarray((m * 255).astype(np.uint8)).resize(img.size, Image.NEAREST)) / 255.0
            a = np.asarray(img).astype(np.float32)
            hole = (m <= 0.5)[..., None]
            a = np.where(hole, 0.5 * a + 0.5 * np.array([230.0, 40.0, 40.0]), a)
            img = Image.fromarray(a.clip(0, 255).astype(np.uint8))
        if s.reference_bucket is not None and clip.reference:
            ref = pairs.frames_at(clip.reference, [t], clip.fps)[0]
            r = crop_to_bucket(ref, s.reference_bucket, height=thumb_height)
            both = Image.new("RGB", (r.width + 2 + img.width, thumb_height), (20, 20, 20))
            both.paste(r, (0, 0))
            both.paste(img, (r.width + 2, 0))
            img = both
    except Exception:  # a pair that cannot be read shows the plain sample (Encode reports it)
        return img
    return img


def media_frames(path: str, times: Sequence[float], size: Optional[tuple[int, int]] = None) -> list:
    """``media.frames_at`` as a list (one decode pass)."""
    from . import media

    return list(media.frames_at(path, [max(0.0, t) for t in times], size=size))


def caption_sheet(entries: Iterable[tuple[object, str, str]], width_chars: int = 48) -> np.ndarray:
    """Thumbnail + wrapped caption per entry: (image, name, caption)."""
    import textwrap

    items = []
    for img, name, cap in entries:
        body = "\n".join(textwrap.wrap(cap or "!(no caption)", width_chars)[:6])
        items.append((img, f"{_short(name)}\n{body}"))
    return contact_sheet(items, cols=3)
