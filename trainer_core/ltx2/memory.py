"""Memory plan and weight streaming for the LTX-2 training forward.

A :class:`MemoryPlan` says, per transformer block, how its activations are kept for
backward and where its frozen weights live:

- ``keep``: activations stay resident (no recomputation; fastest, most memory).
- ``full``: only the block's input is kept; the block is recomputed in backward
  (per-block activation checkpointing).
- ``offload``: activations are kept, in (pinned) host memory: copied out after the block's
  forward and back one block ahead of its backward (:class:`ActivationOffloader`).
- streamed blocks (``plan.streamed``) are always ``full``: their frozen weights live in
  pinned host memory and are copied into one of two device slots just before the block
  runs — forward, and again for its recomputation in backward — on a side stream, one block
  ahead, overlapped with the previous block's compute. Streamed weights are never saved for
  backward (the block is recomputed right before its backward), so two slots suffice.

:func:`plan_memory` picks the plan for a VRAM budget from the model's layout and the
largest bucket's token counts; :class:`BlockStreamer` carries out the streaming part.

Streaming never changes the arithmetic: the same kernels run on the same weights, only
the weights' storage moves, so a streamed run equals a resident one (tested on CPU, where
the "host" copies and the slots are both CPU tensors, and on the GPU by the benchmark).

This module never imports ComfyUI.
"""
from __future__ import annotations

import contextlib
import math
import weakref
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from torch import nn

GIB = 2 ** 30

# Activation memory of one block, in bytes per video token, measured on an H100 with the
# full-size 19B layout (bf16, rank-32 all-attention LoRA, 6144 video + 126 audio tokens):
# "keep" = everything autograd saves for the block's backward (eager: 1.15 GiB/block; with
# the compiled block the partitioner recomputes cheap elementwise work: see KEEP_COMPILED);
# "full" = the block's input only; "work" = transient memory of one block's
# recomputation + backward on top of that. Audio tokens (≤ a few hundred) are counted in.
KEEP_EAGER_B_PER_TOKEN = 196_000
KEEP_COMPILED_B_PER_TOKEN = 121_000  # compiled block, activation budget 0.7: 0.67 GiB/block at 6270 tokens
# The compiled block with AOTAutograd's activation budget at 1.0 (the partitioner's default:
# nothing recomputed for memory's sake) where the whole plan fits: H200, 19B, 8 blocks,
# 768×512×121: +0.84 GiB/block (1.51 GiB) and 7.5 % less step time than at 0.7 (21.05 against
# 19.46 ms a block, fixed costs included); 512×512×33 with CUDA graphs 4.6 % less
# (bench/results/profile_activation_budget_H200.json). The constant has 5 % of margin.
KEEP_FULLSAVE_B_PER_TOKEN = 270_000
FULLSAVE_BUDGET = 1.0
DEFAULT_ACTIVATION_BUDGET = 0.7  # plans that must save memory: half the memory, ~8 % slower
FULLSAVE_COMPUTE = 0.93  # the step-time model's compute at FULLSAVE_BUDGET, against 0.7's
FULLSAVE_HEADROOM = 0.9  # a full-save plan must fit in this share of the budget (CUDA-graph pools, fragmentation)
# a kept block at 0.7 that saves its attention outputs (out + log-sum-exp of each attention, not
# recomputed in backward): H200, 19B, 768×512×121, 48 blocks: 77.2 against 71.5 GiB peak
# (+0.12 GiB/block at 6270 tokens) and 0.9335 against 0.9904 s, 0.9197 against 0.9956 s a step
# on another machine, where the full-save plan took 0.9273 s at 112 GiB — as fast for 35 GiB
# less (bench/results/train_step_H200_round8.json). Where the full-save plan fits it stays (at
# 512×512×33 with CUDA graphs 0.2247 against 0.2331 s: fewer kernels to launch). Offloaded
# blocks gain nothing: their saved tensors cross the host link (24 GiB plan: 1.71 against 1.38 s)
KEEP_ATTENTION_B_PER_TOKEN = 20_500
SAVE_ATTENTION_COMPUTE = 0.93  # the step-time model's compute of such a block, against 0.7's
FULL_B_PER_TOKEN = 4096 * 2 + 512  # the block's input (bf16 video stream; audio rides along)
WORK_B_PER_TOKEN = 260_000
# For choosing how many streamed blocks also keep their activations in host memory: the
# bytes a PCIe link moves while one block's forward computes, per token (H200: 8.1 ms per
# block at 6270 tokens, 55 GB/s), and backward's compute relative to forward's (0.62/0.39 s).
COMPUTE_B_PER_TOKEN = 72_000
BACKWARD_FACTOR = 1.6
# the GPU COMPUTE_B_PER_TOKEN was measured on, as calibrate_speed read it then: on another GPU
# the plan scales it by (this rate / that rate) of link over compute, so that a card that
# computes slowly over a fast link offloads more and recomputes less (and the reverse)
COMPUTE_REF_TFLOPS = 707.0
COMPUTE_REF_LINK_GBPS = 55.4
RESERVE_BYTES = int(1.25 * GIB)  # allocator slack, cuBLAS/cuDNN workspaces, CUDA context excluded


def _nbytes(t: torch.Tensor) -> int:
    # quantized tensors (ComfyUI's fp8 checkpoints) report their storage size in ``nbytes``;
    # their element_size() is that of the dtype they compute in
    return int(t.nbytes) if is_quantized(t) else t.numel() * t.element_size()


def module_bytes(m: nn.Module) -> int:
    return sum(_nbytes(p) for p in m.parameters()) + sum(_nbytes(b) for b in m.buffers())


def is_quantized(t: torch.Tensor) -> bool:
    """A tensor subclass holding quantized storage (ComfyUI's QuantizedTensor weights)."""
    return type(t) not in (torch.Tensor, nn.Parameter) and hasattr(t, "_qdata")


def _pageable(host: torch.Tensor) -> torch.Tensor:
    """A host copy going back to a model that lives in host memory, in ordinary (pageable)
    memory: pinned memory cannot be swapped, and ComfyUI keeps its own pinning within a share
    of the RAM — tens of GB left pinned after training would escape that."""
    if is_quantized(host):
        return host._copy_with(qdata=host._qdata.clone()) if host._qdata.is_pinned() else host
    return host.clone() if host.is_pinned() else host


def _host_copy(p: torch.Tensor, pin: bool) -> torch.Tensor:
    """A host copy of a frozen weight (pinned for asynchronous copies when asked)."""
    if is_quantized(p):
        host = p.detach().to("cpu")
        if pin and not host.is_pinned():
            host = host._copy_with(qdata=host._qdata.pin_memory())  # pin the quantized storage itself
        elif host._qdata.data_ptr() == p._qdata.data_ptr():
            host = host._copy_with(qdata=host._qdata.clone())
        return host
    host = p.detach().to("cpu", copy=True)
    return host.pin_memory() if pin else host


@dataclass
class MemoryPlan:
    modes: list[str]  # per block: "keep" | "offload" | "full"
    streamed: list[int] = field(default_factory=list)
    budget_gib: Optional[float] = None
    expected_peak_gib: float = 0.0
    notes: list[str] = field(default_factory=list)
    transfer: str = "bf16"  # how streamed weights travel: "bf16" (exact) or "fp8" (half the bytes)
    predicted_step_s: Optional[float] = None  # set by predict_step_s() from a calibrated StepSpeed
    speed: Optional["StepSpeed"] = None
    # AOTAutograd's activation memory budget for compiled "keep" blocks: 0.7 recomputes cheap
    # elementwise work in backward to halve a kept block's memory; 1.0 (chosen where the whole
    # plan fits that way) saves it instead and runs faster
    activation_budget: float = DEFAULT_ACTIVATION_BUDGET
    # below the full-save budget: kept blocks also save their attention outputs (chosen where
    # no block offloads and the extra memory fits in the budget)
    save_attention: bool = False

    @property
    def saves_everything(self) -> bool:
        """Kept blocks compile at the full-save budget (nothing recomputed inside them)."""
        return self.activation_budget >= FULLSAVE_BUDGET

    def summary(self) -> str:
        n = len(self.modes)
        keep = self.modes.count("keep")
        off = self.modes.count("offload")
        parts = [f"{keep}/{n} blocks keep activations, {n - keep - off} recompute in backward"]
        if off:
            parts[0] += f", {off} keep them in host memory"
        if self.streamed:
            parts.append(f"{len(self.streamed)} blocks stream their weights from host memory"
                         + (" as fp8 (per-row scales)" if self.transfer == "fp8" else ""))
        else:
            parts.append("all weights resident")
        if self.saves_everything and keep:
            parts.append("kept blocks save every activation (nothing recomputed)")
        elif self.save_attention and keep:
            parts.append("kept blocks save their attention outputs (not recomputed in backward)")
        b = f"budget {self.budget_gib:.1f} GiB" if self.budget_gib else "no budget"
        text = f"memory plan ({b}): " + "; ".join(parts)
        if self.expected_peak_gib > 0:  # (a plan made by hand has no estimate)
            text += f"; expected peak ≈ {self.expected_peak_gib:.1f} GiB"
        if self.predicted_step_s is not None and self.speed is not None:
            text += (f"; predicted step ≈ {self.predicted_step_s:.2f} s (this GPU: {self.speed.tflops:.0f} TFLOP/s, "
                     f"{self.speed.link_gbps:.0f} GB/s host link)")
        return text

    def report(self) -> str:
        """The summary with the plan's notes: the line the Train node and headless runs print."""
        return self.summary() + ("; " + "; ".join(self.notes) if self.notes else "")

    def to_dict(self) -> dict:
        return {"modes": self.modes, "streamed": self.streamed, "budget_gib": self.budget_gib,
                "expected_peak_gib": round(self.expected_peak_gib, 2), "notes": self.notes, "transfer": self.transfer,
                "activation_budget": self.activation_budget, "save_attention": self.save_attention,
                "predicted_step_s": None if self.predicted_step_s is None else round(self.predicted_step_s, 3)}


def plan_memory(blocks: Sequence[nn.Module] | nn.Module, other_bytes: int, video_tokens: int, audio_tokens: int = 0,
                budget_gib: Optional[float] = None, trainable_bytes: int = 0, compiled: bool = False,
                block_bytes: Optional[Sequence[int]] = None, allow_keep: bool = True,
                stream_for_speed: bool = True, transfer: str = "bf16", offload: bool = True,
                host_budget_bytes: Optional[int] = None, offload_streamed: bool = False,
                speed: Optional["StepSpeed"] = None) -> MemoryPlan:
    """The plan for a VRAM budget.

    blocks: the transformer blocks (or a ModuleList); ``other_bytes``: every other frozen
    weight that stays resident (embeddings, connectors, projections); ``trainable_bytes``:
    LoRA weights + gradients + optimizer state on the device. ``budget_gib=None`` means
    resident weights with as many ``keep`` blocks as an 80 GiB-class card would not need —
    i.e. no limit: all blocks keep. The plan first streams as few blocks as the weights
    need, then spends what is left on ``keep`` blocks (spread evenly), everything else
    recomputes. ``transfer="fp8"``: streamed weights travel as fp8 (each slot then also holds
    an fp8 staging copy: 1.5 slots' worth per slot).

    Compiled blocks: where every weight stays resident and every block keeps all of its
    activations with nothing recomputed (``KEEP_FULLSAVE_B_PER_TOKEN``, AOTAutograd's
    activation budget 1.0) within ``FULLSAVE_HEADROOM`` of the budget — or with no budget —
    that is the plan (``activation_budget`` 1.0, ~7 % faster at full size); every other plan
    keeps the memory-saving budget 0.7 and is chosen as below. A compiled plan with kept blocks
    and none offloaded then also saves the kept blocks' attention outputs
    (``save_attention``, ``KEEP_ATTENTION_B_PER_TOKEN``: ~6 % faster at full size for a sixth
    of a kept block's activations) where that still fits in the budget.

    ``offload``: blocks that would recompute may keep their activations in host memory
    instead ("offload"): copied out after their forward while the forward computes (or while
    streamed weights come in: PCIe carries both directions at once), and back one block ahead
    in backward. It is chosen against the plan without it, and its count — too many and the
    copies out bound the forward — by an estimate of the step time from
    ``COMPUTE_B_PER_TOKEN``, within ``host_budget_bytes`` of (pinned) host memory (None: no
    limit). On the device it costs one block's activations (the block fetched ahead).
    ``offload_streamed``: streamed blocks may keep theirs too (their weights come back for
    their backward as for a recomputation), counted by the same estimate. ``speed`` (from
    :func:`calibrate_speed` on the GPU that will train): the estimate weighs compute against
    the link at that GPU's ratio (default: the H200 the constants were measured on).
    """
    if transfer not in ("bf16", "fp8"):
        raise ValueError(f"transfer must be 'bf16' or 'fp8', not {transfer!r}")
    blocks = list(blocks)
    n = len(blocks)
    sizes = list(block_bytes) if block_bytes is not None else [module_bytes(b) for b in blocks]
    tokens = video_tokens + audio_tokens
    keep_b = (KEEP_COMPILED_B_PER_TOKEN if compiled else KEEP_EAGER_B_PER_TOKEN) * tokens
    full_b = FULL_B_PER_TOKEN * tokens
    work_b = WORK_B_PER_TOKEN * tokens
    fixed = other_bytes + trainable_bytes + work_b + RESERVE_BYTES
    # compiled blocks: where every block keeps its activations with nothing recomputed and
    # every weight resident, that is the plan (the fastest there is)
    full_save = fixed + sum(sizes) + n * KEEP_FULLSAVE_B_PER_TOKEN * tokens
    if compiled and allow_keep and (budget_gib is None or full_save <= FULLSAVE_HEADROOM * budget_gib * GIB):
        return MemoryPlan(["keep"] * n, [], None if budget_gib is None else float(budget_gib), full_save / GIB, [],
                          activation_budget=FULLSAVE_BUDGET)
    if budget_gib is None:
        modes = ["keep" if allow_keep else "full"] * n
        peak = fixed + sum(sizes) + n * (keep_b if allow_keep else full_b)
        return MemoryPlan(modes, [], None, peak / GIB, [])
    budget = budget_gib * GIB
    blk = max(sizes) if sizes else 0
    slot = int(blk * 1.5) if transfer == "fp8" else blk  # one device slot (+ fp8 staging)
    extra = max(1, keep_b - full_b)

    def weights(base: int) -> tuple[list[int], int, list[str]]:
        """Stream the fewest blocks that make everything fit with all blocks "full"."""
        resident = sum(sizes)
        if base + resident <= budget:
            return [], resident, []
        for k in range(1, n + 1):
            idx = _spread(n, k)
            res = resident - sum(sizes[i] for i in idx) + 2 * slot
            if base + res <= budget:
                return idx, res, []
        return list(range(n)), 2 * slot, ["even with every block streamed the plan exceeds the budget; expect "
                                          "out-of-memory unless the batch or the bucket shrinks"]

    def keeps(streamed: list[int], left: float) -> tuple[set[int], int]:
        """Spend ``left`` on "keep" blocks (never streamed ones), spread evenly."""
        candidates = [i for i in range(n) if i not in set(streamed)]
        k = 0 if not allow_keep else max(0, min(len(candidates), int(left // extra)))
        return (set(candidates[j] for j in _spread(len(candidates), k)) if k else set()), k

    base = fixed + n * full_b
    c_b = COMPUTE_B_PER_TOKEN * tokens * compute_scale(speed)
    w_b = blk // 2 if transfer == "fp8" else blk
    host_cap = n if host_budget_bytes is None else max(0, int(host_budget_bytes // max(1, keep_b)))

    def est(n_s: int, n_full: int, n_off: int, w: int = w_b) -> float:
        """Estimated step time, in bytes a PCIe link moves meanwhile: the forward is bound by
        compute, weights coming in or activations going out; the backward by compute (plus
        recomputation) or everything coming in."""
        fwd = max(n * c_b, n_s * w, n_off * keep_b)
        bwd = max(BACKWARD_FACTOR * n * c_b + n_full * c_b, n_s * w + n_off * keep_b)
        return fwd + bwd

    # A) no offload: 1) stream the fewest blocks the weights need, 2) spend what is left on
    #    "keep" blocks, everything else recomputes
    streamed, resident, notes = weights(base)
    needed = bool(streamed)  # streamed because the weights do not fit (fp8 transfers apply)
    keep_idx, k_keep = keeps(streamed, budget - base - resident)
    # 3) trade: when weights are all resident but some blocks still recompute, streaming the
    #    recomputed blocks (their copies overlap the neighbouring blocks' compute) frees room
    #    for more "keep" blocks; take the largest keep count that fits with every other block
    #    streamed, as long as streamed blocks can sit between keep blocks (≤ one per keep).
    if allow_keep and stream_for_speed and not streamed and 0 < n - k_keep:
        total = sum(sizes)
        best = None
        for k in range(n - 1, k_keep, -1):
            s_n = n - k
            if s_n > k:
                break
            need = base + total - s_n * blk + 2 * blk + k * extra
            if need <= budget:
                best = k
                break
        if best is not None:
            keep_idx = set(_spread(n, best))
            streamed = [i for i in range(n) if i not in keep_idx]
            k_keep = best
            resident = total - len(streamed) * blk + 2 * blk
            notes.append(f"{len(streamed)} recomputed blocks stream their weights so that {best} blocks can keep "
                         "their activations")
    plan = (streamed, resident, notes, keep_idx, k_keep, [], 0, needed)
    cost = est(len(streamed), n - k_keep, 0, w_b if needed else blk)
    # B) offload: blocks that would recompute keep their activations in host memory instead
    #    (one block's worth of device memory for the fetch ahead): copied out while the
    #    forward's copies come in, back in backward while it computes. How many — of the
    #    resident blocks, and with ``offload_streamed`` of the streamed ones — the estimate
    #    decides (too many, and the copies out bound the forward).
    if offload and allow_keep and host_cap >= 2:
        # device memory for the fetch ahead: one block's activations; where streamed blocks
        # offload too, two (measured +1.0 GiB at full size: a streamed block's activations come
        # back next to its weights while the next block's are on their way)
        best_o = None
        for dev_extra, with_s in ((keep_b, False),) + (((2 * keep_b, True),) if offload_streamed else ()):
            o_streamed, o_resident, o_notes = weights(base + dev_extra)
            o_keep, o_k = keeps(o_streamed, budget - base - dev_extra - o_resident)
            rest = [i for i in range(n) if i not in set(o_streamed) and i not in o_keep]
            n_s = len(o_streamed)
            for k_r in range(min(len(rest), host_cap), 1, -1):  # ties: no streamed ones, resident first, fewer
                for k_s in (range(1, min(n_s, host_cap - k_r) + 1) if with_s else (0,)):
                    e = est(n_s, len(rest) - k_r + n_s - k_s, k_r + k_s)
                    if best_o is None or e < best_o[0]:
                        best_o = (e, k_r, k_s, o_streamed, o_resident, o_notes, o_keep, o_k, rest, dev_extra)
        if best_o is not None and best_o[0] < cost:
            _, k_r, k_s, o_streamed, o_resident, o_notes, o_keep, o_k, rest, dev_extra = best_o
            n_s = len(o_streamed)
            offloaded = [rest[j] for j in _spread(len(rest), k_r)] + [o_streamed[j] for j in _spread(n_s, k_s)]
            what = f" ({k_s} of them streamed)" if k_s else ""
            o_notes = o_notes + [f"{len(offloaded)} blocks{what} keep their activations in host memory instead of "
                                 f"recomputing them (≈ {len(offloaded) * keep_b / GIB:.1f} GiB of RAM)"]
            plan = (o_streamed, o_resident, o_notes, o_keep, o_k, sorted(offloaded), dev_extra, bool(o_streamed))
    streamed, resident, notes, keep_idx, k_keep, offloaded, peak_extra, needed = plan
    # fp8 transfers only where the weights do not fit; the speed trade stays exact (bf16)
    transfer = transfer if needed else "bf16"
    off = set(offloaded)
    modes = ["keep" if i in keep_idx else "offload" if i in off else "full" for i in range(n)]
    peak = base + resident + k_keep * extra + peak_extra
    # kept blocks on the device save their attention outputs too, where that fits (offloaded
    # blocks would send them over the link, which bounds such plans: never with offload)
    attention = k_keep * KEEP_ATTENTION_B_PER_TOKEN * tokens
    save_attention = compiled and k_keep > 0 and not off and peak + attention <= budget
    if save_attention:
        peak += attention
    return MemoryPlan(modes, streamed, float(budget_gib), peak / GIB, notes, transfer,
                      save_attention=bool(save_attention))


# ---------------------------------------------------------------------------- step time


def compute_scale(speed: Optional["StepSpeed"]) -> float:
    """How many times more link bytes one block's compute is worth on ``speed``'s GPU than on
    the one COMPUTE_B_PER_TOKEN was measured on (1.0 for None or a CPU's nominal figure)."""
    if speed is None or speed.name == "cpu" or speed.tflops <= 0 or speed.link_gbps <= 0:
        return 1.0
    return (COMPUTE_REF_TFLOPS / speed.tflops) * (speed.link_gbps / COMPUTE_REF_LINK_GBPS)

# The step-time model: the whole step's matmul + attention work runs at STEP_EFFICIENCY of the
# dense bf16 matmul rate the calibration measures (H200, 19B, 768×512×121, every block
# keeping its activations: 200 TFLOP forward, 0.39 s forward + 0.61 s backward = 1.00 s, with
# calibrate_speed's 4096² product at 707 TFLOP/s); each block pass also costs a fixed launch overhead (512×512×33: 0.25 s measured
# against 0.20 s of compute); the backward costs BACKWARD_FACTOR forwards, and a recomputed
# block one forward more. Streamed weights and offloaded activations move over the host link
# at the calibrated rate, overlapped with compute (forward: max of compute, weights in,
# activations out; backward: max of compute, weights + activations in).
STEP_EFFICIENCY = 0.755
BLOCK_OVERHEAD_S = 0.35e-3


@dataclass
class StepSpeed:
    """What a GPU does, from a short calibration (:func:`calibrate_speed`) or given."""
    tflops: float  # dense bf16 matmul, TFLOP/s
    link_gbps: float  # pinned host -> device copies, GB/s
    name: str = ""


_SPEED_CACHE: dict = {}


def event_seconds(fn, reps: int, device, warm: bool = True) -> float:
    """Seconds per call of ``fn`` on ``device``, by CUDA events over ``reps`` calls (after one
    untimed call when ``warm``)."""
    if warm:
        fn()
        torch.cuda.synchronize(device)
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e0.record()
    for _ in range(reps):
        fn()
    e1.record()
    torch.cuda.synchronize(device)
    return e0.elapsed_time(e1) / 1e3 / reps


def calibrate_speed(device, matmul_n: int = 4096, copy_mib: int = 256, reps: int = 5,
                    cached: bool = True) -> StepSpeed:
    """Measure the dense bf16 matmul rate and the host-to-device link (pinned) on ``device``
    (well under a second on a current GPU). CPU devices get a nominal, slow figure.

    With ``cached`` the figure is measured once per device and process (the Train node plans
    every run). Its spread is the step-time model's main error: five back-to-back runs on an
    H200 read 707–773 TFLOP/s, and a clock-warmed best-of-three 8192² variant no steadier
    (712–797), while the whole training step moved by under 1 %
    (bench/results/calibration_H200.json); STEP_EFFICIENCY is fitted to this method."""
    device = torch.device(device)
    if device.type != "cuda":
        return StepSpeed(1.0, 10.0, "cpu")
    key = (device.index if device.index is not None else torch.cuda.current_device(), matmul_n, copy_mib, reps)
    if cached and key in _SPEED_CACHE:
        return _SPEED_CACHE[key]
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(matmul_n, matmul_n, device=device, dtype=torch.bfloat16, generator=g)
    b = torch.randn(matmul_n, matmul_n, device=device, dtype=torch.bfloat16, generator=g)
    host = torch.empty(copy_mib << 20, dtype=torch.uint8).pin_memory()
    dev = torch.empty_like(host, device=device)

    t_mm = event_seconds(lambda: a @ b, reps, device)
    t_cp = event_seconds(lambda: dev.copy_(host, non_blocking=True), reps, device)
    del host, dev, a, b
    speed = StepSpeed(2 * matmul_n ** 3 / t_mm / 1e12, (copy_mib << 20) / t_cp / 1e9, torch.cuda.get_device_name(device))
    if cached:
        _SPEED_CACHE[key] = speed
    return speed


def block_flops(block: nn.Module, video_tokens: int, audio_tokens: int, text_tokens: int = 1024,
                attention: bool = True) -> float:
    """Forward FLOPs of one audio-video block from its linear layers — each counts 2·in·out
    per token of the stream it reads — plus (``attention``) the attention products,
    4·Tq·Tk·inner per attention."""
    nv, na, nt = video_tokens, audio_tokens, text_tokens
    side = {"attn1": (nv, nv), "attn2": (nv, nt), "ff": (nv, nv), "audio_attn1": (na, na),
            "audio_attn2": (na, nt), "audio_ff": (na, na), "audio_to_video_attn": (nv, na),
            "video_to_audio_attn": (na, nv)}
    total = 0.0
    for name, m in block.named_modules():
        if not isinstance(m, nn.Linear):
            continue
        parts = name.split(".")
        q_tok, kv_tok = side.get(parts[0], (nv, nv))
        tok = kv_tok if parts[-1] in ("to_k", "to_v") else q_tok
        total += 2.0 * tok * m.in_features * m.out_features
    for attn, (tq, tk) in side.items() if attention else ():
        a = getattr(block, attn, None)
        if a is not None and hasattr(a, "to_q") and tq and tk:
            total += 4.0 * tq * tk * a.to_q.out_features
    return total


def predict_step_s(plan: MemoryPlan, blocks: Sequence[nn.Module] | nn.Module, video_tokens: int,
                   audio_tokens: int, speed: StepSpeed, text_tokens: int = 1024,
                   block_bytes: Optional[Sequence[int]] = None) -> float:
    """The step time the plan should take on a GPU of ``speed`` (sets ``plan.predicted_step_s``)."""
    blocks = list(blocks)
    n = len(blocks)
    rate = speed.tflops * 1e12 * STEP_EFFICIENCY
    # kept blocks that recompute nothing, or not their attention, run faster than at 0.7
    kept = FULLSAVE_COMPUTE if plan.saves_everything else SAVE_ATTENTION_COMPUTE if plan.save_attention else 1.0
    cf = [block_flops(b, video_tokens, audio_tokens, text_tokens) / rate * (kept if plan.modes[i] == "keep" else 1.0)
          + BLOCK_OVERHEAD_S for i, b in enumerate(blocks)]
    sizes = list(block_bytes) if block_bytes is not None else [module_bytes(b) for b in blocks]
    link = speed.link_gbps * 1e9
    tokens = video_tokens + audio_tokens
    act = KEEP_COMPILED_B_PER_TOKEN * tokens
    w_in = sum(sizes[i] * (0.5 if plan.transfer == "fp8" else 1.0) for i in plan.streamed)
    n_off = plan.modes.count("offload")
    full = sum(cf[i] for i in range(n) if plan.modes[i] == "full")  # recomputed in backward
    fwd = max(sum(cf), w_in / link, n_off * act / link)
    bwd = max(BACKWARD_FACTOR * sum(cf) + full, (w_in + n_off * act) / link)
    plan.predicted_step_s, plan.speed = fwd + bwd, speed
    return fwd + bwd


# cudaMallocAsync (ComfyUI's default allocator) against PyTorch's native one, same plan, H200,
# 19B at 768×512×121 under a 24 GiB cap: the same peak allocated, but the pool's reserved
# memory over the cap by 0.7 GiB (bf16 streaming) and 1.8 GiB (fp8 streaming)
ASYNC_OVER_CAP_GIB = {"bf16": 0.7, "fp8": 1.8}


def allocator_note(backend: str, plan: MemoryPlan) -> Optional[str]:
    """A line for the user when a budgeted plan runs under ``cudaMallocAsync``
    (``torch.cuda.get_allocator_backend()``), whose stream-ordered pool holds more in reserve
    than the plan's peak; None when there is nothing to say."""
    if backend != "cudaMallocAsync" or plan.budget_gib is None or not plan.streamed:
        return None
    over = ASYNC_OVER_CAP_GIB.get(plan.transfer, max(ASYNC_OVER_CAP_GIB.values()))
    return (f"PyTorch runs the cudaMallocAsync allocator (ComfyUI's default): its pool may hold ≈ {over:.1f} GiB "
            f"more than the {plan.budget_gib:.1f} GiB budget (measured on an H200); on a card with no room "
            "beyond the budget, start ComfyUI with --disable-cuda-malloc or lower vram_budget_gb by "
            f"{math.ceil(over)} GB")


def free_pinned_cache() -> None:
    """Give cached pinned host memory back to the system.

    PyTorch's pinned-memory allocator keeps freed blocks for reuse until the process ends. After
    training has let go of the streamer's host copies and the activation buffers (tens of GB
    at a 24 GB budget) they would otherwise stay pinned: RAM neither ComfyUI nor the system
    can use, and a second training in the same process pins as much again."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        empty = getattr(torch._C, "_host_emptyCache", None)
        if empty is not None:
            empty()


def host_available_bytes() -> int:
    """Host memory available now (Linux: MemAvailable; elsewhere psutil when present)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return 0


def _spread(n: int, k: int) -> list[int]:
    """k indices out of range(n), spread evenly (k=0 -> [])."""
    if k <= 0:
        return []
    if k >= n:
        return list(range(n))
    return sorted({int(math.floor((j + 0.5) * n / k)) for j in range(k)})


class BlockStreamer:
    """Streams the frozen weights of some blocks through two device slots.

    ``enter(i)`` is called at the start of block ``i``'s function — in the forward and again
    in its recomputation during backward (the direction is read from autograd: inside a
    backward pass the next block needed is ``i-1``). It makes block ``i``'s weights live on
    the device (waiting for their copy), then starts copying the next streamed block in the
    running direction into the other slot, on a side stream that first waits until the
    compute stream has finished every kernel already issued (so the slot's previous block is
    done with it).

    Parameters of streamed blocks are rebound with ``param.data = ...`` (host copy <-> slot
    view); the parameter objects, their names and ``requires_grad`` never change, so hooks,
    LoRA adapters and optimizers are unaffected. Only frozen parameters may be streamed.
    ``restore()`` puts every streamed weight back on the device it came from.
    """

    def __init__(self, blocks: Sequence[nn.Module], streamed: Sequence[int], device: torch.device | str,
                 pin: bool = True, transfer: str = "bf16"):
        if transfer not in ("bf16", "fp8"):
            raise ValueError(f"transfer must be 'bf16' or 'fp8', not {transfer!r}")
        self.blocks = list(blocks)
        self.streamed = sorted(set(int(i) for i in streamed))
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.fp8 = transfer == "fp8"
        # per streamed block: (module, parameter name, host copy). Parameters are looked up
        # on their module at every bind, so a parameter object replaced meanwhile (ComfyUI
        # re-wraps quantized weights when it moves a model) is the one that gets bound.
        self.params: dict[int, list[tuple[nn.Module, str, torch.Tensor]]] = {}
        self.origin: dict[int, list[torch.device]] = {}
        # fp8: per streamed block, for each quantized weight (by position) the fp8 host copy
        # and its per-row scales (on the device); other parameters travel as they are
        self.q: dict[int, dict[int, tuple[torch.Tensor, torch.Tensor]]] = {}
        layout = None
        for i in self.streamed:
            items = []
            names = []
            qs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
            owners = {n: m for n, m in self.blocks[i].named_modules()}
            for k, (name, p) in enumerate(self.blocks[i].named_parameters()):
                mod_name, _, leaf = name.rpartition(".")
                owner = owners[mod_name]
                if p.requires_grad:
                    raise ValueError(f"block {i} parameter {name} is trainable; only frozen weights can be streamed")
                if self.fp8 and fp8_eligible(p):
                    # the bf16 original stays as the parameter's host data (exact restore, and
                    # correct weights for anyone running the model while the streamer is parked)
                    host = p.detach() if p.device.type == "cpu" else p.detach().to("cpu")
                    qw, sc = quantize_fp8(host)
                    if pin and self.cuda:
                        qw = qw.pin_memory()
                    qs[k] = (qw, sc.to(self.device))
                else:
                    host = _host_copy(p, pin and self.cuda)
                items.append((owner, leaf, host))
                names.append((name, tuple(p.shape), p.dtype, k in qs))
            if layout is None:
                layout = names
            elif names != layout:
                raise ValueError("streamed blocks must share one parameter layout")
            self.origin[i] = [owner._parameters[leaf].device for owner, leaf, _ in items]
            self.params[i] = items
            self.q[i] = qs
            for owner, leaf, host in items:
                owner._parameters[leaf].data = host  # the device copy is released here
        self.layout = layout or []
        # two slots: a device tensor per parameter (+ an fp8 staging tensor per quantized one)
        self.slots: list[list[torch.Tensor]] = []
        self.staging: list[dict[int, torch.Tensor]] = []
        first = self.params[self.streamed[0]] if self.streamed else []
        for _ in range(2 if self.streamed else 0):
            # empty_like keeps a quantized weight's layout (storage + scales) in its slot
            self.slots.append([torch.empty_like(host, device=self.device) for _, _, host in first])
            self.staging.append({k: torch.empty(shape, dtype=torch.float8_e4m3fn, device=self.device)
                                 for k, (_, shape, _, q) in enumerate(self.layout) if q})
        self.holder: list[Optional[int]] = [None, None]
        self.slot_of: dict[int, int] = {}
        self.last_slot = 1
        self.side = torch.cuda.Stream(device=self.device) if self.cuda and self.streamed else None
        self.ready: list[Optional[torch.cuda.Event]] = [None, None]
        self.fresh = [False, False]  # slot holds fp8 staging not yet dequantized
        self.copies = 0  # blocks copied in (for tests and reports)

    # -------------------------------------------------------------------------------
    def _next(self, i: int, backward: bool) -> Optional[int]:
        if backward:
            cands = [j for j in self.streamed if j < i]
            return cands[-1] if cands else None
        cands = [j for j in self.streamed if j > i]
        return cands[0] if cands else None

    def _unbind(self, j: int) -> None:
        for owner, leaf, host in self.params[j]:
            owner._parameters[leaf].data = host
        self.slot_of.pop(j, None)

    def _load(self, j: int, s: int) -> None:
        old = self.holder[s]
        if old is not None:
            self._unbind(old)
        views = self.slots[s]
        if self.cuda:
            ev = torch.cuda.current_stream(self.device).record_event()
            with torch.cuda.stream(self.side):
                self.side.wait_event(ev)
                self._copy_in(j, s, views, non_blocking=True)
                self.ready[s] = self.side.record_event()
        else:
            self._copy_in(j, s, views, non_blocking=False)
        self.holder[s] = j
        self.slot_of[j] = s
        self.copies += 1

    def _copy_in(self, j: int, s: int, views: list[torch.Tensor], non_blocking: bool) -> None:
        """Side stream: host -> slot copies (fp8 weights into the slot's staging tensors)."""
        qs = self.q.get(j, {})
        for k, ((_, _, host), view) in enumerate(zip(self.params[j], views)):
            if k in qs:
                self.staging[s][k].copy_(qs[k][0], non_blocking=non_blocking)
            else:
                view.copy_(host, non_blocking=non_blocking)
        self.fresh[s] = bool(qs)

    def _dequantize(self, j: int, s: int) -> None:
        """Compute stream: fp8 staging -> the slot's weights. Run here, not on the side stream:
        next to compute-bound kernels a side-stream kernel waits for free SMs, which delays
        the block that needs it (measured on an H200: 18.9 ms for a copy + dequantization
        overlapped with 11 ms of matmuls, against 15.9 ms for the bf16 copy)."""
        deq = _fused_dequantize() if self.cuda else dequantize_fp8
        for k, (qw, sc) in self.q.get(j, {}).items():
            deq(self.staging[s][k], sc, out=self.slots[s][k])
        self.fresh[s] = False

    def bind(self, i: int) -> list[torch.Tensor]:
        """Block ``i``'s weights on the device (loading them now if they were not prefetched),
        the compute stream waiting for their copy, its parameters bound to them; returns the
        slot (one device tensor per parameter, in ``named_parameters`` order)."""
        s = self.slot_of.get(i)
        if s is None:  # not prefetched (first block, or a jump): load now into the other slot
            s = 1 - self.last_slot
            self._load(i, s)
        if self.cuda and self.ready[s] is not None:
            torch.cuda.current_stream(self.device).wait_event(self.ready[s])
        if self.fresh[s]:
            self._dequantize(i, s)
        for (owner, leaf, _), view in zip(self.params[i], self.slots[s]):
            owner._parameters[leaf].data = view
        self.last_slot = s
        return self.slots[s]

    def enter(self, i: int) -> None:
        backward = torch._C._current_graph_task_id() != -1
        if i in self.params:
            self.bind(i)
        nxt = self._next(i, backward)
        if nxt is not None and nxt not in self.slot_of:
            self._load(nxt, 1 - self.last_slot)

    def park(self) -> None:
        """Every streamed weight back to its host copy and both slots empty (e.g. while other
        code — a sampler — runs the model its own way); the next ``enter`` reloads as needed.
        Nothing is freed: the slots stay allocated for the next training step."""
        if self.cuda and self.side is not None:
            self.side.synchronize()
        for j in list(self.slot_of):
            self._unbind(j)
        self.holder = [None, None]
        self.ready = [None, None]
        self.fresh = [False, False]

    def restore(self) -> None:
        """Every streamed weight back on its original device; slots freed.

        Block by block: each block's pinned copies are let go (and PyTorch's pinned cache
        emptied) before the next block's weights are copied back, so host memory never holds
        the streamed weights twice — at a 24 GB budget on 19B that is 26 GB pinned plus
        26 GB pageable, more than a 64 GB machine has beside ComfyUI."""
        if self.cuda and self.side is not None:
            self.side.synchronize()
        for j in list(self.slot_of):
            self._unbind(j)
        for i in list(self.params):
            self.q.pop(i, None)
            for (owner, leaf, host), dev in zip(self.params.pop(i), self.origin[i]):
                owner._parameters[leaf].data = _pageable(host) if dev.type == "cpu" else host.to(dev)
            host = None  # the loop's last reference to this block's pinned copies
            free_pinned_cache()
        self.slots.clear()
        self.staging.clear()
        self.holder = [None, None]
        self.streamed = []

    def weight_bytes_on_host(self) -> int:
        return sum(_nbytes(h) for items in self.params.values() for _, _, h in items)

    def transfer_bytes_per_block(self) -> int:
        """Bytes copied from the host for one streamed block."""
        if not self.streamed:
            return 0
        j = self.streamed[0]
        qs = self.q.get(j, {})
        return sum(qs[k][0].numel() if k in qs else _nbytes(h)
                   for k, (_, _, h) in enumerate(self.params[j]))


def _storage_ptr(t: torch.Tensor) -> Optional[int]:
    try:
        if is_quantized(t):
            return t._qdata.untyped_storage().data_ptr()
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError, AttributeError):
        return None


def _tensors_in(obj, depth: int = 0):
    """Tensors reachable from a block's arguments (tuples, dataclasses, small objects)."""
    if torch.is_tensor(obj):
        yield obj
    elif depth < 4 and isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors_in(o, depth + 1)
    elif depth < 4 and isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors_in(o, depth + 1)
    elif depth < 4 and hasattr(obj, "__dict__") and not isinstance(obj, (nn.Module, type)):
        for o in vars(obj).values():
            yield from _tensors_in(o, depth + 1)


def _dense(t: torch.Tensor) -> bool:
    """Non-overlapping and dense: the tensor's elements fill exactly ``numel`` consecutive
    storage slots in some order (so it moves as one flat copy, strides kept)."""
    expected = 1
    for size, stride in sorted((d for d in zip(t.shape, t.stride()) if d[0] != 1), key=lambda d: d[1]):
        if stride != expected:
            return False
        expected *= size
    return True


class _Saved:
    """One offloaded saved tensor: its layout, its host copy, and while it is on the device
    (before the copy out has been issued, or once fetched back) the device tensor."""

    __slots__ = ("block", "size", "stride", "dtype", "device", "host", "dev", "uses", "left", "__weakref__")

    def __init__(self, block: int, t: torch.Tensor):
        self.block = block
        self.size, self.stride, self.dtype, self.device = tuple(t.shape), tuple(t.stride()), t.dtype, t.device
        self.host: Optional[torch.Tensor] = None
        self.dev: Optional[torch.Tensor] = t
        self.uses = 0  # how many saved slots refer to it (unpacks per backward)
        self.left = 0  # unpacks still to come before the fetched device copy is let go


class _Weight:
    """A streamed block's weight (or a view of it) saved for backward: the slot it sat in
    will hold other blocks' weights by then, so it is saved by parameter index and layout and
    taken from wherever the streamer has the block when its backward runs."""

    __slots__ = ("block", "k", "size", "stride", "offset")

    def __init__(self, block: int, k: int, t: torch.Tensor):
        self.block, self.k = block, k
        self.size, self.stride, self.offset = tuple(t.shape), tuple(t.stride()), t.storage_offset()


class ActivationOffloader:
    """Keeps the activations of some blocks in (pinned) host memory between forward and
    backward, instead of recomputing those blocks.

    A block in mode ``"offload"`` runs like a ``"keep"`` block, but inside
    :meth:`saving` every tensor autograd saves for its backward that the block created
    (not its inputs, not weights, at least ``min_bytes``) is copied to a host buffer on a
    side stream right after the block's forward, and the device copy is freed as soon as that
    copy has run. In backward, the block's saved tensors are copied back one block ahead:
    when the gradient of a block's output arrives (its backward is next), the next offloaded
    block below is fetched on the side stream, overlapped with this block's backward.

    Offloading never changes the arithmetic: the same kernels run on bit-identical saved
    tensors (same shapes, strides and dtypes). Host buffers are one flat buffer per block,
    grown to the largest bucket and reused every step (pinned when the device is CUDA).
    This suits the plans where weights stream: the forward's PCIe traffic goes host -> device
    (weights) while activations go device -> host, and backward — compute-bound with
    recomputation — has PCIe time to spare for bringing them back.
    """

    ALIGN = 512  # bytes; host views start on this boundary

    def __init__(self, blocks: Sequence[nn.Module], offloaded: Sequence[int], device: torch.device | str,
                 pin: bool = True, min_bytes: int = 1 << 20, streamer: Optional["BlockStreamer"] = None):
        self.blocks = list(blocks)
        self.offloaded = sorted(set(int(i) for i in offloaded))
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.pin = pin and self.cuda
        self.min_bytes = int(min_bytes)
        # offloaded blocks whose weights stream too: their saved weights are taken from the
        # streamer in backward, and their backward brings the next streamed block in
        self.streamer = streamer
        self.weights: Optional[dict[int, int]] = None  # current block: parameter storage -> index
        self.host: dict[int, torch.Tensor] = {}  # flat uint8 buffer per block
        # per block, the last forward's saved tensors (weak: the autograd graph owns them)
        self.saved: dict[int, list[weakref.ref]] = {}
        self.pending: list[_Saved] = []
        self.seen: dict[tuple, _Saved] = {}
        self.skip: set[int] = set()
        self.current: Optional[int] = None
        self.out_stream = torch.cuda.Stream(device=self.device) if self.cuda else None
        self.in_stream = torch.cuda.Stream(device=self.device) if self.cuda else None
        self.out_done: dict[int, torch.cuda.Event] = {}
        self.in_done: dict[int, torch.cuda.Event] = {}
        self.fetched: set[int] = set()
        self.bytes_out = 0  # bytes copied to the host (for tests and reports)
        self.fetches = 0
        self.host_allocs = 0  # host buffers allocated (one per block, unless buckets grow)
        # device tensors whose copy out is in flight, with the event that ends it: let go once
        # the event has passed (no record_stream: freed memory is at once reusable by compute)
        # (measured on an H200, 19B at 768×512×121, 24 GiB: 1.39 s/step this way, 1.74 s with
        # record_stream on every tensor — the allocator then holds freed blocks back)
        self.inflight: list[tuple[torch.cuda.Event, list[torch.Tensor]]] = []

    def _reap(self, force: bool = False) -> None:
        keep = []
        for ev, ts in self.inflight:
            if ev.query():
                continue
            if force:  # still copying: the allocator waits for the copy stream before reuse
                for t in ts:
                    t.record_stream(self.out_stream)
                continue
            keep.append((ev, ts))
        self.inflight = keep

    # ---------------------------------------------------------------- forward
    def saving(self, i: int, args: tuple):
        """Context manager for block ``i``'s forward: saved tensors go to the host."""
        self.current = i
        self.skip = {p for p in (_storage_ptr(t) for t in _tensors_in(args)) if p is not None}
        self.skip |= {p for p in (_storage_ptr(t) for t in self.blocks[i].buffers()) if p is not None}
        self.weights = None  # looked up at the first save, once the block's weights are bound
        if any(r() is not None for r in self.saved.get(i, [])):
            # a graph from an earlier forward still holds this block's tensors (no backward
            # yet, or a kept graph): give this forward its own buffer, the old one lives on
            self.host.pop(i, None)
        self.saved[i] = []
        self.pending = []
        self.seen: dict[tuple, _Saved] = {}
        self.fetched.discard(i)
        return torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def _streamed(self, i: int) -> bool:
        return self.streamer is not None and i in self.streamer.params

    def _pack(self, t: torch.Tensor):
        if self.current is None:
            return t
        if self.weights is None:
            i = self.current
            if self._streamed(i):
                self.weights = {_storage_ptr(owner._parameters[leaf]): k
                                for k, (owner, leaf, _) in enumerate(self.streamer.params[i])}
            else:
                self.weights = {_storage_ptr(p): -1 for p in self.blocks[i].parameters()}
        k = self.weights.get(_storage_ptr(t))
        if k is not None:  # a weight: resident ones are saved as they are, streamed ones by index
            if k < 0:
                return t
            if is_quantized(t):
                raise RuntimeError("a streamed block with quantized weights cannot keep its activations in host "
                                   "memory; plan it as recomputed")
            return _Weight(self.current, k, t)
        if (t.device != self.device or is_quantized(t)
                or t.numel() * t.element_size() < self.min_bytes or not _dense(t)
                or _storage_ptr(t) in self.skip):
            return t
        key = (_storage_ptr(t), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
        s = self.seen.get(key)
        if s is None:  # the same tensor saved by several ops travels once
            s = self.seen[key] = _Saved(self.current, t)
            self.saved[self.current].append(weakref.ref(s))
            self.pending.append(s)
        s.uses += 1
        return s

    def finish(self, i: int, output: tuple) -> None:
        """After block ``i``'s forward: issue the copies out, free the device tensors once
        copied, and hook the block's output so its backward fetches the next block."""
        self.current = None
        pending, self.pending, self.seen = self.pending, [], {}
        need = sum(self._span(s) for s in pending)
        buf = self.host.get(i)
        if buf is None or buf.numel() < need:
            buf = torch.empty(need, dtype=torch.uint8, pin_memory=self.pin)
            self.host[i] = buf
            self.host_allocs += 1
        off = 0
        if self.cuda:
            ev = torch.cuda.current_stream(self.device).record_event()
            ctx = torch.cuda.stream(self.out_stream)
            self.out_stream.wait_event(ev)
            if i in self.in_done:  # last step's fetch of this block read the same host buffer
                self.out_stream.wait_event(self.in_done.pop(i))
        else:
            ctx = contextlib.nullcontext()
        held = []
        with ctx:
            for s in pending:
                n = self._span(s)
                s.host = self._host_view(buf, off, s)
                off += n
                s.host.copy_(s.dev, non_blocking=self.cuda)
                if self.cuda:
                    held.append(s.dev)
                s.dev = None
                self.bytes_out += math.prod(s.size) * s.host.element_size()
        if self.cuda:
            self.out_done[i] = self.out_stream.record_event()
            if held:
                self.inflight.append((self.out_done[i], held))
            self._reap()
        if torch.is_grad_enabled():
            ref = next((o for o in output if torch.is_tensor(o) and o.requires_grad), None)
            if ref is not None:
                ref.register_hook(self._hook(i))

    def _span(self, s: _Saved) -> int:
        n = math.prod(s.size) * s.dtype.itemsize
        return (n + self.ALIGN - 1) // self.ALIGN * self.ALIGN

    @staticmethod
    def _host_view(buf: torch.Tensor, off: int, s: _Saved) -> torch.Tensor:
        n = math.prod(s.size)
        flat = buf[off:off + n * s.dtype.itemsize].view(s.dtype)
        return flat.as_strided(s.size, s.stride)

    # --------------------------------------------------------------- backward
    def _hook(self, i: int):
        def hook(grad):
            # block i's backward is next: make sure it is on its way, and fetch the next below
            if self.inflight:
                self._reap(force=True)
            if self._streamed(i):  # its weights (prefetched by the block above) + the next streamed below
                self.streamer.enter(i)
            self._fetch(i)
            below = [j for j in self.offloaded if j < i]
            if below:
                self._fetch(below[-1])
            return None
        return hook

    def _fetch(self, i: int) -> None:
        if i in self.fetched or i not in self.saved:
            return
        self.fetched.add(i)
        items = [s for s in (r() for r in self.saved[i]) if s is not None and s.dev is None and s.host is not None]
        if not items:
            return
        # device tensors are allocated on the compute stream; the copy stream waits until
        # the compute stream has issued everything so far (the memory's previous users)
        devs = [torch.empty_strided(s.size, s.stride, dtype=s.dtype, device=self.device) for s in items]
        if self.cuda:
            ev = torch.cuda.current_stream(self.device).record_event()
            self.in_stream.wait_event(ev)
            if i in self.out_done:
                self.in_stream.wait_event(self.out_done.pop(i))
            with torch.cuda.stream(self.in_stream):
                for s, d in zip(items, devs):
                    d.copy_(s.host, non_blocking=True)
            self.in_done[i] = self.in_stream.record_event()
        else:
            for s, d in zip(items, devs):
                d.copy_(s.host)
        for s, d in zip(items, devs):
            s.dev, s.left = d, s.uses
        self.fetches += 1

    def _unpack(self, s):
        if isinstance(s, _Weight):
            slot = self.streamer.bind(s.block)
            return slot[s.k].as_strided(s.size, s.stride, s.offset)
        if not isinstance(s, _Saved):
            return s
        if s.dev is None and s.block not in self.fetched:  # not prefetched (e.g. no hook ran): fetch now
            self._fetch(s.block)
        if s.dev is None:  # every use already served (a second backward over a kept graph)
            if self.cuda and s.block in self.out_done:
                torch.cuda.current_stream(self.device).wait_event(self.out_done[s.block])
            d = torch.empty_strided(s.size, s.stride, dtype=s.dtype, device=self.device)
            return d.copy_(s.host)
        if self.cuda and s.block in self.in_done:
            torch.cuda.current_stream(self.device).wait_event(self.in_done[s.block])
        t = s.dev
        s.left -= 1
        if s.left <= 0:  # autograd holds it for as long as the backward nodes need it
            s.dev = None
        return t

    def host_bytes(self) -> int:
        return sum(int(b.numel()) for b in self.host.values())

    def release(self) -> None:
        if self.cuda:
            self.out_stream.synchronize()
            self.inflight = []
            self.in_stream.synchronize()
        self.host.clear()
        self.saved.clear()
        self.pending = []


FP8_MAX = 448.0  # largest finite float8_e4m3fn


def fp8_eligible(p: torch.Tensor) -> bool:
    """Weights that travel as fp8: the matrices of linear layers; norms, biases and the AdaLN
    tables (6 or 9 rows) stay in their own dtype."""
    return (not is_quantized(p) and p.dim() == 2 and min(p.shape) >= 16
            and p.dtype in (torch.bfloat16, torch.float16, torch.float32))


def quantize_fp8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float8_e4m3fn with one fp32 scale per output row (absmax / 448)."""
    wf = w.float()
    scale = wf.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / FP8_MAX
    return (wf / scale).to(torch.float8_e4m3fn), scale


def dequantize_fp8(q: torch.Tensor, scale: torch.Tensor, out: Optional[torch.Tensor] = None,
                   dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """Back to ``out``'s dtype (or ``dtype``): fp8 -> fp32, times the row scale, rounded once."""
    v = q.float().mul_(scale)
    if out is None:
        return v.to(dtype)
    out.copy_(v)
    return out


_FUSED = None


def _fused_dequantize():
    """``dequantize_fp8`` as one compiled kernel per weight shape (same arithmetic: fp8 ->
    fp32, times the row scale, one rounding), about bandwidth-bound instead of three passes
    with temporaries."""
    global _FUSED
    if _FUSED is None:
        def deq(q, scale, out):
            out.copy_(q.float() * scale)
            return out

        _FUSED = torch.compile(deq, dynamic=False)
    return _FUSED


def fp8_roundtrip(w: torch.Tensor) -> torch.Tensor:
    """What a weight becomes after travelling as fp8 (for reference runs and tests)."""
    q, s = quantize_fp8(w)
    return dequantize_fp8(q, s, dtype=w.dtype)


__all__ = ["MemoryPlan", "plan_memory", "StepSpeed", "calibrate_speed", "block_flops", "predict_step_s", "allocator_note", "BlockStreamer", "ActivationOffloader", "host_available_bytes", "module_bytes", "fp8_roundtrip", "quantize_fp8",
           "dequantize_fp8"]
