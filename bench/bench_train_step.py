"""GPU benchmark: one LoRA training step of the full-size LTX-2 layout (random weights).

Measures our engine's step — trainer_core's checkpoint-safe forward + backward + AdamW on a
rank-32 attention LoRA, bf16 frozen weights, bf16 autocast, fp32 LoRA — at LTX-2's real
shapes with audio, batch 1, and writes a list of records to
``bench/results/train_step_<gpu>.json`` (or ``--out``):

    stack, model, shape, audio, budget_gib, s_per_step, peak_vram_gib, mfu, gpu, ...

MFU counts the useful model FLOPs of a LoRA step — forward matmul/attention FLOPs (counted
by torch's FlopCounterMode) times 2 (forward + input-gradient backward; frozen weights get no
weight gradient; the recompute of checkpointing is not useful work) — over the step time and
the GPU's dense bf16 peak.

    python bench/bench_train_step.py [--variants ltx-2.0,ltx-2.3] [--shapes 768x512x121,512x512x33]
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import time
from pathlib import Path
from typing import Optional

import torch
import torch._dynamo  # noqa: F401  (reset between runs)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer_core import objective as ob  # noqa: E402
from trainer_core.engine import ModalityInput, QuietGC, StepInputs  # noqa: E402
from trainer_core.lora import LoRASet, LoRASpec  # noqa: E402
from trainer_core.ltx2 import LTX2Config, build_tree, make_predict  # noqa: E402
from trainer_core.tiny_checkpoint import full_config, text_context_width  # noqa: E402

_SINK: dict = {"path": None, "records": []}
# time spent in Python's garbage collector (gc.callbacks); "events": each collection while
# recording is on — (generation, ms, between steps, automatic collection enabled)
_GC = {"ms": 0.0, "t": 0.0, "events": None, "between": False}


def _gc_cb(phase, info):
    if phase == "start":
        _GC["t"] = time.perf_counter()
    else:
        ms = (time.perf_counter() - _GC["t"]) * 1e3
        _GC["ms"] += ms
        if _GC["events"] is not None:
            _GC["events"].append((int(info.get("generation", -1)), ms, _GC["between"], gc.isenabled()))


def gc_summary(events: list) -> dict:
    """Collections during the timed steps, by where they ran (inside a step, or in the
    engine's between-steps tick) and generation: count and total ms."""
    out: dict = {}
    for gen, ms, between, enabled in events:
        k = f"{'tick' if between else 'in_step'}_gen{gen}" + ("" if between or not enabled else "_auto")
        c = out.setdefault(k, {"n": 0, "ms": 0.0})
        c["n"] += 1
        c["ms"] = round(c["ms"] + ms, 1)
    return out


gc.callbacks.append(_gc_cb)


class HostPeak:
    """Peak resident host memory of this process (pinned + pageable: /proc/self/status VmRSS,
    sampled every 20 ms on a thread) between start() and stop() — the user's RAM limit."""

    def __init__(self):
        import threading

        self._stop = threading.Event()
        self.peak = 0
        self._t = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def rss() -> int:
        try:
            for line in open("/proc/self/status"):
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            self._stop.wait(0.02)

    def __enter__(self):
        self.peak = self.rss()
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.rss())


def vram_peak(allocated_gib: float, reserved_gib: float, cudagraphs: bool) -> tuple[float, str]:
    """(peak VRAM of the timed steps, what it counts). CUDA-graph replay allocates nothing:
    its pools are taken while graphs are captured in the warm-up, so the allocated peak of the
    timed steps misses them (512×512×33 at batch 8: 39.7 GiB allocated, 109.3 GiB reserved).
    For graphed runs the reserved peak is the figure; otherwise the allocated one."""
    if cudagraphs:
        return max(allocated_gib, reserved_gib), "reserved (CUDA-graph pools)"
    return allocated_gib, "allocated"


def add_inductor_option(ap) -> None:
    """The ``--inductor KEY=VALUE`` option of the step benches (see :func:`set_inductor_options`)."""
    ap.add_argument("--inductor", action="append", default=[], metavar="KEY=VALUE",
                    help="a torch._inductor.config option for every compile of this process (repeatable), "
                         "e.g. combo_kernels=true; recorded as `inductor`")


def set_inductor_options(pairs: list[str]) -> dict:
    """Set ``torch._inductor.config`` options from ``KEY=VALUE`` pairs (``--inductor``), e.g.
    ``combo_kernels=true`` or ``triton.cudagraph_trees=false``, before anything compiles: the
    settings the next measurements try, written into the records as they were set. The value
    is JSON (true, 3, "max-autotune"), else a plain string. An unknown key is refused."""
    import torch._inductor.config as icfg

    done = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SystemExit(f"--inductor {pair!r}: give KEY=VALUE")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        *sections, name = key.split(".")
        owner = icfg
        for sec in sections:
            owner = getattr(owner, sec, None)
        if owner is None or not hasattr(owner, name):
            raise SystemExit(f"--inductor {key}: torch._inductor.config has no such option")
        setattr(owner, name, value)
        done[key] = value
    return done


def stats(times: list[float]) -> dict:
    """min / median / max / mean of the timed steps (median: the figure that counts; mean: what
    a long run takes per step, stalls included)."""
    if not times:
        return {"s_per_step": float("nan"), "s_min": None, "s_max": None, "s_mean": None}
    t = sorted(times)
    return {"s_per_step": round(t[len(t) // 2], 4), "s_min": round(t[0], 4), "s_max": round(t[-1], 4),
            "s_mean": round(sum(t) / len(t), 4)}


def add_ratios(records: list[dict]) -> None:
    """``ratio_to_resident``: each budgeted run of ours against the whole-card run of the same
    model, shape and compute path in the same process (the ratio the issue's targets use)."""
    def key(r):
        return (r["model"], r["shape"], r.get("mode", "t2v"), r.get("fp8_compute", False), r.get("batch", 1),
                r.get("lora_groups", True), r.get("activation_budget_asked"), r.get("save_attention", False))

    base = {key(r): r["s_per_step"]
            for r in records if r.get("stack") == "ours" and r.get("budget_gib") is None and not r.get("error")}
    for r in records:
        if r.get("stack") == "ours":
            b = base.get(key(r))
            r["ratio_to_resident"] = round(r["s_per_step"] / b, 3) if b and not r.get("error") else None
    official = {(r["model"], r["shape"], r.get("mode", "t2v")): r["s_per_step"] for r in records
                if r.get("stack") == "official" and not r.get("error")}
    for r in records:
        o = official.get((r.get("model"), r.get("shape"), r.get("mode", "t2v")))
        if r.get("stack") == "ours" and o and not r.get("error"):
            r["speedup_vs_official"] = round(o / r["s_per_step"], 2)  # same run, same shape


def emit(rec: dict) -> None:
    """Print a record and rewrite the output file with every record so far (a run cut short
    by a time limit keeps what it measured)."""
    if _SINK.get("inductor"):
        rec.setdefault("inductor", _SINK["inductor"])
    print(json.dumps(rec), flush=True)
    _SINK["records"].append(rec)
    add_ratios(_SINK["records"])
    if _SINK["path"] is not None:
        Path(_SINK["path"]).parent.mkdir(parents=True, exist_ok=True)
        Path(_SINK["path"]).write_text(json.dumps(_SINK["records"], indent=1))


PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def gpu_peak(name: str) -> float:
    for k, v in PEAK_BF16.items():
        if k in name:
            return v
    return float("nan")


def step_inputs(c_width: int, W: int, H: int, F: int, fps: float, device, gen, batch: int = 1) -> StepInputs:
    Fl, Hl, Wl = 1 + (F - 1) // 8, H // 32, W // 32
    T = int(round(F / fps * 25))
    n = Fl * Hl * Wl
    mode = ob.get_mode("text_to_audio_video")
    x0 = torch.randn(batch, n, 128, device=device, generator=gen)
    a0 = torch.randn(batch, T, 128, device=device, generator=gen)
    nv = ob.noise_modality(x0, ob.GENERATED, gen, "uniform")
    na = ob.noise_modality(a0, ob.GENERATED, gen, "uniform")
    ctx = torch.randn(batch, 256, c_width, device=device, generator=gen)
    return StepInputs(ModalityInput(nv.x_t, nv.sigma, nv, (Fl, Hl, Wl)), ModalityInput(na.x_t, na.sigma, na, (T,)),
                      {"context": ctx}, fps, mode)


def model_name(variant: str) -> str:
    return {"ltx-2.0": "ltx-2.0-19b", "ltx-2.3": "ltx-2.3-22b", "ltx-2.5": "ltx-2.5-22b"}.get(variant, variant)


# --runs mode options (``768x512x121:none:ic``): the trainer_core.modes preset a run trains, with
# ltx-trainer's example configs' settings (400fd31 packages/ltx-trainer/configs). No option: the
# plain text → audio + video step above (step_inputs), mode "t2v".
BENCH_MODES = {
    "ic": {"preset": "v2v_ic_lora", "reference_scale": 1},  # IC-LoRA, full-size reference (v2v_ic_lora.yaml)
    "ic2": {"preset": "v2v_ic_lora", "reference_scale": 2},  # half-size reference (downscale factor 2)
    "ext": {"preset": "video_extension", "reference_scale": 0},  # prefix of 8 latent frames (video_extend_lora.yaml)
}


def run_mode(opts) -> str:
    """The mode a run's options name (one of BENCH_MODES), "t2v" where none does."""
    found = [o for o in opts if o in BENCH_MODES]
    if len(found) > 1:
        raise ValueError(f"a run takes one mode option, not {', '.join(found)}")
    return found[0] if found else "t2v"


def official_specs(text: str) -> list[tuple[str, str]]:
    """--official ``768x512x121,768x512x121:ic``: (shape, mode) pairs (mode "t2v" when none)."""
    from official_stack import OFFICIAL_MODES

    out = []
    for item in (x for x in text.split(",") if x.strip()):
        shape, _, mode = item.strip().partition(":")
        mode = mode or "t2v"
        if mode not in OFFICIAL_MODES:
            raise ValueError(f"--official {item}: mode {mode!r} is not one of {', '.join(OFFICIAL_MODES)}")
        out.append((shape, mode))
    return out


def mode_step_inputs(config: LTX2Config, c_width: int, W: int, H: int, F: int, fps: float, device, seed: int,
                     mode: str) -> StepInputs:
    """One sample's StepInputs for a BENCH_MODES run, built as training builds them: an in-memory
    LatentItem (random clean latents, a reference of 1 / reference_scale the size, in host
    memory as the cache gives them) through engine.build_step_inputs with a CPU generator, i.e.
    trainer_core.modes (σ, conditioning, reference positions), moved to ``device``."""
    from trainer_core import engine
    from trainer_core import modes as md

    spec = BENCH_MODES[mode]
    tm = md.resolve(spec["preset"])
    Fl, Hl, Wl = 1 + (F - 1) // 8, H // 32, W // 32
    T = int(round(F / fps * 25))
    s = spec["reference_scale"]

    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=gen)

    item = engine.LatentItem(key=f"bench-{mode}", video=rnd(128, Fl, Hl, Wl) if tm.needs_video else None,
                             audio=rnd(8, T, 16) if tm.needs_audio else None, text={"context": rnd(256, c_width)},
                             fps=fps, reference=rnd(128, Fl, Hl // s, Wl // s) if s else None, reference_scale=s or 1)
    cfg = engine.TrainConfig(mode=spec["preset"], caption_dropout=0.0)
    return engine.build_step_inputs([item], tm, cfg, gen, None, device, torch.float32, config=config)


def seq_tokens(inp: StepInputs) -> tuple[int, int]:
    """(video, audio) tokens of the whole sequence the blocks see: target + reference tokens."""
    def n(m):
        if m is None:
            return 0
        return m.tokens.shape[1] + (m.reference[0].shape[1] if m.reference is not None else 0)
    return n(inp.video), n(inp.audio)


def step_tokens(inp: StepInputs) -> tuple[int, int]:
    """(video, audio) tokens of a whole step: the sequence times the batch (what memory and
    time scale with)."""
    b = (inp.video or inp.audio).tokens.shape[0]
    nv, na = seq_tokens(inp)
    return nv * b, na * b


def token_counts(inp: StepInputs) -> dict:
    """The record's token fields: target video / audio tokens, reference tokens (in front of
    the target, clean), conditioning tokens (target tokens kept clean: σ 0, no loss)."""
    target = [m.tokens.shape[1] if m is not None else 0 for m in (inp.video, inp.audio)]
    cond = sum(int((m.sigma == 0).sum()) for m in (inp.video, inp.audio) if m is not None) if inp.inputs is not None else 0
    return {"video_tokens": target[0], "audio_tokens": target[1],
            "reference_tokens": sum(seq_tokens(inp)) - sum(target), "conditioning_tokens": cond}


def build_full(variant: str, dev, num_layers=None):
    """(frozen bf16 tree with random weights, config) of the full-size layout."""
    cfg = full_config(variant)
    if num_layers:
        cfg["transformer"]["num_layers"] = num_layers
    c = LTX2Config.from_metadata({"config": cfg})
    torch.manual_seed(0)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        root = build_tree(c, device=dev, dtype=torch.bfloat16, init="random", seed=0)
    finally:
        torch.set_default_dtype(prev)
    root.requires_grad_(False)
    return root, cfg


def timed_steps(step, steps: int, warmup: int, cuda: bool = True) -> list[float]:
    """Seconds of each step after ``warmup`` untimed ones (on CUDA: a wait for the GPU before
    and after each, peak memory counted from there; ``cuda`` False: the CPU dry runs)."""
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    times = []
    for i in range(warmup + steps):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
        if cuda and i == warmup - 1:
            torch.cuda.reset_peak_memory_stats()
    return times


def _free_gib(dev) -> float:
    free, total = torch.cuda.mem_get_info(dev)
    return total / 2**30


def _lora_and_opt(root, dev, seed=0, group=True):
    lora = LoRASet.for_model(root, LoRASpec(rank=32, alpha=32, preset="all attention"), seed=seed).to(dev)
    lora.attach(root, group=group)  # group: the projection groups the Train node's LoRA gets
    opt = torch.optim.AdamW(list(lora.parameters()), lr=1e-4, fused=True)
    return lora, opt


def step_loss(v, a, inp):
    """The benchmark's loss: masked MSE on video plus audio (a trainer_core.modes step: the
    mode's loss, as training computes it — references and conditioning tokens carry none)."""
    if inp.inputs is not None:
        return inp.inputs.loss(v, a).mean()
    return ob.masked_mse(v, inp.video.noised.target, inp.video.noised.loss_mask).mean() + \
        ob.masked_mse(a, inp.audio.noised.target, inp.audio.noised.loss_mask).mean()


def timed_step(predict, root, inp, lora, opt, events: bool = True):
    """One LoRA training step (bf16 autocast, clipping, AdamW). With ``events``, CUDA events
    at its forward/backward boundary: returns a function giving (forward s, backward +
    optimizer s) once the device is synchronized; without, the detached loss."""
    e = [torch.cuda.Event(enable_timing=True) for _ in range(3)] if events else None
    if e:
        e[0].record()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        v, a = predict(root, inp)
    loss = step_loss(v, a, inp)
    if e:
        e[1].record()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(list(lora.parameters()), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    if not e:
        return loss.detach()
    e[2].record()
    return lambda: (e[0].elapsed_time(e[1]) / 1e3, e[1].elapsed_time(e[2]) / 1e3)


def _step(predict, root, inp, lora, opt):
    return timed_step(predict, root, inp, lora, opt, events=False)


def split_step(predict, root, inp, lora, opt, n: int = 2) -> tuple[float, float]:
    """(forward s, backward + optimizer s) of one step, CUDA events, median of ``n``."""
    fw, bw = [], []
    for _ in range(n):
        times = timed_step(predict, root, inp, lora, opt)
        torch.cuda.synchronize()
        f, b = times()
        fw.append(f)
        bw.append(b)
    return sorted(fw)[n // 2], sorted(bw)[n // 2]


def calibrate(root, inp, dev, k: int = 8) -> dict:
    """Measure what a compiled "keep" block costs at this shape (peak with k keep blocks minus
    peak with none), and set the plan's per-token constant from it."""
    from trainer_core.ltx2 import memory
    from trainer_core.ltx2.memory import MemoryPlan

    n = len(root.transformer_blocks)
    peaks = []
    for keep, ab in ((0, memory.DEFAULT_ACTIVATION_BUDGET), (k, memory.DEFAULT_ACTIVATION_BUDGET),
                     (k, memory.FULLSAVE_BUDGET)):
        torch._dynamo.reset()  # each activation budget partitions the blocks anew
        lora, opt = _lora_and_opt(root, dev)
        modes = ["keep" if i < keep else "full" for i in range(n)]
        predict = make_predict(memory_plan=MemoryPlan(modes, activation_budget=ab), compile_blocks=True)
        _step(predict, root, inp, lora, opt)  # compile + warm
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        _step(predict, root, inp, lora, opt)
        torch.cuda.synchronize()
        peaks.append(torch.cuda.max_memory_allocated())
        lora.detach()
        del lora, opt, predict
        torch.cuda.empty_cache()
    tokens = sum(step_tokens(inp))
    per_block = (peaks[1] - peaks[0]) / k + memory.FULL_B_PER_TOKEN * tokens
    per_block_full = (peaks[2] - peaks[0]) / k + memory.FULL_B_PER_TOKEN * tokens
    memory.KEEP_COMPILED_B_PER_TOKEN = int(per_block / tokens * 1.05)
    memory.KEEP_FULLSAVE_B_PER_TOKEN = int(per_block_full / tokens * 1.05)
    rec = {"keep_block_gib": round(per_block / 2**30, 3), "keep_b_per_token": memory.KEEP_COMPILED_B_PER_TOKEN,
           "keep_full_save_block_gib": round(per_block_full / 2**30, 3),
           "keep_full_save_b_per_token": memory.KEEP_FULLSAVE_B_PER_TOKEN,
           "peak_all_full_gib": round(peaks[0] / 2**30, 2)}
    print(json.dumps({"calibration": rec}), flush=True)
    return rec


def make_plan(root, inp, budget_gib, compiled: bool, lora, transfer: str = "bf16", offload: bool = True,
              offload_streamed: bool = False, host_gib: Optional[float] = None, speed=None):
    """The plan the Train node would pick (``trainer_core.run.plan_for_tokens``, its own
    accounting): ``budget_gib`` None = the whole card (less 2 GiB); host memory for
    activations: half of what the system reports available, as the node plans, or
    ``host_gib`` (a machine with that much RAM to spare: the GPU machines here start with
    little available and grow as memory is used); ``speed``: the GPU's calibration, as the
    node passes it."""
    from trainer_core.run import plan_for_tokens

    budget = budget_gib if budget_gib is not None else _free_gib(root.patchify_proj.weight.device) - 2.0
    return plan_for_tokens(root, *step_tokens(inp), budget, lora_params=sum(p.numel() for p in lora.parameters()),
                           compiled=compiled, transfer=transfer, offload=offload, offload_streamed=offload_streamed,
                           host_budget_bytes=None if host_gib is None else int(host_gib * 2**30), speed=speed)


def bench(variant: str, runs: list[dict], steps: int, warmup: int, equality: bool) -> list[dict]:
    """runs: [{"shape": "768x512x121", "budget": None | GiB, "compile": bool}, ...]"""
    dev = torch.device("cuda")
    root, cfg = build_full(variant, dev)
    n_params = sum(p.numel() for p in root.parameters())
    width = text_context_width(cfg, processed=False)
    ltx_cfg = LTX2Config.from_metadata({"config": cfg})
    name = torch.cuda.get_device_name()
    model = model_name(variant)
    out = []
    inputs: dict[str, object] = {}
    flops: dict[str, float] = {}
    calibrated: dict[str, dict] = {}
    from trainer_core.ltx2.memory import StepSpeed, calibrate_speed, predict_step_s

    speed = calibrate_speed(dev)
    emit({"calibration": "step-time model", "gpu": name, "tflops": round(speed.tflops, 1),
          "link_gbps": round(speed.link_gbps, 1)})
    for run in runs:
        if run.get("fp8_check"):
            fp8_checks(root, cfg, dev, run["shape"], model, name, full=not run.get("toy_only"))
            continue
        if run.get("equality"):
            if (run["shape"], "t2v") not in inputs:
                W, H, F = (int(v) for v in run["shape"].split("x"))
                inputs[(run["shape"], "t2v")] = step_inputs(width, W, H, F, 24.0, dev,
                                                            torch.Generator(device=dev).manual_seed(0))
            stream_equality(root, {run["shape"]: inputs[(run["shape"], "t2v")]}, dev, model, name)
            continue
        shape, budget, compiled = run["shape"], run.get("budget"), bool(run.get("compile", True))
        mode = run.get("mode", "t2v")
        batch = int(run.get("batch", 1))
        if batch != 1 and mode != "t2v":
            raise SystemExit(f"{shape}: :b{batch} is for plain runs, not mode {mode}")
        # inputs, FLOPs and calibration per (shape, mode[, batch]): the real sequence
        key = (shape, mode) if batch == 1 else (shape, mode, batch)
        if key not in inputs:
            W, H, F = (int(v) for v in shape.split("x"))
            gen = torch.Generator(device=dev).manual_seed(0)
            inputs[key] = (step_inputs(width, W, H, F, 24.0, dev, gen, batch) if mode == "t2v" else
                           mode_step_inputs(ltx_cfg, width, W, H, F, 24.0, dev, 0, mode))
            from torch.utils.flop_counter import FlopCounterMode

            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                fc = FlopCounterMode(display=False)
                with fc:
                    make_predict(checkpointing=False)(root, inputs[key])
            flops[key] = fc.get_total_flops()
            if batch == 1:
                _SINK.setdefault("flops", {})[(variant, shape, mode)] = flops[key]
        inp = inputs[key]
        if compiled and key not in calibrated and run.get("calibrate", True):
            calibrated[key] = calibrate(root, inp, dev)
        fp8c = bool(run.get("fp8_compute", False))
        if fp8c:
            from trainer_core.ltx2.fp8 import enable_fp8_compute

            enable_fp8_compute(root)
            torch._dynamo.reset()
        lora_groups = bool(run.get("lora_groups", True))
        lora, opt = _lora_and_opt(root, dev, group=lora_groups)
        transfer = run.get("transfer", "bf16")
        host_gib = run.get("host_gib")
        plan = make_plan(root, inp, budget, compiled, lora, transfer, run.get("offload", True),
                         run.get("offload_streamed", False), host_gib=host_gib, speed=speed)
        nv_, na_ = step_tokens(inp)  # the plan and the model count a step's tokens
        c4090 = StepSpeed(165.0, 25.0, "4090-class")
        predicted_4090 = predict_step_s(plan, root.transformer_blocks, nv_, na_, c4090)
        # what the planner picks for such a card (its compute/link ratio), same budget and host memory
        plan_4090 = make_plan(root, inp, budget, compiled, lora, transfer, run.get("offload", True),
                              run.get("offload_streamed", False), host_gib=host_gib, speed=c4090) \
            if budget is not None else None
        predicted_4090_own = (predict_step_s(plan_4090, root.transformer_blocks, nv_, na_, c4090)
                              if plan_4090 is not None else None)
        predicted = predict_step_s(plan, root.transformer_blocks, nv_, na_, speed)
        plan.predicted_step_s, plan.speed = predicted, speed
        cpu_origin = bool(run.get("cpu_origin")) and bool(plan.streamed)
        host_start = None
        if cpu_origin:
            # ComfyUI's streaming placement: the streamed blocks start in ordinary host memory
            # (the model as ComfyUI loaded it), the streamer pins its own copies and lets those
            # go, and release() hands them back there
            for i in plan.streamed:
                root.transformer_blocks[i].to("cpu")
            torch.cuda.empty_cache()
            host_start = HostPeak.rss() / 2**30
        ab = run.get("activation_budget")
        predict = make_predict(memory_plan=plan, compile_blocks=compiled, cudagraphs=run.get("cudagraphs"),
                               save_attention=run.get("save_attention"),
                               **({} if ab is None else {"activation_budget": ab}))
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        times = []
        split = (float("nan"), float("nan"))
        retries0 = 0
        quiet = QuietGC()  # as the engine: after the first step no collection inside steps
        freeze0 = gc.get_freeze_count()
        gc_events: list = []
        gc0, gc_ms = _GC["ms"], float("nan")
        t_first = time.perf_counter()
        hp = HostPeak().__enter__()
        try:
            for i in range(warmup + steps):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                _step(predict, root, inp, lora, opt)
                torch.cuda.synchronize()
                _GC["between"] = True
                quiet.tick()  # as the engine: young garbage collected between steps
                _GC["between"] = False
                if i == 0:
                    t_first = time.perf_counter() - t_first
                    quiet.settle()
                if i >= warmup:
                    times.append(time.perf_counter() - t0)
                if i == 0 and budget is not None:
                    # the streamed blocks' weights have left the device: from here on hold the
                    # caching allocator to the budget, as a card of that size would
                    torch.cuda.empty_cache()
                    torch.cuda.set_per_process_memory_fraction(
                        min(1.0, budget * 2**30 / torch.cuda.get_device_properties(dev).total_memory),
                        torch.cuda.current_device())
                if i == warmup - 1:  # setup (streamer, compile) is not the steady state
                    gc0 = _GC["ms"]
                    _GC["events"] = []
                    torch.cuda.reset_peak_memory_stats()
                    retries0 = torch.cuda.memory_stats().get("num_alloc_retries", 0)
            gc_ms = _GC["ms"] - gc0  # Python's collector during the timed steps
            gc_events, _GC["events"] = _GC["events"] or [], None
            split = split_step(predict, root, inp, lora, opt)
            err = None
        except torch.OutOfMemoryError as e:
            err = f"out of memory: {str(e)[:160]}"
        except Exception as e:  # record and go on with the next run
            import traceback

            traceback.print_exc()
            err = f"{type(e).__name__}: {str(e)[:300]}"
        quiet_active = quiet.active
        quiet.release()
        _GC["events"] = None
        hp.__exit__(None, None, None)
        peak = torch.cuda.max_memory_allocated() / 2**30
        peak_reserved = torch.cuda.max_memory_reserved() / 2**30
        retries = torch.cuda.memory_stats().get("num_alloc_retries", 0) - retries0
        torch.cuda.set_per_process_memory_fraction(1.0, torch.cuda.current_device())
        host_act = predict.offloader.host_bytes() / 2**30 if predict.offloader is not None else 0.0
        host_allocs = predict.offloader.host_allocs if predict.offloader is not None else 0
        used_cg = bool(getattr(predict, "used_cudagraphs", False))
        ab_used = getattr(predict, "activation_budget", None)
        sa_used = bool(getattr(predict, "attention_saved", False))
        vram = vram_peak(peak, peak_reserved, used_cg)
        rel = HostPeak().__enter__()
        predict.release()
        rel.__exit__(None, None, None)
        host_after_release = HostPeak.rss() / 2**30
        if cpu_origin:
            for i in plan.streamed:
                root.transformer_blocks[i].to(dev)
        if fp8c:
            from trainer_core.ltx2.fp8 import disable_fp8_compute

            disable_fp8_compute(root)
        pinned_left = torch.cuda.host_memory_stats().get("allocated_bytes.all.current", 0) / 2**30
        lora.detach()
        del lora, opt, predict
        import torch._dynamo as dynamo

        dynamo.reset()  # frees CUDA-graph pools before the next run
        torch.cuda.empty_cache()
        st = stats(times)
        s = st["s_per_step"]
        rec = {"stack": "ours", "model": model, "shape": shape, "mode": mode, "audio": inp.audio is not None,
               "budget_gib": budget,
               **st, "ratio_to_resident": None, "fp8_compute": bool(run.get("fp8_compute", False)),
               "peak_host_gib": round(hp.peak / 2**30, 2),
               "predicted_step_s": round(predicted, 3),
               "predicted_over_measured": round(predicted / s, 3) if times else None,
               "predicted_4090_class_s": round(predicted_4090, 2),
               "predicted_4090_class_own_plan_s": None if predicted_4090_own is None else round(predicted_4090_own, 2),
               "plan_4090_class": None if plan_4090 is None else plan_4090.summary(),
               "host_budget_gib": host_gib, "offload_streamed": bool(run.get("offload_streamed", False)),
               # host memory (VmRSS) with the streamed blocks in RAM before training (:cpu), the
               # peak while release() hands the weights back, and after it
               "cpu_origin": cpu_origin, "host_start_gib": None if host_start is None else round(host_start, 2),
               "release_host_peak_gib": round(rel.peak / 2**30, 2), "host_after_release_gib": round(host_after_release, 2),
               "speed_calibration": {"tflops": round(speed.tflops, 1), "link_gbps": round(speed.link_gbps, 1)},
               "forward_s": round(split[0], 4), "backward_s": round(split[1], 4),
               "peak_vram_gib": round(vram[0], 2), "peak_vram_counts": vram[1],
               "peak_allocated_gib": round(peak, 2), "peak_reserved_gib": round(peak_reserved, 2),
               "allocator_capped_gib": budget, "alloc_retries": retries,
               "mfu": round(2 * flops[key] / s / gpu_peak(name), 4) if times and not math.isnan(gpu_peak(name)) else None,
               "gpu": name, "compiled": compiled, "cudagraphs": used_cg,
               "stream_transfer": plan.transfer, "plan": plan.summary(), "plan_keep": plan.modes.count("keep"),
               "plan_streamed": len(plan.streamed), "plan_offloaded": plan.modes.count("offload"),
               "host_activation_gib": round(host_act, 2), "pinned_after_release_gib": round(pinned_left, 2), "host_buffer_allocs": host_allocs, "expected_peak_gib": round(plan.expected_peak_gib, 2),
               "first_step_s": round(t_first, 1), "fwd_tflop": round(flops[key] / 1e12, 2),
               "params_b": round(n_params / 1e9, 2), **token_counts(inp),
               "lora": "rank 32, all attention", "lora_groups": lora_groups, "batch": batch,
               "activation_budget": ab_used, "activation_budget_asked": run.get("activation_budget"),
               "plan_activation_budget": plan.activation_budget, "save_attention": sa_used,
               "s_per_sample": round(s / batch, 4) if times else None,
               "steps_timed": len(times), "steps_s": [round(t, 4) for t in times],
               "gc_ms_per_step": round(gc_ms / len(times), 1) if times else None,
               "gc": {"quiet": quiet_active, "freeze_count_before": freeze0, **gc_summary(gc_events)},
               "torch": torch.__version__,
               "calibration": calibrated.get(key)}
        if err:
            rec["error"] = err
        emit(rec)
        out.append(rec)
    plain = {k[0]: v for k, v in inputs.items() if k[1] == "t2v"}  # the plain step's inputs, by shape
    if equality and plain:
        stream_equality(root, plain, dev, model, name)
    del root
    torch.cuda.empty_cache()
    return out


def fp8_checks(root, cfg, dev, shape, model, gpu, toy_steps=200, toy_layers=8, toy_shape="512x512x33",
               full: bool = True) -> None:
    """fp8 compute against the plain forward on the GPU: (1) the full model's forward output
    and one step's LoRA gradients at ``shape`` (same LoRA, same inputs); (2) a LoRA trained
    ``toy_steps`` steps on a fixed toy target (the first ``toy_layers`` blocks, ``toy_shape``),
    bf16 against fp8 from the same init: final loss and LoRA weights."""
    width = text_context_width(cfg, processed=False)
    if full:
        _fp8_full_check(root, width, dev, shape, model, gpu)
    _fp8_toy_check(root, width, dev, model, gpu, toy_steps, toy_layers, toy_shape)


def _fp8_full_check(root, width, dev, shape, model, gpu) -> None:
    from trainer_core.ltx2.fp8 import disable_fp8_compute, enable_fp8_compute

    W, H, F = (int(v) for v in shape.split("x"))
    inp = step_inputs(width, W, H, F, 24.0, dev, torch.Generator(device=dev).manual_seed(0))
    lora, _ = _lora_and_opt(root, dev, seed=1)
    with torch.no_grad():
        for ad in lora.adapters.values() if hasattr(lora, "adapters") else []:
            ad.lora_B.normal_(0, 0.01)
    pred = make_predict(checkpointing=False, compile_blocks=True)
    res = {}
    for tag in ("plain", "fp8"):
        if tag == "fp8":
            n_fp8 = enable_fp8_compute(root)
            torch._dynamo.reset()
            pred = make_predict(checkpointing=False, compile_blocks=True)
        lora.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            v, a = pred(root, inp)
        step_loss(v, a, inp).backward()
        g = torch.cat([p.grad.flatten().float() for p in lora.parameters() if p.grad is not None])
        res[tag] = (v.detach().float(), a.detach().float(), g)
        del v, a
    disable_fp8_compute(root)
    torch._dynamo.reset()
    lora.detach()
    (v0, a0, g0), (v1, a1, g1) = res["plain"], res["fp8"]
    rel = lambda x, y: float((x - y).norm() / y.norm().clamp_min(1e-30))  # noqa: E731
    emit({"check": "fp8 compute vs plain forward (same inputs, same LoRA)", "model": model, "shape": shape,
          "gpu": gpu, "fp8_layers": n_fp8, "video_out_rel_diff": rel(v1, v0), "audio_out_rel_diff": rel(a1, a0),
          "lora_grad_rel_diff": rel(g1, g0), "lora_grad_cosine": float(torch.nn.functional.cosine_similarity(g1, g0, 0))})
    del res, v0, a0, g0, v1, a1, g1
    torch.cuda.empty_cache()


def _fp8_toy_check(root, width, dev, model, gpu, toy_steps, toy_layers, toy_shape) -> None:
    """A LoRA fitted to a fixed toy target (fixed noised inputs and flow target) on the first
    ``toy_layers`` blocks, eager, bf16 against fp8 compute from the same init."""
    from trainer_core.ltx2.fp8 import disable_fp8_compute, enable_fp8_compute

    blocks = root.transformer_blocks
    root.transformer_blocks = torch.nn.ModuleList(list(blocks)[:toy_layers])
    try:
        W, H, F = (int(v) for v in toy_shape.split("x"))
        tinp = step_inputs(width, W, H, F, 24.0, dev, torch.Generator(device=dev).manual_seed(5))
        finals = {}
        for tag in ("bf16", "fp8"):
            if tag == "fp8":
                enable_fp8_compute(root)
            torch._dynamo.reset()
            lora, opt = _lora_and_opt(root, dev, seed=2)
            for group in opt.param_groups:
                group["lr"] = 1e-3
            pred = make_predict(checkpointing=False, compile_blocks=False)
            losses = [float(_step(pred, root, tinp, lora, opt)) for _ in range(toy_steps)]
            # what training made: each adapter's weight delta B·A·α/r (B starts at 0)
            finals[tag] = ({k: ad.delta_weight().detach().float().clone() for k, ad in lora.adapters.items()}, losses)
            lora.detach()
            del lora, opt
            disable_fp8_compute(root)
        (wa, la), (wb, lb) = finals["bf16"], finals["fp8"]
        den = sum(float((wa[k] - 0).norm() ** 2) for k in wa) ** 0.5
        num = sum(float((wa[k] - wb[k]).norm() ** 2) for k in wa) ** 0.5
        emit({"check": f"LoRA after {toy_steps} steps on a fixed toy target, fp8 compute vs bf16", "model": model,
              "layers": toy_layers, "shape": toy_shape, "gpu": gpu, "lr": 1e-3,
              "what": "lora_rel_diff = |dW_fp8 - dW_bf16| / |dW_bf16| over every adapter's B·A·alpha/r",
              "loss_first": la[0], "loss_last_bf16": la[-1], "loss_last_fp8": lb[-1],
              "loss_mean_last20_bf16": sum(la[-20:]) / 20, "loss_mean_last20_fp8": sum(lb[-20:]) / 20,
              "lora_rel_diff": num / max(den, 1e-30)})
    finally:
        root.transformer_blocks = blocks
        torch._dynamo.reset()
        torch.cuda.empty_cache()


def stream_equality(root, inputs, dev, model, gpu, steps=3, budget=24.0) -> dict:
    """Train ``steps`` steps from the same LoRA init with the resident plan and with the
    ``budget`` plan (streaming); compare the LoRA weights."""
    shape = next(iter(inputs))
    inp = inputs[shape]
    finals = []
    plans = []
    for b, tr, offs in ((None, "bf16", False), (budget, "bf16", False), (budget, "fp8", False), (budget, "bf16", True)):
        lora, opt = _lora_and_opt(root, dev, seed=1)
        plan = make_plan(root, inp, b, True, lora, tr, offload_streamed=offs)
        # the same kernels either way: compare the resident plan's modes with streaming added
        plans.append(plan)
        predict = make_predict(memory_plan=plan, compile_blocks=True)
        losses = [float(_step(predict, root, inp, lora, opt)) for _ in range(steps)]
        finals.append(({k: v.detach().float().clone() for k, v in lora.state_dict().items()}, losses))
        predict.release()
        lora.detach()
        del lora, opt, predict
        torch.cuda.empty_cache()
    (wa, la), (wb, lb), (wc, lc), (wd, ld) = finals
    den = sum(float(wa[k].norm() ** 2) for k in wa) ** 0.5
    num = sum(float((wa[k] - wb[k]).norm() ** 2) for k in wa) ** 0.5
    rec = {"check": "streamed equals resident", "model": model, "shape": shape, "gpu": gpu, "steps": steps,
           "budget_gib": budget, "streamed_blocks": len(plans[1].streamed),
           "offloaded_blocks": plans[1].modes.count("offload"), "losses_resident": la,
           "losses_streamed": lb, "lora_rel_diff": num / max(den, 1e-30),
           "max_abs_diff": max(float((wa[k] - wb[k]).abs().max()) for k in wa)}
    emit(rec)
    num8 = sum(float((wa[k] - wc[k]).norm() ** 2) for k in wa) ** 0.5
    emit({"check": "fp8-streamed vs resident (frozen weights of streamed blocks rounded to fp8)", "model": model,
          "shape": shape, "gpu": gpu, "steps": steps, "budget_gib": budget, "streamed_blocks": len(plans[2].streamed),
          "losses_resident": la, "losses_fp8_streamed": lc, "lora_rel_diff": num8 / max(den, 1e-30)})
    num_s = sum(float((wa[k] - wd[k]).norm() ** 2) for k in wa) ** 0.5
    emit({"check": "streamed, with some streamed blocks keeping their activations in host memory, equals resident",
          "model": model, "shape": shape, "gpu": gpu, "steps": steps, "budget_gib": budget,
          "streamed_blocks": len(plans[3].streamed), "offloaded_blocks": plans[3].modes.count("offload"),
          "offloaded_streamed_blocks": sum(plans[3].modes[i] == "offload" for i in plans[3].streamed),
          "losses_resident": la, "losses_streamed": ld, "lora_rel_diff": num_s / max(den, 1e-30),
          "max_abs_diff": max(float((wa[k] - wd[k]).abs().max()) for k in wa)})
    return rec


def bench_official(variant: str, specs: list[tuple[str, str]], steps: int, warmup: int) -> list[dict]:
    """The official stack (ltx-core + PEFT, see official_stack.py) at the same shapes;
    ``specs``: (shape, mode) pairs from :func:`official_specs` (mode ic, ic2, ext:
    official_stack.OFFICIAL_MODES builds the mode's sequence as ltx-trainer's flexible strategy
    does)."""
    from official_stack import build_official, describe, lora_param_count, official_mode_inputs, official_mode_step_fn

    dev = torch.device("cuda")
    tcfg = full_config(variant)["transformer"]
    model = build_official(tcfg, dev, seed=0, rank=32)
    name = torch.cuda.get_device_name()
    out = []
    for shape, mode in specs:
        W, H, F = (int(v) for v in shape.split("x"))
        oi = official_mode_inputs(tcfg, W, H, F, 24.0, dev, mode)
        video, audio = oi.video, oi.audio
        step = official_mode_step_fn(model, oi)
        counts = {"video_tokens": video.latent.shape[1] - oi.reference_tokens,
                  "audio_tokens": audio.latent.shape[1] if audio is not None else 0,
                  "reference_tokens": oi.reference_tokens, "conditioning_tokens": oi.conditioning_tokens}
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        times, err = [], None
        with HostPeak() as hp:
            try:
                times = timed_steps(step, steps, warmup)
            except torch.OutOfMemoryError as e:
                err = f"out of memory: {str(e)[:160]}"
        peak = torch.cuda.max_memory_allocated() / 2**30
        st = stats(times)
        s = st["s_per_step"]
        fl = _SINK.get("flops", {}).get((variant, shape, mode))
        rec = {"stack": "official", "model": model_name(variant), "shape": shape,
               "mode": mode, "audio": audio is not None, **counts, "budget_gib": None, **st, "ratio_to_resident": None, "fp8_compute": False,
               "peak_vram_gib": round(peak, 2), "peak_host_gib": round(hp.peak / 2**30, 2),
               "mfu": round(2 * fl / s / gpu_peak(name), 4) if (fl and times) else None, "gpu": name,
               "what": f"{describe()}: LTXModel, PEFT LoRA r32 on to_q/to_k/to_v/to_out.0, "
                       "per-block checkpointing, bf16 autocast, fused AdamW", "lora_params": lora_param_count(model), "steps_timed": len(times),
               "torch": torch.__version__}
        if err:
            rec["error"] = err
        emit(rec)
        out.append(rec)
        del step, video, audio, oi
        torch.cuda.empty_cache()
    del model
    torch.cuda.empty_cache()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default="ltx-2.0,ltx-2.3")
    ap.add_argument("--runs", default="768x512x121:none,512x512x33:none,768x512x121:24,768x512x121:16",
                    help="shape:budget[:eager][:nocal][:fp8][:nooff][:offs][:fp8c][:cg|:nocg][:ic|:ic2|:ext][:host<G>][:b<N>][:ab<X>][:sa][:cpu][:nogroup] "
                         "for LTX-2.0 (nogroup: every LoRA adapter through its own layer's hook, no projection groups; host<G>: G GiB of host memory for activations; b<N>: N samples a step; ab<X>: the compiled blocks' activation memory budget; sa: under a budget below 1.0 they save attention outputs; cpu: "
                         "streamed blocks start in host memory as ComfyUI leaves them) "
                         "(ic: IC-LoRA v2v with a full-size reference, ic2: half-size, ext: video extension from 8 "
                         "latent frames; see BENCH_MODES; cg: CUDA-graph replay at any bucket size)")
    ap.add_argument("--runs-22b", default="", help="runs for the 22B variants (same syntax; default: the first of --runs)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--no-equality", action="store_true")
    ap.add_argument("--official", default="", help="shapes for the official stack, each with an optional :mode "
                    "(ic, ic2, ext; comma list; empty = none)")
    ap.add_argument("--parse-only", action="store_true", help="print the parsed runs and official specs as JSON, run nothing")
    ap.add_argument("--skip-ours", action="store_true")
    add_inductor_option(ap)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    _SINK["inductor"] = set_inductor_options(a.inductor)
    runs = parse_runs(a.runs)
    runs_22b = parse_runs(a.runs_22b) if a.runs_22b else runs[:1]
    official = official_specs(a.official)
    if a.parse_only:
        print(json.dumps({"runs": runs, "runs_22b": runs_22b, "official": official}))
        return 0
    if not torch.cuda.is_available():
        print("no CUDA device: this benchmark runs on a GPU")
        return 0
    gpu = torch.cuda.get_device_name().replace(" ", "_")
    out = Path(a.out) if a.out else Path(__file__).parent / "results" / f"train_step_{gpu}.json"
    _SINK["path"] = str(out)
    recs = []
    for v in a.variants.split(","):
        if not a.skip_ours:
            recs += bench(v, runs if v == "ltx-2.0" else runs_22b, a.steps, a.warmup,
                          equality=(v == "ltx-2.0" and not a.no_equality))
        if a.official:
            recs += bench_official(v, official, a.steps, a.warmup)
    print(f"wrote {out} ({len(_SINK['records'])} records)")
    return 0


def parse_runs(spec: str) -> list[dict]:
    """``--runs`` entries -> run dicts (see the option's help)."""
    runs = []
    for r in spec.split(","):
        parts = r.split(":")
        if parts[0] in ("fp8check", "fp8toy"):  # fp8toy: the 200-step toy LoRA comparison only
            runs.append({"fp8_check": True, "toy_only": parts[0] == "fp8toy",
                         "shape": parts[1] if len(parts) > 1 else "768x512x121"})
            continue
        if parts[0] == "equality":
            runs.append({"equality": True, "shape": parts[1] if len(parts) > 1 else "768x512x121"})
            continue
        runs.append({"shape": parts[0], "budget": None if parts[1] == "none" else float(parts[1]),
                     "compile": "eager" not in parts[2:], "calibrate": "nocal" not in parts[2:],
                     "transfer": "fp8" if "fp8" in parts[2:] else "bf16", "offload": "nooff" not in parts[2:],
                     "offload_streamed": "offs" in parts[2:], "fp8_compute": "fp8c" in parts[2:],
                     # :cg replays every block as a CUDA graph whatever the bucket size (default:
                     # automatic, small all-resident buckets only); :nocg never
                     "cudagraphs": True if "cg" in parts[2:] else (False if "nocg" in parts[2:] else None),
                     # :host<G>: G GiB of host memory for activations (default: half of MemAvailable)
                     "host_gib": next((float(o[4:]) for o in parts[2:] if o.startswith("host") and o[4:]), None),
                     # :cpu: streamed blocks start in host memory, as ComfyUI leaves them
                     "cpu_origin": "cpu" in parts[2:],
                     # :nogroup: the LoRA without projection groups (each adapter through its hook)
                     "lora_groups": "nogroup" not in parts[2:],
                     # :b<N>: N samples per step (one bucket)
                     "batch": next((int(o[1:]) for o in parts[2:] if o.startswith("b") and o[1:].isdigit()), 1),
                     # :ab<X>: the compiled blocks' activation memory budget X (default: make_predict's)
                     "activation_budget": next((float(o[2:]) for o in parts[2:] if o.startswith("ab") and o[2:]), None),
                     # :sa: compiled blocks under a budget below 1.0 save their attention outputs;
                     # :nosa: they do not (default: what the plan chose)
                     "save_attention": True if "sa" in parts[2:] else (False if "nosa" in parts[2:] else None),
                     "mode": run_mode(parts[2:])})
    return runs


if __name__ == "__main__":
    sys.exit(main())
