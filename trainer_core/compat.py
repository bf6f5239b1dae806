"""Which ComfyUI the pack works with, told from its version string (no ComfyUI import here).

The pack's training forward follows Lightricks' formulation of LTX-2's audio–video
cross-attention modulation (ltx-core; ComfyUI since Lightricks' fix of May 2026, "fix:
cross-attention AdaLN scale, shift, sigma parameters calculation"). A ComfyUI from before
that fix samples audio + video with the old formula (16–24 % different outputs on the same
weights), so the previews it makes of a LoRA are not the model the LoRA was trained on; and
LTX-2.5 (split files, Gemma 4 text encoder) loads only in recent ComfyUI. The reference
ComfyUI of the pack's tests is 0.33.0.
"""
from __future__ import annotations

import re
from typing import Optional

MIN_COMFYUI = (0, 33, 0)
TESTED_COMFYUI = "0.33.0"


def parse_version(text: str) -> Optional[tuple[int, int, int]]:
    """'0.33.0' -> (0, 33, 0); '0.4' -> (0, 4, 0); None when the text holds no version."""
    m = re.match(r"\s*v?(\d+)\.(\d+)(?:\.(\d+))?", str(text or ""))
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def comfyui_problem(version: Optional[str]) -> Optional[str]:
    """None when ``version`` is a ComfyUI the pack supports; else a message for the log that
    says which version it needs and what differs."""
    v = parse_version(version) if version else None
    need = ".".join(map(str, MIN_COMFYUI))
    if v is None:
        return (f"LTX-2 Trainer: could not tell this ComfyUI's version ({version!r}); the pack is tested "
                f"with ComfyUI {TESTED_COMFYUI} and needs {need} or newer.")
    if v >= MIN_COMFYUI:
        return None
    have = ".".join(map(str, v))
    return (f"LTX-2 Trainer needs ComfyUI {need} or newer (this is {have}). Training still runs with the "
            "pack's own forward, but older ComfyUI cannot load LTX-2.5, and one from before May 2026 samples "
            "LTX-2 audio + video with the old cross-attention modulation — Sample with LoRA and the "
            "validation previews would then show a different model from the one the LoRA was trained on. "
            "Update ComfyUI (git pull, or `comfy update`).")


__all__ = ["MIN_COMFYUI", "TESTED_COMFYUI", "parse_version", "comfyui_problem"]
