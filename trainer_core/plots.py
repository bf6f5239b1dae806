"""Small charts drawn with Pillow (no plotting library needed)."""
from __future__ import annotations

import math
from typing import Iterable, Optional

import numpy as np


def ema(values: list[float], beta: float = 0.9) -> list[float]:
    out, s, w = [], 0.0, 0.0
    for v in values:
        s = beta * s + (1 - beta) * v
        w = beta * w + (1 - beta)
        out.append(s / w)
    return out


def loss_curve(history: list[dict], markers: Iterable[int] = (), size: tuple[int, int] = (768, 384),
               title: Optional[str] = None) -> np.ndarray:
    """Loss (light), smoothed loss (bold), learning rate (dashed, right scale) and vertical
    markers (e.g. validation steps). Returns an HxWx3 uint8 image."""
    from PIL import Image, ImageDraw, ImageFont

    W, H = size
    img = Image.new("RGB", (W, H), (24, 24, 28))
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    L, R, T, B = 56, 56, 28, 28
    d.rectangle([L, T, W - R, H - B], outline=(90, 90, 100))
    steps = [h["step"] for h in history]
    loss = [h["loss"] for h in history if math.isfinite(h["loss"])]
    from .fonts import draw_text

    draw_text(d, (L, 6), title or "training loss", fill=(230, 230, 230), size=11)  # titles may name files
    if len(loss) < 1:
        d.text((W // 2 - 40, H // 2), "no steps yet", fill=(200, 200, 200), font=font)
        return np.asarray(img)
    lo, hi = min(loss), max(loss)
    if hi - lo < 1e-12:
        hi = lo + 1e-6
    s0, s1 = steps[0], max(steps[-1], steps[0] + 1)

    def xy(step, v, vlo=lo, vhi=hi):
        x = L + (step - s0) / (s1 - s0) * (W - L - R)
        y = H - B - (v - vlo) / (vhi - vlo) * (H - T - B)
        return x, y

    for m in markers:
        if s0 <= m <= s1:
            x, _ = xy(m, lo)
            d.line([x, T, x, H - B], fill=(70, 110, 70), width=1)
    pts = [xy(h["step"], h["loss"]) for h in history if math.isfinite(h["loss"])]
    if len(pts) > 1:
        d.line(pts, fill=(110, 140, 200), width=1)
    sm = ema([h["loss"] for h in history if math.isfinite(h["loss"])])
    spts = [xy(h["step"], v) for h, v in zip([h for h in history if math.isfinite(h["loss"])], sm)]
    if len(spts) > 1:
        d.line(spts, fill=(255, 190, 60), width=3)
    lrs = [h.get("lr") for h in history if h.get("lr") is not None]
    if len(lrs) > 1 and max(lrs) > 0:
        lpts = [xy(h["step"], h["lr"], 0.0, max(lrs) * 1.05) for h in history if h.get("lr") is not None]
        for i in range(0, len(lpts) - 1, 2):
            d.line([lpts[i], lpts[i + 1]], fill=(180, 100, 180), width=1)
        d.text((W - R + 4, T), f"lr\n{max(lrs):.1e}", fill=(180, 100, 180), font=font)
    d.text((4, T), f"{hi:.4g}", fill=(200, 200, 200), font=font)
    d.text((4, H - B - 10), f"{lo:.4g}", fill=(200, 200, 200), font=font)
    d.text((L, H - B + 6), f"step {s0}", fill=(200, 200, 200), font=font)
    d.text((W - R - 60, H - B + 6), f"step {steps[-1]}", fill=(200, 200, 200), font=font)
    d.text((L + 150, 6), f"last {loss[-1]:.4g}  smoothed {sm[-1]:.4g}", fill=(255, 190, 60), font=font)
    return np.asarray(img)
