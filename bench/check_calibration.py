"""GPU check: how steady the step-time model's calibration is (``calibrate_speed``).

Runs ``calibrate_speed`` (a 4096² bf16 product and a 256 MiB pinned copy, 5 repetitions each)
``--n`` times uncached, interleaved with a variant that was tried in its place (the clocks
warmed for 50 ms first, then the best of 3 runs of 10 products of 8192²), and writes each
one's figures and spread to ``--out`` (default bench/results/calibration_<gpu>.json)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer_core.ltx2.memory import calibrate_speed, event_seconds  # noqa: E402


def warmed_best_of(device, n: int = 8192, mib: int = 256, reps: int = 10, trials: int = 3) -> tuple[float, float]:
    """The variant: (TFLOP/s, GB/s)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    host = torch.empty(mib << 20, dtype=torch.uint8).pin_memory()
    dev = torch.empty_like(host, device=device)

    def best(fn) -> float:
        return min(event_seconds(fn, reps, device, warm=False) for _ in range(trials))

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 0.05:
        a @ b
        torch.cuda.synchronize(device)
    t_mm = best(lambda: a @ b)
    t_cp = best(lambda: dev.copy_(host, non_blocking=True))
    return 2 * n ** 3 / t_mm / 1e12, (mib << 20) / t_cp / 1e9


def spread(xs: list[float]) -> dict:
    return {"min": round(min(xs), 1), "max": round(max(xs), 1), "max_over_min": round(max(xs) / min(xs), 3),
            "all": [round(x, 1) for x in xs]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: this check runs on a GPU")
        return 0
    dev = torch.device("cuda")
    used, tried = [], []
    for _ in range(a.n):  # interleaved, so both see the same clocks and neighbours
        torch.cuda.synchronize()
        s = calibrate_speed(dev, cached=False)
        used.append((s.tflops, s.link_gbps))
        tried.append(warmed_best_of(dev))
    rec = {"check": "calibrate_speed steadiness", "gpu": torch.cuda.get_device_name(), "runs": a.n,
           "calibrate_speed_tflops": spread([u[0] for u in used]), "calibrate_speed_link_gbps": spread([u[1] for u in used]),
           "warmed_best_of_3_8192_tflops": spread([t[0] for t in tried]),
           "warmed_best_of_3_link_gbps": spread([t[1] for t in tried]), "torch": torch.__version__}
    print(json.dumps(rec))
    gpu = torch.cuda.get_device_name().replace(" ", "_")
    out = Path(a.out) if a.out else Path(__file__).parent / "results" / f"calibration_{gpu}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rec, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
