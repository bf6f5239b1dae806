"""Paired inputs of the IC-LoRA and inpainting modes: find them, read them, put masks on the
latent grid.

Pairing (first match wins, per clip and per kind):

1. ``dataset.json`` / ``.jsonl`` / ``.csv`` at the dataset root, the columns ltx-trainer's
   ``process_dataset.py`` reads: ``reference_video`` (legacy ``ref_media_path``),
   ``reference_audio``, ``video_mask``, ``audio_mask`` — paths relative to that file's folder;
2. the naming rule, beside the clip: ``clip.mp4`` pairs with ``clip.reference.<ext>``
   (a video or a still), ``clip.reference_audio.<ext>`` (an audio file), ``clip.mask.<ext>``
   (a mask video or image) and ``clip.audio_mask.<ext>`` (a mask audio file or a
   ``.safetensors`` holding ``mask`` [N]); these files are never clips themselves;
3. a reference folder: the file with the clip's relative name, any media extension
   (``refs/sub/clip.webm`` for ``sub/clip.mp4``).

A mask value > 0.5 (white) marks conditioning — kept clean, not learned — and ≤ 0.5 (black)
what the LoRA learns to fill, as in ltx-trainer. Masks reach the latent grid as its
preprocessing does (``compute_video_masks``): nearest resize to the latent grid's pixel size,
average over each 32×32 patch, maximum over each group of 8 frames (groups from frame 0; the
last padded), threshold at 0.5; audio: nearest resampling to the latent length, threshold.

Generated masks, for users without mask files: ``generated:boxes:<seed>`` /
``generated:strokes:<seed>`` (video: one to three rectangles or random-walk strokes on the
latent grid, each over a random stretch of frames, to fill) and ``generated:spans:<seed>`` (audio: one or two
stretches to fill), drawn per sample from (seed, sample key) so a run repeats.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .dataset import IMAGE_EXTS, VIDEO_EXTS, ClipSet, Skipped

AUDIO_EXTS = (".wav", ".flac", ".mp3", ".ogg", ".m4a", ".aac", ".opus")
MASK_TENSOR_EXTS = (".safetensors",)
# naming-rule suffix of each paired kind (before the extension)
SUFFIXES = {"reference": ".reference", "reference_audio": ".reference_audio", "video_mask": ".mask",
            "audio_mask": ".audio_mask"}
# dataset.json columns (ltx-trainer's names first, then its legacy alias)
COLUMNS = {"reference": ("reference_video", "ref_media_path"), "reference_audio": ("reference_audio",),
           "video_mask": ("video_mask",), "audio_mask": ("audio_mask",)}
KIND_EXTS = {"reference": VIDEO_EXTS + IMAGE_EXTS + (".safetensors",),
             "reference_audio": AUDIO_EXTS + VIDEO_EXTS,
             "video_mask": VIDEO_EXTS + IMAGE_EXTS,
             "audio_mask": AUDIO_EXTS + VIDEO_EXTS + MASK_TENSOR_EXTS}
GENERATED_SHAPES = {"video_mask": ("boxes", "strokes"), "audio_mask": ("spans",)}


class PairError(ValueError):
    """A paired file that is missing, unreadable or does not fit its clip."""


def pair_kind_of(path: str | os.PathLike) -> Optional[str]:
    """The paired kind a file name marks by the naming rule (``x.reference.mp4`` ->
    "reference"), or None for an ordinary clip."""
    stem = Path(path).name.rsplit(".", 1)[0]
    for kind, suf in sorted(SUFFIXES.items(), key=lambda kv: -len(kv[1])):
        if stem.endswith(suf) and len(stem) > len(suf):
            return kind
    return None


def read_pair_table(root: str | os.PathLike, allowed: Sequence[Path] = ()) -> tuple[dict[str, dict[str, str]], list[Skipped]]:
    """{normalised absolute clip path: {kind: absolute path}} from the dataset table's pair
    columns (see module doc), and the problems met (a named file that does not exist)."""
    from .media import _PATH_KEYS, CAPTION_FILES, _inside, _norm_rel, _rows_from

    root = Path(root).resolve()
    out: dict[str, dict[str, str]] = {}
    problems: list[Skipped] = []
    for fname in CAPTION_FILES:
        p = root / fname
        if not p.is_file():
            continue
        try:
            rows = _rows_from(p)
        except Exception:
            continue  # read_caption_table reports the unreadable file
        for r in rows:
            if not isinstance(r, dict):
                continue
            lower = {str(k).strip().lower(): v for k, v in r.items()}
            media = next((lower[k] for k in _PATH_KEYS if lower.get(k)), None)
            if not media:
                continue
            clip = _abs(root, _norm_rel(media))
            for kind, cols in COLUMNS.items():
                v = next((lower[c] for c in cols if lower.get(c)), None)
                if not v:
                    continue
                ap = _abs(root, _norm_rel(v))
                if not any(_inside(Path(ap), r) for r in (root, *allowed)):
                    problems.append(Skipped(clip, f"{fname} names {kind.replace('_', ' ')} {v!r} outside the dataset "
                                                  "folder (and the reference folder); move it in — it was not read"))
                    continue
                if not os.path.isfile(ap):
                    problems.append(Skipped(clip, f"{fname} names {kind.replace('_', ' ')} {v!r}, which does not "
                                                  f"exist (paths are relative to {root})"))
                    continue
                out.setdefault(os.path.normcase(clip), {}).setdefault(kind, ap)
    return out, problems


def _abs(root: Path, rel: str) -> str:
    return str((Path(rel) if os.path.isabs(rel) else root / rel).resolve())


def _by_name(base: Path, stem: str, suffix: str, exts: Sequence[str]) -> Optional[str]:
    for ext in exts:
        for e in (ext, ext.upper()):
            q = base / f"{stem}{suffix}{e}"
            if q.is_file():
                return str(q.resolve())
    return None


def attach_pairs(cs: ClipSet, reference_folder: Optional[str | os.PathLike] = None,
                 needs: Optional[Sequence[str]] = None) -> list[str]:
    """Fill each clip's paired fields (``reference``, ``reference_audio``, ``video_mask``,
    ``audio_mask``, ``pair_source``) by the rules in the module doc (a reference with sound
    gives the reference audio too). ``needs``: the kinds every clip must have; None = every
    kind that at least one clip has (a paired dataset with a few unpaired clips). A clip
    lacking one is moved to ``cs.skipped`` with the reason — never trained on silently.
    Returns summary lines."""
    root = Path(cs.root)
    ref_dir = Path(reference_folder).resolve() if reference_folder else None
    if ref_dir is not None and not ref_dir.is_dir():
        raise PairError(f"reference folder {ref_dir} does not exist or is not a folder")
    table, problems = read_pair_table(root, [ref_dir] if ref_dir else [])
    cs.warnings.extend(problems)
    counts = {k: 0 for k in SUFFIXES}
    for c in cs.clips:
        row = table.get(os.path.normcase(str(Path(c.path).resolve())), {})
        p = Path(c.path)
        for kind in SUFFIXES:
            if getattr(c, kind):
                counts[kind] += 1
                continue
            found, src = row.get(kind), "dataset.json"
            if found is None:
                found, src = _by_name(p.parent, p.name.rsplit(".", 1)[0], SUFFIXES[kind], KIND_EXTS[kind]), "name"
            if found is None and ref_dir is not None and kind == "reference":
                rel = c.name.rsplit(".", 1)[0]
                sub = ref_dir / rel
                found, src = _by_name(sub.parent, sub.name, "", KIND_EXTS[kind]), "folder"
            if found is not None:
                setattr(c, kind, found)
                c.pair_source[kind] = src
                counts[kind] += 1
        if c.reference and not c.reference_audio and reference_has_audio(c.reference):
            c.reference_audio = c.reference
            c.pair_source["reference_audio"] = "the reference's sound"
            counts["reference_audio"] += 1
    # a file another clip uses as its pair (a dataset.json reference, a folder reference inside
    # the dataset) is not a clip of its own
    used = {os.path.normcase(str(Path(getattr(c, k)).resolve())) for c in cs.clips for k in SUFFIXES
            if getattr(c, k) and not str(getattr(c, k)).startswith("generated:")}
    cs.clips = [c for c in cs.clips if os.path.normcase(str(Path(c.path).resolve())) not in used]
    if needs is None:
        needs = [k for k in ("reference", "video_mask", "audio_mask") if any(getattr(c, k) for c in cs.clips)]
    kept = []
    for c in cs.clips:
        missing = [k for k in needs if not getattr(c, k)]
        if missing:
            what = " and ".join(k.replace("_", " ") for k in missing)
            stem = c.name.rsplit(".", 1)[0]
            hint = ", ".join(f"{stem}{SUFFIXES[k]}.<ext>" for k in missing)
            cs.skipped.append(Skipped(c.path, f"no {what} for this clip (looked for {hint} beside it, the "
                                              f"{'/'.join(c_ for k in missing for c_ in COLUMNS[k][:1])} column of "
                                              "dataset.json" + (", and the reference folder" if ref_dir else "")
                                      + "); it is left out of training"))
            continue
        kept.append(c)
    cs.clips = kept
    lines = []
    for kind, n in counts.items():
        if n:
            lines.append(f"{n} clips with a {kind.replace('_', ' ')}")
    return lines


def attach_reference_frames(cs: ClipSet, frames: np.ndarray, out_dir: str | os.PathLike) -> list[str]:
    """References made in the graph (e.g. ComfyUI's Canny over the clips' frames): ``frames``
    [N, H, W, 3] uint8 are the clips' references in clip order, each clip taking as many frames
    as it has (a still one); a single clip takes them all. Each clip's share is saved as
    ``<out_dir>/<digest>.safetensors`` (frame k at k / the clip's fps) and becomes its
    reference. Returns summary lines; a count that does not add up raises PairError."""
    n = int(frames.shape[0])
    clips = cs.clips
    if not clips:
        return []
    if len(clips) == 1:
        shares = [n]
    else:
        shares = [max(1, int(c.num_frames)) for c in clips]
        if sum(shares) != n:
            raise PairError(f"reference_frames has {n} frames but the {len(clips)} clips have {sum(shares)} "
                            f"({', '.join(f'{c.name}: {k}' for c, k in list(zip(clips, shares))[:4])}"
                            f"{' …' if len(clips) > 4 else ''}); feed the clips' frames in clip order, one per frame "
                            "(a still: one), or use reference files (clip.reference.mp4)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    at = 0
    for c, k in zip(clips, shares):
        part = np.ascontiguousarray(frames[at:at + k])
        at += k
        h = hashlib.sha256(part.tobytes()).hexdigest()[:20]
        p = out / f"{h}.safetensors"
        if not p.is_file():
            save_frames(p, part, c.fps if c.kind == "video" and c.fps > 0 else 1.0)
        c.reference = str(p)
        c.pair_source["reference"] = "frames"
    return [f"{len(clips)} clips with references from the graph's frames ({n} frames)"]


def reference_has_audio(path: str) -> bool:
    """Does a reference file carry a sound track (its audio is then the reference audio)?"""
    if path.endswith(".safetensors") or os.path.splitext(path)[1].lower() in IMAGE_EXTS:
        return False
    try:
        from .media import probe

        return probe(path).has_audio
    except Exception:
        return False


def set_generated_masks(cs: ClipSet, kind: str, shape: str, seed: int) -> None:
    """Give every clip without a ``kind`` mask ("video_mask" / "audio_mask") a generated one."""
    if shape not in GENERATED_SHAPES[kind]:
        raise PairError(f"generated {kind.replace('_', ' ')}s are {' or '.join(GENERATED_SHAPES[kind])}, not {shape!r}")
    for c in cs.clips:
        if not getattr(c, kind):
            setattr(c, kind, f"generated:{shape}:{int(seed)}")
            c.pair_source[kind] = "generated"


# ----------------------------------------------------------------------------- reading


def save_frames(path: str | os.PathLike, frames: np.ndarray, fps: float) -> None:
    """In-graph reference frames ([N, H, W, 3] uint8) as a safetensors file (atomic)."""
    import torch

    from .fsutil import atomic_save_safetensors

    atomic_save_safetensors({"frames": torch.from_numpy(np.ascontiguousarray(frames))}, path,
                            metadata={"fps": str(float(fps))})


def frames_at(path: str, times: Sequence[float], clip_fps: float) -> np.ndarray:
    """[N, H, W, 3] uint8: the paired video (or still, or saved frames) at ``times`` on the
    clip's timeline. Saved frames are frame k at k / fps (their own fps, else the clip's)."""
    from . import media

    if path.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(path, framework="np") as f:
            fps = float((f.metadata() or {}).get("fps") or clip_fps or 1.0)
            fr = f.get_tensor("frames")
        idx = [min(max(int(np.floor(t * fps + 1e-6)), 0), fr.shape[0] - 1) for t in times]
        return fr[idx]
    return media.frames_at(path, times)


def _grey(frames: np.ndarray) -> np.ndarray:
    f = np.asarray(frames, dtype=np.float32) / 255.0
    return f.mean(axis=-1) if f.ndim == 4 else f


def video_mask_pixels(spec: str, times: Sequence[float], size: tuple[int, int], clip_fps: float,
                      key: str = "") -> np.ndarray:
    """[N, H, W] float in [0, 1] at the bucket's pixel size (w, h): a mask file read at
    ``times`` and covered/cropped like the clip, or a generated mask."""
    w, h = size
    if spec.startswith("generated:"):
        return generated_video_mask(spec, len(times), h, w, key)
    from .buckets import crop_to_bucket
    from .dataset import Bucket

    fr = frames_at(spec, times, clip_fps)
    b = Bucket(w, h, len(times))
    return np.stack([_grey(np.asarray(crop_to_bucket(f, b))[None])[0] for f in fr])


def video_mask_to_latent(pixels, grid: tuple, scale: tuple = (8, 32, 32)):
    """[F', H', W'] float 0/1 from a pixel mask [N, H, W] (N = (F' − 1)·8 + 1), as
    ltx-trainer's ``compute_video_masks``: nearest resize to (H'·32, W'·32), average over each
    spatial patch, maximum over groups of ``scale[0]`` frames, > 0.5."""
    import torch
    import torch.nn.functional as F_

    f, h, w = (int(g) for g in grid)
    st, sh, sw = scale
    m = torch.as_tensor(np.asarray(pixels, dtype=np.float32))
    m = m[: (f - 1) * st + 1]
    if tuple(m.shape[1:]) != (h * sh, w * sw):
        m = F_.interpolate(m[:, None], size=(h * sh, w * sw), mode="nearest")[:, 0]
    m = F_.avg_pool2d(m[:, None], kernel_size=(sh, sw))[:, 0]
    pad = (st - m.shape[0] % st) % st
    if pad:
        m = F_.pad(m, (0, 0, 0, 0, 0, pad))
    m = m.reshape(-1, st, h, w).amax(dim=1)[:f]
    return (m > 0.5).float()


def audio_mask_values(spec: str, start: float, duration: float, key: str = "", n_hint: int = 1000) -> np.ndarray:
    """[N] float: the audio mask over the sample's span — a file's amplitude envelope (mono
    mean of |samples|), a .safetensors ``mask`` (over the whole clip, cut to the span by
    proportion), or a generated one."""
    if spec.startswith("generated:"):
        return generated_audio_mask(spec, n_hint, key)
    if spec.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(spec, framework="np") as f:
            if "mask" not in f.keys():
                raise PairError(f"audio mask {spec} has no 'mask' tensor (it holds {list(f.keys())})")
            return np.asarray(f.get_tensor("mask"), dtype=np.float32).reshape(-1)
    from . import media

    pcm, _ = media.read_audio(spec, start, duration, sample_rate=16000, channels=1)
    return np.abs(pcm).mean(axis=0)


def audio_mask_to_latent(values, t: int):
    """[T] float 0/1: nearest resampling to the latent length, > 0.5 (ltx-trainer's
    ``compute_audio_masks``)."""
    import torch
    import torch.nn.functional as F_

    v = torch.as_tensor(np.asarray(values, dtype=np.float32)).reshape(1, 1, -1)
    return (F_.interpolate(v, size=int(t), mode="nearest").reshape(-1) > 0.5).float()


def _rng(spec: str, key: str) -> tuple[str, np.random.Generator]:
    try:
        _, shape, seed = spec.split(":")
        seed_i = int(seed)
    except ValueError as e:
        raise PairError(f"generated mask spec {spec!r} is not 'generated:<shape>:<seed>'") from e
    h = int.from_bytes(hashlib.sha256(f"{seed_i}|{key}".encode()).digest()[:8], "little")
    return shape, np.random.default_rng(h)


def generated_video_mask(spec: str, n: int, h: int, w: int, key: str = "", scale: tuple = (8, 32, 32)) -> np.ndarray:
    """[n, h, w] float: 1 (kept) everywhere but one to three regions to fill (0) — rectangles
    ("boxes") or thick random-walk strokes ("strokes"), each over a random stretch of at least
    half the latent frames. Drawn on the latent grid (32×32 patches, groups of 8 frames) and
    spread to pixels, so the holes survive the latent downsampling whole."""
    shape, rng = _rng(spec, key)
    st, sh, sw = scale
    gf, gh, gw = max(1, -(-n // st)), max(1, h // sh), max(1, w // sw)
    m = np.ones((gf, gh, gw), dtype=np.float32)
    for _ in range(int(rng.integers(1, 4))):
        t0 = int(rng.integers(0, max(1, gf // 2 + 1)))
        t1 = int(rng.integers(min(gf, t0 + max(1, -(-gf // 2))), gf + 1))
        if shape == "boxes":
            bh = int(rng.integers(max(1, gh // 4), max(1, gh // 2) + 1))
            bw = int(rng.integers(max(1, gw // 4), max(1, gw // 2) + 1))
            y, x = int(rng.integers(0, gh - bh + 1)), int(rng.integers(0, gw - bw + 1))
            m[t0:t1, y:y + bh, x:x + bw] = 0.0
        elif shape == "strokes":
            y, x = int(rng.integers(0, gh)), int(rng.integers(0, gw))
            for _ in range(max(2, (gh + gw) // 2)):
                m[t0:t1, y, x] = 0.0
                dy, dx = ((0, 1), (1, 0), (0, -1), (-1, 0))[int(rng.integers(0, 4))]
                y, x = min(max(y + dy, 0), gh - 1), min(max(x + dx, 0), gw - 1)
        else:
            raise PairError(f"generated video masks are boxes or strokes, not {shape!r}")
    px = m.repeat(st, 0).repeat(sh, 1).repeat(sw, 2)
    out = np.ones((n, h, w), dtype=np.float32)
    ch, cw = min(h, px.shape[1]), min(w, px.shape[2])
    out[:, :ch, :cw] = px[:n, :ch, :cw]
    return out


def generated_audio_mask(spec: str, n: int, key: str = "") -> np.ndarray:
    """[n] float: 1 (kept) but one or two stretches (a tenth to a third each) to fill."""
    shape, rng = _rng(spec, key)
    if shape != "spans":
        raise PairError(f"generated audio masks are spans, not {shape!r}")
    m = np.ones(n, dtype=np.float32)
    for _ in range(int(rng.integers(1, 3))):
        ln = int(rng.integers(max(1, n // 10), max(2, n // 3) + 1))
        s = int(rng.integers(0, max(1, n - ln + 1)))
        m[s:s + ln] = 0.0
    return m
