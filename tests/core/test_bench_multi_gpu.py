"""bench/bench_multi_gpu.py as a smoke test: 1 and 2 gloo processes on the tiny layout."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_multi_gpu.py"


def test_bench_multi_gpu_runs_on_cpu(tmp_path):
    out = tmp_path / "mg.json"
    p = subprocess.run([sys.executable, str(BENCH), "--cpu", "--tiny", "--gpus", "2", "--steps", "2", "--warmup", "1",
                        "--shape", "64x64x9", "--strategies", "ddp,fsdp2+sp", "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    recs = json.loads(out.read_text())
    single, ddp, sp = recs
    assert single["gpus"] == 1 and single["strategy"] == "single" and ddp["gpus"] == 2 and ddp["strategy"] == "ddp"
    assert sp["gpus"] == 2 and sp["strategy"] == "fsdp2+sp" and "error" not in sp, sp
    for r in (single, ddp, sp):
        assert r["s_per_step"] > 0 and r["samples_per_s"] > 0 and r["gpu"] == "cpu" and r["shape"] == "64x64x9"
        assert len(r["peak_vram_gib"]) == r["gpus"] and len(r["peak_rss_gib"]) == r["gpus"]
        assert r["video_tokens"] == 8  # 2 latent frames × 2 × 2
    assert abs(ddp["scaling"] - ddp["samples_per_s"] / (2 * single["samples_per_s"])) < 1e-2
    assert ddp["backend"] == "gloo" and ddp["video_tokens_per_gpu"] == 8
    # sequence parallel: one sample per step, half of its video tokens on each process
    assert sp["video_tokens_per_gpu"] == 4 and abs(sp["samples_per_s"] - 1 / sp["s_per_step"]) < 1e-2 * sp["samples_per_s"]
    assert abs(sp["speedup"] - single["s_per_step"] / sp["s_per_step"]) < 1e-2 * sp["speedup"]
