"""A demo dataset the shipped workflows train on as they are: clips with cuts and sound, each
shot longer than the longest bucket of the Bucket node's default preset (121 frames at 24 fps,
5.04 s), so Split Scenes + Bucket keep every shot; a caption .txt beside each clip.

    python scripts/make_demo_dataset.py COMFYUI/input/my_dataset [--clips 4]

(scripts/quickstart.sh runs it into its ComfyUI's input/my_dataset, the folder the workflows
read.) The pictures are synthetic (coloured scenes and tones): enough to see the whole
pipeline run, not to learn anything useful.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHOT_SECONDS = 6.0   # > 121 frames / 24 fps = 5.04 s, with room for the cut's frames
CAPTIONS = ["sks, a woman with short red hair talks to the camera in a bright room",
            "sks, close-up of a woman with short red hair laughing, soft music",
            "sks, a woman with short red hair walks past a window and waves",
            "sks, a woman with short red hair reads aloud from a book"]


def make_demo_dataset(root, clips: int = 4, size=(384, 256), shots: int = 2) -> list[Path]:
    """Write ``clips`` mp4 files of ``shots`` shots of SHOT_SECONDS each (24 fps, stereo
    tones) and their captions into ``root``; returns the clip paths."""
    sys.path.insert(0, str(REPO))
    from tests.core.mediagen import write_clip

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(clips):
        p = root / f"demo_{k + 1:02d}.mp4"
        w, h = size if k % 2 == 0 else (size[1], size[0])  # both orientations, as the buckets
        write_clip(p, [SHOT_SECONDS] * shots, fps=24, size=(w, h), seed=100 + k)
        p.with_suffix(".txt").write_text(CAPTIONS[k % len(CAPTIONS)] + "\n")
        out.append(p)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", help="where to write the clips (e.g. ComfyUI/input/my_dataset)")
    ap.add_argument("--clips", type=int, default=4)
    a = ap.parse_args(argv)
    paths = make_demo_dataset(a.folder, a.clips)
    print(f"wrote {len(paths)} clips ({2 * SHOT_SECONDS:.0f} s each, 2 shots) with captions to {a.folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
