"""bench/bench_encode.py's CPU dry run: both paths with the tiny VAE, a forced budget that makes
the planned path tile (the same code the GPU run takes, less the card simulation)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import COMFYUI

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_encode.py"


def test_bench_encode_dry_run_on_cpu(tmp_path):
    out = tmp_path / "enc.json"
    p = subprocess.run([sys.executable, str(BENCH), "--comfyui", str(COMFYUI),
                        "--cpu", "--tiny", "--shape", "192x128x33", "--reps", "1", "--budget-gib", "0.3",
                        "--no-audio", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    recs = json.loads(out.read_text())
    comfy_rec, planned = recs
    assert comfy_rec["path"] == "comfy" and planned["path"] == "planned"
    assert comfy_rec["latent_shape"] == planned["latent_shape"] == [1, 128, 5, 4, 6]
    assert planned["tiled"] and planned["tiles"] > 1 and planned["oom_first_attempt"] == 0
    assert planned["est_gib"] <= planned["budget_gib"] == 0.3 and planned["encode_tiled_kwargs"]["tile_t"]
    assert comfy_rec["inference_mode"] and comfy_rec["s_per_clip"] > 0 and planned["forced_budget_gib"] == 0.3
    # a second run with another budget adds its record beside the first instead of replacing it
    p = subprocess.run([sys.executable, str(BENCH), "--comfyui", str(COMFYUI), "--cpu", "--tiny", "--shape", "192x128x33",
                        "--reps", "1", "--path", "planned", "--no-audio", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    recs = json.loads(out.read_text())
    assert len(recs) == 3 and recs[-1]["plan"].startswith("ComfyUI default") and recs[-1]["tiles"] == 1
