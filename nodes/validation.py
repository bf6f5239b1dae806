"""Validation previews during training: every N steps, sample each validation prompt with
the LoRA as it is at that step (ComfyUI's own LTX-2 sampling, as Sample with LoRA does), save
``<run>/samples/step_000500_0.mp4`` and show the first frame in the running node.

Sampling never changes training: the random-number state is saved and restored around it,
the LoRA weights are only read (inference mode), and the engine reseeds every step anyway; a
run with validation ends with the same LoRA as one without (tested).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np


@dataclass
class ValidationSpec:
    positives: list  # one CONDITIONING per prompt
    negative: Any
    vae: Any
    audio_vae: Any
    every: int
    width: int = 512
    height: int = 320
    frames: int = 49
    fps: int = 24
    steps: int = 20
    cfg: float = 4.0
    seed: int = 42
    first_frame: Any = None
    conditioning: Any = None  # a Sample Conditioning dict (IC-LoRA reference, prefix, mask, audio…)
    # filled during the run: (step, prompt index, [frames as uint8 HxWx3])
    shots: list = field(default_factory=list)


def encode_prompts(clip, prompts: list[str], negative_prompt: str) -> tuple[list, Any]:
    from .sample_nodes import encode_prompt

    return [encode_prompt(clip, p) for p in prompts], encode_prompt(clip, negative_prompt)


def run_validation(spec: ValidationSpec, patcher, step: int, run_dir: Path, progress=None) -> list[str]:
    """Sample every prompt at ``step``; returns the mp4 paths written."""
    from fractions import Fraction

    import torch

    from comfy_api.latest import InputImpl, Types

    from .sample_nodes import sample_av

    out_dir = Path(run_dir) / "samples"
    out_dir.mkdir(parents=True, exist_ok=True)
    cpu_state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    paths = []
    try:
        with torch.inference_mode():
            for i, pos in enumerate(spec.positives):
                images, audio, fps = sample_av(patcher, pos, spec.negative, spec.vae, spec.audio_vae, width=spec.width,
                                               height=spec.height, frames=spec.frames, fps=spec.fps, seed=spec.seed + i,
                                               steps=spec.steps, cfg=spec.cfg, first_frame=spec.first_frame,
                                               conditioning=spec.conditioning)
                video = InputImpl.VideoFromComponents(Types.VideoComponents(images=images, audio=audio,
                                                                            frame_rate=Fraction(int(fps))))
                final = out_dir / f"step_{step:06d}_{i}.mp4"
                tmp = out_dir / f".{final.name}.part.mp4"
                video.save_to(str(tmp), format=Types.VideoContainer.MP4, codec=Types.VideoCodec.AUTO)
                os.replace(tmp, final)
                paths.append(str(final))
                n = images.shape[0]
                picks = sorted({0, n // 3, (2 * n) // 3, n - 1})
                frames = [(images[j].clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()) for j in picks]
                regen = regenerated_area(spec.conditioning, images.shape[0], images.shape[1], images.shape[2])
                if regen is not None:  # inpainting / outpainting: the part the LoRA made, tinted
                    frames = [overlay_mask(f, regen[min(j, regen.shape[0] - 1)]) for f, j in zip(frames, picks)]
                spec.shots.append((step, i, frames))
                if progress is not None:
                    progress(frames[0])
    finally:
        torch.set_rng_state(cpu_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state_all(cuda_state)
    return paths


def regenerated_area(conditioning, frames: int, height: int, width: int) -> Optional[np.ndarray]:
    """[F or 1, H, W] float in [0, 1]: where an inpainting mask or an outpainting region lets the
    model generate (1), at the sample's size; None without a mask or region."""
    import torch

    c = conditioning or {}
    if c.get("mask") is not None:
        from .sample_nodes import pixel_mask

        m = pixel_mask(c["mask"], frames).float()
        m = torch.nn.functional.interpolate(m[:, None], size=(height, width), mode="bilinear")[:, 0]
        return m.clamp(0, 1).cpu().numpy()
    if c.get("region"):
        y1, x1, y2, x2 = c["region"]
        m = np.ones((1, height, width), np.float32)
        m[:, y1:y2, x1:x2] = 0.0
        return m
    return None


def overlay_mask(frame: np.ndarray, mask: np.ndarray, color=(255, 60, 200), alpha: float = 0.35) -> np.ndarray:
    """The frame with the generated area tinted (the gallery's view of an inpainting mask)."""
    m = (mask[..., None].astype(np.float32) * alpha)
    out = frame.astype(np.float32) * (1 - m) + np.asarray(color, np.float32) * m
    return out.round().clip(0, 255).astype(np.uint8)


def comparison_sheet(spec: Optional[ValidationSpec], max_w: int = 192) -> np.ndarray:
    """Rows = validation steps (and prompts), columns = frames across the clip, each row
    labelled with its step: pick the best checkpoint at a glance. Fixed seeds across steps."""
    from PIL import Image, ImageDraw

    if spec is None or not spec.shots:
        img = Image.new("RGB", (max_w * 2, 48), (24, 24, 24))
        ImageDraw.Draw(img).text((8, 16), "no validation samples (validation_every = 0)", fill=(200, 200, 200))
        return np.asarray(img)
    rows = []
    for step, i, frames in spec.shots:
        tiles = []
        for f in frames:
            im = Image.fromarray(f)
            if im.width > max_w:
                im = im.resize((max_w, max(1, round(im.height * max_w / im.width))), Image.BILINEAR)
            tiles.append(im)
        h = max(t.height for t in tiles)
        label = 86
        row = Image.new("RGB", (label + sum(t.width for t in tiles), h), (24, 24, 24))
        ImageDraw.Draw(row).text((6, h // 2 - 10), f"step {step}\nprompt {i}", fill=(230, 230, 230))
        x = label
        for t in tiles:
            row.paste(t, (x, 0))
            x += t.width
        rows.append(row)
    w = max(r.width for r in rows)
    sheet = Image.new("RGB", (w, sum(r.height for r in rows) + 2 * (len(rows) - 1)), (0, 0, 0))
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height + 2
    return np.asarray(sheet)
