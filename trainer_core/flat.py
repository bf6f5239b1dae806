"""The LoRA's tensors in one buffer, so that the optimizer step is a few operations.

An all-attention LoRA of the 19B model is 2,304 tensors. PyTorch's clipping, norms and
AdamW take them as lists, and at batch 1 on an H200 the CPU spent about 95 ms a step walking
those lists (the ``ltx2.optimizer`` and ``ltx2.readback`` ranges of
``bench/results/engine_step_H200_round7.json``) while the GPU waited. :class:`FlatAdamW`
makes the tensors that get gradients views into one float32 buffer. After each backward their
gradients are copied into a second buffer with one multi-tensor copy (its memory held only
until the optimizer step, as the per-tensor gradients' was). Clipping, the norms and
AdamW then run over one tensor each: the same arithmetic, element by element. Measured
(``engine_step_H200_round8.json``): the optimizer range fell from 68 ms of CPU a step to
1–11 ms, the read-back's from 27 to 0.7; on a fast host the batch-1 step is now the GPU's.

What stays as it was:

- **The parameters.** They are the same ``nn.Parameter`` objects, so hooks, projection groups
  and compiled blocks see no difference. Only their storage moves, once, before the first
  optimizer step. Autograd hands each its gradient as before (no add into a view per tensor:
  that would be one kernel per tensor).
- **Tensors that get no gradient** (the audio adapters of a video-only run) stay outside the
  buffer with no gradient. AdamW never touches them (weight decay included), as with
  per-tensor AdamW. The first step finds them. Should one of them get a gradient later,
  per-tensor AdamW updates it. Should a tensor in the buffer get none in some step, the run
  goes on with per-tensor AdamW from there (the same state). No mode does either.
- **The checkpoint.** ``state_dict`` is per-tensor AdamW's own layout (an index per LoRA
  tensor, each with ``step``, ``exp_avg`` and ``exp_avg_sq``). A checkpoint of either kind
  resumes in the other.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

STATE_KEYS = ("exp_avg", "exp_avg_sq")
ALIGN = 64  # elements: each tensor starts 256 bytes into the buffer, as an allocation would


def _padded(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def largest_weight(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The largest |value| over ``tensors``, on their device (no wait for it)."""
    return torch.stack(torch._foreach_norm(tensors, float("inf"))).max()


def flat_fits(params: list[torch.Tensor], optimizer: str) -> bool:
    """Can these tensors share one buffer under this optimizer? It must be plain AdamW (8-bit
    AdamW quantizes per tensor and keeps small tensors in 32 bits, so one buffer would change
    its arithmetic), with every tensor float32, dense, on one device."""
    if optimizer != "adamw" or not params:
        return False
    dev = params[0].device
    return all(p.dtype == torch.float32 and p.layout == torch.strided and p.device == dev for p in params)


class FlatAdamW:
    """AdamW (PyTorch's, fused on CUDA) over the live tensors of ``params`` held in one buffer.
    It answers what the engine asks of an optimizer (``param_groups``, ``state``, ``step``,
    ``zero_grad``, ``state_dict``). ``state`` maps to the optimizer's own state dicts, so
    moving them to host memory and back (``engine.optimizer_offloaded``) works as before.

    Build one with :meth:`adopt`, after a backward has shown which tensors get gradients. Each
    step, :meth:`grad_tensors` gathers the gradients (call it after the backward, before
    clipping), then :meth:`step`."""

    def __init__(self, params: list[nn.Parameter], live: list[bool], group: dict,
                 states: dict[int, dict]):
        self.params = list(params)
        self.live = list(live)
        ps = self.params
        self.on = [p for p, ok in zip(ps, live) if ok]
        dev = self.on[0].device
        n = sum(_padded(p.numel()) for p in self.on)
        data = torch.zeros(n, dtype=torch.float32, device=dev)  # (the padding stays 0: AdamW keeps it 0)
        grad = torch.empty(n, dtype=torch.float32, device=dev)  # (zeroed at each gather)
        first = next((i for i, ok in enumerate(live) if ok and i in states), None)
        moments = {k: torch.zeros(n, dtype=torch.float32, device=dev) for k in STATE_KEYS} if first is not None else None
        self.spans: dict[int, tuple[int, int]] = {}
        self.gviews: list[torch.Tensor] = []
        o = 0
        with torch.no_grad():
            for i, (p, ok) in enumerate(zip(ps, live)):
                if not ok:
                    continue
                k = p.numel()
                self.spans[i] = (o, k)
                view = data[o:o + k].view_as(p)
                view.copy_(p)
                self.gviews.append(grad[o:o + k].view_as(p))
                if moments is not None:
                    for key in STATE_KEYS:
                        moments[key][o:o + k].copy_(states[i][key].reshape(-1))
                p.data = view  # the same Parameter object: only where its numbers live moves
                o += _padded(k)
        self.param = nn.Parameter(data)
        # the gradient buffer holds memory only from the gather to the optimizer step, as
        # per-tensor gradients did: its storage is freed between steps (the views stay)
        self._grad = grad
        self._grad_bytes = grad.untyped_storage().nbytes()
        grad.untyped_storage().resize_(0)
        fused = dev.type == "cuda"
        self._kw = dict(lr=group["lr"], betas=tuple(group["betas"]), eps=group["eps"],
                        weight_decay=group["weight_decay"], amsgrad=group.get("amsgrad", False), fused=fused or None)
        self.inner = torch.optim.AdamW([self.param], **self._kw)
        if moments is not None:
            step = states[first]["step"]
            step = step.detach().clone().to(torch.float32) if torch.is_tensor(step) else torch.tensor(float(step))
            self.inner.state[self.param] = {"step": step.to(dev) if fused else step.cpu(), **moments}
        # the tensors that get no gradient: per-tensor AdamW, which skips them while they get
        # none (and holds what a checkpoint kept for them)
        self.dead = [p for p, ok in zip(ps, live) if not ok]
        self.outside = torch.optim.AdamW(self.dead, **self._kw) if self.dead else None
        for i, st in states.items():
            if not live[i]:
                self.outside.state[ps[i]] = st
        self.fallback: Optional[torch.optim.Optimizer] = None  # per-tensor AdamW from a step on
        self._dead_max = None
        self._measure_dead()

    @classmethod
    def adopt(cls, opt: torch.optim.Optimizer, params: list[nn.Parameter]) -> Optional["FlatAdamW"]:
        """A FlatAdamW that takes over per-tensor AdamW ``opt`` (its settings and any state it
        holds, e.g. loaded from a checkpoint). The live tensors are those holding a gradient
        now. None where the state cannot be one buffer's: live tensors at different step
        counts, or some with state and some without (a checkpoint from a run whose tensors got
        gradients differently). The caller then keeps ``opt``."""
        params = list(params)
        live = [p.grad is not None for p in params]
        if not any(live) or len(opt.param_groups) != 1:
            return None
        states = {i: opt.state[p] for i, p in enumerate(params) if opt.state.get(p)}
        have = [i in states for i, ok in enumerate(live) if ok]
        if any(have) and not all(have):
            return None
        steps = {float(states[i]["step"]) for i, ok in enumerate(live) if ok and i in states}
        if len(steps) > 1 or any(set(st) - {"step", *STATE_KEYS} for st in states.values()):
            return None
        return cls(params, live, opt.param_groups[0], states)

    def _measure_dead(self) -> None:
        with torch.no_grad():
            self._dead_max = largest_weight(self.dead).to(self.param.device) if self.dead else None

    def _fall_back(self) -> None:
        """From now on per-tensor AdamW over every tensor, with the state held so far (the
        tensors stay views into the buffer)."""
        kw = dict(self._kw, lr=self.inner.param_groups[0]["lr"])
        opt = torch.optim.AdamW(self.params, **kw)
        for i, st in self._per_tensor().items():
            opt.state[self.params[i]] = {k: (v.clone() if k == "step" else v) for k, v in st.items()}
        self.fallback = opt

    # ------------------------------------------------------------------ optimizer

    @property
    def param_groups(self) -> list[dict]:
        if self.fallback is not None:
            return self.fallback.param_groups
        return self.inner.param_groups + (self.outside.param_groups if self.outside is not None else [])

    @property
    def state(self) -> dict:
        """Every state dict (the buffer's and any tensor's outside it), the same dict objects."""
        if self.fallback is not None:
            return self.fallback.state
        return {**self.inner.state, **(self.outside.state if self.outside is not None else {})}

    def grad_tensors(self) -> list[torch.Tensor]:
        """This step's gradients gathered into the buffer (one multi-tensor copy); what to clip
        and measure: the buffer's parameter, whose grad it is, and any tensor outside it that
        got a gradient. A tensor of the buffer without a gradient turns the run to per-tensor
        AdamW (the parameters are returned then)."""
        if self.fallback is not None:
            return self.params
        grads = [p.grad for p in self.on]
        if any(g is None for g in grads):
            self._fall_back()
            return self.params
        with torch.no_grad():
            self._grad.untyped_storage().resize_(self._grad_bytes)
            self._grad.zero_()  # (the padding between tensors: 0)
            torch._foreach_copy_(self.gviews, grads)
        for p in self.on:
            p.grad = None  # (autograd hands the next step's gradient over as a new tensor)
        self.param.grad = self._grad
        return [self.param, *(p for p in self.dead if p.grad is not None)]

    def step(self) -> None:
        if self.fallback is not None:
            self.fallback.step()
            return
        self.inner.step()
        if self.outside is not None and any(p.grad is not None for p in self.dead):
            self.outside.step()
            self._measure_dead()

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Every gradient goes, the buffer's memory with it (the next gather fills it again)."""
        for p in self.params:
            p.grad = None
        self.param.grad = None
        self._grad.untyped_storage().resize_(0)

    def largest(self) -> torch.Tensor:
        """The largest |weight| over every tensor of the LoRA, on the device, without a wait."""
        if self.fallback is not None:
            return largest_weight(self.params)
        m = self.param.detach().abs().amax()
        return m if self._dead_max is None else torch.maximum(m, self._dead_max)

    # ------------------------------------------------------------------ checkpoints

    def _per_tensor(self) -> dict[int, dict]:
        """AdamW's state per tensor index: views into the buffers, and the outside tensors' own."""
        out = {}
        if self.outside is not None:
            for i, p in enumerate(self.params):
                if not self.live[i] and self.outside.state.get(p):
                    out[i] = self.outside.state[p]
        st = self.inner.state.get(self.param)
        if st:
            for i, (o, k) in self.spans.items():
                shape = self.params[i].shape
                out[i] = {"step": st["step"], **{key: st[key][o:o + k].view(shape) for key in STATE_KEYS}}
        return out

    def state_dict(self) -> dict:
        """Per-tensor AdamW's layout (the tensors are views: copy them before keeping)."""
        if self.fallback is not None:
            return self.fallback.state_dict()
        group = {k: v for k, v in self.inner.param_groups[0].items() if k != "params"}
        group["params"] = list(range(len(self.params)))  # (last, as PyTorch writes it)
        return {"state": dict(sorted(self._per_tensor().items())), "param_groups": [group]}
