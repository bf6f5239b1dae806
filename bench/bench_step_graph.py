"""GPU benchmark: the whole training step — forward, loss,
backward, clipping, AdamW — captured once as one CUDA graph and replayed, against the same
step with each block replayed as its own CUDA graph (what the Train node runs for small
buckets), in the same process, on the full-size layout (random weights, rank-32 attention
LoRA, A+V, batch 1, every block keeping all of its activations).

At 512×512×33 the per-block graphs leave the step bound by the host: the GPU is busy about
201 ms of a 225 ms step while the CPU walks 96 graph replays, their guards and the optimizer
(bench/results/engine_step_H200_round8.json). One graph for the whole step issues nothing
per block. The captured step follows PyTorch's whole-network capture: three warm-up steps on
a side stream (they compile the blocks and count as training steps), gradients unset before
the capture so that the graph's backward writes them fresh on every replay, AdamW fused and
capturable with its learning rate a tensor, clipping without a host sync. The inputs stay
where the capture saw them; the engine's graph step (trainer_core/step_graph.py, timed by
``bench_engine_step.py --step-graph``) copies each step's inputs into them.

Records ``s_per_step`` / ``s_min`` / ``s_max`` of both, their peak memory, and how far the
two LoRAs are apart after the same number of updates from the same start
(``lora_max_rel_diff``: the largest element's difference; ``lora_delta_rel``: the updates'
difference in Frobenius norm, relative to the bare step's update; ``lora_moved``: how far each
moved from that start), each update's loss (``losses``, ``loss_max_rel_diff``) and, with
``--noise-floor``, the same two for a second run of the bare step (``blocks_again``): how far
two runs of one step drift apart in bf16. A capture that fails records its error instead.

    python bench/bench_step_graph.py --shape 512x512x33 --steps 20 --warmup 3 --out /tmp/graph.json
    python bench/bench_step_graph.py --cpu --tiny --steps 3     # the CPU dry run (no capture)

The reference is ``bench_train_step``'s bare step (its clipping, its AdamW with a float
learning rate). The CPU dry run runs the function the graph would capture, eagerly, against
it from the same LoRA: the capturable optimizer with a tensor learning rate and the sync-free
clipping train the same LoRA (tests/core/test_bench_runs.py).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch._dynamo  # noqa: F401  (reset between variants)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train_step import _lora_and_opt, _step, build_full, stats, step_inputs, step_loss, timed_steps  # noqa: E402
from trainer_core.ltx2 import LTX2Config, build_tree, make_predict  # noqa: E402
from trainer_core.ltx2.memory import MemoryPlan  # noqa: E402
from trainer_core.tiny_checkpoint import text_context_width, tiny_config  # noqa: E402

LR = 1e-4


def captured_step(predict, root, inp, params, opt, cuda: bool):
    """The step function the graph records: forward under bf16 autocast (on CUDA), loss,
    backward, clipping (foreach: no host sync), optimizer step; the loss stays on the device."""
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
        v, a = predict(root, inp)
    loss = step_loss(v, a, inp)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
    opt.step()
    return loss.detach()


def eager_step(predict, root, inp, params, opt, cuda: bool):
    """The captured function run eagerly, its gradients unset after it (a replay overwrites them)."""
    loss = captured_step(predict, root, inp, params, opt, cuda)
    opt.zero_grad(set_to_none=True)
    return loss


def graph_optimizer(params, dev):
    """AdamW as the captured step needs it: fused, capturable (its step counts on the device),
    the learning rate a device tensor (CPU: the same update, not capturable)."""
    cuda = dev.type == "cuda"
    return torch.optim.AdamW(params, lr=torch.tensor(LR, device=dev) if cuda else LR, fused=True, capturable=cuda)


class StepGraph:
    """The whole step as one CUDA graph: ``warmup`` steps on a side stream, then the capture;
    ``replay()`` is one training step. On the CPU (``capture`` False) each call runs the
    same function eagerly, clearing the gradients after it as replays overwrite them."""

    def __init__(self, predict, root, inp, params, opt, warmup: int = 3, capture: bool = True):
        self.args = (predict, root, inp, params, opt)
        self.capture = capture
        self.graph = None
        self.loss = None
        self.updates = 0
        self.losses = []  # each update's loss (device tensors: read once at the end)
        if not capture:
            return
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                opt.zero_grad(set_to_none=True)
                self.losses.append(captured_step(*self.args, cuda=True))
                self.updates += 1
        torch.cuda.current_stream().wait_stream(side)
        opt.zero_grad(set_to_none=True)  # the graph's backward then writes each gradient fresh
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss = captured_step(*self.args, cuda=True)

    def replay(self):
        if self.graph is not None:
            self.graph.replay()
        else:
            self.loss = eager_step(*self.args, cuda=False)
        self.updates += 1
        self.losses.append(self.loss.clone())  # (the captured loss is overwritten by the next replay)
        return self.loss


@torch.no_grad()
def rel_diff(xs, ys) -> float:
    """The largest difference between two lists of tensors, relative to each tensor's largest value."""
    worst = 0.0
    for x, y in zip(xs, ys):
        worst = max(worst, float((x.float() - y.float()).abs().max()) / max(1e-12, float(y.float().abs().max())))
    return worst


@torch.no_grad()
def delta_rel(moved, start, ref_moved) -> float:
    """How far one run's LoRA update (``moved`` - ``start``) is from the reference run's, in
    Frobenius norm over every tensor, relative to the reference update's norm: the noise of bf16
    kernels shows as a small fraction, a step that trains something else as order one."""
    num = sum(float(((m.float() - r.float()) ** 2).sum()) for m, r in zip(moved, ref_moved))
    den = sum(float(((r.float() - s0.float()) ** 2).sum()) for r, s0 in zip(ref_moved, start))
    return (num / max(den, 1e-30)) ** 0.5


def run(args) -> list[dict]:
    cuda = not args.cpu
    dev = torch.device("cuda" if cuda else "cpu")
    if args.tiny:
        cfgd = tiny_config(args.variant)
        root = build_tree(LTX2Config.from_metadata({"config": cfgd}), device=dev, seed=0)
        root.requires_grad_(False)
    else:
        root, cfgd = build_full(args.variant, dev, num_layers=args.layers or None)
    W, H, F = (int(v) for v in args.shape.split("x"))
    width = text_context_width(cfgd, processed=False, tiny=args.tiny)
    inp = step_inputs(width, W, H, F, 24.0, dev, torch.Generator(device=dev).manual_seed(0))
    n = len(root.transformer_blocks)
    plan = MemoryPlan(["keep"] * n, activation_budget=1.0)
    records = []
    loras = {}
    losses = {}
    start = None
    # blocks_again: the bare step a second time from the same start, the noise floor of the
    # comparison (bf16 kernels with atomics are not bitwise repeatable)
    names = ("blocks", "step_graph") + (("blocks_again",) if getattr(args, "noise_floor", False) else ())
    for name in names:
        lora, bare_opt = _lora_and_opt(root, dev, seed=0)  # the same start for both
        params = list(lora.parameters())
        start = [p.detach().clone() for p in params]  # (the same for every variant: seed 0)
        compiled = bool(cuda)
        if cuda:
            torch._dynamo.reset()  # each variant compiles its own blocks (and the first one's graphs go)
        rec = {"variant": name, "shape": args.shape, "model": args.variant + (" (tiny)" if args.tiny else ""),
               "layers": n, "gpu": torch.cuda.get_device_name(dev) if cuda else "cpu", "torch": torch.__version__}
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        try:
            if name != "step_graph":  # each block its own graph (automatic for small buckets), the bare step
                predict = make_predict(memory_plan=plan, compile_blocks=compiled)
                updates = [0]
                run_losses = []

                def step():
                    run_losses.append(_step(predict, root, inp, lora, bare_opt))
                    updates[0] += 1
                times = timed_steps(step, args.steps, args.warmup, cuda=cuda)
                rec["updates"] = updates[0]
                losses[name] = [float(x) for x in run_losses]
                rec["cudagraphs"] = bool(getattr(predict, "used_cudagraphs", False))
            else:
                predict = make_predict(memory_plan=plan, compile_blocks=compiled, cudagraphs=False)
                opt = graph_optimizer(params, dev)
                g = StepGraph(predict, root, inp, params, opt, warmup=args.warmup, capture=cuda)
                times = timed_steps(g.replay, args.steps, 0 if cuda else args.warmup, cuda=cuda)
                rec["updates"] = g.updates
                rec["captured"] = g.graph is not None
                losses[name] = [float(x) for x in g.losses]
        except Exception as e:  # a capture that fails says why (the record is the finding)
            rec["error"] = f"{type(e).__name__}: {e}"[:600]
            lora.detach()
            records.append(rec)
            print(json.dumps(rec), flush=True)  # each variant as it ends (a later one may not)
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
            continue
        rec.update(stats(times), wall_s=round(time.perf_counter() - t0, 1))
        if cuda:
            rec["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
        lora.detach()
        loras[name] = lora
        rec["lora_moved"] = rel_diff(start, [p.detach() for p in params])  # training changed it (≠ 0)
        rec["losses"] = [float(f"{x:.6g}") for x in losses.get(name, [])]
        records.append(rec)
        print(json.dumps(rec), flush=True)  # each variant as it ends (a later one may not)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
    ref = loras.get("blocks")
    for rec in records[1:]:
        other = loras.get(rec["variant"])
        if ref is None or other is None or rec.get("updates") != records[0].get("updates"):
            continue
        mine, theirs = list(other.parameters()), list(ref.parameters())
        rec["lora_max_rel_diff"] = rel_diff(mine, theirs)
        rec["lora_delta_rel"] = delta_rel(mine, start, theirs)
        a, b = losses[rec["variant"]], losses["blocks"]
        rec["loss_max_rel_diff"] = max((abs(x - y) / max(abs(y), 1e-12) for x, y in zip(a, b)), default=None)
    return records


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="ltx-2.0")
    ap.add_argument("--shape", default="512x512x33")
    ap.add_argument("--layers", type=int, default=0, help="blocks of the full-size layout (0: all)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--cpu", action="store_true", help="the CPU dry run: no compile, no capture")
    ap.add_argument("--tiny", action="store_true", help="the tiny checkpoint's layout")
    ap.add_argument("--noise-floor", action="store_true",
                    help="run the bare step a second time (blocks_again): how far two runs of the same step drift")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    records = run(args)
    for r in records[1:]:  # the comparisons, known once every variant has run
        print(json.dumps({k: r.get(k) for k in ("variant", "s_per_step", "lora_max_rel_diff", "lora_delta_rel",
                                                "loss_max_rel_diff")}), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(records, indent=1))
    return 1 if args.cpu and any("error" in r for r in records) else 0  # (on a GPU the error is the finding)


if __name__ == "__main__":
    sys.exit(main())
