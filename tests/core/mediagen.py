"""Test media made with PyAV and Pillow, with the ground truth the tests assert against.

Every writer returns a :class:`MediaTruth`: the display size, frame times, scene cut times
and frame indices, the audio tone of each scene, rotation. Frames carry a binary *frame
counter* in the top-left corner of the stored picture (white/black blocks, read back with
:func:`read_counter`), so a test can tell which source frame a decoder returned. Scenes are
visually distinct (own hue, smooth texture scrolling a few pixels per frame) so scene
detectors behave as on real footage; each scene has its own sine tone so a test can check
audio alignment by frequency (:func:`dominant_frequency`).

Writers:
    write_clip        mp4/mov/mkv (h264 + AAC) or webm (VP9 + Opus): hard cuts, optional
                      fades through black, tones per scene, optional VFR frame times,
                      optional rotation metadata (display matrix), optional no audio
    write_audio_only  an .mp4 holding only an audio track (no picture)
    write_animated    animated GIF / WebP (Pillow)
    write_image       png / jpg / webp stills (Pillow)
    write_corrupt     truncated mp4 (moov atom missing) or garbage bytes
    make_dataset      a folder with one of each, captions in .txt and dataset.json

Importable as ``tests.core.mediagen`` (no ComfyUI, no trainer_core imports).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

COUNTER_BITS = 12  # frame indices up to 4095
SCENE_COLOURS = [
    (200, 40, 40), (40, 170, 60), (40, 70, 210), (220, 200, 40),
    (170, 50, 190), (40, 190, 200), (240, 140, 30), (110, 110, 110),
    (250, 120, 160), (30, 110, 60), (120, 60, 20), (150, 200, 250),
]
DEFAULT_TONES = [220.0, 330.0, 440.0, 550.0, 660.0, 770.0, 880.0, 990.0, 1100.0, 1210.0, 1320.0, 1430.0]


@dataclass
class Scene:
    """One generated scene: how long, its tone (Hz, None = silence) and look."""

    duration: float
    tone: Optional[float] = None
    colour: Optional[tuple[int, int, int]] = None
    motion: float = 2.0  # texture scroll in pixels per frame (0 = static picture)


@dataclass
class MediaTruth:
    """What a generated file holds. Times are seconds on the file's presentation timeline."""

    path: str
    kind: str  # "video" or "image"
    width: int  # display size (after rotation)
    height: int
    fps: float = 0.0  # nominal (CFR) or average (VFR) frame rate
    num_frames: int = 1
    duration: float = 0.0
    frame_times: list[float] = field(default_factory=list)
    cuts: list[float] = field(default_factory=list)  # time of the first frame of every scene after the first
    cut_frames: list[int] = field(default_factory=list)  # index of that frame
    scenes: list[tuple[float, float]] = field(default_factory=list)  # (start, end) per scene
    scene_frames: list[tuple[int, int]] = field(default_factory=list)  # [first, end) frame indices
    tones: list[Optional[float]] = field(default_factory=list)
    fades: list[tuple[float, float]] = field(default_factory=list)  # (start, end) of each fade-through-black
    dissolves: list[tuple[float, float]] = field(default_factory=list)  # (first, last) frame time of each dissolve
    audio_rate: Optional[int] = None
    audio_channels: Optional[int] = None
    audio_duration: Optional[float] = None
    audio_start: float = 0.0  # where the track's sound starts on the timeline
    rotation: int = 0  # degrees clockwise to turn stored frames upright
    vfr: bool = False
    stored_width: int = 0
    stored_height: int = 0
    counter: bool = True
    caption: Optional[str] = None

    @property
    def has_audio(self) -> bool:
        return self.audio_rate is not None

    def frame_at(self, t: float) -> int:
        """Index of the frame displayed at ``t`` (last frame whose time is <= t)."""
        i = int(np.searchsorted(np.asarray(self.frame_times), t + 1e-6, side="right")) - 1
        return max(0, min(i, self.num_frames - 1))

    def scene_at(self, t: float) -> int:
        for i, (s, e) in enumerate(self.scenes):
            if s - 1e-9 <= t < e:
                return i
        return len(self.scenes) - 1


# --------------------------------------------------------------------------- pictures


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Smooth random field in [-1, 1] of shape (h, w): bilinear upsampling of a coarse grid."""
    from PIL import Image

    gh, gw = h // cell + 2, w // cell + 2
    g = rng.uniform(-1.0, 1.0, size=(gh, gw)).astype(np.float32)
    img = Image.fromarray(g, mode="F").resize((gw * cell, gh * cell), Image.BILINEAR)
    return np.asarray(img, dtype=np.float32)[:h, :w]


def _scene_texture(seed: int, h: int, w: int, colour: tuple[int, int, int]) -> np.ndarray:
    """uint8 (h, w, 3): the scene colour with coarse blobs and finer detail on top."""
    rng = np.random.default_rng(seed)
    coarse = _smooth_noise(rng, h, w, max(8, min(h, w) // 4))
    fine = _smooth_noise(rng, h, w, max(2, min(h, w) // 24))
    lum = 45.0 * coarse + 18.0 * fine
    col = np.asarray(colour, dtype=np.float32)[None, None, :]
    # diagonal stripes give edges that move with the texture
    yy, xx = np.mgrid[0:h, 0:w]
    stripes = 12.0 * np.sign(np.sin((xx + yy) * (2 * math.pi / max(16, min(h, w) // 6))))
    out = col + lum[..., None] + stripes[..., None]
    return np.clip(out, 0, 255).astype(np.uint8)


def counter_block(width: int, height: int) -> int:
    """Side in pixels of one counter bit block for a stored frame of this size."""
    return max(4, min(width // (COUNTER_BITS + 4), height // 4, 64))


def draw_counter(frame: np.ndarray, value: int) -> None:
    """Write ``value`` as COUNTER_BITS white(1)/black(0) blocks along the top-left edge, in place."""
    h, w = frame.shape[:2]
    b = counter_block(w, h)
    for bit in range(COUNTER_BITS):
        on = (value >> (COUNTER_BITS - 1 - bit)) & 1
        frame[0:b, bit * b:(bit + 1) * b] = 235 if on else 16


def read_counter(frame: np.ndarray) -> int:
    """Read back :func:`draw_counter`'s value from an HxWx3 (or HxW) uint8 frame in stored orientation."""
    f = np.asarray(frame)
    if f.ndim == 3:
        f = f.mean(axis=2)
    h, w = f.shape[:2]
    b = counter_block(w, h)
    q = max(1, b // 4)
    v = 0
    for bit in range(COUNTER_BITS):
        cell = f[q:b - q, bit * b + q:(bit + 1) * b - q]
        v = (v << 1) | int(cell.mean() > 128)
    return v


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    """Frequency (Hz) of the strongest spectral peak of a [C, N] or [N] float signal."""
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim == 2:
        x = x.mean(axis=0)
    x = x - x.mean()
    n = len(x)
    spec = np.abs(np.fft.rfft(x * np.hanning(n), n=max(n, 1 << 15)))
    freqs = np.fft.rfftfreq(max(n, 1 << 15), 1.0 / rate)
    return float(freqs[int(np.argmax(spec))])


def tone_power(samples: np.ndarray, rate: int, freq: float) -> float:
    """Goertzel-style power of one frequency in a [C, N] or [N] signal (normalised by length)."""
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim == 2:
        x = x.mean(axis=0)
    n = np.arange(len(x))
    c = np.exp(-2j * np.pi * freq * n / rate)
    return float(abs(np.dot(x, c)) / max(1, len(x)))


# --------------------------------------------------------------------------- video clips


def _norm_scenes(scenes, audio: bool) -> list[Scene]:
    out = []
    for i, s in enumerate(scenes):
        if not isinstance(s, Scene):
            s = Scene(duration=float(s))
        if s.colour is None:
            s = Scene(s.duration, s.tone, SCENE_COLOURS[i % len(SCENE_COLOURS)], s.motion)
        if s.tone is None and audio:
            s = Scene(s.duration, DEFAULT_TONES[i % len(DEFAULT_TONES)], s.colour, s.motion)
        out.append(s)
    return out


def write_clip(
    path: Union[str, os.PathLike],
    scenes: Sequence[Union[float, Scene]] = (2.0, 2.0),
    fps: Union[float, Fraction] = 25,
    size: tuple[int, int] = (320, 180),
    audio: bool = True,
    sample_rate: int = 48000,
    channels: int = 2,
    fade: float = 0.0,
    rotation: int = 0,
    frame_times: Optional[Sequence[float]] = None,
    preset: str = "veryfast",
    crf: int = 18,
    gop: Optional[int] = None,
    seed: int = 0,
    counter: bool = True,
    threads: int = 0,
    grain: float = 0.0,
    dissolve: int = 0,
    audio_span: Optional[tuple[float, float]] = None,
) -> MediaTruth:
    """Write a clip of consecutive scenes and return its ground truth.

    ``scenes``: durations in seconds or :class:`Scene` objects; colours and tones default
    to SCENE_COLOURS / DEFAULT_TONES by position. ``size`` is the *display* (width, height);
    with ``rotation`` 90 or 270 the stored frames are (height, width) and a display matrix
    asks players to turn them ``rotation`` degrees clockwise. ``fade`` > 0 fades each scene
    out to black over its last ``fade`` seconds and the next one in over its first ``fade``
    seconds (the cut stays at the scene boundary, on a black frame). ``frame_times`` gives
    explicit (variable) frame times in seconds, rounded to milliseconds; the clip then ends
    at the sum of scene durations. Container by extension: mp4/mov/mkv (h264 + AAC) or
    webm (VP9 + Opus, 48 kHz). ``grain`` > 0 adds changing sensor-like noise of about that
    many 8-bit levels, which gives real-footage bitrates (and decoding cost) for benchmarks.
    ``dissolve`` > 0: a cross-dissolve of that many frames at every scene boundary, centred on
    it (frame k of it mixes (k + 1) / (dissolve + 1) of the next scene); ``cuts`` stay at the
    boundaries and ``dissolves`` lists each one's (first, last) frame time.
    ``audio_span=(start, end)``: the audio track holds sound only from ``start`` to ``end``
    seconds (its first packet is at ``start``: a track that starts late and/or ends early).
    """
    import av

    path = str(path)
    ext = Path(path).suffix.lower()
    sc = _norm_scenes(scenes, audio)
    total = float(sum(s.duration for s in sc))
    bounds = np.cumsum([0.0] + [s.duration for s in sc])
    rotation = int(rotation) % 360
    dw, dh = size
    sw, sh = (dh, dw) if rotation in (90, 270) else (dw, dh)
    if sw % 2 or sh % 2:
        raise ValueError("width and height must be even for yuv420p")

    vfr = frame_times is not None
    if vfr:
        times_ms = [int(round(t * 1000)) for t in frame_times]
        if sorted(set(times_ms)) != times_ms:
            raise ValueError("frame_times must be strictly increasing (at ms precision)")
        times = [t / 1000.0 for t in times_ms]
        tb = Fraction(1, 1000)
        pts = times_ms
        rate_hint = Fraction(round(len(times) / total * 1000), 1000)
    else:
        fr = Fraction(fps).limit_denominator(1001)
        n = int(round(total * fr))
        times = [float(k / fr) for k in range(n)]
        tb = 1 / fr
        pts = list(range(n))
        rate_hint = fr
    n = len(times)

    if ext == ".webm":
        vcodec, acodec = "libvpx-vp9", "libopus"
        if audio:
            sample_rate = 48000
    else:
        vcodec, acodec = "libx264", "aac"

    # which scene each frame belongs to
    scene_of = [min(int(np.searchsorted(bounds, t + 1e-9, side="right")) - 1, len(sc) - 1) for t in times]

    container = av.open(path, "w")
    try:
        vs = container.add_stream(vcodec, rate=rate_hint)
        vs.width, vs.height = sw, sh
        vs.pix_fmt = "yuv420p"
        if vcodec == "libx264":
            opts = {"crf": str(crf), "preset": preset}
            if gop:
                opts["g"] = str(gop)
            vs.options = opts
        else:
            vs.options = {"crf": str(max(crf, 20)), "b": "0", "deadline": "realtime", "cpu-used": "8"}
        if threads:
            vs.codec_context.thread_count = threads
        if vfr:
            vs.time_base = tb
            vs.codec_context.time_base = tb
        if rotation:
            # PyAV's degrees are counter-clockwise (as VideoFrame.rotation reads back);
            # our ``rotation`` is the clockwise turn a player applies.
            vs.set_display_rotation(-rotation)

        a_stream = None
        pcm = None
        if audio:
            layout = "stereo" if channels == 2 else "mono"
            a_stream = container.add_stream(acodec, rate=sample_rate, layout=layout)
            ns = int(round(total * sample_rate))
            pcm = np.zeros((channels, ns), dtype=np.float32)
            for i, s in enumerate(sc):
                a, b = int(round(bounds[i] * sample_rate)), int(round(bounds[i + 1] * sample_rate))
                if s.tone:
                    tt = np.arange(a, b) / sample_rate
                    pcm[:, a:b] = (0.3 * np.sin(2 * np.pi * s.tone * tt)).astype(np.float32)[None, :]
        a_pos = 0
        a_stop = None
        if audio and audio_span is not None:
            a_pos = int(round(audio_span[0] * sample_rate))
            a_stop = int(round(audio_span[1] * sample_rate))
        a_chunk = 960 if acodec == "libopus" else 1024

        def feed_audio(until_t: float) -> None:
            nonlocal a_pos
            if pcm is None:
                return
            stop = min(pcm.shape[1], int(round(until_t * sample_rate)),
                       a_stop if a_stop is not None else pcm.shape[1])
            while a_pos < stop:
                m = min(a_chunk, pcm.shape[1] - a_pos)
                buf = np.zeros((channels, a_chunk), np.float32)
                buf[:, :m] = pcm[:, a_pos:a_pos + m]
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(buf[:, :m] if m == a_chunk or acodec != "libopus" else buf),
                                                format="fltp", layout="stereo" if channels == 2 else "mono")
                af.sample_rate = sample_rate
                af.pts = a_pos
                af.time_base = Fraction(1, sample_rate)
                for p in a_stream.encode(af):
                    container.mux(p)
                a_pos += m

        textures: dict[int, np.ndarray] = {}
        # per boundary b (first frame of scene b): the dissolve's frames [b - d//2, b - d//2 + d)
        bframes = [int(np.searchsorted(np.asarray(times), bounds[i] - 1e-9)) for i in range(1, len(sc))]
        d_first = [b - dissolve // 2 for b in bframes]

        def _scene_img(sj: int, j: int) -> np.ndarray:
            if sj not in textures:
                n_in = sum(1 for x in scene_of if x == sj)
                extra = int(math.ceil(sc[sj].motion * (n_in + dissolve))) + 2
                textures[sj] = _scene_texture(seed * 1000 + sj, sh, sw + extra, sc[sj].colour)
            off = max(0, int(sc[sj].motion * j))
            return textures[sj][:, off:off + sw]

        def _dissolved(img: np.ndarray, k: int, si: int) -> np.ndarray:
            for bi, f0 in enumerate(d_first):
                if f0 <= k < f0 + dissolve:
                    a = (k - f0 + 1) / (dissolve + 1)  # share of the next scene
                    b = bframes[bi]
                    frm = _scene_img(bi, k - (bframes[bi - 1] if bi > 0 else 0))
                    to = _scene_img(bi + 1, k - b)
                    return np.clip(frm.astype(np.float32) * (1 - a) + to.astype(np.float32) * a + 0.5,
                                   0, 255).astype(np.uint8)
            return img

        noise = None
        if grain > 0:
            nrng = np.random.default_rng(seed + 7)
            noise = [nrng.integers(-int(grain), int(grain) + 1, size=(sh, sw, 1), dtype=np.int16) for _ in range(7)]
        scene_first_frame: dict[int, int] = {}
        for k, t in enumerate(times):
            si = scene_of[k]
            s = sc[si]
            if si not in scene_first_frame:
                scene_first_frame[si] = k
            j = k - scene_first_frame[si]
            img = _scene_img(si, j)
            if dissolve > 0:
                img = _dissolved(img, k, si)
            f = 1.0
            if fade > 0:
                if si < len(sc) - 1 and t > bounds[si + 1] - fade:
                    f = min(f, (bounds[si + 1] - t) / fade)
                if si > 0 and t < bounds[si] + fade:
                    f = min(f, (t - bounds[si]) / fade)
            if f < 1.0:
                img = np.clip(img.astype(np.float32) * max(0.0, f), 0, 255).astype(np.uint8)
            else:
                img = np.ascontiguousarray(img)
            if noise is not None:
                img = np.clip(img.astype(np.int16) + noise[k % len(noise)], 0, 255).astype(np.uint8)
            if counter:
                draw_counter(img, k)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = pts[k]
            frame.time_base = tb
            for p in vs.encode(frame):
                container.mux(p)
            nxt = times[k + 1] if k + 1 < n else total
            feed_audio(nxt)
        for p in vs.encode():
            container.mux(p)
        feed_audio(total)
        if a_stream is not None:
            for p in a_stream.encode():
                container.mux(p)
    finally:
        container.close()

    cut_frames = [scene_first_frame[i] for i in range(1, len(sc)) if i in scene_first_frame]
    cuts = [times[k] for k in cut_frames]
    firsts = [scene_first_frame[i] for i in range(len(sc)) if i in scene_first_frame]
    scene_frames = [(firsts[i], firsts[i + 1] if i + 1 < len(firsts) else n) for i in range(len(firsts))]
    scene_times = [(times[a], times[b] if b < n else total) for a, b in scene_frames]
    fades = []
    if fade > 0:
        fades = [(float(bounds[i] - fade), float(bounds[i] + fade)) for i in range(1, len(sc))]
    dissolves = [(times[max(0, f0)], times[min(n - 1, f0 + dissolve - 1)]) for f0 in d_first] if dissolve > 0 else []
    if audio and audio_span is not None:
        a_dur = (min(pcm.shape[1], int(round(audio_span[1] * sample_rate)))
                 - int(round(audio_span[0] * sample_rate))) / sample_rate
    else:
        a_dur = (int(round(total * sample_rate)) / sample_rate) if audio else None
    return MediaTruth(
        path=path, kind="video", width=dw, height=dh,
        fps=float(rate_hint) if not vfr else (n / total),
        num_frames=n, duration=total, frame_times=times, cuts=cuts, cut_frames=cut_frames,
        scenes=scene_times, scene_frames=scene_frames, tones=[s.tone if audio else None for s in sc],
        fades=fades, audio_rate=sample_rate if audio else None, audio_channels=channels if audio else None,
        audio_duration=a_dur, audio_start=(audio_span[0] if audio and audio_span else 0.0), dissolves=dissolves,
        rotation=rotation, vfr=vfr, stored_width=sw, stored_height=sh, counter=counter,
    )


def write_audio_only(path: Union[str, os.PathLike], duration: float = 1.0, tone: float = 440.0,
                     sample_rate: int = 44100) -> MediaTruth:
    """An .mp4/.m4a holding only an AAC track: no picture, so Load Clips must skip it."""
    import av

    path = str(path)
    c = av.open(path, "w")
    try:
        a = c.add_stream("aac", rate=sample_rate, layout="mono")
        ns = int(round(duration * sample_rate))
        x = (0.3 * np.sin(2 * np.pi * tone * np.arange(ns) / sample_rate)).astype(np.float32)
        for i in range(0, ns, 1024):
            ch = np.ascontiguousarray(x[None, i:i + 1024])
            f = av.AudioFrame.from_ndarray(ch, format="fltp", layout="mono")
            f.sample_rate, f.pts, f.time_base = sample_rate, i, Fraction(1, sample_rate)
            for p in a.encode(f):
                c.mux(p)
        for p in a.encode():
            c.mux(p)
    finally:
        c.close()
    return MediaTruth(path=path, kind="audio", width=0, height=0, duration=duration,
                      audio_rate=sample_rate, audio_channels=1, audio_duration=duration, tones=[tone])


# --------------------------------------------------------------------------- Pillow media


def _still_array(size: tuple[int, int], colour, seed: int, counter_value: Optional[int]) -> np.ndarray:
    w, h = size
    img = _scene_texture(seed, h, w, colour).copy()
    if counter_value is not None:
        draw_counter(img, counter_value)
    return img


def write_image(path: Union[str, os.PathLike], size: tuple[int, int] = (320, 240),
                colour: tuple[int, int, int] = (40, 120, 200), seed: int = 0,
                counter_value: Optional[int] = 5) -> MediaTruth:
    """A still (format by extension: png, jpg/jpeg, webp, bmp) with a counter value drawn in."""
    from PIL import Image

    path = str(path)
    arr = _still_array(size, colour, seed, counter_value)
    im = Image.fromarray(arr)
    ext = Path(path).suffix.lower()
    if ext in (".jpg", ".jpeg"):
        im.save(path, quality=95)
    elif ext == ".webp":
        im.save(path, lossless=True)
    else:
        im.save(path)
    return MediaTruth(path=path, kind="image", width=size[0], height=size[1], num_frames=1,
                      stored_width=size[0], stored_height=size[1])


def write_animated(path: Union[str, os.PathLike], n_frames: int = 12, fps: float = 10.0,
                   size: tuple[int, int] = (160, 120), scene_frames: Optional[Sequence[int]] = None,
                   seed: int = 0) -> MediaTruth:
    """Animated GIF or WebP (by extension) with a frame counter; ``scene_frames`` lists the frame
    indices where a new colour starts (hard cuts). Frame duration is 1000/fps ms (GIF stores
    centiseconds: use fps that divide 100)."""
    from PIL import Image

    path = str(path)
    cuts = sorted(scene_frames or [])
    w, h = size
    frames = []
    for k in range(n_frames):
        si = sum(1 for c in cuts if c <= k)
        tex = _scene_texture(seed * 1000 + si, h, w + n_frames * 2 + 2, SCENE_COLOURS[si % len(SCENE_COLOURS)])
        img = tex[:, 2 * k:2 * k + w].copy()
        draw_counter(img, k)
        frames.append(Image.fromarray(img))
    dur = int(round(1000.0 / fps))
    ext = Path(path).suffix.lower()
    kw = dict(save_all=True, append_images=frames[1:], duration=dur, loop=0)
    if ext == ".webp":
        kw["lossless"] = True
    else:
        kw["disposal"] = 1
    frames[0].save(path, **kw)
    times = [k * dur / 1000.0 for k in range(n_frames)]
    firsts = [0] + cuts
    return MediaTruth(
        path=path, kind="video", width=w, height=h, fps=1000.0 / dur, num_frames=n_frames,
        duration=n_frames * dur / 1000.0, frame_times=times, cuts=[times[c] for c in cuts], cut_frames=list(cuts),
        scenes=[(times[a], times[b] if b < n_frames else n_frames * dur / 1000.0)
                for a, b in zip(firsts, firsts[1:] + [n_frames])],
        scene_frames=list(zip(firsts, firsts[1:] + [n_frames])), stored_width=w, stored_height=h,
    )


# --------------------------------------------------------------------------- damaged files


def write_corrupt(path: Union[str, os.PathLike], mode: str = "truncated", seed: int = 0) -> MediaTruth:
    """A file named like media that cannot be read.

    ``truncated``: the first 30 % of a real mp4 whose index (moov atom) is at the end.
    ``garbage``: random bytes. ``empty``: zero bytes.
    """
    path = str(path)
    if mode == "truncated":
        tmp = path + ".full.mp4"
        write_clip(tmp, scenes=[1.0], size=(160, 96), audio=True, seed=seed)
        data = Path(tmp).read_bytes()
        os.unlink(tmp)
        data = data[: int(len(data) * 0.3)]
    elif mode == "garbage":
        data = np.random.default_rng(seed).integers(0, 256, size=4096, dtype=np.uint8).tobytes()
    elif mode == "empty":
        data = b""
    else:
        raise ValueError(f"unknown corrupt mode {mode!r}")
    Path(path).write_bytes(data)
    return MediaTruth(path=path, kind="corrupt", width=0, height=0)


# --------------------------------------------------------------------------- a whole dataset


@dataclass
class DatasetTruth:
    root: str
    files: dict[str, MediaTruth]  # relative name (with '/') -> truth, readable media only
    bad: dict[str, str]  # relative name -> a word the skip reason must contain
    captions: dict[str, str]  # relative name -> caption expected after loading


def make_dataset(root: Union[str, os.PathLike], small: bool = True) -> DatasetTruth:
    """A dataset folder with one of each kind of input, captions by .txt and dataset.json.

    Files (names relative to ``root``): scenes.mp4 (3 scenes, tones, caption .txt),
    fade.mp4 (fade through black), silent.mov (no audio, caption in dataset.json),
    vfr.mkv (variable frame rate), portrait.mp4 (360x640), rotated.mp4 (stored 640x360,
    rotation 90), anim.gif, anim.webp, still.png, card.jpg (portrait still), tile.webp, sub/nested.mp4,
    plus damaged ones: corrupt.mp4 (truncated), garbage.mov, audio_only.mp4.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "sub").mkdir(exist_ok=True)
    sz = (192, 108) if small else (320, 180)
    files: dict[str, MediaTruth] = {}
    files["scenes.mp4"] = write_clip(root / "scenes.mp4", [1.6, 1.2, 1.6], fps=25, size=sz, seed=1)
    files["fade.mp4"] = write_clip(root / "fade.mp4", [1.6, 1.6], fps=25, size=sz, fade=0.4, seed=2)
    files["silent.mov"] = write_clip(root / "silent.mov", [1.0], fps=24, size=sz, audio=False, seed=3)
    vt = [round(k / 30, 3) for k in range(30)] + [round(1.0 + k / 10, 3) for k in range(10)]
    files["vfr.mkv"] = write_clip(root / "vfr.mkv", [1.2, 0.8], size=sz, frame_times=vt, seed=4)
    files["portrait.mp4"] = write_clip(root / "portrait.mp4", [1.0], fps=25, size=(180, 320) if small else (360, 640),
                                       seed=5, sample_rate=44100, channels=1)
    files["rotated.mp4"] = write_clip(root / "rotated.mp4", [1.0], fps=25, size=(180, 320) if small else (360, 640),
                                      rotation=90, seed=6)
    files["anim.gif"] = write_animated(root / "anim.gif", n_frames=10, fps=10, size=(96, 64), scene_frames=[5], seed=7)
    files["anim.webp"] = write_animated(root / "anim.webp", n_frames=8, fps=20, size=(96, 64), seed=8)
    files["still.png"] = write_image(root / "still.png", size=(200, 150), seed=9)
    files["card.jpg"] = write_image(root / "card.jpg", size=(150, 200), seed=10)
    files["tile.webp"] = write_image(root / "tile.webp", size=(128, 128), seed=11)
    files["sub/nested.mp4"] = write_clip(root / "sub" / "nested.mp4", [1.0], fps=25, size=sz, seed=12)
    write_corrupt(root / "corrupt.mp4", "truncated")
    write_corrupt(root / "garbage.mov", "garbage")
    write_audio_only(root / "audio_only.mp4")
    (root / "notes.md").write_text("not media\n")
    bad = {"corrupt.mp4": "corrupt.mp4", "garbage.mov": "garbage.mov", "audio_only.mp4": "video"}

    captions = {"scenes.mp4": "three coloured scenes with tones",
                "silent.mov": "a silent clip",
                "sub/nested.mp4": "a nested clip",
                "still.png": "a png still from json (the .txt wins)"}
    (root / "scenes.txt").write_text(captions["scenes.mp4"] + "\n")
    (root / "still.txt").write_text("a png still from txt\n")
    captions["still.png"] = "a png still from txt"
    entries = [
        {"caption": "a silent clip", "media_path": "silent.mov"},
        {"caption": "a nested clip", "media_path": "sub/nested.mp4"},
        {"caption": "a png still from json (the .txt wins)", "media_path": "still.png"},
    ]
    (root / "dataset.json").write_text(json.dumps(entries, indent=2))
    for name, cap in captions.items():
        if name in files:
            files[name].caption = cap
    return DatasetTruth(root=str(root), files=files, bad=bad, captions=captions)


def write_wav(path: Union[str, os.PathLike], duration: float = 1.0, tone: float = 330.0,
              sample_rate: int = 16000) -> str:
    """A mono 16-bit .wav of a sine tone with a slow tremolo (stdlib ``wave``)."""
    import wave

    t = np.arange(int(round(duration * sample_rate))) / sample_rate
    x = 0.4 * np.sin(2 * np.pi * tone * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3.0 * t))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes((x * 32767).astype("<i2").tobytes())
    return str(path)


def edge_frames_clip(path: Union[str, os.PathLike], source: Union[str, os.PathLike], fps: float = 24) -> str:
    """A Canny-like reference of a clip: its decoded frames' gradient magnitude, thresholded to
    white lines on black (an IC-LoRA control reference made without ComfyUI), same size,
    frame rate and length, no audio."""
    import av

    frames = []
    with av.open(str(source)) as c:
        for f in c.decode(video=0):
            g = f.to_ndarray(format="gray").astype(np.float32)
            mag = np.hypot(np.diff(g, axis=1, prepend=g[:, :1]), np.diff(g, axis=0, prepend=g[:1]))
            e = np.where(mag > 12, 255, 0).astype(np.uint8)
            frames.append(np.repeat(e[..., None], 3, axis=2))
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for a in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return str(path)


def make_mode_inputs(input_dir: Union[str, os.PathLike], fps: int = 24) -> dict[str, str]:
    """The paired demo datasets and sampling inputs of the training modes' workflows, under
    ComfyUI's input folder (names as scripts/make_workflows.py's workflows expect them):

    - ``my_control_clips/clip.mp4``: one video with a scene cut, whose Canny references the
      IC-LoRA workflow makes in the graph; ``my_control_pairs``: clips with ``x.reference.mp4``,
      their edge images (the naming rule)
    - ``my_inpaint_clips``: clips with ``x.mask.png`` (white = kept, black = to fill)
    - ``my_voice_pairs``: clips with ``x.reference_audio.wav`` (audio → audio)
    - ``control_source.mp4``, ``extend_start.mp4``, ``inpaint_source.mp4``, ``foley_source.mp4``,
      ``inpaint_mask.png`` (white = regenerate), ``restyle_source.wav``
    """
    from PIL import Image

    root = Path(input_dir)
    made: dict[str, str] = {}
    (root / "my_control_clips").mkdir(parents=True, exist_ok=True)
    made["control_clip"] = write_clip(root / "my_control_clips" / "clip.mp4", [1.0, 1.0], fps=fps, size=(64, 64),
                                      seed=19).path
    pairs = root / "my_control_pairs"
    pairs.mkdir(parents=True, exist_ok=True)
    for i, sz in enumerate([(96, 64), (64, 64)]):
        clip = pairs / f"clip{i}.mp4"
        write_clip(clip, [1.2], fps=fps, size=sz, seed=20 + i)
        made[str(clip)] = edge_frames_clip(pairs / f"clip{i}.reference.mp4", clip, fps)
    inp = root / "my_inpaint_clips"
    inp.mkdir(parents=True, exist_ok=True)
    for i in range(2):
        write_clip(inp / f"clip{i}.mp4", [1.2], fps=fps, size=(64, 64), seed=30 + i)
        m = np.full((64, 64), 255, np.uint8)
        m[16 + 8 * i: 48, 16:48] = 0  # the hole the LoRA learns to fill
        Image.fromarray(m).save(inp / f"clip{i}.mask.png")
    voice = root / "my_voice_pairs"
    voice.mkdir(parents=True, exist_ok=True)
    for i in range(2):
        write_clip(voice / f"clip{i}.mp4", [1.2], fps=fps, size=(64, 64), seed=40 + i)
        write_wav(voice / f"clip{i}.reference_audio.wav", 1.2, tone=200.0 + 60 * i)
    for name, seed in (("control_source", 50), ("extend_start", 51), ("inpaint_source", 52), ("foley_source", 53)):
        made[name] = write_clip(root / f"{name}.mp4", [0.6], fps=fps, size=(64, 64), seed=seed,
                                audio=name != "foley_source").path
    m = np.zeros((64, 64), np.uint8)
    m[:, 32:] = 255
    Image.fromarray(m).convert("RGB").save(root / "inpaint_mask.png")
    made["restyle_source"] = write_wav(root / "restyle_source.wav", 0.6, tone=260.0)
    return made
