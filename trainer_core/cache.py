"""The latent cache: what Encode Latents writes and training reads.

Layout of a cache folder::

    manifest.json                 entries, samples, the models that made them
    video/<key>.safetensors       "latents" [128, F', H', W'] (+ "first_frame" [128, 1, H', W'])
    audio/<key>.safetensors       "latents" [8, T, 16]
    text/<key>.safetensors        the text encoder's conditioning for one caption
    mask/<key>.safetensors        "mask" on the latent grid: video [F', H', W'], audio [T]
                                  (0/1 floats, 1 = conditioning; ltx-trainer's preprocessing)

IC-LoRA references are ordinary entries: reference video latents under video/ (at the
reference's own, possibly scaled, size), reference audio latents under audio/; a sample names
them in ``reference`` / ``reference_audio`` and its masks in ``video_mask`` / ``audio_mask``.

Each entry's key is a hash of everything that determines it — the source file's content,
the segment's time span, the bucket, the frame rate, the model's identity and the encode
settings — so a re-run skips what is cached and a change re-encodes only what it touches.
Every file is written atomically and its byte size and tensor shapes are recorded, so a
damaged or truncated entry is detected and re-encoded. Only safetensors and JSON are read.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import torch

from .fsutil import atomic_save_safetensors, atomic_write_text

KINDS = ("video", "audio", "text", "mask")
MANIFEST = "manifest.json"
VERSION = 1


def key_for(**parts: Any) -> str:
    """Stable hash of the named parts (JSON-canonical), 24 hex chars."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def file_digest(path: str | os.PathLike, memo: Optional[dict] = None, chunk: int = 1 << 20) -> str:
    """Content hash of a file (blake2b), memoised by (path, size, mtime) in ``memo``."""
    st = os.stat(path)
    stamp = f"{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}"
    if memo is not None and stamp in memo:
        return memo[stamp]
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    d = h.hexdigest()
    if memo is not None:
        memo[stamp] = d
    return d


@dataclass
class CacheSample:
    """One training sample in the manifest: which entries make it up."""

    key: str
    video: Optional[str]
    audio: Optional[str]
    text: str
    bucket: str
    fps: float
    caption: str = ""
    source: str = ""
    start: float = 0.0
    has_audio: bool = False
    reference: Optional[str] = None  # video entry: the IC-LoRA reference's latents
    reference_audio: Optional[str] = None  # audio entry: the reference audio's latents
    video_mask: Optional[str] = None  # mask entry [F', H', W']
    audio_mask: Optional[str] = None  # mask entry [T]
    reference_scale: int = 1  # the reference's spatial downscale (1, 2, 4)

    PAIRED = ("reference", "reference_audio", "video_mask", "audio_mask")
    PAIR_KINDS = {"reference": "video", "reference_audio": "audio", "video_mask": "mask", "audio_mask": "mask"}


@dataclass
class Manifest:
    version: int = VERSION
    models: dict[str, str] = field(default_factory=dict)
    entries: dict[str, dict] = field(default_factory=dict)  # "<kind>/<key>" -> {"bytes", "shapes", ...}
    samples: list[dict] = field(default_factory=list)
    empty_text: Optional[str] = None
    digests: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


class LatentCache:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        for k in KINDS:
            (self.root / k).mkdir(exist_ok=True)
        self.manifest = self._load()

    # -- manifest ---------------------------------------------------------------------
    def _load(self) -> Manifest:
        p = self.root / MANIFEST
        if not p.exists():
            return Manifest()
        try:
            d = json.loads(p.read_text())
        except (json.JSONDecodeError, OSError):
            return Manifest()  # a damaged manifest: entries are re-verified from scratch
        if d.get("version") != VERSION:
            return Manifest()
        return Manifest(**{k: v for k, v in d.items() if k in Manifest.__dataclass_fields__})

    def save_manifest(self) -> None:
        m = self.manifest
        atomic_write_text(self.root / MANIFEST, json.dumps(m.__dict__, indent=1, sort_keys=True))

    # -- entries ----------------------------------------------------------------------
    def path(self, kind: str, key: str) -> Path:
        if kind not in KINDS:
            raise ValueError(kind)
        return self.root / kind / f"{key}.safetensors"

    def valid(self, kind: str, key: str) -> bool:
        """True when the entry exists, has the recorded size and opens with the recorded shapes."""
        rec = self.manifest.entries.get(f"{kind}/{key}")
        p = self.path(kind, key)
        if rec is None or not p.exists() or p.stat().st_size != rec.get("bytes"):
            return False
        try:
            from safetensors import safe_open

            with safe_open(str(p), framework="pt") as f:
                shapes = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
        except Exception:
            return False
        return shapes == rec.get("shapes")

    def put(self, kind: str, key: str, tensors: dict[str, torch.Tensor], meta: Optional[dict] = None) -> None:
        p = self.path(kind, key)
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        atomic_save_safetensors(tensors, p, metadata={k: str(v) for k, v in (meta or {}).items()})
        self.manifest.entries[f"{kind}/{key}"] = {
            "bytes": p.stat().st_size, "shapes": {k: list(v.shape) for k, v in tensors.items()},
            **({"meta": meta} if meta else {})}

    def get(self, kind: str, key: str) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        p = self.path(kind, key)
        try:
            return load_file(str(p))
        except Exception as e:  # SafetensorError / OSError: say which file, and what to do
            raise CacheError(f"cached {kind} latents {p} cannot be read ({type(e).__name__}: {e}); the file is "
                             "damaged — run Encode Latents again on this cache (it re-encodes damaged "
                             "entries)") from e

    def prune(self, keep: Iterable[str]) -> int:
        """Delete entry files not in ``keep`` ("<kind>/<key>"); returns how many went."""
        keep = set(keep)
        n = 0
        for kind in KINDS:
            for f in (self.root / kind).glob("*.safetensors"):
                if f"{kind}/{f.stem}" not in keep:
                    f.unlink(missing_ok=True)
                    self.manifest.entries.pop(f"{kind}/{f.stem}", None)
                    n += 1
        return n


_PAIR_HOW = {"reference": "clip.reference.mp4 beside each clip, the reference_video column or a reference folder",
             "reference_audio": "references with sound, or clip.reference_audio.wav",
             "video_mask": "clip.mask.png / .mp4, the video_mask column, or generated masks",
             "audio_mask": "clip.audio_mask.wav, the audio_mask column, or generated masks"}


def _mode_uses(mode, name: str) -> bool:
    """Does the training mode (a modes.TrainingMode, or the older objective.Mode) read this
    paired entry?"""
    from .modes import TrainingMode

    if not isinstance(mode, TrainingMode):
        return False  # the older modes read no paired entry
    if name == "reference":
        return mode.needs("video", "reference")
    if name == "reference_audio":
        return mode.needs("audio", "reference")
    return mode.needs("video" if name == "video_mask" else "audio", "mask")


class CacheError(ValueError):
    """A latent cache that cannot train this model: damaged files, wrong shapes, another model."""


class CachedLatents:
    """The engine's ``LatentSource`` over a cache folder (loads entries on demand)."""

    def __init__(self, root: str | os.PathLike, require_audio: bool = False):
        self.cache = LatentCache(root)
        m = self.cache.manifest
        self.samples = [CacheSample(**s) for s in m.samples]
        if not self.samples:
            raise ValueError(f"the latent cache at {root} has no samples; run Encode Latents first")
        if require_audio:
            silent = [s.key for s in self.samples if s.audio is None]
            if silent:
                raise ValueError(f"{len(silent)} cached samples have no audio (e.g. {silent[0]}); "
                                 "audio training needs audio — use a video-only mode or drop those clips")
        if m.empty_text is None:
            raise ValueError("the cache has no empty-caption entry; re-run Encode Latents")
        self._empty: Optional[dict] = None

    def __len__(self) -> int:
        return len(self.samples)

    def bucket_of(self, i: int) -> str:
        return self.samples[i].bucket

    def batch_key(self, i: int) -> str:
        """What clips of one bucket must share to share a forward: the frame rate (it sets the
        audio latent length and the RoPE time), whether there is sound, the IC-LoRA
        reference's scale and which paired inputs exist."""
        s = self.samples[i]
        parts = [f"{s.fps:g} fps"]
        if not s.audio:
            parts.append("no sound")
        if s.reference_scale != 1:
            parts.append(f"reference ÷{s.reference_scale}")
        missing = [k.replace("_", " ") for k in CacheSample.PAIRED if getattr(s, k) is None]
        if missing and len(missing) < len(CacheSample.PAIRED):
            parts.append("without " + ", ".join(missing))
        return ", ".join(parts)

    def get(self, i: int):
        from .engine import LatentItem

        s = self.samples[i]
        video = self.cache.get("video", s.video)["latents"] if s.video else None
        audio = self.cache.get("audio", s.audio)["latents"] if s.audio else None
        paired = {}
        for name in CacheSample.PAIRED:
            k = getattr(s, name)
            if k:
                kind = CacheSample.PAIR_KINDS[name]
                paired[name] = self.cache.get(kind, k)["mask" if kind == "mask" else "latents"]
        return LatentItem(key=s.key, video=video, audio=audio, text=self.cache.get("text", s.text),
                          fps=s.fps, bucket=s.bucket, reference_scale=s.reference_scale, **paired)

    def first_frame(self, i: int) -> Optional[torch.Tensor]:
        s = self.samples[i]
        if not s.video:
            return None
        return self.cache.get("video", s.video).get("first_frame")

    def identity(self) -> dict:
        """What identifies the cache's contents: its samples and the entries they use (entry
        keys hash the source, the bucket and the encoding models)."""
        m = self.cache.manifest
        rows = []
        for s in self.samples:
            row = [s.key, s.video, s.audio, s.text, s.bucket, s.fps]
            extra = [getattr(s, n) for n in CacheSample.PAIRED]
            if any(extra):  # paired entries (a cache without them keeps its earlier identity)
                row += extra + [s.reference_scale]
            rows.append(row)
        blob = json.dumps({"samples": rows, "empty": m.empty_text}, sort_keys=True)
        return {"samples": len(self.samples), "digest": hashlib.sha256(blob.encode()).hexdigest()[:32]}

    def entry_shapes(self, i: int) -> dict[str, Optional[list]]:
        """Recorded shapes of sample ``i``'s tensors, from the manifest (no file read)."""
        s = self.samples[i]
        ent = self.cache.manifest.entries
        out: dict[str, Optional[list]] = {}
        for kind, key, name in (("video", s.video, "latents"), ("audio", s.audio, "latents"), ("text", s.text, "context")):
            rec = ent.get(f"{kind}/{key}") if key else None
            out[kind] = (rec or {}).get("shapes", {}).get(name) if rec else None
        return out

    def verify(self, mode=None) -> None:
        """Before the first step: every file a sample uses exists, has the size recorded when
        it was written, and its header opens with the recorded shapes; latents have LTX-2's
        layout. Raises CacheError naming the file (or the first few) and what to do."""
        from safetensors import safe_open

        ent = self.cache.manifest.entries
        bad: list[str] = []
        layout: list[str] = []
        needed: list[tuple[str, str]] = [("text", self.cache.manifest.empty_text)]
        for s in self.samples:
            if s.video and (mode is None or mode.needs_video):
                needed.append(("video", s.video))
            if s.audio and (mode is None or mode.needs_audio):
                needed.append(("audio", s.audio))
            needed.append(("text", s.text))
            for name in CacheSample.PAIRED:
                if getattr(s, name) and (mode is None or _mode_uses(mode, name)):
                    needed.append((CacheSample.PAIR_KINDS[name], getattr(s, name)))
        if mode is not None:
            for name in CacheSample.PAIRED:
                if _mode_uses(mode, name):
                    lacking = [s.key for s in self.samples if not getattr(s, name)]
                    if lacking:
                        what = name.replace("_", " ")
                        raise CacheError(
                            f"the latent cache at {self.cache.root} has no {what} for {len(lacking)} of "
                            f"{len(self.samples)} samples (e.g. {lacking[0]}), and mode {mode.name} trains on "
                            f"it. Pair the clips in Load Clips ({_PAIR_HOW[name]}) and run Encode Latents again")
        seen = set()
        for kind, key in needed:
            if (kind, key) in seen:
                continue
            seen.add((kind, key))
            p = self.cache.path(kind, key)
            rec = ent.get(f"{kind}/{key}")
            if not p.is_file():
                bad.append(f"{p.name} ({kind}) is missing")
                continue
            if rec is not None and rec.get("bytes") is not None and p.stat().st_size != rec["bytes"]:
                bad.append(f"{p.name} ({kind}) has {p.stat().st_size} bytes, {rec['bytes']} were written (truncated "
                           "or overwritten)")
                continue
            try:
                with safe_open(str(p), framework="pt") as f:
                    shapes = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
            except Exception as e:
                bad.append(f"{p.name} ({kind}) cannot be read ({type(e).__name__}: {e})")
                continue
            if rec is not None and rec.get("shapes") is not None and shapes != rec["shapes"]:
                bad.append(f"{p.name} ({kind}) holds shapes {shapes}, the manifest recorded {rec['shapes']}")
                continue
            want = {"text": "context", "mask": "mask"}.get(kind, "latents")
            main = shapes.get(want)
            if main is None:
                bad.append(f"{p.name} ({kind}) has no {want} tensor (it holds {sorted(shapes)})")
            elif kind == "video" and (len(main) != 4 or main[0] != 128):
                layout.append(f"{p.name}: video latents {main}, LTX-2 takes [128, F', H', W'] (128 channels)")
            elif kind == "audio" and (len(main) != 3 or main[0] != 8 or main[2] != 16):
                layout.append(f"{p.name}: audio latents {main}, LTX-2 takes [8, T, 16]")
            elif kind == "text" and len(main) != 2:
                layout.append(f"{p.name}: text conditioning {main}, expected [tokens, width]")
        where = self.cache.root
        if bad:
            more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
            raise CacheError(f"the latent cache at {where} is damaged: {'; '.join(bad[:5])}{more}. Run Encode Latents "
                             "again on the same clips: it re-encodes exactly the damaged entries")
        if layout:
            more = f" (and {len(layout) - 3} more)" if len(layout) > 3 else ""
            raise CacheError(f"the latent cache at {where} was not made by LTX-2's VAEs: {'; '.join(layout[:3])}{more}. "
                             "Encode the clips again with the LTX-2 video and audio VAEs")

    def empty_text(self) -> dict:
        if self._empty is None:
            self._empty = self.cache.get("text", self.cache.manifest.empty_text)
        return self._empty
