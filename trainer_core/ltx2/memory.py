"""Memory plan and weight streaming for the LTX-2 training forward.

A :class:`MemoryPlan` says, per transformer block, how its activations are kept for
backward and where its frozen weights live:

- ``keep``: activations stay resident (no recomputation; fastest, most memory).
- ``full``: only the block's input is kept; the block is recomputed in backward
  (per-block activation checkpointing).
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

import math
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
FULL_B_PER_TOKEN = 4096 * 2 + 512  # the block's input (bf16 video stream; audio rides along)
WORK_B_PER_TOKEN = 260_000
RESERVE_BYTES = int(1.25 * GIB)  # allocator slack, cuBLAS/cuDNN workspaces, CUDA context excluded


def module_bytes(m: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in m.parameters()) + \
        sum(b.numel() * b.element_size() for b in m.buffers())


@dataclass
class MemoryPlan:
    modes: list[str]  # per block: "keep" | "full"
    streamed: list[int] = field(default_factory=list)
    budget_gib: Optional[float] = None
    expected_peak_gib: float = 0.0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        n = len(self.modes)
        keep = self.modes.count("keep")
        parts = [f"{keep}/{n} blocks keep activations, {n - keep} recompute in backward"]
        if self.streamed:
            parts.append(f"{len(self.streamed)} blocks stream their weights from host memory")
        else:
            parts.append("all weights resident")
        b = f"budget {self.budget_gib:.1f} GiB" if self.budget_gib else "no budget"
        return f"memory plan ({b}): " + "; ".join(parts) + f"; expected peak ≈ {self.expected_peak_gib:.1f} GiB"

    def to_dict(self) -> dict:
        return {"modes": self.modes, "streamed": self.streamed, "budget_gib": self.budget_gib,
                "expected_peak_gib": round(self.expected_peak_gib, 2), "notes": self.notes}


def plan_memory(blocks: Sequence[nn.Module] | nn.Module, other_bytes: int, video_tokens: int, audio_tokens: int = 0,
                budget_gib: Optional[float] = None, trainable_bytes: int = 0, compiled: bool = False,
                block_bytes: Optional[Sequence[int]] = None, allow_keep: bool = True,
                stream_for_speed: bool = True) -> MemoryPlan:
    """The plan for a VRAM budget.

    blocks: the transformer blocks (or a ModuleList); ``other_bytes``: every other frozen
    weight that stays resident (embeddings, connectors, projections); ``trainable_bytes``:
    LoRA weights + gradients + optimizer state on the device. ``budget_gib=None`` means
    resident weights with as many ``keep`` blocks as an 80 GiB-class card would not need —
    i.e. no limit: all blocks keep. The plan first streams as few blocks as the weights
    need, then spends what is left on ``keep`` blocks (spread evenly), everything else
    recomputes.
    """
    blocks = list(blocks)
    n = len(blocks)
    sizes = list(block_bytes) if block_bytes is not None else [module_bytes(b) for b in blocks]
    tokens = video_tokens + audio_tokens
    keep_b = (KEEP_COMPILED_B_PER_TOKEN if compiled else KEEP_EAGER_B_PER_TOKEN) * tokens
    full_b = FULL_B_PER_TOKEN * tokens
    work_b = WORK_B_PER_TOKEN * tokens
    fixed = other_bytes + trainable_bytes + work_b + RESERVE_BYTES
    notes: list[str] = []
    if budget_gib is None:
        modes = ["keep" if allow_keep else "full"] * n
        peak = fixed + sum(sizes) + n * (keep_b if allow_keep else full_b)
        return MemoryPlan(modes, [], None, peak / GIB, notes)
    budget = budget_gib * GIB
    # 1) weights: stream the fewest blocks that make everything fit with all blocks "full"
    base = fixed + n * full_b
    streamed: list[int] = []
    resident = sum(sizes)
    slot = max(sizes) if sizes else 0
    if base + resident > budget:
        for k in range(1, n + 1):
            idx = _spread(n, k)
            res = resident - sum(sizes[i] for i in idx) + 2 * slot
            if base + res <= budget:
                streamed = idx
                resident = res
                break
        else:
            streamed = list(range(n))
            resident = 2 * slot
            notes.append("even with every block streamed the plan exceeds the budget; expect out-of-memory "
                         "unless the batch or the bucket shrinks")
    # 2) activations: spend the rest on "keep" (never for streamed blocks)
    left = budget - base - resident
    candidates = [i for i in range(n) if i not in set(streamed)]
    extra = max(1, keep_b - full_b)
    k_keep = 0 if not allow_keep else max(0, min(len(candidates), int(left // extra)))
    keep_idx = set(candidates[j] for j in _spread(len(candidates), k_keep)) if k_keep else set()
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
            need = base + total - s_n * slot + 2 * slot + k * extra
            if need <= budget:
                best = k
                break
        if best is not None:
            keep_idx = set(_spread(n, best))
            streamed = [i for i in range(n) if i not in keep_idx]
            k_keep = best
            resident = total - len(streamed) * slot + 2 * slot
            notes.append(f"{len(streamed)} recomputed blocks stream their weights so that {best} blocks can keep "
                         "their activations")
    modes = ["keep" if i in keep_idx else "full" for i in range(n)]
    peak = base + resident + k_keep * extra
    return MemoryPlan(modes, streamed, float(budget_gib), peak / GIB, notes)


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
                 pin: bool = True):
        self.blocks = list(blocks)
        self.streamed = sorted(set(int(i) for i in streamed))
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.params: dict[int, list[tuple[nn.Parameter, torch.Tensor]]] = {}
        self.origin: dict[int, list[torch.device]] = {}
        layout = None
        for i in self.streamed:
            items = []
            names = []
            for name, p in self.blocks[i].named_parameters():
                if p.requires_grad:
                    raise ValueError(f"block {i} parameter {name} is trainable; only frozen weights can be streamed")
                host = p.detach().to("cpu", copy=True)
                if pin and self.cuda:
                    host = host.pin_memory()
                items.append((p, host))
                names.append((name, tuple(p.shape), p.dtype))
            if layout is None:
                layout = names
            elif names != layout:
                raise ValueError("streamed blocks must share one parameter layout")
            self.origin[i] = [p.device for p, _ in items]
            self.params[i] = items
            for p, host in items:
                p.data = host  # the device copy is released here
        self.layout = layout or []
        # two slots: one flat buffer per dtype, with a view per parameter
        self.slots: list[list[torch.Tensor]] = []
        for _ in range(2 if self.streamed else 0):
            views = [torch.empty(shape, dtype=dt, device=self.device) for _, shape, dt in self.layout]
            self.slots.append(views)
        self.holder: list[Optional[int]] = [None, None]
        self.slot_of: dict[int, int] = {}
        self.last_slot = 1
        self.side = torch.cuda.Stream(device=self.device) if self.cuda and self.streamed else None
        self.ready: list[Optional[torch.cuda.Event]] = [None, None]
        self.copies = 0  # blocks copied in (for tests and reports)

    # -------------------------------------------------------------------------------
    def _next(self, i: int, backward: bool) -> Optional[int]:
        if backward:
            cands = [j for j in self.streamed if j < i]
            return cands[-1] if cands else None
        cands = [j for j in self.streamed if j > i]
        return cands[0] if cands else None

    def _unbind(self, j: int) -> None:
        for p, host in self.params[j]:
            p.data = host
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
                for (p, host), view in zip(self.params[j], views):
                    view.copy_(host, non_blocking=True)
                self.ready[s] = self.side.record_event()
        else:
            for (p, host), view in zip(self.params[j], views):
                view.copy_(host)
        self.holder[s] = j
        self.slot_of[j] = s
        self.copies += 1

    def enter(self, i: int) -> None:
        backward = torch._C._current_graph_task_id() != -1
        if i in self.params:
            s = self.slot_of.get(i)
            if s is None:  # not prefetched (first block, or a jump): load now into the other slot
                s = 1 - self.last_slot
                self._load(i, s)
            if self.cuda and self.ready[s] is not None:
                torch.cuda.current_stream(self.device).wait_event(self.ready[s])
            for (p, _), view in zip(self.params[i], self.slots[s]):
                p.data = view
            self.last_slot = s
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

    def restore(self) -> None:
        """Every streamed weight back on its original device; slots freed."""
        for j in list(self.slot_of):
            self._unbind(j)
        for i, items in self.params.items():
            for (p, host), dev in zip(items, self.origin[i]):
                p.data = host.to(dev)
        self.params.clear()
        self.slots.clear()
        self.holder = [None, None]
        self.streamed = []

    def weight_bytes_on_host(self) -> int:
        return sum(h.numel() * h.element_size() for items in self.params.values() for _, h in items)


__all__ = ["MemoryPlan", "plan_memory", "BlockStreamer", "module_bytes"]
