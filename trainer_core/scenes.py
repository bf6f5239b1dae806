"""Scene splitting with PySceneDetect on frames we decode and shrink ourselves.

Why not scenedetect's own video backends: its PyAV backend converts every frame to full
size BGR and then resizes it with OpenCV; ours asks the decoder's converter (swscale) for
a frame of at most ``max_side`` pixels (256 by default), which is most of the saving on a
1080p clip, decodes with FFmpeg's frame threads, and measures motion from the same small
frames. The detectors (content, adaptive) are scenedetect's, fed through their public
``process_frame`` interface with exact timestamps, so variable-frame-rate clips get cuts
at true presentation times.

Gradual transitions: scenedetect's detectors compare consecutive frames (or a short rolling
average of that), and a dissolve spreads its change over many frames: a 16-frame dissolve
measured 7-10 per frame against 4-5 of in-scene motion, under content's 27 and adaptive's
3x, and HashDetector/HistogramDetector at their defaults miss it too (lowering content's
threshold to 8 catches it but also cuts at every keyframe's quality jump). The "dissolve"
detector keeps scenedetect's content detector for hard cuts and adds a windowed comparison
(:class:`DissolveFinder`): the same HSV score between the frames half a window before and
after each frame, which for a dissolve no longer than the window is the whole change from
one shot to the next; a peak that is over the threshold and ``DISSOLVE_RATIO`` times the
same score in the scene around it is a transition, cut on its strongest frame-to-frame
change.

Segments: a scene shorter than ``min_len`` is dropped, one longer than ``max_len`` is cut
into even chunks of at most ``max_len``; with splitting off a clip stays one continuous
piece (the length limits still apply). Stills become one zero-length segment. Each
segment carries its clip's caption and, when detection ran, a motion score (mean absolute
difference between consecutive downscaled frames, 0..255) used later to flag static clips.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Optional, Union

import numpy as np

from .dataset import ClipInfo, ClipSet, Segment, Skipped
from .media import Cancelled, MediaError, _caller, iter_frames

DETECTORS = ("content", "adaptive", "dissolve")
DEFAULT_THRESHOLDS = {"content": 27.0, "adaptive": 3.0, "dissolve": 20.0}
DISSOLVE_WINDOW = 0.8  # seconds: the longest dissolve the "dissolve" detector sees at full strength
DISSOLVE_RATIO = 2.0  # a transition must change the picture this many times more than the scene around it
DETECT_MAX_SIDE = 256
FADE_LEVEL = 12  # mean 8-bit level under which a frame counts as faded to black
_TB = Fraction(1, 1_000_000)  # timestamps handed to scenedetect, in microseconds


@dataclass
class SceneAnalysis:
    """What one detection pass over a clip found."""

    scenes: list[tuple[float, float]]  # (start, end) seconds, contiguous, covering the clip
    cuts: list[float]  # start time of every scene after the first
    times: np.ndarray  # presentation time of every analysed frame
    diffs: np.ndarray  # mean |frame_k - frame_k-1| on the downscaled frames (diffs[0] = 0)
    end: float  # end of the clip (seconds)
    size: tuple[int, int] = (0, 0)  # analysis frame size (w, h)
    wall: float = 0.0  # seconds the pass took
    detector: str = "content"
    threshold: float = 0.0

    def motion(self, start: float, end: float) -> Optional[float]:
        """Mean frame-to-frame change inside [start, end), cuts excluded (None if < 2 frames)."""
        if len(self.times) < 2:
            return None
        sel = (self.times > start + 1e-6) & (self.times < end - 1e-6)
        if not sel.any():
            return None
        return float(self.diffs[sel].mean())


def _make_detector(detector: str, threshold: Optional[float], min_scene_len: float):
    from scenedetect.detectors import AdaptiveDetector, ContentDetector

    if detector not in DETECTORS:
        raise ValueError(f"unknown detector {detector!r}; use one of {', '.join(DETECTORS)}")
    thr = float(threshold) if threshold else DEFAULT_THRESHOLDS[detector]
    msl = float(max(0.0, min_scene_len))
    if detector == "content":
        return ContentDetector(threshold=thr, min_scene_len=msl), thr
    if detector == "dissolve":  # hard cuts at content's default; the threshold is the window's
        return ContentDetector(threshold=DEFAULT_THRESHOLDS["content"], min_scene_len=msl), thr
    return AdaptiveDetector(adaptive_threshold=thr, min_scene_len=msl), thr


class DissolveFinder:
    """Gradual transitions (dissolves, slow wipes) from a windowed frame comparison.

    Fed every analysed frame (BGR, as scenedetect gets them). For frame k it keeps the
    consecutive score ``step[k]`` = score(k-1, k) and the window score ``wide[k]`` =
    score(k - w/2, k + w/2), where score is scenedetect's content score with its default
    weights (mean absolute difference of hue, saturation and luma, averaged). A dissolve
    of at most ``w`` frames makes ``wide`` peak at the full shot-to-shot change while the
    per-frame change stays small. :meth:`cuts` picks peaks over ``threshold`` that are
    ``ratio`` times the median ``wide`` of the surrounding scene (``w`` to ``3w`` frames
    away on each side; steady camera motion raises both and is not a transition) and cuts
    at the frame of the largest ``step`` within half a window of the peak.
    """

    def __init__(self, window: int, threshold: float = DEFAULT_THRESHOLDS["dissolve"],
                 ratio: float = DISSOLVE_RATIO):
        from collections import deque

        self.half = max(2, int(window) // 2)
        self.threshold = float(threshold)
        self.ratio = float(ratio)
        self._buf = deque(maxlen=2 * self.half + 1)
        self.step: list[float] = []
        self.wide: list[float] = []

    @staticmethod
    def _score(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a - b).mean())

    def feed(self, frame_bgr: np.ndarray) -> None:
        import cv2

        hsv = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2HSV).astype(np.int16)
        self.step.append(self._score(hsv, self._buf[-1]) if self._buf else 0.0)
        self._buf.append(hsv)
        self.wide.append(np.nan)
        if len(self._buf) == self._buf.maxlen:
            self.wide[-1 - self.half] = self._score(self._buf[-1], self._buf[0])

    def cuts(self, min_gap: int = 0) -> list[int]:
        """Frame indices of the transitions found (each the first frame after the cut)."""
        wide = np.asarray(self.wide, dtype=np.float64)
        n = len(wide)
        w = 2 * self.half
        order = [int(i) for i in np.argsort(-np.nan_to_num(wide, nan=-1.0)) if wide[i] >= self.threshold]
        taken: list[int] = []
        out: list[int] = []
        for c in order:
            if any(abs(c - p) <= max(w, min_gap) for p in taken):
                continue
            lo, hi = max(0, c - 3 * w), min(n, c + 3 * w + 1)
            around = np.concatenate([wide[lo:max(lo, c - w)], wide[min(hi, c + w + 1):hi]])
            around = around[np.isfinite(around)]
            if around.size and wide[c] < self.ratio * float(np.median(around)):
                continue
            taken.append(c)
            a, b = max(1, c - self.half), min(n, c + self.half + 1)
            out.append(a + int(np.argmax(self.step[a:b])))
        return sorted(out)


def analyze_scenes(
    clip: Union[ClipInfo, str],
    detector: str = "content",
    threshold: Optional[float] = None,
    min_scene_len: float = 0.25,
    max_side: int = DETECT_MAX_SIDE,
    start: float = 0.0,
    end: Optional[float] = None,
    fades: bool = True,
    tick: Optional[Callable[[float], None]] = None,
    should_stop: Optional[Callable[[], bool]] = None,
) -> SceneAnalysis:
    """Run one detector over a clip (or ``[start, end)`` of it) on frames of at most
    ``max_side`` pixels. ``min_scene_len`` (seconds) is the detector's own flash filter:
    cuts closer than this are merged (keeps a fade or a flicker from making many cuts).
    ``fades``: also run scenedetect's ThresholdDetector so a fade through black is cut in
    the middle of the black (the content detectors see a fade as many small changes and
    either miss it or cut early in it; the short piece between two such cuts is then
    dropped by the minimum length, see :func:`split_scenes`).
    ``tick(fraction_done)`` is called about every half second; ``should_stop()`` -> True
    raises :class:`Cancelled`."""
    from scenedetect.common import FrameTimecode, Timecode

    path = clip.path if isinstance(clip, ClipInfo) else str(clip)
    clip_end = clip.duration if isinstance(clip, ClipInfo) and clip.duration > 0 else None
    fps = clip.fps if isinstance(clip, ClipInfo) and clip.fps > 0 else 25.0
    rate = Fraction(fps).limit_denominator(1001)
    det, thr = _make_detector(detector, threshold, min_scene_len)
    dets = [det]
    gradual = DissolveFinder(round(DISSOLVE_WINDOW * fps), threshold=thr) if detector == "dissolve" else None
    if fades:
        from scenedetect.detectors import ThresholdDetector

        dets.append(ThresholdDetector(threshold=FADE_LEVEL, min_scene_len=float(max(0.0, min_scene_len)),
                                      fade_bias=0.0))

    t0 = time.perf_counter()
    last_tick = t0
    times: list[float] = []
    diffs: list[float] = []
    cuts: list[float] = []
    prev = None
    size = (0, 0)
    tc = None
    span_end = end if end is not None else clip_end
    for k, (t, frame) in enumerate(iter_frames(path, start=start, end=end, max_side=max_side, fmt="bgr24",
                                                 fast=True)):
        if prev is None:
            size = (frame.shape[1], frame.shape[0])
            diffs.append(0.0)
        else:
            diffs.append(float(np.abs(frame.astype(np.int16) - prev).mean()))
        prev = frame
        times.append(t)
        tc = FrameTimecode(Timecode(pts=int(round(max(0.0, t) * 1e6)), time_base=_TB), fps=rate)
        for d in dets:
            for c in d.process_frame(tc, frame):
                cuts.append(c.seconds)
        if gradual is not None:
            gradual.feed(frame)
        if (k & 15) == 0:
            now = time.perf_counter()
            if should_stop is not None and should_stop():
                raise Cancelled("scene detection cancelled")
            if tick is not None and now - last_tick > 0.5:
                last_tick = now
                tick(min(1.0, (t - start) / (span_end - start)) if span_end and span_end > start else 0.0)
    if tc is not None:
        for d in dets:
            for c in d.post_process(tc):
                cuts.append(c.seconds)
    if not times:
        raise MediaError("no frame could be decoded for scene detection")
    tarr = np.asarray(times)
    # snap scenedetect's microsecond timestamps back onto our frame times
    cuts = sorted({float(tarr[np.argmin(np.abs(tarr - c))]) for c in cuts})
    first = times[0]
    cuts = [c for c in cuts if c > first + 1e-6]
    if gradual is not None:  # a transition the hard-cut detectors already cut is not cut twice
        gap = max(min_scene_len, 2 * gradual.half / fps)
        for k in gradual.cuts(min_gap=int(round(min_scene_len * fps))):
            if times[k] > first + 1e-6 and all(abs(times[k] - c) > gap for c in cuts):
                cuts.append(times[k])
        cuts.sort()
    if span_end is None or span_end <= times[-1]:
        step = float(np.median(np.diff(tarr))) if len(tarr) > 1 else 1.0 / fps
        span_end = times[-1] + step
    bounds = [first] + cuts + [span_end]
    scenes = [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1) if bounds[i + 1] > bounds[i]]
    return SceneAnalysis(scenes=scenes, cuts=cuts, times=tarr, diffs=np.asarray(diffs, dtype=np.float64),
                         end=float(span_end), size=size, wall=time.perf_counter() - t0,
                         detector=detector, threshold=thr)


def detect_scenes(
    clip: Union[ClipInfo, str],
    detector: str = "content",
    threshold: Optional[float] = None,
    min_scene_len: float = 0.25,
    max_side: int = DETECT_MAX_SIDE,
    fades: bool = True,
) -> tuple[list[tuple[float, float]], list[Optional[float]]]:
    """Scenes of a clip and how much each one moves: ``(scenes, motion)``.

    ``scenes``: contiguous ``(start, end)`` seconds covering the clip (one scene if no cut).
    ``motion[i]``: mean absolute difference (0..255) between consecutive downscaled frames
    inside scene i, the cut itself excluded (None for a one-frame scene).
    ``detector``: "content" (hard cuts; threshold default 27), "adaptive" (rolling
    average, calmer in fast motion; threshold default 3) or "dissolve" (content's hard cuts
    plus gradual transitions up to ``DISSOLVE_WINDOW`` s long, see :class:`DissolveFinder`;
    threshold default 20, on the window score). ``min_scene_len``: seconds that
    must pass before another cut is accepted. Frames are analysed at most ``max_side``
    pixels on their longer side, shrunk inside the decoder.
    """
    a = analyze_scenes(clip, detector, threshold, min_scene_len, max_side, fades=fades)
    return a.scenes, [a.motion(s, e) for s, e in a.scenes]


def chunk_scene(start: float, end: float, min_len: float, max_len: float) -> list[tuple[float, float]]:
    """Apply the length rules to one scene: [] if shorter than ``min_len``; even chunks of at
    most ``max_len`` if longer (``max_len`` <= 0: no limit). Chunks shorter than ``min_len``
    (only when ``min_len`` > max_len / 2) give way to ``max_len`` pieces from the start."""
    dur = end - start
    if dur < min_len - 1e-6 or dur <= 0:
        return []
    if max_len <= 0 or dur <= max_len + 1e-6:
        return [(start, end)]
    k = math.ceil(dur / max_len - 1e-9)
    step = dur / k
    if step >= min_len - 1e-6:
        return [(start + i * step, end if i == k - 1 else start + (i + 1) * step) for i in range(k)]
    out = []
    s = start
    while end - s >= max(min_len, 1e-6) - 1e-6:
        e = min(end, s + max_len)
        if e - s < min_len - 1e-6:
            break
        out.append((s, e))
        s = e
    return out


def split_scenes(
    clipset: ClipSet,
    detector: str = "content",
    threshold: Optional[float] = None,
    min_len: float = 1.0,
    max_len: float = 10.0,
    enabled: bool = True,
    progress: Optional[Callable[..., None]] = None,
    should_stop: Optional[Callable[[], bool]] = None,
    max_side: int = DETECT_MAX_SIDE,
    min_scene_len: Optional[float] = None,
    fades: bool = True,
) -> ClipSet:
    """A new ClipSet with ``segments`` filled (the input is not modified).

    Per video clip: scenes from :func:`analyze_scenes` (or the whole clip when ``enabled``
    is False), then :func:`chunk_scene` with ``min_len``/``max_len`` seconds. Stills: one
    zero-length segment. Segments carry the clip's caption and a motion score when
    detection ran. A clip that fails to decode during detection moves to ``skipped``.
    ``min_scene_len`` (detector flash filter) defaults to min(0.25 s, min_len).
    ``progress(i, n[, text])`` is called per clip and about every half second inside long
    clips (so a host's cancel check runs); ``should_stop()`` -> True raises Cancelled.
    """
    if max_len and max_len > 0 and min_len > max_len:
        raise ValueError(f"min_len {min_len:g} s is longer than max_len {max_len:g} s")
    if detector not in DETECTORS:
        raise ValueError(f"unknown detector {detector!r}; use one of {', '.join(DETECTORS)}")
    report = _caller(progress)
    msl = min(0.25, min_len) if min_scene_len is None else min_scene_len
    out = ClipSet(root=clipset.root, clips=list(clipset.clips), skipped=list(clipset.skipped), segments=[],
                  warnings=list(getattr(clipset, "warnings", [])))
    n = len(clipset.clips)
    for ci, clip in enumerate(clipset.clips):
        if should_stop is not None and should_stop():
            raise Cancelled(f"scene splitting cancelled after {ci} of {n} clips")
        report(ci, n, f"scenes: {clip.name}")
        if clip.kind != "video":
            out.segments.append(Segment(clip=ci, start=0.0, end=0.0, index=0, caption=clip.caption,
                                        caption_source=clip.caption_source))
            continue
        analysis = None
        if enabled:
            def tick(frac, ci=ci, name=clip.name):
                report(ci, n, f"scenes: {name} {100 * frac:.0f}%")

            try:
                analysis = analyze_scenes(clip, detector, threshold, msl, max_side, fades=fades, tick=tick,
                                          should_stop=should_stop)
            except MediaError as e:
                out.skipped.append(Skipped(clip.path, f"scene detection could not decode it: {e}"))
                continue
            scenes = analysis.scenes
        else:
            scenes = [(0.0, clip.duration)]
        idx = 0
        for s, e in scenes:
            for a, b in chunk_scene(s, e, min_len, max_len):
                out.segments.append(Segment(
                    clip=ci, start=round(a, 6), end=round(b, 6), index=idx, caption=clip.caption,
                    caption_source=clip.caption_source,
                    motion=None if analysis is None else analysis.motion(a, b)))
                idx += 1
    report(n, n, f"{len(out.segments)} segments from {n} clips")
    return out
