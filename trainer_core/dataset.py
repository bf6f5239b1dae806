"""Typed values that travel between the dataset nodes.

Load Clips -> ``ClipSet`` (clips, skipped files, no segments yet)
Split Scenes -> ``ClipSet`` with ``segments`` filled in
Caption      -> ``ClipSet`` with captions on segments
Bucket       -> ``Dataset`` (one ``Sample`` per usable segment) + ``InspectionReport``

Everything here is plain data: JSON-serialisable through ``to_dict``/``from_dict`` so
that headless runs and the latent cache manifest can store it, and free of torch so that
importing it is cheap.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".webm", ".gif", ".webp", ".avi", ".m4v")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass
class AudioInfo:
    """The first audio track of a media file."""

    sample_rate: int
    channels: int
    duration: float  # seconds
    codec: str = ""
    start: float = 0.0  # where the track starts on the clip's timeline (video start = 0), seconds

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass
class ClipInfo:
    """One media file as probed by Load Clips.

    ``width``/``height`` are the *display* size, i.e. after applying ``rotation``.
    ``fps`` is the average frame rate; ``vfr`` says the timestamps are not evenly spaced,
    in which case frames are picked by timestamp, never by index.
    """

    path: str  # absolute path
    name: str  # path relative to the dataset root, with forward slashes
    kind: str  # "video" or "image"
    width: int
    height: int
    fps: float = 0.0
    duration: float = 0.0  # seconds; 0 for still images
    num_frames: int = 1
    rotation: int = 0  # degrees clockwise the stored frames must turn to be shown upright (media applies it)
    vfr: bool = False
    audio: Optional[AudioInfo] = None
    caption: Optional[str] = None
    caption_source: Optional[str] = None  # "txt", "dataset.json", "dataset.jsonl", "caption"
    size_bytes: int = 0
    # Paired inputs of the IC-LoRA and inpainting modes (trainer_core.pairs finds them). Each
    # is an absolute path or None; a mask may also be a generated-mask spec
    # "generated:<boxes|strokes|spans>:<seed>". The pair shares the clip's timeline: a
    # segment [start, end) of the clip is the same [start, end) of its reference and masks.
    reference: Optional[str] = None  # reference video / image / frames file (IC-LoRA)
    reference_audio: Optional[str] = None  # reference audio file (None: the reference's own track)
    video_mask: Optional[str] = None  # mask video or image (white > 0.5 = kept clean, official)
    audio_mask: Optional[str] = None  # mask audio (its envelope) or .safetensors "mask" [N]
    pair_source: dict = field(default_factory=dict)  # {"reference": "name"|"dataset.json"|"folder"|"frames", ...}

    @property
    def has_audio(self) -> bool:
        return self.audio is not None

    @property
    def stem(self) -> str:
        base = self.name.rsplit("/", 1)[-1]
        return base.rsplit(".", 1)[0]


@dataclass
class Segment:
    """A time range of one clip: a scene, a chunk of a long scene, or the whole clip.

    ``start``/``end`` are seconds on the clip's presentation timeline. The audio of a
    segment is the same time range of the clip's audio track, so the two stay aligned.
    ``caption`` starts as the clip's caption and may be replaced per segment by Caption.
    """

    clip: int  # index into ClipSet.clips
    start: float
    end: float
    index: int = 0  # position of the segment within its clip
    caption: Optional[str] = None
    caption_source: Optional[str] = None
    motion: Optional[float] = None  # mean inter-frame change (0..255), when measured
    thumbnail: Optional[str] = None  # reserved for UI use

    @property
    def duration(self) -> float:
        return max(0.0, self.end - self.start)

    def key(self, clips: "list[ClipInfo]") -> str:
        """A readable, stable id: ``<clip name>#<index>``."""
        return f"{clips[self.clip].name}#{self.index}"


@dataclass
class Skipped:
    path: str
    reason: str


@dataclass
class ClipSet:
    """What Load Clips, Split Scenes and Caption pass along."""

    root: str
    clips: list[ClipInfo] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    segments: Optional[list[Segment]] = None  # None until Split Scenes ran
    warnings: list[Skipped] = field(default_factory=list)  # files used, but with something to say

    def all_segments(self) -> list[Segment]:
        """Segments if split, else one whole-clip segment per clip."""
        if self.segments is not None:
            return list(self.segments)
        return [
            Segment(clip=i, start=0.0, end=c.duration, index=0, caption=c.caption,
                    caption_source=c.caption_source)
            for i, c in enumerate(self.clips)
        ]

    def to_dict(self) -> dict:
        return _asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ClipSet":
        clips = []
        for c in d.get("clips", []):
            c = dict(c)
            if c.get("audio") is not None:
                c["audio"] = AudioInfo(**c["audio"])
            clips.append(ClipInfo(**c))
        segs = d.get("segments")
        return cls(
            root=d["root"],
            clips=clips,
            skipped=[Skipped(**s) for s in d.get("skipped", [])],
            segments=None if segs is None else [Segment(**s) for s in segs],
            warnings=[Skipped(**s) for s in d.get("warnings", [])],
        )


@dataclass(frozen=True)
class Bucket:
    width: int
    height: int
    frames: int

    @property
    def aspect(self) -> float:
        return self.width / self.height

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        return (128, 1 + (self.frames - 1) // 8, self.height // 32, self.width // 32)

    def __str__(self) -> str:
        return f"{self.width}x{self.height}x{self.frames}"


@dataclass
class Sample:
    """One training sample: a segment placed in a bucket, with exact time spans.

    Video frames are taken at ``fps`` starting at ``start`` (seconds on the clip's
    timeline): frame k is the source frame shown at ``start + k / fps``. The audio span
    is exactly ``[start, start + frames / fps)`` so that sound and picture line up.
    Frames are resized to cover ``bucket`` and centre-cropped.
    """

    clip: int
    segment: int  # index into the segment list the dataset was built from
    bucket: Bucket
    start: float
    fps: float
    caption: Optional[str] = None
    has_audio: bool = False
    flags: list[str] = field(default_factory=list)
    # IC-LoRA / inpainting (the clip's pair fields, placed): the reference is read at the same
    # times as the target and covered/cropped to ``reference_bucket`` (the bucket divided by
    # ``reference_scale``); None = no reference video
    reference_bucket: Optional[Bucket] = None
    reference_scale: int = 1
    reference_audio: bool = False  # the sample has reference audio (file or the reference's track)
    video_mask: Optional[str] = None  # path or "generated:..." spec (see ClipInfo)
    audio_mask: Optional[str] = None

    @property
    def duration(self) -> float:
        return self.bucket.frames / self.fps if self.fps > 0 else 0.0

    @property
    def audio_span(self) -> tuple[float, float]:
        return (self.start, self.start + self.duration)


@dataclass
class Dataset:
    """What Bucket gives Encode Latents."""

    clipset: ClipSet
    segments: list[Segment]
    buckets: list[Bucket]
    samples: list[Sample]
    target_fps: float
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "clipset": self.clipset.to_dict(),
            "segments": [_asdict(s) for s in self.segments],
            "buckets": [_asdict(b) for b in self.buckets],
            "samples": [_asdict(s) for s in self.samples],
            "target_fps": self.target_fps,
            "settings": dict(self.settings),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Dataset":
        samples = []
        for s in d["samples"]:
            s = dict(s)
            s["bucket"] = Bucket(**s["bucket"])
            if s.get("reference_bucket") is not None:
                s["reference_bucket"] = Bucket(**s["reference_bucket"])
            samples.append(Sample(**s))
        return cls(
            clipset=ClipSet.from_dict(d["clipset"]),
            segments=[Segment(**s) for s in d["segments"]],
            buckets=[Bucket(**b) for b in d["buckets"]],
            samples=samples,
            target_fps=d["target_fps"],
            settings=d.get("settings", {}),
        )


def _asdict(obj) -> Any:
    return dataclasses.asdict(obj)
