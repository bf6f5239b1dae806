"""GPU check: how steady the step-time model's calibration is (``calibrate_speed``).

Runs the calibration ``--n`` times uncached, and as many times the one-shot method it replaced
(a 4096² product and a 256 MiB copy, 5 repetitions each, no warm-up), and writes the figures
with their spread to ``--out`` (default bench/results/calibration_<gpu>.json)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer_core.ltx2.memory import calibrate_speed  # noqa: E402


def one_shot(device, n: int = 4096, mib: int = 256, reps: int = 5) -> tuple[float, float]:
    """The earlier calibration, for comparison: (TFLOP/s, GB/s)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    host = torch.empty(mib << 20, dtype=torch.uint8).pin_memory()
    dev = torch.empty_like(host, device=device)

    def timed(fn) -> float:
        fn()
        torch.cuda.synchronize(device)
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        for _ in range(reps):
            fn()
        e1.record()
        torch.cuda.synchronize(device)
        return e0.elapsed_time(e1) / 1e3 / reps

    t_mm, t_cp = timed(lambda: a @ b), timed(lambda: dev.copy_(host, non_blocking=True))
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
    old, new = [], []
    for _ in range(a.n):  # interleaved, so both see the same clocks and neighbours
        torch.cuda.synchronize()
        old.append(one_shot(dev))
        new.append(calibrate_speed(dev, cached=False))
    rec = {"check": "calibrate_speed steadiness", "gpu": torch.cuda.get_device_name(), "runs": a.n,
           "one_shot_tflops": spread([o[0] for o in old]), "one_shot_link_gbps": spread([o[1] for o in old]),
           "calibrate_tflops": spread([s.tflops for s in new]), "calibrate_link_gbps": spread([s.link_gbps for s in new]),
           "torch": torch.__version__}
    print(json.dumps(rec))
    gpu = torch.cuda.get_device_name().replace(" ", "_")
    out = Path(a.out) if a.out else Path(__file__).parent / "results" / f"calibration_{gpu}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rec, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
