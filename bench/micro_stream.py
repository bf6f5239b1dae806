"""Micro-benchmark of one streamed block's transfer on the GPU: pinned host -> device copy of
the block's weights in bf16 and in fp8, the fp8 dequantization, and activations going
device -> host at the same time as weights come in (full duplex), timed with CUDA events.
Writes micro_stream.json to --out.

    python bench/micro_stream.py --out /tmp/ms
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timed(fn, n=10, warmup=1):
    """Mean milliseconds of ``fn`` over ``n`` calls after ``warmup`` calls (CUDA events)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(n):
        fn()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / n


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/ms")
    a = ap.parse_args()
    from trainer_core.ltx2.memory import dequantize_fp8, quantize_fp8

    # the 19B block's linear weights: 4 video attentions (4096^2 x4), 2 audio (2048^2 x4), 2 cross-modal, ff
    shapes = [(4096, 4096)] * 8 + [(2048, 2048)] * 8 + [(2048, 4096), (4096, 2048)] * 4 + [(4096, 2048)] * 4 + \
        [(16384, 4096), (4096, 16384), (8192, 2048), (2048, 8192)]
    host = [torch.randn(s, dtype=torch.bfloat16).pin_memory() for s in shapes]
    q = [quantize_fp8(h) for h in host]
    qh = [x.pin_memory() for x, _ in q]
    sc = [s.cuda() for _, s in q]
    dev = [torch.empty(s, dtype=torch.bfloat16, device="cuda") for s in shapes]
    st = [torch.empty(s, dtype=torch.float8_e4m3fn, device="cuda") for s in shapes]
    gb = sum(h.numel() for h in host) * 2 / 1e9
    rec = {"gpu": torch.cuda.get_device_name(), "block_bf16_gb": round(gb, 3)}
    rec["h2d_bf16_ms"] = timed(lambda: [d.copy_(h, non_blocking=True) for d, h in zip(dev, host)])
    rec["h2d_fp8_ms"] = timed(lambda: [s.copy_(h, non_blocking=True) for s, h in zip(st, qh)])
    rec["dequant_fp32path_ms"] = timed(lambda: [dequantize_fp8(s, c, out=d) for s, c, d in zip(st, sc, dev)])
    scb = [c.to(torch.bfloat16) for c in sc]
    rec["dequant_bf16path_ms"] = timed(lambda: [torch.mul(s.to(torch.bfloat16), c, out=d) for s, c, d in zip(st, scb, dev)])
    rec["h2d_bf16_GBps"] = round(gb / rec["h2d_bf16_ms"] * 1e3, 1)
    rec["h2d_fp8_GBps"] = round(gb / 2 / rec["h2d_fp8_ms"] * 1e3, 1)
    # concurrency: a matmul load on the default stream while the side stream copies
    x = torch.randn(6144, 4096, dtype=torch.bfloat16, device="cuda")
    w = torch.randn(4096, 4096, dtype=torch.bfloat16, device="cuda")
    side = torch.cuda.Stream()

    def overlap(kind):
        def run():
            with torch.cuda.stream(side):
                if kind == "bf16":
                    for d, h in zip(dev, host):
                        d.copy_(h, non_blocking=True)
                else:
                    for s, h, c, d in zip(st, qh, sc, dev):
                        s.copy_(h, non_blocking=True)
                        dequantize_fp8(s, c, out=d)
            for _ in range(40):
                x @ w
            torch.cuda.current_stream().wait_stream(side)
        return run

    # full duplex: the forward of a streamed + offloaded plan copies weights in (host -> device)
    # while activations go out (device -> host); each alone, then both at once on two streams
    act = torch.randn(int(0.6e9) // 2, dtype=torch.bfloat16, device="cuda")
    act_host = torch.empty_like(act, device="cpu").pin_memory()
    s_in, s_out = torch.cuda.Stream(), torch.cuda.Stream()

    def copy_in():
        with torch.cuda.stream(s_in):
            for d, h in zip(dev, host):
                d.copy_(h, non_blocking=True)
        torch.cuda.current_stream().wait_stream(s_in)

    def copy_out():
        with torch.cuda.stream(s_out):
            act_host.copy_(act, non_blocking=True)
        torch.cuda.current_stream().wait_stream(s_out)

    def with_weights(act_out: bool):
        """The block's weights in on one stream while the activations go out (act_out) or
        also come in (a second host -> device copy, as weights and fetched activations in
        backward) on the other."""
        def run():
            s_in.wait_stream(torch.cuda.current_stream())
            s_out.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s_out):
                if act_out:
                    act_host.copy_(act, non_blocking=True)
                else:
                    act.copy_(act_host, non_blocking=True)
            with torch.cuda.stream(s_in):
                for d, h in zip(dev, host):
                    d.copy_(h, non_blocking=True)
            torch.cuda.current_stream().wait_stream(s_in)
            torch.cuda.current_stream().wait_stream(s_out)
        return run

    rec["act_gb"] = round(act.numel() * 2 / 1e9, 3)
    rec["h2d_block_ms"] = timed(copy_in)
    rec["d2h_act_ms"] = timed(copy_out)
    rec["duplex_both_ms"] = timed(with_weights(act_out=True))
    rec["h2d_block_plus_act_ms"] = timed(with_weights(act_out=False))
    rec["d2h_GBps"] = round(rec["act_gb"] / rec["d2h_act_ms"] * 1e3, 1)
    rec["matmul40_alone_ms"] = timed(lambda: [x @ w for _ in range(40)])
    rec["overlap_bf16_ms"] = timed(overlap("bf16"))
    rec["overlap_fp8_ms"] = timed(overlap("fp8"))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "micro_stream.json").write_text(json.dumps(rec, indent=1))
    print(json.dumps(rec, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
