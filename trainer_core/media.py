"""Reading training media: PyAV for video and audio, Pillow for stills and animated GIF/WebP.

Timeline: t = 0 is the video stream's start time (the first frame of nearly every file);
audio is read on the same timeline, so a segment's picture and sound stay aligned. Frames
come back upright (the container's display rotation, or a JPEG's EXIF orientation,
applied) as HxWx3 uint8 RGB. Variable frame rate is handled by timestamps: the frame for
time t is the one on screen at t (the last frame whose presentation time is <= t), never
"frame number t * fps".

Nothing here imports ComfyUI; progress and cancel reach ``load_clips`` as callables.
"""
from __future__ import annotations

import bisect
import csv
import inspect
import io
import json
import math
import os
import re
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from .dataset import IMAGE_EXTS, VIDEO_EXTS, AudioInfo, ClipInfo, ClipSet, Skipped

PIL_ANIMATED_EXTS = (".gif", ".webp")  # decoded with Pillow (FFmpeg cannot decode animated WebP)
_EPS = 1e-5  # seconds: a frame at exactly t counts as "on screen at t"
_GIF_MIN_DELAY_MS = 20  # browsers show 0/10 ms GIF delays as 100 ms


class MediaError(Exception):
    """A file that cannot be used, with a reason a person can act on (``.reason``)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Cancelled(RuntimeError):
    """Raised when ``should_stop()`` asked a long loop to end."""


def _short(e: BaseException) -> str:
    s = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
    s = re.sub(r"^\[Errno -?\d+\]\s*", "", s)
    s = re.sub(r":\s*'[^']*'\s*$", "", s)  # FFmpeg appends the file path; the caller names the file
    return s[:160]


# ============================================================================ probing


def probe(path: str | os.PathLike, root: Optional[str | os.PathLike] = None) -> ClipInfo:
    """Describe one media file.

    Videos (mp4, mov, mkv, webm, ...): display size after rotation, rotation, average fps,
    VFR flag (from demuxed timestamps, no decoding), duration, frame count, first audio
    track. Animated GIF/WebP are videos (Pillow); a one-frame GIF/WebP and png/jpg are
    images. Raises :class:`MediaError` with a readable reason when the file can't be used.
    ``root`` only sets ``ClipInfo.name`` (path relative to it, with '/').
    """
    p = Path(path).resolve()
    listed = Path(os.path.abspath(path))
    if root is not None:
        rp = Path(root).resolve()
        try:
            name = listed.relative_to(rp).as_posix()  # a link inside the folder keeps its own name
        except ValueError:
            try:
                name = p.relative_to(rp).as_posix()
            except ValueError:
                name = listed.name
    else:
        name = listed.name
    if not p.is_file():
        raise MediaError("file not found")
    size = p.stat().st_size
    if size == 0:
        raise MediaError("empty file (0 bytes)")
    ext = p.suffix.lower()
    if ext in PIL_ANIMATED_EXTS:
        info = _probe_pil(p)
    elif ext in IMAGE_EXTS and ext not in VIDEO_EXTS:
        info = _probe_still(p)
    else:
        info = _probe_av(p)
    info.path = str(listed) if listed.is_symlink() else str(p)  # a link stays itself (its own .txt)
    info.name = name
    info.size_bytes = size
    return info


def _exif_rotation(im) -> int:
    """Clockwise degrees from an EXIF Orientation tag (mirrored ones: their rotation part)."""
    try:
        o = im.getexif().get(0x0112, 1)
    except Exception:
        return 0
    return {3: 180, 4: 180, 5: 90, 6: 90, 7: 270, 8: 270}.get(int(o or 1), 0)


def _probe_still(p: Path) -> ClipInfo:
    from PIL import Image

    try:
        with Image.open(p) as im:
            w, h = im.size
            rot = _exif_rotation(im)
            if im.format == "JPEG":
                im.draft("RGB", (max(1, w // 8), max(1, h // 8)))  # decode the whole stream, cheaply
            im.load()
    except Exception as e:
        raise MediaError(f"not a readable image ({_short(e)})") from e
    if rot in (90, 270):
        w, h = h, w
    return ClipInfo(path=str(p), name=p.name, kind="image", width=w, height=h, rotation=rot)


def _pil_durations(im) -> list[float]:
    """Per-frame display durations (seconds) of an open animated Pillow image."""
    n = getattr(im, "n_frames", 1)
    out = []
    for i in range(n):
        im.seek(i)
        if "duration" not in im.info:  # WebP sets it when the frame is decoded
            im.load()
        d = im.info.get("duration")
        if d is None or d < _GIF_MIN_DELAY_MS:
            d = 100
        out.append(float(d) / 1000.0)
    im.seek(0)
    return out


def _probe_pil(p: Path) -> ClipInfo:
    from PIL import Image

    try:
        with Image.open(p) as im:
            w, h = im.size
            n = getattr(im, "n_frames", 1)
            if n <= 1:
                im.load()
                return ClipInfo(path=str(p), name=p.name, kind="image", width=w, height=h)
            durs = _pil_durations(im)
            im.seek(n - 1)
            im.load()  # the last frame decodes: the file is complete
    except MediaError:
        raise
    except Exception as e:
        raise MediaError(f"not a readable animation ({_short(e)})") from e
    total = round(float(sum(durs)), 6)
    vfr = (max(durs) - min(durs)) > 1e-6
    return ClipInfo(path=str(p), name=p.name, kind="video", width=w, height=h, fps=n / total,
                    duration=total, num_frames=n, vfr=vfr)


def _open_av(p: Path):
    import av

    try:
        return av.open(str(p), metadata_errors="ignore")
    except Exception as e:
        msg = _short(e)
        if "Invalid data" in msg or "moov atom" in msg or "End of file" in msg:
            raise MediaError(f"damaged or incomplete media file (FFmpeg: {msg})") from e
        raise MediaError(f"cannot be opened as media (FFmpeg: {msg})") from e


def _rotation_cw(frame) -> int:
    """Clockwise degrees a player turns this decoded frame (from its display matrix)."""
    try:
        r = int(round(frame.rotation or 0))  # PyAV: counter-clockwise, [-180, 180]
    except Exception:
        return 0
    return int((-r) % 360) // 90 * 90


def _timestamps_from_index(vs) -> Optional[list[int]]:
    """Per-frame decode timestamps from the container index (mp4/mov), if it lists every frame."""
    try:
        entries = vs.index_entries
        n = len(entries)
    except Exception:
        return None
    if n < 2 or not vs.frames or n < vs.frames:
        return None
    return [e.timestamp for e in entries if not e.is_discard]


def _presentation_span_from_tail(c, vs) -> Optional[int]:
    """End of the last frame minus the first frame's time, in stream ticks, from the packets
    after the last keyframe (no decoding). The container's stream duration is counted in
    decode timestamps and, with B-frames and variable frame rate, can end before the last
    frame is even shown (an mp4 measured 1.82 s for frames up to 1.9 s)."""
    try:
        keys = [e.timestamp for e in vs.index_entries if e.is_keyframe]
        first = vs.start_time
        if not keys or first is None:
            return None
        c.seek(keys[-1], stream=vs, backward=True, any_frame=False)
        end = None
        for pkt in c.demux(vs):
            if pkt.size == 0 or pkt.pts is None:
                continue
            e = pkt.pts + max(0, pkt.duration or 0)
            end = e if end is None else max(end, e)
        c.seek(0, stream=vs, backward=True)
    except Exception:
        return None
    if end is None or end <= first:
        return None
    return int(end - first)


def _is_vfr(ts: Sequence[int]) -> bool:
    """Uneven spacing between consecutive timestamps (ticks of one time base)."""
    if len(ts) < 3:
        return False
    d = np.diff(np.asarray(sorted(ts), dtype=np.float64))
    d = d[d > 0]
    if len(d) < 2:
        return False
    med = float(np.median(d))
    tol = max(0.1 * med, 1.0)  # 10 %, and at least one tick of rounding
    return bool(np.any(np.abs(d - med) > tol))


def _probe_av(p: Path) -> ClipInfo:
    c = _open_av(p)
    try:
        if not c.streams.video:
            what = "audio only" if c.streams.audio else "no streams"
            raise MediaError(f"has no video stream ({what}); Load Clips reads videos and images")
        vs = c.streams.video[0]
        tb = vs.time_base
        a = c.streams.audio[0] if c.streams.audio else None

        # --- timestamps without decoding: container index, else demux the packets
        ts = _timestamps_from_index(vs)
        last_dur = 0
        a_end = None
        a_first = None
        index_span = _presentation_span_from_tail(c, vs) if ts is not None else None
        if ts is None:
            pts, durs = [], []
            a_last = None
            streams = [vs] + ([a] if a is not None else [])
            try:
                for pkt in c.demux(*streams):
                    if pkt.size == 0:
                        continue
                    if pkt.stream.index == vs.index:
                        t = pkt.pts if pkt.pts is not None else pkt.dts
                        if t is not None:
                            pts.append(t)
                            durs.append(pkt.duration or 0)
                    elif pkt.pts is not None:
                        if a_first is None:
                            a_first = pkt.pts
                        a_last = pkt.pts + (pkt.duration or 0)
            except Exception as e:
                if not pts:
                    raise MediaError(f"damaged media file: no readable video packets (FFmpeg: {_short(e)})") from e
            if not pts:
                raise MediaError("video stream holds no frames")
            order = np.argsort(pts)
            ts = [pts[i] for i in order]
            last_dur = durs[order[-1]]
            if a_first is not None and a_last is not None:
                a_end = float((a_last - a_first) * a.time_base)
            c.seek(0)
        n = len(ts)
        vfr = _is_vfr(ts)
        diffs = np.diff(ts) if n > 1 else np.array([0])
        med = float(np.median(diffs)) if n > 1 else 0.0
        if index_span is not None:
            duration = float(index_span * tb)
        elif vs.duration and vs.duration > 0 and _timestamps_from_index(vs) is not None:
            duration = float(vs.duration * tb)
        else:
            step = last_dur if last_dur and last_dur > 0 else med
            duration = float((ts[-1] - ts[0] + step) * tb) if n > 1 else float((vs.duration or 0) * tb)
        if duration <= 0:
            rate = vs.average_rate or vs.guessed_rate
            duration = n / float(rate) if rate else 0.0

        # --- one decoded frame: proves the stream decodes, gives rotation and true size
        try:
            first = next(c.decode(vs), None)
        except Exception as e:
            raise MediaError(f"video cannot be decoded (FFmpeg: {_short(e)})") from e
        if first is None:
            raise MediaError("video stream has no decodable frame")
        rot = _rotation_cw(first)
        w, h = first.width, first.height
        if rot in (90, 270):
            w, h = h, w

        if vfr or not (vs.average_rate and vs.average_rate > 0):
            fps = n / duration if duration > 0 else 0.0
        else:
            fps = float(vs.average_rate)
            if duration > 0 and abs(fps - n / duration) > 0.02 * fps:
                fps = n / duration

        audio = None
        if a is not None:
            rate = int(a.rate or a.codec_context.sample_rate or 0)
            ch = int(getattr(a, "channels", 0) or a.codec_context.channels or 0)
            if a.duration:
                adur = float(a.duration * a.time_base)
            elif a_end is not None:
                adur = a_end
            else:
                adur = c.duration / 1e6 if c.duration else duration
            # where the track starts on the picture's timeline (a late track starts after 0)
            v_origin = float(vs.start_time * tb) if vs.start_time is not None else 0.0
            if a.start_time is not None:
                a_start = float(a.start_time * a.time_base) - v_origin
            elif a_first is not None:
                a_start = float(a_first * a.time_base) - v_origin
            else:
                a_start = 0.0
            if rate > 0 and ch > 0:
                audio = AudioInfo(sample_rate=rate, channels=ch, duration=round(adur, 6),
                                  codec=a.codec_context.name or "", start=round(a_start, 6))
    finally:
        c.close()
    return ClipInfo(path=str(p), name=p.name, kind="video", width=w, height=h, fps=fps,
                    duration=round(duration, 6), num_frames=n, rotation=rot, vfr=vfr, audio=audio)


# ============================================================================ frames


def _rotate(img: np.ndarray, rotation_cw: int) -> np.ndarray:
    k = (rotation_cw // 90) % 4
    return np.ascontiguousarray(np.rot90(img, k=-k)) if k else img


def _fit(w: int, h: int, max_side: Optional[int]) -> tuple[int, int]:
    if not max_side or max(w, h) <= max_side:
        return w, h
    s = max_side / max(w, h)
    return max(1, int(round(w * s))), max(1, int(round(h * s)))


def _to_rgb(frame, size: Optional[tuple[int, int]], fmt: str = "rgb24", fast: bool = False,
            reformatter=None) -> np.ndarray:
    """Convert a decoded VideoFrame to an upright HxWx3 array; ``size`` is the display (w, h).

    Pass one ``reformatter`` (av.video.reformatter.VideoReformatter) for a whole stream: it
    keeps swscale's context between frames, which makes shrinking a 1080p frame almost free
    (a fresh context per frame costs more than decoding it)."""
    rot = _rotation_cw(frame)
    sw, sh = frame.width, frame.height
    interp = None
    if size is not None:
        w, h = size
        sw, sh = (h, w) if rot in (90, 270) else (w, h)
        if (sw, sh) != (frame.width, frame.height):
            down = sw * sh < frame.width * frame.height
            interp = "FAST_BILINEAR" if fast else ("AREA" if down else "BICUBIC")
    if reformatter is not None:
        arr = reformatter.reformat(frame, width=sw, height=sh, format=fmt, interpolation=interp).to_ndarray()
    elif interp is None:
        arr = frame.to_ndarray(format=fmt)
    else:
        arr = frame.to_ndarray(format=fmt, width=sw, height=sh, interpolation=interp)
    return _rotate(arr, rot)


def _pil_rgb(im, size: Optional[tuple[int, int]]) -> np.ndarray:
    from PIL import Image

    im = im.convert("RGB")
    if size is not None and tuple(size) != im.size:
        im = im.resize(tuple(size), Image.BICUBIC if size[0] * size[1] > im.size[0] * im.size[1] else Image.BOX)
    return np.asarray(im, dtype=np.uint8)


def _pil_still(path: str, size: Optional[tuple[int, int]]) -> np.ndarray:
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im.seek(0)
            im = ImageOps.exif_transpose(im)
            return _pil_rgb(im, size)
    except Exception as e:
        raise MediaError(f"{os.path.basename(path)}: not a readable image ({_short(e)})") from e


def _pil_frames(path: str) -> Iterator[tuple[float, object]]:
    """(start time, Pillow frame) of an animated GIF/WebP; frames are composited by Pillow."""
    from PIL import Image

    with Image.open(path) as im:
        durs = _pil_durations(im)
        t = 0.0
        for i, d in enumerate(durs):
            im.seek(i)
            yield t, im
            t += d


def _is_pil_media(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in PIL_ANIMATED_EXTS


def _is_still(path: str) -> bool:
    ext = os.path.splitext(path)[1].lower()
    return ext in IMAGE_EXTS and ext not in VIDEO_EXTS


class _Decoder:
    """One open video: decode from a time with verified seeking, on the 0-based timeline."""

    def __init__(self, path: str, threads: bool = True, fast: bool = False):
        import av

        try:
            self.c = av.open(path, metadata_errors="ignore")
        except Exception as e:
            raise MediaError(f"{os.path.basename(path)}: cannot be opened ({_short(e)})") from e
        if not self.c.streams.video:
            self.c.close()
            raise MediaError(f"{os.path.basename(path)} has no video stream")
        self.vs = self.c.streams.video[0]
        if threads:
            self.vs.thread_type = "AUTO"
        if fast:  # analysis only: skip the deblocking filter (h264/hevc), ~10 % faster decode
            try:
                self.vs.codec_context.options = {"skip_loop_filter": "all"}
            except Exception:
                pass
        from av.video.reformatter import VideoReformatter

        self.reformatter = VideoReformatter()
        self.tb = self.vs.time_base
        self.origin = float(self.vs.start_time * self.tb) if self.vs.start_time is not None else 0.0
        self._keys: Optional[list[float]] = None
        self._fresh = True

    def close(self) -> None:
        self.c.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def keyframe_times(self) -> Optional[list[float]]:
        """Times of keyframes from the container index (approximate: decode times), if known."""
        if self._keys is None:
            try:
                ents = self.vs.index_entries
                ks = [float(e.timestamp * self.tb) - self.origin for e in ents if e.is_keyframe]
            except Exception:
                ks = []
            self._keys = sorted(ks)
        return self._keys or None

    def decode_from(self, start: float) -> Iterator[tuple[float, object]]:
        """Yield (t, frame) in presentation order from the last frame at or before ``start``'s
        keyframe onwards (frames before ``start`` included, so callers can pick the frame on
        screen at ``start``)."""
        back = 0.0
        while True:
            target = start - back
            if target <= 0.25:
                if not self._fresh:
                    self.c.seek(0, stream=self.vs, backward=True)
                    self._flush()
                gen = self._frames()
                self._fresh = False
                yield from gen
                return
            pts = int(math.floor((target + self.origin) / float(self.tb)))
            self.c.seek(pts, stream=self.vs, backward=True)
            self._fresh = False
            gen = self._frames()
            first = next(gen, None)
            if first is None:
                if back > 64:
                    return
                back = max(1.0, back * 4)
                continue
            if first[0] <= start + _EPS:
                yield first
                yield from gen
                return
            back = max(1.0, back * 4)  # the seek landed after start: go further back

    def _flush(self) -> None:
        try:
            self.vs.codec_context.flush_buffers()
        except Exception:
            pass

    def _frames(self) -> Iterator[tuple[float, object]]:
        last_t = None
        step = 1.0 / float(self.vs.average_rate or self.vs.guessed_rate or 25)
        try:
            for fr in self.c.decode(self.vs):
                if fr.pts is not None:
                    t = float(fr.pts * self.tb) - self.origin
                else:
                    t = (last_t + step) if last_t is not None else 0.0
                if last_t is not None and t <= last_t - 1e-9:
                    continue  # out-of-order leftovers after a seek
                last_t = t
                yield t, fr
        except Exception as e:  # a damaged tail: stop at the last good frame
            if last_t is None:
                raise MediaError(f"video cannot be decoded ({_short(e)})") from e


def iter_frames(path: str | os.PathLike, start: float = 0.0, end: Optional[float] = None,
                max_side: Optional[int] = None, step: int = 1, fmt: str = "rgb24",
                fast: bool = False) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(t, frame)`` for every ``step``-th frame with ``start <= t < end``.

    Frames are upright HxWx3 uint8 (``fmt`` "rgb24", or "bgr24" for OpenCV users). With
    ``max_side`` the frame is shrunk (never enlarged) so its longer side is ``max_side``,
    inside the decoder's pixel-format conversion. ``fast`` (for analysis, not training
    pixels): swscale's fast bilinear and no deblocking filter in the decoder.
    """
    path = str(path)
    step = max(1, int(step))
    i = 0
    if _is_still(path):
        img = _pil_still(path, None)
        if start <= 0 and (end is None or end > 0):
            h, w = img.shape[:2]
            if max_side:
                img = _pil_still(path, _fit(w, h, max_side))
            yield 0.0, img[..., ::-1].copy() if fmt == "bgr24" else img
        return
    if _is_pil_media(path):
        size = None
        for t, im in _pil_frames(path):
            if t < start - _EPS:
                continue
            if end is not None and t >= end - _EPS:
                break
            if i % step == 0:
                if max_side and size is None:
                    size = _fit(im.size[0], im.size[1], max_side)
                arr = _pil_rgb(im, size)
                yield t, (arr[..., ::-1].copy() if fmt == "bgr24" else arr)
            i += 1
        return
    size = None
    with _Decoder(path, fast=fast) as d:
        for t, fr in d.decode_from(start):
            if t < start - _EPS:
                continue
            if end is not None and t >= end - _EPS:
                break
            if i % step == 0:
                if max_side and size is None:
                    rot = _rotation_cw(fr)
                    w, h = (fr.height, fr.width) if rot in (90, 270) else (fr.width, fr.height)
                    size = _fit(w, h, max_side)
                yield t, _to_rgb(fr, size, fmt=fmt, fast=fast, reformatter=d.reformatter)
            i += 1


def frames_at(path: str | os.PathLike, times: Sequence[float],
              size: Optional[tuple[int, int]] = None,
              should_stop: Optional[Callable[[], bool]] = None) -> np.ndarray:
    """The frame on screen at each of ``times`` (seconds), upright, as [N, H, W, 3] uint8 RGB.

    "On screen at t" is the last frame whose presentation time is <= t; times before the
    first frame give the first frame, times past the end the last one. Times may come in
    any order and repeat. One sequential decode pass from a seek near the earliest time;
    it seeks forward again only where a keyframe lies well ahead (sparse times in long
    clips). ``size=(w, h)`` resizes (display orientation) in the decoder's converter.
    ``should_stop()`` is asked every 16 decoded frames (a long clip can take seconds);
    True raises :class:`Cancelled`.
    """
    path = str(path)
    times = [float(t) for t in times]
    if not times:
        raise ValueError("frames_at needs at least one time")
    n = len(times)
    if _is_still(path):
        img = _pil_still(path, size)
        return np.stack([img] * n)
    order = sorted(range(n), key=lambda i: times[i])
    out: list[Optional[np.ndarray]] = [None] * n

    if _is_pil_media(path):
        prev = None
        pos = 0
        for t, im in _pil_frames(path):
            while pos < n and times[order[pos]] < t - _EPS:
                out[order[pos]] = prev if prev is not None else _pil_rgb(im, size)
                pos += 1
            if pos >= n:
                break
            prev = _pil_rgb(im, size)
        if prev is None:
            raise MediaError(f"{os.path.basename(path)}: no frame could be decoded")
        for k in range(pos, n):
            out[order[k]] = prev
        return np.stack(out)

    with _Decoder(path) as d:
        keys = d.keyframe_times()
        pos = 0
        prev = None  # (t, frame)
        prev_arr = None
        it = d.decode_from(times[order[0]])
        jumped: set = set()  # never jump twice to the same place (a seek may land before it)
        decoded = 0
        while pos < n:
            item = next(it, None)
            if item is None:
                break
            decoded += 1
            if should_stop is not None and (decoded & 15) == 1 and should_stop():
                raise Cancelled(f"{os.path.basename(path)}: decoding cancelled")
            t, fr = item
            while pos < n and times[order[pos]] < t - _EPS:
                if prev is None:  # before the first frame: show the first frame
                    prev, prev_arr = (t, fr), None
                if prev_arr is None:
                    prev_arr = _to_rgb(prev[1], size, reformatter=d.reformatter)
                out[order[pos]] = prev_arr
                pos += 1
            if pos >= n:
                break
            if prev is None or prev[1] is not fr:
                prev, prev_arr = (t, fr), None
            # jump ahead when a keyframe sits well past here and before the next wanted time
            nxt = times[order[pos]]
            if nxt - t > 1.0:
                jump = False
                target = nxt
                if keys:
                    ki = bisect.bisect_right(keys, nxt + _EPS) - 1
                    jump = ki >= 0 and keys[ki] > t + 1.0
                    target = keys[ki] if ki >= 0 else nxt
                elif nxt - t > 10.0:
                    jump = True
                if jump and target not in jumped:
                    jumped.add(target)
                    it = d.decode_from(nxt)
                    prev, prev_arr = None, None
        if prev is None and pos < n:
            raise MediaError(f"{os.path.basename(path)}: no frame could be decoded near {times[order[pos]]:.2f}s")
        if pos < n:
            if prev_arr is None:
                prev_arr = _to_rgb(prev[1], size, reformatter=d.reformatter)
            for k in range(pos, n):
                out[order[k]] = prev_arr
    return np.stack(out)


# ============================================================================ audio


def _layout_for(channels: int):
    return {1: "mono", 2: "stereo"}.get(channels, channels)


def read_audio(path: str | os.PathLike, start: float, duration: float,
               sample_rate: Optional[int] = None, channels: Optional[int] = None) -> tuple[np.ndarray, int]:
    """The sound of ``[start, start + duration)`` on the clip's timeline.

    Returns ``(samples, rate)``: float32 [C, N] with exactly ``round(duration * rate)``
    samples, zero-padded where the track is shorter (or starts later), resampled with
    PyAV's AudioResampler to ``sample_rate`` and mixed to ``channels`` when asked.
    """
    import av

    path = str(path)
    try:
        c = av.open(path, metadata_errors="ignore")
    except Exception as e:
        raise MediaError(f"{os.path.basename(path)}: cannot be opened ({_short(e)})") from e
    with c:
        if not c.streams.audio:
            raise MediaError(f"{os.path.basename(path)} has no audio track")
        a = c.streams.audio[0]
        vs = c.streams.video[0] if c.streams.video else None
        origin = float(vs.start_time * vs.time_base) if vs is not None and vs.start_time is not None else 0.0
        src_rate = int(a.rate or a.codec_context.sample_rate)
        rate = int(sample_rate or src_rate)
        nch = int(channels or getattr(a, "channels", 0) or a.codec_context.channels or 1)
        want = int(round(duration * rate))
        buf = np.zeros((nch, want), np.float32)
        if want <= 0:
            return buf, rate
        t0 = start + origin  # seconds on the stream clock
        t_end = t0 + duration
        atb = float(a.time_base)

        back = 0.5
        while True:
            resampler = av.AudioResampler(format="fltp", layout=_layout_for(nch), rate=rate)
            if t0 > 1.0:
                c.seek(max(0, int((t0 - back) / atb)), stream=a, backward=True)
            chunks: list[np.ndarray] = []
            first_t = None
            got = 0
            try:
                for fr in c.decode(a):
                    if first_t is None:
                        first_t = float(fr.pts * atb) if fr.pts is not None else 0.0
                    for o in resampler.resample(fr):
                        arr = o.to_ndarray()
                        chunks.append(arr)
                        got += arr.shape[1]
                    if first_t + got / rate > t_end + 0.05:
                        break
            except Exception as e:
                if first_t is None:
                    raise MediaError(f"{os.path.basename(path)}: audio cannot be decoded ({_short(e)})") from e
            for o in resampler.resample(None):
                chunks.append(o.to_ndarray())
            if first_t is None or first_t <= t0 + 1e-3 or t0 <= 1.0 or back > 60:
                break
            back *= 4  # seek landed after the span start: go further back
        if first_t is None:
            return buf, rate
        pcm = np.concatenate(chunks, axis=1).astype(np.float32, copy=False) if chunks else np.zeros((nch, 0), np.float32)
        if pcm.shape[0] != nch:  # resampler gave an unexpected layout: mix or repeat
            pcm = np.repeat(pcm.mean(axis=0, keepdims=True), nch, axis=0)
        off = int(round((t0 - first_t) * rate))
        if off >= 0:
            seg = pcm[:, off:off + want]
            buf[:, :seg.shape[1]] = seg
        else:
            seg = pcm[:, :max(0, want + off)]
            buf[:, -off:-off + seg.shape[1]] = seg
    return buf, rate


# ============================================================================ dataset folders

_PATH_KEYS = ("media_path", "video", "video_path", "image", "image_path", "path", "file", "file_name",
              "filename", "media")
_CAPTION_KEYS = ("caption", "text", "prompt", "description")
CAPTION_FILES = ("dataset.json", "dataset.jsonl", "dataset.csv")


def _norm_rel(s: str) -> str:
    s = str(s).strip().replace("\\", "/")
    while s.startswith("./"):
        s = s[2:]
    return s


def _rows_from(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix == ".jsonl":
        rows = []
        for k, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"line {k}: {e.msg}") from e
        return rows
    if path.suffix == ".csv":
        return list(csv.DictReader(io.StringIO(text)))
    data = json.loads(text)
    if isinstance(data, dict):
        for key in ("data", "items", "samples", "entries"):
            if isinstance(data.get(key), list):
                return data[key]
        # {"clip.mp4": "caption", ...}
        return [{"media_path": k, "caption": v} for k, v in data.items() if isinstance(v, str)]
    return data if isinstance(data, list) else []


def read_caption_table(root: str | os.PathLike) -> tuple[dict[str, tuple[str, str]], list[Skipped]]:
    """Captions from ``dataset.json`` / ``dataset.jsonl`` / ``dataset.csv`` at ``root``.

    The format Lightricks' ltx-trainer reads and writes: rows with a ``caption`` column and
    a media path column (``media_path``, or ``video``; also accepted: ``video_path``,
    ``image``, ``path``, ``file_name`` ...; captions also as ``text``/``prompt``). Paths are
    relative to the file's folder (absolute ones work too). Returns ({absolute path:
    (caption, source file name)}, problems) — a file that can't be read becomes a Skipped.
    """
    root = Path(root).resolve()
    out: dict[str, tuple[str, str]] = {}
    problems: list[Skipped] = []
    for fname in CAPTION_FILES:
        p = root / fname
        if not p.is_file():
            continue
        if p.is_symlink() and not _inside(p, root):
            problems.append(Skipped(str(p), "a symbolic link pointing outside the dataset folder; its captions "
                                            "were not read (copy the file in)"))
            continue
        try:
            rows = _rows_from(p)
        except Exception as e:
            problems.append(Skipped(str(p), f"caption file could not be read ({_short(e)}); its captions were ignored"))
            continue
        for r in rows:
            if not isinstance(r, dict):
                continue
            lower = {str(k).strip().lower(): v for k, v in r.items()}
            media = next((lower[k] for k in _PATH_KEYS if lower.get(k)), None)
            cap = next((lower[k] for k in _CAPTION_KEYS if lower.get(k) is not None), None)
            if not media or cap is None:
                continue
            rel = _norm_rel(media)
            ap = Path(rel) if os.path.isabs(rel) else root / rel
            key = os.path.normcase(str(ap.resolve()))
            out.setdefault(key, (str(cap).strip(), fname))
    return out, problems


def _natural_key(s: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)] + [s]


def list_media(root: str | os.PathLike, recursive: bool = True,
               skipped: Optional[list[Skipped]] = None) -> list[Path]:
    """Media files under ``root`` (hidden files and folders skipped), in natural name order.

    Symbolic links to folders are not followed (a link could lead anywhere on the disk, or
    in a loop); with ``skipped`` given, each one met is added to it with that reason."""
    root = Path(root).resolve()
    exts = set(VIDEO_EXTS) | set(IMAGE_EXTS)
    found = []
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__") if recursive else []
        if skipped is not None:
            for d in dirs:
                if os.path.islink(os.path.join(dirpath, d)):
                    skipped.append(Skipped(os.path.join(dirpath, d), "a symbolic link to a folder; links to "
                                                                      "folders are not followed — move or copy "
                                                                      "the clips into the dataset folder"))
        for f in files:
            if f.startswith("."):
                continue
            if os.path.splitext(f)[1].lower() in exts:
                found.append(Path(dirpath) / f)
    return sorted(found, key=lambda p: _natural_key(p.relative_to(root).as_posix()))


def _caller(progress: Optional[Callable[..., None]]):
    """progress(i, n) or progress(i, n, text) — whichever the callable takes."""
    if progress is None:
        return lambda i, n, text=None: None
    try:
        params = inspect.signature(progress).parameters.values()
        takes_text = any(p.kind == p.VAR_POSITIONAL for p in params) or len(
            [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]) >= 3
    except (TypeError, ValueError):
        takes_text = False
    return (lambda i, n, text=None: progress(i, n, text)) if takes_text else (lambda i, n, text=None: progress(i, n))


MAX_CAPTION_CHARS = 2000  # longer captions are flagged (LTX-2's text encoder reads far fewer tokens)
MAX_CAPTION_BYTES = 64 * 1024  # a caption file is read up to this size; the rest is cut, with a warning
CAPTION_FALLBACK = "cp1252"  # the legacy encoding tried after UTF-8 (then Latin-1, which always decodes)


def decode_caption(data: bytes) -> tuple[str, Optional[str]]:
    """Caption bytes -> (text, note). UTF-8 (a BOM is dropped) strictly; if that fails,
    Windows-1252, and Latin-1 for the few bytes Windows-1252 leaves undefined. ``note`` says
    which fallback was used (None for UTF-8)."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as e:
        where = f"byte 0x{data[e.start]:02x} at offset {e.start}"
    for enc, label in ((CAPTION_FALLBACK, "Windows-1252"), ("latin-1", "Latin-1")):
        try:
            return data.decode(enc), (f"not UTF-8 ({where}); read as {label} — check the accents, "
                                      "or save the file as UTF-8")
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes every byte")  # pragma: no cover


def read_caption_file(t: Path, root: Optional[Path] = None,
                      warnings: Optional[list[Skipped]] = None) -> Optional[str]:
    """A caption ``.txt``: decoded by :func:`decode_caption`, at most MAX_CAPTION_BYTES read;
    None when missing or empty. A link pointing outside ``root`` is not read. Problems go to
    ``warnings`` (naming the file)."""
    t = Path(t)
    if not t.is_file():
        return None

    def warn(reason: str) -> None:
        if warnings is not None:
            warnings.append(Skipped(str(t), reason))

    if root is not None and t.is_symlink() and not _inside(t, root):
        warn("a symbolic link pointing outside the dataset folder; not read (copy the caption in)")
        return None
    try:
        with open(t, "rb") as fh:
            data = fh.read(MAX_CAPTION_BYTES + 1)
    except OSError as e:
        warn(f"caption file could not be read ({_short(e)})")
        return None
    cut = len(data) > MAX_CAPTION_BYTES
    if cut:
        data = data[:MAX_CAPTION_BYTES]
        while data and (data[-1] & 0xC0) == 0x80:  # do not split a UTF-8 character
            data = data[:-1]
        if data and data[-1] >= 0xC0:
            data = data[:-1]
    s, note = decode_caption(data)
    if note:
        warn(note)
    s = s.strip()
    if cut:
        warn(f"caption file is larger than {MAX_CAPTION_BYTES // 1024} KB; only its start was read")
    return s or None


def _txt_caption(f: Path, root: Optional[Path] = None,
                 warnings: Optional[list[Skipped]] = None) -> Optional[str]:
    """The same-name ``.txt`` caption of media file ``f`` (see :func:`read_caption_file`)."""
    return read_caption_file(f.with_suffix(".txt"), root, warnings)


def _inside(path: Path, root: Path) -> bool:
    r = Path(root).resolve()
    p = Path(path).resolve()
    return p == r or r in p.parents


def load_clips(root: str | os.PathLike, recursive: bool = True,
               progress: Optional[Callable[..., None]] = None,
               should_stop: Optional[Callable[[], bool]] = None,
               exclude_dirs: Sequence[str | os.PathLike] = ()) -> ClipSet:
    """Probe every video and still under ``root`` into a :class:`ClipSet`.

    Captions already there are kept: a same-name ``.txt`` beside the file wins over a
    ``dataset.json`` / ``.jsonl`` / ``.csv`` row at the root. A file that can't be read goes
    to ``skipped`` with its reason and the scan goes on. Paths are absolute, names relative
    to ``root`` with '/', order is natural-sorted by name. ``progress(i, n[, text])`` is
    called per file; ``should_stop()`` returning True raises :class:`Cancelled`.
    Paired files of the naming rule (``clip.reference.mp4``, ``clip.mask.png``, … see
    :mod:`trainer_core.pairs`) and files under ``exclude_dirs`` (a reference folder inside
    the dataset) are not clips.
    """
    rootp = Path(root).expanduser().resolve()
    if not rootp.is_dir():
        raise FileNotFoundError(f"dataset folder {rootp} does not exist or is not a folder")
    report = _caller(progress)
    cs = ClipSet(root=str(rootp))
    from .pairs import pair_kind_of

    files = list_media(rootp, recursive=recursive, skipped=cs.skipped)
    ex = [Path(d).resolve() for d in exclude_dirs]
    files = [f for f in files if pair_kind_of(f) is None and not any(d == f.parent or d in f.parents for d in ex)]
    table, problems = read_caption_table(rootp)
    cs.skipped.extend(problems)
    n = len(files)
    for i, f in enumerate(files):
        if should_stop is not None and should_stop():
            raise Cancelled(f"loading clips cancelled after {i} of {n} files")
        report(i, n, f"probing {f.relative_to(rootp).as_posix()}")
        if f.is_symlink() and not _inside(f, rootp):
            cs.skipped.append(Skipped(str(f), "a symbolic link pointing outside the dataset folder; only links "
                                              "to files inside it are read — copy the file in instead"))
            continue
        try:
            info = probe(f, root=rootp)
        except MediaError as e:
            cs.skipped.append(Skipped(str(f), e.reason))
            continue
        except Exception as e:  # anything else a broken file can throw
            cs.skipped.append(Skipped(str(f), f"unreadable ({e.__class__.__name__}: {_short(e)})"))
            continue
        cap = _txt_caption(f, rootp, cs.warnings)
        if cap is not None:
            info.caption, info.caption_source = cap, "txt"
        else:
            hit = table.get(os.path.normcase(str(f.absolute()))) or table.get(os.path.normcase(str(f.resolve())))
            if hit is not None and hit[0]:
                info.caption, info.caption_source = hit
        if info.caption and len(info.caption) > MAX_CAPTION_CHARS:
            cs.warnings.append(Skipped(str(f), f"caption is {len(info.caption):,} characters long (from "
                                               f"{info.caption_source}); LTX-2's text encoder reads a few hundred "
                                               "words at most — shorten it"))
        cs.clips.append(info)
    report(n, n, f"{len(cs.clips)} clips, {len(cs.skipped)} skipped")
    return cs
