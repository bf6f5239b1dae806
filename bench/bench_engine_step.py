"""GPU benchmark: the training engine's step — what the Train node runs and shows as s/step —
beside the bare step of ``bench_train_step`` (forward, backward, clipping, AdamW and nothing
else) on the same model, shape, batch and compiled blocks, in the same process.

The engine adds what a real run does each step: reading the cached latents, noising and
conditioning them (``build_step_inputs``), caption dropout with captions of different lengths
(padded: ``stack_texts``), the loss statistics, the LoRA's largest weight, the collector's
tick and the progress record. The difference is the engine's own cost per step, which the
bare bench does not see. The full-size layout has random weights; the cache is written to a
temporary folder (its latents random, its captions 256, 200 and 144 tokens, the empty
caption 16). The run's final checkpoint is not written (3 GB of LoRA and optimizer state on
19B, not part of a step).

    python bench/bench_engine_step.py --shape 512x512x33 --batches 1,4 --out /tmp/engine.json

``--profile N`` adds N profiled steps after the timed ones, engine and bare alike, and writes
where the engine's step goes: CPU time and GPU idle time in each of the engine's ranges
(``ltx2.data``, ``.inputs``, ``.forward``, ``.backward``, ``.optimizer``, ``.readback``; what
falls between them is ``between``), GPU busy time a step, and the kernels by kind.

``--per-tensor`` runs the engine once more with per-tensor AdamW (``Trainer.flat`` False:
the loop before round 8, the LoRA's 2,304 tensors not in one buffer).

``--step-graph`` runs the engine once more after the default run, with the whole step as one
CUDA graph (``Trainer.step_graph``: trainer_core.step_graph; its record says how many steps
were captured, replayed and run eagerly, and any notice of why the graph went off).

``--read-each-step`` runs the engine a second time in the same process, reading each step's
numbers at its end (``Trainer.pipelined`` False: the loop before round 7), beside the default
that reads them during the next step. ``--sync-log`` writes where the host waited for the GPU
in the timed steps (``host_waits_in_timed_steps``: file:line and count, from CUDA's sync debug
mode; a pipelined step's one wait, for the numbers of the step before, is a CUDA event's,
which that mode does not report).

The bare step is timed one step at a time (a wait for the GPU before and after each, as
``bench_train_step`` times it) and, on CUDA, also as the same number of steps queued back to
back with one wait at the end (``queued_s_per_step``): the rate with no wait between
steps, the pipelined engine's rhythm without its own work.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train_step import (  # noqa: E402
    _lora_and_opt, _step, add_inductor_option, build_full, set_inductor_options, stats, step_inputs, timed_steps)
from profile_step import is_annotation, kernel_categories  # noqa: E402
from trainer_core import engine as en  # noqa: E402
from trainer_core.cache import CachedLatents, LatentCache  # noqa: E402
from trainer_core.ltx2 import make_predict  # noqa: E402
from trainer_core.run import bucket_tokens, plan_for_training  # noqa: E402
from trainer_core.tiny_checkpoint import text_context_width  # noqa: E402

CAPTION_TOKENS = (256, 200, 144)
EMPTY_TOKENS = 16


def write_cache(root: Path, shape: str, width: int, n: int, fps: float = 24.0, seed: int = 0) -> Path:
    """A latent cache of ``n`` clips of one ``WxHxF`` bucket with sound, as Encode Latents
    writes it (random latents; captions of CAPTION_TOKENS lengths in turn)."""
    W, H, F = (int(v) for v in shape.split("x"))
    _, t = bucket_tokens(shape, fps)
    g = torch.Generator().manual_seed(seed)
    c = LatentCache(root)
    for i in range(n):
        c.put("video", f"v{i}", {"latents": torch.randn(128, 1 + (F - 1) // 8, H // 32, W // 32, generator=g),
                                 "first_frame": torch.randn(128, 1, H // 32, W // 32, generator=g)})
        c.put("audio", f"a{i}", {"latents": torch.randn(8, t, 16, generator=g)})
        c.put("text", f"t{i}", {"context": torch.randn(CAPTION_TOKENS[i % len(CAPTION_TOKENS)], width, generator=g)})
    c.put("text", "empty", {"context": torch.randn(EMPTY_TOKENS, width, generator=g)})
    c.manifest.samples = [dict(key=f"clip{i}#0", video=f"v{i}", audio=f"a{i}", text=f"t{i}", bucket=shape, fps=fps,
                               has_audio=True, caption=f"clip {i}") for i in range(n)]
    c.manifest.empty_text = "empty"
    c.save_manifest()
    return Path(root)


PHASE_PREFIX = "ltx2."


def _merge(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def _covered(busy: list[tuple[float, float]], a: float, b: float) -> float:
    return sum(max(0.0, min(b, e) - max(a, s)) for s, e in busy)


def phase_breakdown(events, steps: int) -> dict:
    """Where ``steps`` profiled steps went, from torch.profiler events (µs time ranges on one
    clock): GPU busy (kernels and copies, merged), and per engine range (CPU events named
    ``ltx2.*``) its CPU time and the GPU idle time inside it, each per step. The window runs
    from the first range's start to the last one's end; ``between`` is what no range covers."""
    cpu, cuda = torch.autograd.DeviceType.CPU, torch.autograd.DeviceType.CUDA
    phases: dict[str, list] = {}
    kernels = []
    for e in events:
        name, tr = e.name, e.time_range
        if name.startswith(PHASE_PREFIX):
            if e.device_type == cpu:
                phases.setdefault(name, []).append((tr.start, tr.end))
        elif e.device_type == cuda and not is_annotation(name):
            kernels.append((tr.start, tr.end))
    if not phases:
        return {}
    lo = min(a for v in phases.values() for a, _ in v)
    hi = max(b for v in phases.values() for _, b in v)
    busy = _merge([(max(a, lo), min(b, hi)) for a, b in kernels if b > lo and a < hi])
    window = hi - lo
    out = {"step_ms": round(window / steps / 1000, 2),
           "gpu_busy_ms": round(sum(b - a for a, b in busy) / steps / 1000, 2), "phases": {}}
    covered = _merge([iv for v in phases.values() for iv in v])
    for name, ivs in sorted(phases.items()):
        dur = sum(b - a for a, b in ivs)
        idle = sum((b - a) - _covered(busy, a, b) for a, b in ivs)
        out["phases"][name[len(PHASE_PREFIX):]] = {"cpu_ms": round(dur / steps / 1000, 2),
                                                   "gpu_idle_ms": round(idle / steps / 1000, 2)}
    gaps, t = [], lo
    for a, b in covered:
        if a > t:
            gaps.append((t, a))
        t = max(t, b)
    out["phases"]["between"] = {"cpu_ms": round(sum(b - a for a, b in gaps) / steps / 1000, 2),
                                "gpu_idle_ms": round(sum((b - a) - _covered(busy, a, b) for a, b in gaps)
                                                     / steps / 1000, 2)}
    out["gpu_idle_ms"] = round(out["step_ms"] - out["gpu_busy_ms"], 2)
    return out


def idle_by_host_op(events, steps: int, top: int = 15, phase: str = "") -> dict:
    """What the host was doing while the GPU idled: each gap between merged kernel intervals
    inside the engine's ranges (or only ``ltx2.<phase>``) is charged to the deepest CPU event
    running at its midpoint (the most recently started one still open; with its parent's name),
    summed per name and step, largest first."""
    import heapq

    cpu, cuda = torch.autograd.DeviceType.CPU, torch.autograd.DeviceType.CUDA
    windows, kernels, host = [], [], []
    for e in events:
        tr = e.time_range
        if e.name.startswith(PHASE_PREFIX) and e.device_type == cpu and (not phase or e.name == PHASE_PREFIX + phase):
            windows.append((tr.start, tr.end))
        if e.device_type == cuda:
            if not is_annotation(e.name):
                kernels.append((tr.start, tr.end))
        elif e.device_type == cpu:
            host.append((tr.start, tr.end, e.name))
    if not windows or not kernels:
        return {}
    busy = _merge(kernels)
    gaps = [(a, b) for w0, w1 in _merge(windows)
            for a, b in ((max(w0, x[1]), min(w1, y[0])) for x, y in zip(busy, busy[1:])) if b > a]
    host.sort()
    heap: list = []  # (-start, end, name) of the events begun before the midpoint (ended ones popped lazily)
    out: dict = {}
    j = 0
    for a, b in sorted(gaps, key=lambda g: g[0] + g[1]):
        mid = (a + b) / 2
        while j < len(host) and host[j][0] <= mid:
            s0, e0, name = host[j]
            heapq.heappush(heap, (-s0, e0, name))
            j += 1
        while heap and heap[0][1] <= mid:
            heapq.heappop(heap)
        name = heap[0][2] if heap else "(no host op)"
        if heap:  # the parent: the next open event below it
            rest = [h for h in heapq.nsmallest(8, heap)[1:] if h[1] > mid]
            if rest:
                name = f"{rest[0][2][:60]} > {name}"
        c = out.setdefault(name[:140], [0.0, 0])
        c[0] += b - a
        c[1] += 1
    ranked = sorted(out.items(), key=lambda kv: -kv[1][0])[:top]
    return {"idle_ms_per_step": round(sum(b - a for a, b in gaps) / steps / 1000, 2),
            "by_host_op": [(k, round(v[0] / steps / 1000, 2), round(v[1] / steps, 1)) for k, v in ranked]}


def _profiler():
    from torch.profiler import ProfilerActivity, profile

    return profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])


class _NoFinalSave(en.Trainer):
    """The engine without its checkpoint writes (not part of a step's time)."""

    def _checkpoint(self, *args, **kwargs):
        return ""


class SyncLog:
    """Where the host waited for the GPU during some steps: CUDA's sync debug mode ("warn")
    turns every synchronizing call into a warning, counted here by the file and line of
    the Python code that made it."""

    def __init__(self):
        self.sites: dict[str, int] = {}
        self._cw = None

    def start(self):
        import warnings

        self._cw = warnings.catch_warnings(record=True)
        self._log = self._cw.__enter__()
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")

    def stop(self):
        if self._cw is None:
            return
        torch.cuda.set_sync_debug_mode("default")
        self._cw.__exit__(None, None, None)
        for w in self._log:
            if "synchroniz" in str(w.message):
                key = f"{Path(w.filename).name}:{w.lineno}"
                self.sites[key] = self.sites.get(key, 0) + 1
        self._cw = None


def engine_run(root, cache: Path, batch: int, steps: int, warmup: int, dev, compiled: bool, budget_gib: float,
               run_dir: Path, profile: int = 0, pipelined: bool = True, sync_log: bool = False,
               predict=None, flat: bool = True, step_graph: bool = False) -> tuple[dict, object]:
    """One engine run; ``predict``: an earlier run's (its compiled blocks kept: no second
    compile in the same process, only the CUDA graphs recorded again for the new LoRA)."""
    # one untimed step at the end: the run's end (its last read, the loop's exit) stays out of
    # the timed and profiled steps
    cfg = en.TrainConfig(steps=warmup + steps + profile + 1, rank=32, alpha=32.0, targets="all attention",
                         mixed_precision="bf16", checkpoint_every=0, learning_rate=1e-4, caption_dropout=0.3)
    if predict is None:
        plan = plan_for_training(root, str(cache), cfg, budget_gib, batch_size=batch, compiled=compiled)
        predict = make_predict(memory_plan=plan, compile_blocks=compiled)
    plan = predict.memory_plan
    hist = []
    padded = []

    def watch(r, inputs, block_graphs=None):
        padded.append(en.TEXT_LENGTHS in inputs.text)
        return predict(r, inputs, block_graphs=block_graphs)

    # what the engine asks of the forward it is given (the whole-step graph's conditions)
    watch.whole_step_graphs = getattr(predict, "whole_step_graphs", False)
    watch.connected_inputs = getattr(predict, "connected_inputs", None)
    watch.memory_plan = predict.memory_plan

    prof = _profiler() if profile else None
    syncs = SyncLog() if sync_log and dev.type == "cuda" else None

    tops = [0]
    mem: dict = {}

    def at_step_start():  # (the engine asks should_stop at the top of every step)
        tops[0] += 1
        if tops[0] == warmup + 1 and dev.type == "cuda":
            # between two steps: what stays allocated (weights, LoRA, optimizer state; the
            # flat gradient buffer is freed after each optimizer step), then the timed steps' peak
            torch.cuda.synchronize()
            mem["allocated_between_steps_gib"] = round(torch.cuda.memory_allocated() / 2**30, 2)
            torch.cuda.reset_peak_memory_stats()
        if tops[0] == warmup + steps + 1 and dev.type == "cuda":
            mem["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            mem["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
        if syncs is not None and tops[0] == warmup + 1:
            syncs.start()  # the timed steps' waits for the GPU
        if tops[0] == warmup + steps + 1:
            if syncs is not None:
                syncs.stop()
            if prof is not None:
                prof.start()  # the profiled steps come after the timed ones
        if prof is not None and tops[0] == warmup + steps + profile + 1:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            prof.stop()  # (before the untimed last step)
        return False

    t0 = time.perf_counter()
    # pipelined False: each step read at its end (the loop before round 7); flat False:
    # per-tensor AdamW (before round 8)
    trainer = type("_Run", (_NoFinalSave,), {"pipelined": pipelined, "flat": flat, "step_graph": step_graph})
    notices = []
    tr = trainer(root, watch, CachedLatents(cache), cfg, run_dir, device=dev, batch_size=batch,
                 callbacks=en.Callbacks(on_step=hist.append, should_stop=at_step_start,
                                        on_event=lambda n, p: notices.append(p.get("message")) if n == "notice" else None))
    res = tr.train()
    wall = time.perf_counter() - t0
    # where the LoRA's tensors lived: one buffer (flat) or one allocation each
    storages = len({p.untyped_storage().data_ptr() for p in res.lora.parameters()})
    if syncs is not None:
        syncs.stop()
    times = [h["s_per_step"] for h in hist[warmup:warmup + steps]]
    rec = {"stack": "ours (engine)", **stats(times), "s_per_clip": round(stats(times)["s_per_step"] / batch, 4),
           "first_steps_s": [round(h["s_per_step"], 2) for h in hist[:warmup]], "wall_s": round(wall, 1),
           "steps_with_padded_captions": sum(padded), "forwards": len(padded),
           "cudagraphs": bool(getattr(predict, "used_cudagraphs", False)), "plan": plan.summary(),
           "steps_s": [round(t, 4) for t in times], "pipelined": pipelined, "flat_lora": flat,
           "lora_tensors": len(list(res.lora.parameters())), "lora_storages": storages, **mem}
    if step_graph:
        state = getattr(tr, "step_graph_state", None)
        rec["step_graph"] = state.report() if state is not None else None
        rec["notices"] = [n for n in notices if n]
    if syncs is not None:
        rec["host_waits_in_timed_steps"] = dict(sorted(syncs.sites.items()))
    if prof is not None:
        ev = prof.events()
        rec["profile"] = dict(phase_breakdown(ev, profile), steps=profile,
                              kernels=kernel_categories(prof.key_averages()),
                              idle=idle_by_host_op(ev, profile), idle_forward=idle_by_host_op(ev, profile, phase="forward"))
    predict.release()
    return rec, predict


def bare_run(root, predict, width: int, shape: tuple, batch: int, steps: int, warmup: int, dev, compiled: bool,
             gen, profile: int = 0) -> dict:
    """The bare step in the same process: the same blocks (compiled for this shape), a fresh LoRA."""
    W, H, F = shape
    lora, opt = _lora_and_opt(root, dev)
    inp = step_inputs(width, W, H, F, 24.0, dev, gen, batch=batch)
    bare_predict = make_predict(memory_plan=predict.memory_plan, compile_blocks=compiled)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    times = timed_steps(lambda: _step(bare_predict, root, inp, lora, opt), steps, warmup, cuda=dev.type == "cuda")
    queued = None
    if dev.type == "cuda":  # the same steps back to back, one wait at the end (the engine's rhythm)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            _step(bare_predict, root, inp, lora, opt)
        torch.cuda.synchronize()
        queued = round((time.perf_counter() - t0) / steps, 4)
    bare_profile = None
    if profile:
        with _profiler() as prof:
            for _ in range(profile):
                with torch.profiler.record_function(PHASE_PREFIX + "step"):
                    _step(bare_predict, root, inp, lora, opt)
                    sync()
        bare_profile = dict(phase_breakdown(prof.events(), profile), steps=profile,
                            kernels=kernel_categories(prof.key_averages()))
    lora.detach()
    bare = {"stack": "ours (bare step)", **stats(times), "s_per_clip": round(stats(times)["s_per_step"] / batch, 4),
            "cudagraphs": bool(getattr(bare_predict, "used_cudagraphs", False))}
    if queued is not None:
        bare["queued_s_per_step"] = queued
    if bare_profile is not None:
        bare["profile"] = bare_profile
    bare_predict.release()
    return bare


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="ltx-2.0")
    ap.add_argument("--shape", default="512x512x33")
    ap.add_argument("--batches", default="1,4")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--layers", type=int, default=0, help="blocks of the full-size layout (0: all)")
    ap.add_argument("--eager", action="store_true", help="eager blocks (the CPU check of this script)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--profile", type=int, default=0, help="profiled steps after the timed ones (0: none)")
    ap.add_argument("--read-each-step", action="store_true",
                    help="also run the engine reading each step at its end (Trainer.pipelined False), same process")
    ap.add_argument("--per-tensor", action="store_true",
                    help="also run the engine with per-tensor AdamW (Trainer.flat False: the LoRA not in one buffer), "
                         "same process")
    ap.add_argument("--no-bare", action="store_true", help="leave the bare step out (engine runs only)")
    ap.add_argument("--step-graph", action="store_true",
                    help="also run the engine with the whole step as one CUDA graph (Trainer.step_graph, "
                         "LTX2_TRAINER_STEP_GRAPH), same process, after the default run")
    add_inductor_option(ap)
    ap.add_argument("--sync-log", action="store_true",
                    help="count where the host waited for the GPU in the engine's timed steps (CUDA sync debug mode)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    inductor = set_inductor_options(a.inductor)
    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: this benchmark runs on a GPU")
        return 0
    root, cfgd = build_full(a.variant, dev, num_layers=a.layers or None)
    width = text_context_width(cfgd, processed=False)
    compiled = not a.eager
    budget = (torch.cuda.mem_get_info(dev)[1] / 2**30 - 2.0) if dev.type == "cuda" else None
    W, H, F = (int(v) for v in a.shape.split("x"))
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    out = Path(a.out) if a.out else Path(__file__).parent / "results" / f"engine_step_{gpu.replace(' ', '_')}.json"
    records = []
    gen = torch.Generator(device=dev).manual_seed(0)
    for batch in (int(b) for b in a.batches.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            cache = write_cache(Path(tmp) / "cache", a.shape, width, max(2 * batch, 3))
            extra, p0 = [], None
            if a.per_tensor:  # the comparisons first, so the default run below is the one the bare step follows
                each, p0 = engine_run(root, cache, batch, a.steps, a.warmup, dev, compiled, budget,
                                      Path(tmp) / "run_per_tensor", sync_log=a.sync_log, flat=False)
                extra.append(each)
            if a.read_each_step:
                each, p0 = engine_run(root, cache, batch, a.steps, a.warmup, dev, compiled, budget,
                                      Path(tmp) / "run_each", pipelined=False, sync_log=a.sync_log, predict=p0)
                extra.append(each)
            eng, predict = engine_run(root, cache, batch, a.steps, a.warmup, dev, compiled, budget, Path(tmp) / "run",
                                      profile=a.profile, sync_log=a.sync_log, predict=p0)
            if a.step_graph:  # the same forward (its compiled blocks kept), the step captured whole
                graphed, _ = engine_run(root, cache, batch, a.steps, a.warmup, dev, compiled, budget,
                                        Path(tmp) / "run_graph", predict=predict, step_graph=True)
                extra.append(graphed)
        bare = None if a.no_bare else bare_run(root, predict, width, (W, H, F), batch, a.steps, a.warmup, dev,
                                               compiled, gen, a.profile)
        common = {"model": a.variant, "shape": a.shape, "batch": batch, "gpu": gpu, "layers": a.layers or "all",
                  "compiled": compiled, "torch": torch.__version__, "inductor": inductor}
        runs = [*extra, eng, *([bare] if bare is not None else [])]
        for r in runs:
            r.update(common)
            if bare is not None and r is not bare:
                r["engine_over_bare_s"] = round(r["s_per_step"] - bare["s_per_step"], 4)
        records += runs
        for r in runs:
            print(json.dumps(r), flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(records, indent=1))  # after every batch: a cut-off run keeps what it measured
        if dev.type == "cuda":
            torch._dynamo.reset()  # (bench_train_step imports torch._dynamo)
            torch.cuda.empty_cache()
    print(f"wrote {out} ({len(records)} records)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
