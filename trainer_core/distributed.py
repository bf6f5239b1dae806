"""Several processes, one run: data parallelism for the LoRA over torch.distributed.

Launched by ``torchrun`` (NCCL on GPUs, gloo on CPU), every process holds the whole frozen
base and the same LoRA; each optimizer step's *global* batch (``batch_size`` samples of one
bucket, the same list on every rank: the data order is drawn from (seed, epoch) alone) is cut
into contiguous shares, rank r taking global positions ``[r·b, (r+1)·b)`` with
``b = batch_size / world``. Every random draw of a sample (σ, noise, first-frame and caption
dropout) comes from a generator seeded by (seed, step, micro-batch, global position): a
sample is noised the same way whichever rank holds it and however many ranks there are.
Only the LoRA gradients are reduced (one flat buffer per step; the frozen base never is),
after which every rank holds the same gradient, takes the same optimizer step and so keeps
the same LoRA — no broadcast needed.

Two reductions:

- ``sum`` (default): each rank runs its share as one batched forward, and the flat gradient
  is all-reduced. Equal to one process at the same global batch within float tolerance
  (the batched forward and the reduction sum in another order).
- ``exact``: each sample is its own forward/backward, its gradient kept, and the per-sample
  gradients of the global batch are summed in one fixed pairwise tree over the global
  positions (each rank sums its aligned sub-tree, the partials are all-gathered and the top
  of the tree is summed on every rank alike). The same bits for any number of ranks whose
  share ``b`` is a power of two, one process included — on CPU/gloo bitwise; on GPUs as far
  as a kernel gives the same bits for a one-sample batch on every card.

Checkpoints hold what is the same on every rank (LoRA, optimizer, step, data position), so a
run saved on N ranks resumes on M at the same global batch. Only rank 0 writes files and
reports progress. A rank that dies makes the next collective fail on the others: they name
the dead rank (its process is gone), the lowest surviving rank saves the last finished step,
and the run stops with a message saying so. A rank that hangs is caught by the collective
timeout.
"""
from __future__ import annotations

import datetime
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Optional

import torch


class RankFailure(RuntimeError):
    """A collective failed: another rank died or stopped answering."""

    def __init__(self, message: str, dead: list[int], cause: Optional[BaseException] = None):
        super().__init__(message)
        self.dead, self.cause = dead, cause


@dataclass
class Dist:
    """This process's place in the run. ``Dist()`` is one process (no collectives)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    exact: bool = False  # the per-sample, fixed-tree reduction (see the module doc)
    sp: bool = False  # sequence parallel: every rank takes the whole batch and a slice of its video tokens
    backend: str = ""
    peers: list = field(default_factory=list)  # (host, pid) of every rank
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def share(self, n: int, batch_size: int) -> list[int]:
        """The global positions of a global batch of ``n`` samples (``batch_size`` when full,
        fewer at a bucket's end) that this rank computes."""
        if self.sp:
            return list(range(n))
        b = batch_size // self.world
        return list(range(min(n, self.rank * b), min(n, (self.rank + 1) * b)))

    def check_batch(self, batch_size: int) -> None:
        if self.sp:
            if self.exact:
                raise ValueError("sequence parallel (--strategy sp / fsdp2+sp) reduces its gradients with the "
                                 "all-reduce only: use --reduce sum")
            return
        if batch_size % self.world:
            raise ValueError(f"the global batch ({batch_size}) must be a multiple of the number of processes "
                             f"({self.world}): set --batch-size to {self.world * max(1, batch_size // self.world)} "
                             f"or run on a number of processes that divides it")
        b = batch_size // self.world
        if self.exact and b & (b - 1):
            raise ValueError(f"the exact reduction needs a power-of-two share per process; {batch_size} over "
                             f"{self.world} processes is {b} each. Use --reduce sum or another batch size")

    # ------------------------------------------------------------------ collectives

    def _dev(self, t: torch.Tensor) -> torch.Tensor:
        """Where a collective's buffer must live: host memory for gloo, this rank's GPU for NCCL."""
        if self.backend == "gloo":
            return t.cpu()
        if self.backend == "nccl":
            return t.to(self._flag_device())
        return t

    def _guard(self, what: str, fn):
        try:
            return fn()
        except Exception as e:  # DistBackendError, DistNetworkError, RuntimeError from gloo/NCCL
            # (a killed peer's socket can close before its process is reaped: give it a moment)
            dead = self.dead_ranks(wait_s=3.0)
            who = (", ".join(f"rank {r}" for r in dead) + (" is" if len(dead) == 1 else " are") + " gone") if dead \
                else "no rank's process is gone (one hangs or the network failed)"
            raise RankFailure(f"{what} failed on rank {self.rank}: {who} ({type(e).__name__}: {str(e)[:160]})",
                              dead, e) from e

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on any (e.g. a stop request seen by rank 0)."""
        if not self.active:
            return bool(flag)
        import torch.distributed as td

        t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self._flag_device())
        self._guard("agreeing on stop", lambda: td.all_reduce(t, op=td.ReduceOp.MAX))
        return bool(t.item())

    def _flag_device(self):
        return torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else torch.device("cpu")

    def all_reduce_sum(self, flat: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return flat
        import torch.distributed as td

        buf = self._dev(flat)
        self._guard("the gradient all-reduce", lambda: td.all_reduce(buf, op=td.ReduceOp.SUM))
        return buf.to(flat.device)

    def all_gather(self, flat: torch.Tensor) -> list[torch.Tensor]:
        if not self.active:
            return [flat]
        import torch.distributed as td

        buf = self._dev(flat.contiguous())
        out = [torch.empty_like(buf) for _ in range(self.world)]
        self._guard("the gradient all-gather", lambda: td.all_gather(out, buf))
        return [o.to(flat.device) for o in out]

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as td

            self._guard("a barrier", lambda: td.barrier())

    def dead_ranks(self, wait_s: float = 0.0) -> list[int]:
        """Ranks on this host whose process has exited (gone or a zombie); with ``wait_s``,
        asked again every 0.1 s for that long while none has."""
        host = socket.gethostname()
        deadline = time.monotonic() + wait_s
        while True:
            dead = [r for r, peer in enumerate(self.peers)
                    if r != self.rank and peer and peer[0] == host and not _alive(int(peer[1]))]
            if dead or time.monotonic() >= deadline:
                return dead
            time.sleep(0.1)

    def close(self) -> None:
        """Leave the process group this process joined. Every rank first waits for the others
        (at most 30 s: a rank that died is not waited for), so that none tears its connections
        down while another still has work in flight on them: gloo then aborted the process
        (SIGABRT, "terminate called without an active exception") in about one run in six."""
        if self.initialized_here:
            import torch.distributed as td

            if td.is_initialized():
                try:
                    if self.backend == "gloo":
                        td.monitored_barrier(timeout=datetime.timedelta(seconds=30))
                    else:
                        td.barrier()
                except Exception:
                    pass
                try:
                    td.destroy_process_group()
                except Exception:
                    pass
            self.initialized_here = False


LOCAL = Dist()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:
        pass
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def launched() -> bool:
    """Started by torchrun (or anything that sets its environment) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(exact: bool = False, backend: Optional[str] = None, timeout_s: float = 1800.0) -> Dist:
    """Join the process group torchrun's environment describes (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT); one process without it. NCCL when CUDA is there, else gloo.
    ``timeout_s``: how long a collective waits for a rank that stopped answering."""
    if not launched():
        return Dist(exact=exact)
    import torch.distributed as td

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)
    here = False
    if not td.is_initialized():
        td.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
        here = True
    d = Dist(rank=td.get_rank(), world=td.get_world_size(), local_rank=local, exact=exact, backend=backend,
             initialized_here=here)
    peers: list = [None] * d.world
    td.all_gather_object(peers, (socket.gethostname(), os.getpid()))
    d.peers = peers
    return d


def device_for(d: Dist, requested: str = "") -> torch.device:
    """This rank's device: cuda:LOCAL_RANK under NCCL, else what was asked (cpu by default)."""
    if d.backend == "nccl":
        return torch.device("cuda", d.local_rank)
    return torch.device(requested or "cpu")


# ---------------------------------------------------------------------- pooling the frozen base

def shard_base(root: torch.nn.Module, d: Dist, reshard_after_forward: bool = True) -> int:
    """Shard the frozen transformer blocks over the ranks with FSDP2 (``fully_shard``): each
    rank keeps 1/world of every block Linear's weight and gathers it for the layer's forward
    (and again for its backward). The LoRA stays whole on every rank and is reduced as under
    DDP; the frozen weights have no gradient, so nothing is reduce-scattered.

    The unit is the Linear, not the block: the LTX-2 forward calls a block's layers as modules
    (that is where LoRA hooks in) but the block itself through a function, so a layer is where
    FSDP's hooks fire. Weights outside the blocks (patchify, AdaLN, text connectors: a few
    percent) stay whole. Returns the number of sharded layers."""
    if not d.active:
        return 0
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    dev = "cuda" if d.backend == "nccl" else "cpu"
    mesh = init_device_mesh(dev, (d.world,))
    n = 0
    for block in getattr(root, "transformer_blocks", []):
        for m in block.modules():
            if isinstance(m, torch.nn.Linear):
                fully_shard(m, mesh=mesh, reshard_after_forward=reshard_after_forward)
                n += 1
    return n


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """A sharded (DTensor) weight gathered whole; a plain tensor as it is. Collective under
    FSDP: every rank calls it for the same tensors in the same order."""
    f = getattr(t, "full_tensor", None)
    return f() if callable(f) else t


# ---------------------------------------------------------------------- per-sample draws

def _mix(*xs: int) -> int:
    from .engine import _mix as m

    return m(*xs)


def sample_seed(seed: int, step: int, micro: int, j: int) -> int:
    """The seed of global sample ``j`` of micro-batch ``micro`` of step ``step``. Sample 0
    keeps the seed one-sample runs always had."""
    return _mix(seed, step, micro) if j == 0 else _mix(seed, step, micro, 2, j)


def sample_generator(seed: int, step: int, micro: int, j: int, device="cpu") -> torch.Generator:
    """The generator every random draw of one global sample comes from (σ, noise, first-frame
    and caption dropout, or a mode's draws)."""
    return torch.Generator(device=device).manual_seed(sample_seed(seed, step, micro, j))


def dropout_seed(seed: int, step: int, micro: int, k: int) -> int:
    """Seed of the global RNG for LoRA dropout in one forward: per sample (``k`` = its global
    position) under the exact reduction, per rank under ``sum`` (dropout > 0 then differs with
    the number of ranks)."""
    return _mix(seed, step, micro, 1) if k == 0 else _mix(seed, step, micro, 1, k)


def concat_samples(parts: list):
    """One batch from per-sample inputs: tensors joined along dim 0 (the batch), dicts and
    dataclasses field by field, anything else (mode, grid, fps) equal in every part."""
    import dataclasses

    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    if torch.is_tensor(first):
        return torch.cat(parts, dim=0)
    if first is None:
        if any(p is not None for p in parts):
            raise ValueError("samples of one batch differ in which inputs they have")
        return None
    if dataclasses.is_dataclass(first) and not isinstance(first, type):
        vals = {f.name: concat_samples([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(first)
                if f.init}
        return type(first)(**vals)
    if isinstance(first, dict):
        return {k: concat_samples([p[k] for p in parts]) for k in first}
    if any(p != first for p in parts[1:]):
        raise ValueError(f"samples of one batch differ in {first!r}; they cannot share a forward")
    return first


# ---------------------------------------------------------------------- gradients

def flat_grads(params: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params])


def set_grads(params: list[torch.Tensor], flat: torch.Tensor, had: Optional[list] = None) -> None:
    """Write a reduced flat gradient back. ``had[i]`` false: no rank computed a gradient for
    parameter i (an adapter the mode never uses) — it keeps none, so the optimizer skips it
    as one process would (weight decay included)."""
    o = 0
    for i, p in enumerate(params):
        n = p.numel()
        if had is not None and not had[i]:
            p.grad = None
            o += n
            continue
        g = flat[o:o + n].view_as(p).to(p.dtype)
        if p.grad is None:
            p.grad = g.clone()
        else:
            p.grad.copy_(g)
        o += n


def tree_sum(xs: list[torch.Tensor]) -> torch.Tensor:
    """Pairwise sum, level by level (neighbours added, an odd last one carried up): the
    fixed order the exact reduction uses on every rank and in one process."""
    xs = list(xs)
    while len(xs) > 1:
        xs = [xs[i] + xs[i + 1] if i + 1 < len(xs) else xs[i] for i in range(0, len(xs), 2)]
    return xs[0]


def exact_reduce(d: Dist, per_micro: list[list[torch.Tensor]], share: int, size: int, device=None) -> torch.Tensor:
    """Sum of every rank's per-sample flat gradients (``per_micro[m]``: this rank's samples of
    micro-batch m in order, padded with zeros to ``share``), the same bits on every rank: each
    rank's aligned sub-tree, all-gathered, the top of the tree, micro-batches added in order."""
    partials = []
    for leaves in per_micro:
        leaves = list(leaves)
        while len(leaves) < share:
            leaves.append(torch.zeros(size, dtype=torch.float32, device=device))
        partials.append(tree_sum(leaves))
    stacked = torch.stack(partials)
    gathered = d.all_gather(stacked)  # [world] x [micro, P]
    total = None
    for m in range(len(per_micro)):
        s = tree_sum([g[m] for g in gathered])
        total = s if total is None else total + s
    return total


# ---------------------------------------------------------------------- sequence parallel (Ulysses)

def _seq_to_heads(x: torch.Tensor, world: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, n, H, D] (this rank's tokens, every head) -> the send buffer [W, B, n, H/W, D]."""
    B, n, H, D = x.shape
    return x.reshape(B, n, world, H // world, D).permute(2, 0, 1, 3, 4).contiguous()


def _a2a(buf: torch.Tensor, d: Dist) -> torch.Tensor:
    import torch.distributed as td

    src = d._dev(buf)
    out = torch.empty_like(src)
    d._guard("the sequence-parallel all-to-all", lambda: td.all_to_all_single(out, src))
    return out.to(buf.device)


def seq_to_heads(x: torch.Tensor, d: Dist) -> torch.Tensor:
    """All-to-all: [B, N/W, H, D] sharded over tokens -> [B, N, H/W, D] sharded over heads."""
    B, n, H, D = x.shape
    got = _a2a(_seq_to_heads(x, d.world), d)  # [W_src, B, n, H/W, D]: source s holds tokens s·n…
    return got.permute(1, 0, 2, 3, 4).reshape(B, d.world * n, H // d.world, D)


def heads_to_seq(x: torch.Tensor, d: Dist) -> torch.Tensor:
    """The inverse: [B, N, H/W, D] sharded over heads -> [B, N/W, H, D] sharded over tokens."""
    B, N, h, D = x.shape
    n = N // d.world
    buf = x.reshape(B, d.world, n, h, D).permute(1, 0, 2, 3, 4).contiguous()  # to rank w: its tokens
    got = _a2a(buf, d)  # [W_src, B, n, h, D]: source s holds head group s
    return got.permute(1, 2, 0, 3, 4).reshape(B, n, d.world * h, D)


class _SeqToHeads(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, d):
        ctx.d = d
        return seq_to_heads(x, d)

    @staticmethod
    def backward(ctx, g):
        return heads_to_seq(g.contiguous(), ctx.d), None


class _HeadsToSeq(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, d):
        ctx.d = d
        return heads_to_seq(x, d)

    @staticmethod
    def backward(ctx, g):
        return seq_to_heads(g.contiguous(), ctx.d), None


def ulysses_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, d: Dist, attn=None) -> torch.Tensor:
    """Self-attention over a token sequence sharded across the ranks (DeepSpeed-Ulysses):
    q, k, v are this rank's tokens ``[B, N/W, H, D]`` (RoPE already applied at their global
    positions); two all-to-alls give each rank the whole sequence for H/W heads, attention runs
    there, and one all-to-all brings the output back to this rank's tokens ``[B, N/W, H, D]``.
    Differentiable (the backward of an all-to-all is the inverse one). ``attn(q, k, v)`` takes
    and returns ``[B, heads, N, D]`` (default: SDPA). Needs H divisible by the world size."""
    if not d.active:
        qh, kh, vh = q, k, v
    else:
        if q.shape[2] % d.world:
            raise ValueError(f"sequence parallel over {d.world} processes needs the head count ({q.shape[2]}) "
                             "to be a multiple of it")
        qh, kh, vh = (_SeqToHeads.apply(t, d) for t in (q, k, v))
    attn = attn or torch.nn.functional.scaled_dot_product_attention
    o = attn(qh.transpose(1, 2), kh.transpose(1, 2), vh.transpose(1, 2)).transpose(1, 2)
    return _HeadsToSeq.apply(o.contiguous(), d) if d.active else o


# ---------------------------------------------------------------------- sequence parallel (the forward)
#
# With ``Dist.sp`` every rank of the run is one sequence-parallel group (data-parallel degree 1):
# all ranks take the same whole batch, and the LTX-2 forward (trainer_core.ltx2.forward) keeps on
# each rank a contiguous slice of the video tokens (with their σ, AdaLN index and RoPE tables).
# Video self-attention goes through ulysses_attention; text cross-attention and audio→video
# (video queries, the replicated audio as keys) need no communication; video→audio gathers the
# video keys/values (gather_seq); the video output is gathered at the end, so every rank computes
# the same loss over the whole sequence. The backward of a gather sums the gradients of all
# ranks (a reduce-scatter), which makes every rank's LoRA gradient world× its share: the engine
# all-reduces them and divides by the world size.


def seq_slice(n: int, d: Dist) -> slice:
    """This rank's contiguous part of ``n`` tokens (``n`` must be a multiple of the world size)."""
    if n % d.world:
        raise ValueError(f"sequence parallel over {d.world} processes needs a video token count that is a multiple of "
                         f"it; this bucket has {n} tokens (frames × height/32 × width/32): pick a resolution or a "
                         f"frame count that gives a multiple of {d.world}, or run data parallel (--strategy ddp)")
    k = n // d.world
    return slice(d.rank * k, (d.rank + 1) * k)


def _gather1(x: torch.Tensor, d: Dist) -> torch.Tensor:
    import torch.distributed as td

    buf = d._dev(x.contiguous())
    out = [torch.empty_like(buf) for _ in range(d.world)]
    d._guard("the sequence-parallel all-gather", lambda: td.all_gather(out, buf))
    return torch.cat([o.to(x.device) for o in out], dim=1)


def _reduce_scatter1(g: torch.Tensor, d: Dist) -> torch.Tensor:
    """[B, N, ...] on every rank -> [B, N/W, ...]: the sum over ranks of this rank's slice (an
    all-to-all, which gloo has, where it lacks reduce-scatter)."""
    B, N = g.shape[:2]
    n = N // d.world
    buf = g.reshape(B, d.world, n, *g.shape[2:]).movedim(1, 0).contiguous()  # to rank w: its slice
    got = _a2a(buf, d)  # [W_src, B, n, ...]
    return got.sum(dim=0, dtype=torch.float32).to(g.dtype) if g.dtype in (torch.bfloat16, torch.float16) \
        else got.sum(dim=0)


class _GatherSeq(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, d):
        ctx.d = d
        return _gather1(x, d)

    @staticmethod
    def backward(ctx, g):
        return _reduce_scatter1(g.contiguous(), ctx.d), None


def gather_seq(x: torch.Tensor, d: Dist) -> torch.Tensor:
    """[B, N/W, ...] token slices -> [B, N, ...] on every rank; differentiable (the backward
    sums every rank's gradient of this rank's slice)."""
    return _GatherSeq.apply(x, d) if d.active else x
