"""CPU benchmark: scene detection throughput on a long 1080p clip with cuts.

Writes bench/results/scenes_cpu.json: seconds of footage per second of wall time, with the
detected vs true cut count. Clip generation is not timed.

    python bench/bench_scenes.py [--seconds 60] [--detector content]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.core import mediagen as mg  # noqa: E402
from trainer_core import scenes  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--scene", type=float, default=6.0, help="seconds per scene")
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--detector", default="content")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "scenes_cpu.json"))
    a = ap.parse_args()
    n = max(1, int(a.seconds / a.scene))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "long1080.mp4")
        t0 = time.perf_counter()
        truth = mg.write_clip(path, [a.scene] * n, fps=a.fps, size=(1920, 1080), preset="ultrafast", crf=23)
        gen_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        spans = scenes.detect_scenes(path, detector=a.detector)
        wall = time.perf_counter() - t0
    found = [s for s, _ in spans[1:]]
    hits = sum(any(abs(f - c) <= 2 / a.fps for f in found) for c in truth.cuts)
    rec = {"footage_seconds": truth.duration, "wall_seconds": round(wall, 3),
           "footage_seconds_per_wall_second": round(truth.duration / wall, 2), "resolution": "1920x1080",
           "fps": a.fps, "detector": a.detector, "max_side": scenes.DETECT_MAX_SIDE, "cores": os.cpu_count(),
           "true_cuts": len(truth.cuts), "detected_cuts": len(found), "cuts_within_2_frames": hits,
           "generation_seconds_not_timed": round(gen_s, 1)}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rec, indent=1))
    print(json.dumps(rec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
