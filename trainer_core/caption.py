"""Local, audio-aware captions for training clips (no ComfyUI imports).

A Hugging Face-format multimodal model from a local folder — the Qwen Omni family, which
hears the clip's sound, or a vision-only Qwen VL model, whose captions then say nothing about
sound — watches frames sampled evenly over each segment (and hears its audio) and writes a
caption in the order LTX-2 learns from: action and motion, subjects, setting, camera,
lighting, then sound. Captions are cleaned, capped and trigger-prefixed, written atomically
as ``.txt`` files (editable by hand, kept on re-runs), and a re-run skips what is captioned.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from .dataset import ClipInfo, ClipSet, Segment
from .fsutil import atomic_write_text

OMNI_TYPES = {"qwen2_5_omni", "qwen2_5_omni_thinker", "qwen3_omni_moe", "qwen3_omni_moe_thinker"}
VISION_TYPES = {"qwen2_5_vl", "qwen2_vl", "qwen3_vl", "qwen3_vl_moe"}

DEFAULT_PROMPT = (
    "Describe this video clip for training a video-and-audio generation model, as one paragraph in "
    "present tense, in this order: the main action and motion as it happens; the subjects and their "
    "appearance (clothing, colours, distinctive features); the setting; the camera movement and "
    "framing; the lighting and colour; then the sound: quote any speech verbatim in double quotes and "
    "name who speaks, then music (style, instruments, mood), ambience and sound effects, in the order "
    "they occur. Describe only what you see and hear. Do not start with 'The video shows'.")
DEFAULT_PROMPT_VISION = (
    "Describe this video clip for training a video generation model, as one paragraph in present tense, "
    "in this order: the main action and motion as it happens; the subjects and their appearance "
    "(clothing, colours, distinctive features); the setting; the camera movement and framing; the "
    "lighting and colour. Describe only what you see; say nothing about sound. Do not start with "
    "'The video shows'.")

_BOILERPLATE = re.compile(
    r"^\s*(?:(?:in|within)\s+(?:this|the)\s+(?:video|clip|footage)\s*,?\s*"
    r"|(?:this|the)\s+(?:video|clip|footage|scene)\s+(?:shows|depicts|features|captures|presents|begins with)\s*"
    r"|(?:here\s+)?(?:we\s+see|you\s+can\s+see)\s*)", re.IGNORECASE)


# how the captioner generates: greedy, at most DEFAULT_MAX_NEW_TOKENS new tokens
GENERATE_DEFAULTS: dict = {"do_sample": False}
DEFAULT_MAX_NEW_TOKENS = 320


class CaptionModelError(ValueError):
    pass


# ----------------------------------------------------------------------------- model folder

def check_model_dir(path: str | Path) -> tuple[str, dict]:
    """(family "omni" | "vision", config) of a Hugging Face model folder, or a
    CaptionModelError that lists what is missing and where it goes."""
    p = Path(path)
    where = f"put the model's Hugging Face folder at {p} (e.g. ComfyUI/models/captioners/{p.name}/)"
    if not p.is_dir():
        raise CaptionModelError(f"captioning model folder {p} does not exist: {where}")
    missing: list[str] = []
    cfg_file = p / "config.json"
    if not cfg_file.is_file():
        missing.append("config.json")
    index = p / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except Exception:
            shards = []
            missing.append("a readable model.safetensors.index.json")
        missing += [s for s in shards if not (p / s).is_file()]
    elif not list(p.glob("*.safetensors")):
        missing.append("model weights (*.safetensors)")
    if not ((p / "tokenizer.json").is_file() or ((p / "vocab.json").is_file() and (p / "merges.txt").is_file())):
        missing.append("tokenizer.json (or vocab.json + merges.txt)")
    if not ((p / "preprocessor_config.json").is_file() or (p / "processor_config.json").is_file()):
        missing.append("preprocessor_config.json (or processor_config.json)")
    if missing:
        raise CaptionModelError(f"captioning model {p.name} is incomplete — missing: {', '.join(missing)}; {where}")
    cfg = json.loads(cfg_file.read_text())
    mt = cfg.get("model_type", "")
    if mt in OMNI_TYPES:
        return "omni", cfg
    if mt in VISION_TYPES:
        return "vision", cfg
    raise CaptionModelError(f"{p.name} is a {mt or 'unknown'} model; supported: Qwen Omni "
                            f"({', '.join(sorted(OMNI_TYPES))}) or Qwen VL ({', '.join(sorted(VISION_TYPES))})")


@dataclass
class Captioner:
    model: Any
    processor: Any
    family: str
    name: str = ""
    audio_rate: int = 16000

    @classmethod
    def load(cls, path: str | Path, precision: str = "bf16", device: str = "cpu") -> "Captioner":
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        family, cfg = check_model_dir(path)
        kw: dict = {"use_safetensors": True}
        if precision in ("8-bit", "4-bit"):
            if not str(device).startswith("cuda"):
                raise CaptionModelError(f"{precision} loading (bitsandbytes) needs a CUDA GPU; choose bf16")
            from transformers import BitsAndBytesConfig

            kw["quantization_config"] = (BitsAndBytesConfig(load_in_8bit=True) if precision == "8-bit" else
                                         BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16))
        else:
            kw["dtype"] = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
        mt = cfg.get("model_type")
        if mt in ("qwen2_5_omni", "qwen2_5_omni_thinker"):
            from transformers import Qwen2_5OmniThinkerForConditionalGeneration as M
        elif mt in ("qwen3_omni_moe", "qwen3_omni_moe_thinker"):
            from transformers import Qwen3OmniMoeThinkerForConditionalGeneration as M
        else:
            M = AutoModelForImageTextToText
        if mt in ("qwen2_5_omni", "qwen3_omni_moe"):
            # the full Omni folder: load only its thinker (text out) — the talker and its pickled
            # speaker table (spk_dict.pt) are never read
            from transformers import AutoConfig

            kw["config"] = AutoConfig.from_pretrained(str(path)).thinker_config
            kw["key_mapping"] = {r"^thinker\.": ""}
        model = M.from_pretrained(str(path), **kw)
        if "quantization_config" not in kw:
            model.to(device)
        model.eval()
        proc = AutoProcessor.from_pretrained(str(path))
        rate = int(getattr(getattr(proc, "feature_extractor", None), "sampling_rate", 16000) or 16000)
        return cls(model, proc, family, Path(path).name, rate)

    def inputs(self, frames: np.ndarray, audio: Optional[np.ndarray], prompt: str, fps: Optional[float] = None) -> dict:
        """The processor's model inputs for one segment (frames [N, H, W, 3] uint8, mono audio).

        ``fps``: the rate the frames were sampled at. Qwen's processors place the video's
        tokens in time from it (their time positions line up with the audio's); without it
        they assume 2 fps, which stretches 8 frames of a 5-second clip over 4 s."""
        content: list[dict] = [{"type": "video"}]
        use_audio = self.family == "omni" and audio is not None
        if use_audio:
            content.append({"type": "audio"})
        content.append({"type": "text", "text": prompt})
        text = self.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                                  tokenize=False)
        kw: dict = {"text": [text], "videos": [frames], "return_tensors": "pt"}
        if fps:
            kw["fps"] = float(fps)
        if use_audio:
            kw["audio"] = [audio]
        return self.processor(**kw)

    def generate(self, inp: dict, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, **generate_kwargs) -> Any:
        """The new token ids [1, n] that the model writes for processed inputs ``inp`` (greedy
        unless ``generate_kwargs`` say otherwise; bench/bench_caption.py passes a length and a
        timer here)."""
        import torch

        dev = next(self.model.parameters()).device
        inp = {k: (v.to(dev) if hasattr(v, "to") else v) for k, v in inp.items()}
        gen: dict = {"max_new_tokens": max_new_tokens, **GENERATE_DEFAULTS, **generate_kwargs}
        with torch.inference_mode():
            out = self.model.generate(**inp, **gen)
        seq = out[0] if isinstance(out, (tuple, list)) else out
        if hasattr(seq, "sequences"):
            seq = seq.sequences
        return seq[:, inp["input_ids"].shape[1]:]

    def decode(self, new_ids: Any) -> str:
        return self.processor.batch_decode(new_ids, skip_special_tokens=True)[0]

    def caption(self, frames: np.ndarray, audio: Optional[np.ndarray], prompt: str,
                max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, fps: Optional[float] = None, **generate_kwargs) -> str:
        """One segment's caption: processor inputs, generation, decoding."""
        return self.decode(self.generate(self.inputs(frames, audio, prompt, fps), max_new_tokens, **generate_kwargs))


# ----------------------------------------------------------------------------- text

def clean_caption(text: str, trigger: str = "", max_words: int = 200) -> str:
    """Strip boilerplate openings and wrapping quotes, collapse whitespace, cap at
    ``max_words`` (at the last sentence end within the cap when there is one), and prepend
    the trigger word (once)."""
    t = " ".join((text or "").split()).strip().strip('"').strip()
    stripped = False
    for _ in range(2):
        t2 = _BOILERPLATE.sub("", t, count=1)
        if t2 == t:
            break
        t, stripped = t2.strip(), True
    if t and stripped:
        t = t[0].upper() + t[1:]
    words = t.split()
    if max_words and len(words) > max_words:
        cut = " ".join(words[:max_words])
        end = max(cut.rfind(". "), cut.rfind("! "), cut.rfind("? "), cut.rfind('." '))
        t = cut[:end + 1] if end > len(cut) // 2 else cut.rstrip(",;:") + "."
    trig = (trigger or "").strip()
    if trig and not t.lower().startswith(trig.lower()):
        t = f"{trig}, {t}" if t else trig
    return t


# ----------------------------------------------------------------------------- media

def frame_size(width: int, height: int, max_side: int = 448) -> tuple[int, int]:
    """(width, height) of the frames the model sees: the clip scaled down so that its longest
    side is at most ``max_side``, both sides even."""
    scale = min(1.0, max_side / max(width, height, 1))
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)


def segment_media(clip: ClipInfo, seg: Segment, n_frames: int = 8, max_side: int = 448,
                  audio_rate: Optional[int] = 16000) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Frames sampled evenly over the segment ([N, H, W, 3] uint8, longest side ≤ max_side)
    and its mono audio at ``audio_rate`` (None without an audio track or rate)."""
    from . import media

    size = frame_size(clip.width, clip.height, max_side)
    if clip.kind == "image" or seg.duration <= 0:
        times = [seg.start] * max(2, n_frames if clip.kind != "image" else 2)
    else:
        n = max(2, n_frames)
        times = [seg.start + (i + 0.5) * seg.duration / n for i in range(n)]
    frames = media.frames_at(clip.path, times, size=size)
    audio = None
    if audio_rate and clip.has_audio and seg.duration > 0:
        pcm, _ = media.read_audio(clip.path, seg.start, seg.duration, sample_rate=audio_rate, channels=1)
        audio = pcm[0].astype(np.float32)
    return frames, audio


def sampled_fps(clip: ClipInfo, seg: Segment, n_frames: int) -> Optional[float]:
    """The rate segment_media samples ``n_frames`` frames at (evenly over the segment);
    None for a still image or an empty segment (no time to place them in)."""
    if clip.kind == "image" or seg.duration <= 0 or n_frames <= 0:
        return None
    return n_frames / seg.duration


def caption_path(clip: ClipInfo, seg: Segment, n_segments: int, writable_roots: Sequence[str | Path],
                 fallback_root: str | Path) -> Path:
    """Where a segment's caption lives: ``<stem>.txt`` beside the source for a clip taken
    whole (Load Clips reads it back), ``<stem>.scene003.txt`` for one scene of a split clip;
    beside the source when it lies in one of ``writable_roots`` (ComfyUI's folders), else the
    same relative name under ``fallback_root``."""
    src = Path(clip.path)
    name = f"{src.stem}.txt" if n_segments <= 1 else f"{src.stem}.scene{seg.index:03d}.txt"
    for root in writable_roots:
        try:
            src.resolve().relative_to(Path(root).resolve())
            return src.with_name(name)
        except ValueError:
            continue
    rel = Path(clip.name).parent
    return Path(fallback_root) / rel / name


@dataclass
class CaptionReport:
    written: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"captioned {len(self.written)}, kept {len(self.kept)} existing, failed {len(self.failed)}"]
        lines += [f"  {k}: {why}" for k, why in self.failed[:10]]
        return "\n".join(lines)


def caption_clips(clipset: ClipSet, captioner: Optional[Captioner], *, prompt: str = "", trigger: str = "",
                  overwrite: bool = False, n_frames: int = 8, max_side: int = 448, max_words: int = 200,
                  writable_roots: Sequence[str | Path] = (), fallback_root: str | Path = ".",
                  progress: Optional[Callable[..., None]] = None,
                  load: Optional[Callable[[], Captioner]] = None) -> tuple[ClipSet, CaptionReport]:
    """Caption every segment (a clip without segments counts as one whole-clip segment) and
    return the clip set with ``Segment.caption`` set. Existing captions (the segment's own
    .txt, or one already on the segment/clip) are kept unless ``overwrite``; the model is only
    loaded (``load``) when something needs captioning. One segment's failure is reported and
    the rest go on; ``progress(i, n, text)`` may raise to interrupt between segments."""
    import copy

    cs = copy.deepcopy(clipset)
    if not cs.segments:
        cs.segments = [Segment(clip=i, start=0.0, end=c.duration, index=0) for i, c in enumerate(cs.clips)]
    counts: dict[int, int] = {}
    for s in cs.segments:
        counts[s.clip] = counts.get(s.clip, 0) + 1
    rep = CaptionReport()
    total = len(cs.segments)
    for k, seg in enumerate(cs.segments):
        clip = cs.clips[seg.clip]
        key = seg.key(cs.clips)
        path = caption_path(clip, seg, counts[seg.clip], writable_roots, fallback_root)
        if progress is not None:
            progress(k, total, f"{k}/{total}: {key}")
        if not overwrite:
            existing = None
            if path.is_file():
                from .media import read_caption_file

                existing = read_caption_file(path, warnings=cs.warnings)  # strict UTF-8, else cp1252 + warning
                source = "txt"
            elif (seg.caption or (counts[seg.clip] == 1 and clip.caption)):
                existing, source = seg.caption or clip.caption, seg.caption_source or clip.caption_source
            if existing:
                seg.caption, seg.caption_source = existing, source
                rep.kept.append(key)
                continue
        try:
            if captioner is None:
                if load is None:
                    raise CaptionModelError("no captioning model")
                captioner = load()
            family_prompt = prompt or (DEFAULT_PROMPT if captioner.family == "omni" else DEFAULT_PROMPT_VISION)
            frames, audio = segment_media(clip, seg, n_frames, max_side,
                                          captioner.audio_rate if captioner.family == "omni" else None)
            fps = sampled_fps(clip, seg, len(frames))
            text = clean_caption(captioner.caption(frames, audio, family_prompt, fps=fps), trigger, max_words)
            if not text:
                raise ValueError("the model returned an empty caption")
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, text + "\n")
            seg.caption, seg.caption_source = text, "caption"
            rep.written.append(key)
        except CaptionModelError:
            raise
        except Exception as e:  # one clip's failure never stops the others
            rep.failed.append((key, f"{type(e).__name__}: {e}"[:200]))
    if progress is not None:
        progress(total, total, rep.summary().splitlines()[0])
    return cs, rep
