"""Micro-benchmark of the attention kernels behind ``F.scaled_dot_product_attention`` at the
LTX-2 19B shapes of a 768×512×121 audio-video step (forward + backward, bf16), per SDPA
backend, timed with CUDA events; also eager vs compiled use of each. Writes
micro_attention.json to --out.

    python bench/micro_attention.py --out /tmp/ma
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from micro_stream import timed as _timed  # noqa: E402

SHAPES = {  # name: (q tokens, k tokens, heads, head dim)
    "video self 6144": (6144, 6144, 32, 128),
    "video->text 6144x1024": (6144, 1024, 32, 128),
    "audio->video 126x6144": (126, 6144, 32, 64),
    "video->audio 6144x126": (6144, 126, 32, 64),
    "audio self 126": (126, 126, 32, 64),
}
BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION}


def timed(fn, n=20):
    return _timed(fn, n=n, warmup=3)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/ma")
    a = ap.parse_args()
    rec = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "ms_fwd_bwd": {}}
    for name, (tq, tk, h, d) in SHAPES.items():
        g = torch.Generator(device="cuda").manual_seed(0)
        q = torch.randn(1, h, tq, d, device="cuda", dtype=torch.bfloat16, generator=g, requires_grad=True)
        k = torch.randn(1, h, tk, d, device="cuda", dtype=torch.bfloat16, generator=g, requires_grad=True)
        v = torch.randn(1, h, tk, d, device="cuda", dtype=torch.bfloat16, generator=g, requires_grad=True)
        do = torch.randn(1, h, tq, d, device="cuda", dtype=torch.bfloat16, generator=g)
        row = {}
        ref = None
        for bn, be in BACKENDS.items():
            def step():
                with sdpa_kernel([be]):
                    o = F.scaled_dot_product_attention(q, k, v)
                o.backward(do)
                return o
            try:
                o = step()
                if ref is None:
                    ref = o.detach().float()
                row[bn] = round(timed(step), 3)
                row[bn + "_max_diff_vs_first"] = float((o.detach().float() - ref).abs().max())
            except Exception as e:
                row[bn] = f"{type(e).__name__}: {str(e)[:120]}"
        with torch.no_grad():
            default = F.scaled_dot_product_attention(q, k, v)
        row["default_backend_equals"] = [bn for bn in BACKENDS if isinstance(row.get(bn), float)
                                         and row.get(bn + "_max_diff_vs_first", 1) == 0.0 and
                                         torch.equal(default, ref.to(default.dtype))][:1]
        rec["ms_fwd_bwd"][name] = row
        print(name, row, flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "micro_attention.json").write_text(json.dumps(rec, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
