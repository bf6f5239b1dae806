"""The whole training step — forward, loss, backward, clipping, AdamW — as one CUDA graph.

At small buckets the step is bound by the host, not the GPU: at 512×512×33 on an H200 the
GPU is busy about 201 ms of a 232 ms step while the CPU walks the blocks' graph replays,
their guards and the optimizer. Captured once and replayed, the step issues nothing per
block: 0.2004 s against 0.2318 s a step in the same process, with the same loss at every one
of 23 updates from the same start (relative difference at most 2.3e-4,
``bench/results/step_graph_H200_round11.json``).

How a step runs under :class:`StepGraph`:

- Each step's inputs are built as always (noise, timesteps, captions: drawn eagerly, as the
  plain loop draws them), and their captions go through the frozen connectors eagerly too
  (``predict.connected_inputs``): after them every caption of up to 1024 tokens has one
  length. The inputs' *signature* — every tensor's shape and dtype, the values of tensors in
  host memory (which a step reads as numbers), every other value (grids, fps, the mode) —
  says which graph fits them.
- A signature's first ``warmup`` steps run eagerly on a side stream: they compile the blocks
  and settle the allocator, and they are real training steps. The next one is captured (a
  capture records without running) and then replayed: that replay is the step.
- A later step of that signature copies its tensors into the captured inputs and replays.
  The LoRA, the optimizer's moments and the learning rate live outside the graph, where the
  capture saw them; the loss, the per-stream sums, the gradient norm and the largest weight
  come back as one tensor, read later as the plain loop reads them.
- One graph at a time, for the signature seen most often: two would each hold a whole step's
  activations. A step of another shape (an epoch's last, smaller batch; a clip without
  sound) frees the graph, runs eagerly, and the next step of the graph's shape captures it
  again. Where that happens more than once every 20 steps (several buckets), the graph goes
  off for the rest of the run, with a notice. A moved tensor (the model's or the
  optimizer's: weights reloaded, state offloaded) frees it too, and so does :meth:`drop`
  before sampling previews (they need that memory). After a drop, one eager step comes
  before the next capture.
- Where the capture itself fails (an operation that waits for the host inside the step),
  the step runs eagerly, the graph is off for the run, and ``notes`` says why.

What the captured step needs of the optimizer: AdamW, fused and ``capturable`` (its step
counts on the device), with its learning rate a device tensor that :func:`set_lr` fills
(a float would be frozen into the graph). :func:`graph_optimizer` builds it; its state dict
is PyTorch AdamW's, so checkpoints resume in either loop.

On the CPU there is nothing to capture: ``capture=False`` runs the same path — signatures,
static inputs, warm-up, replays of the step function on the copied inputs — eagerly (the
engine's tests compare it with the plain loop).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import torch

WARMUP = 2  # eager steps of a signature before its capture (compile, allocator, autograd's streams)


def graph_optimizer(params, lr: float, betas, weight_decay: float, device: torch.device):
    """PyTorch's AdamW as a captured step needs it: fused, capturable on CUDA, its learning
    rate a tensor on the parameters' device (:func:`set_lr`). On the CPU (the dry run) the
    plain loop's AdamW, so that the two loops can be compared exactly."""
    cuda = device.type == "cuda"
    return torch.optim.AdamW(list(params), lr=torch.tensor(float(lr), device=device) if cuda else float(lr),
                             betas=tuple(betas), weight_decay=weight_decay, fused=True if cuda else None,
                             capturable=cuda)


def set_lr(opt, value: float) -> None:
    """Set every group's learning rate; a tensor one is filled in place (where a graph reads it)."""
    for g in opt.param_groups:
        lr = g["lr"]
        if torch.is_tensor(lr):
            lr.fill_(float(value))
        else:
            g["lr"] = float(value)


def tensor_lr(opt, device: torch.device) -> None:
    """After ``load_state_dict`` (which brings the checkpoint's float learning rate): the
    learning rate back to a device tensor, for a capturable optimizer."""
    if device.type != "cuda":
        return
    for g in opt.param_groups:
        if not torch.is_tensor(g["lr"]):
            g["lr"] = torch.tensor(float(g["lr"]), device=device)


def _walk(obj, tensors: list, shape: list, host_values: bool):
    """Flatten a step's inputs (dataclasses, dicts, lists, tuples, tensors) into their tensors
    (appended to ``tensors``) and a hashable signature of everything else (into ``shape``)."""
    if torch.is_tensor(obj):
        tensors.append(obj)
        shape.append(("T", tuple(obj.shape), str(obj.dtype), obj.device.type))
        if host_values and obj.device.type == "cpu":
            # in host memory beside a GPU step: read as numbers (caption lengths), which a capture keeps
            shape.append(("C", tuple(obj.reshape(-1).tolist()) if obj.numel() <= 4096 else id(obj)))
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        if getattr(type(obj), "__dataclass_params__").frozen:  # a value (the training mode)
            shape.append(("V", obj))
        else:
            shape.append(("D", type(obj).__name__))
            for f in dataclasses.fields(obj):
                _walk(getattr(obj, f.name), tensors, shape, host_values)
    elif isinstance(obj, dict):
        shape.append(("M", tuple(obj)))
        for v in obj.values():
            _walk(v, tensors, shape, host_values)
    elif isinstance(obj, (list, tuple)):
        shape.append(("L", len(obj)))
        for v in obj:
            _walk(v, tensors, shape, host_values)
    else:
        shape.append(("V", obj))


def flatten_inputs(inputs, device_type: str = "cpu") -> tuple[list[torch.Tensor], tuple]:
    """(the tensors of ``inputs``, their signature) for a step on ``device_type``."""
    tensors: list[torch.Tensor] = []
    shape: list = []
    _walk(inputs, tensors, shape, host_values=device_type != "cpu")
    return tensors, tuple(shape)


def _static_copy(inputs):
    """The inputs with each tensor replaced by a fresh contiguous copy (the captured buffers:
    one per distinct tensor, so that fields sharing a tensor still share it)."""
    memo: dict[int, torch.Tensor] = {}

    def copy(obj):
        if torch.is_tensor(obj):
            if id(obj) not in memo:
                memo[id(obj)] = obj.detach().clone(memory_format=torch.contiguous_format)
            return memo[id(obj)]
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            if getattr(type(obj), "__dataclass_params__").frozen:
                return obj
            return dataclasses.replace(obj, **{f.name: copy(getattr(obj, f.name))
                                               for f in dataclasses.fields(obj) if f.init})
        if isinstance(obj, dict):
            return {k: copy(v) for k, v in obj.items()}
        if isinstance(obj, tuple):
            return tuple(copy(v) for v in obj)
        if isinstance(obj, list):
            return [copy(v) for v in obj]
        return obj

    return copy(inputs)


class StepGraph:
    """One training step replayed as a CUDA graph (see the module's docstring).

    ``body(inputs) -> vals``: the whole step on ``inputs`` — forward, loss, backward,
    clipping, optimizer step — returning one device tensor of the numbers the loop reads.
    It must unset the gradients first and last (the capture needs them unset, and a capture
    that fails part-way may leave some behind).
    ``watched()``: the tensors whose storage the graph bakes in (the model's weights, the
    LoRA, the optimizer's state); a step that finds one moved captures again."""

    def __init__(self, body: Callable[[Any], torch.Tensor], watched: Callable[[], list], *,
                 capture: bool, warmup: int = WARMUP):
        self.body, self.watched = body, watched
        self.capture, self.warmup = capture, max(1, int(warmup))
        self.signature: Optional[tuple] = None  # the graph's: the shape seen most often
        self.counts: dict[tuple, int] = {}  # steps of each signature
        self.eager_runs: dict[tuple, int] = {}  # eager steps of each signature (its compile, its warm-up)
        self.settled = False  # an eager step since the last drop (the allocator and libraries settled)
        self.static = None  # the captured inputs
        self.static_tensors: list[torch.Tensor] = []
        self.graph = None
        self.out: Optional[torch.Tensor] = None
        self.pointers: Optional[tuple] = None
        self.off: Optional[str] = None  # why the graph is off for the rest of the run
        self.notes: list[str] = []
        self.steps = 0
        self.captures = 0
        self.replays = 0
        self.eager = 0
        self.drops = 0  # graphs freed for a step of another shape

    def _pointers(self) -> tuple:
        return tuple(t.data_ptr() for t in self.watched())

    def ready(self) -> bool:
        """A captured step is waiting for replays (on the CPU: the copied inputs are)."""
        return self.graph is not None or (not self.capture and self.static is not None)

    def drop(self) -> None:
        """Free the graph and its memory. The next step of its shape runs eagerly, the one
        after is captured again."""
        self.graph = self.out = self.static = None
        self.static_tensors = []
        self.pointers = None
        self.settled = False
        if self.capture and torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.empty_cache()

    def _turn_off(self, why: str) -> None:
        self.drop()
        self.off = why
        self.notes.append(f"whole-step CUDA graph off for the rest of the run: {why}")

    def step(self, inputs, before: Optional[Callable[[], Any]] = None) -> torch.Tensor:
        """One training step on ``inputs``; returns the step's numbers (a device tensor).
        ``before()`` runs once the checks are done, just before the step is queued (the engine
        reads the last step's numbers there: after it, the LoRA in memory is this step's).

        The graph holds the signature seen most often. A step of another shape (the last,
        smaller batch of an epoch; a clip without sound) frees the graph and runs eagerly, and
        the next step of the graph's shape captures again. Should that happen more than
        once every 20 steps (after the first few), one graph does not suit the run: it goes off."""
        before = before or (lambda: None)
        if self.off is not None:
            before()
            self.eager += 1
            return self.body(inputs)
        tensors, sig = flatten_inputs(inputs, "cuda" if self.capture else "cpu")
        self.steps += 1
        self.counts[sig] = self.counts.get(sig, 0) + 1
        if self.signature is None or (sig != self.signature and self.counts[sig] > self.counts[self.signature]):
            if self.ready():
                self.drop()  # another shape has become the run's most common
            self.signature = sig
        if sig != self.signature:  # a step of another shape: eagerly, with the graph's memory
            if self.ready():
                self.drop()
                self.drops += 1
                if self.drops > max(2, self.steps // 20):
                    self._turn_off(f"the steps' inputs change shape too often for one graph ({self.drops} times in "
                                   f"{self.steps} steps: several buckets, or batches of several sizes), and each "
                                   "graph would hold a whole step's activations")
            before()
            return self._eager(inputs, sig)
        if self.ready():
            if self._pointers() != self.pointers:  # weights or optimizer state moved since the capture
                self.drop()
            else:
                before()
                with torch.no_grad():
                    for dst, src in zip(self.static_tensors, tensors):
                        dst.copy_(src, non_blocking=True)
                return self._replay()
        before()
        if not self.settled or self.eager_runs.get(sig, 0) < self.warmup:
            return self._eager(inputs, sig)
        return self._record(inputs)

    def _eager(self, inputs, sig) -> torch.Tensor:
        self.eager += 1
        self.eager_runs[sig] = self.eager_runs.get(sig, 0) + 1
        self.settled = True
        return self._warm(inputs)

    def _warm(self, inputs) -> torch.Tensor:
        if not self.capture:
            return self.body(inputs)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            out = self.body(inputs)
        torch.cuda.current_stream().wait_stream(side)
        return out

    def _record(self, inputs) -> torch.Tensor:
        self.static = _static_copy(inputs)
        self.static_tensors, _ = flatten_inputs(self.static)  # (the order of ``step``'s)
        self.pointers = self._pointers()
        if not self.capture:  # the CPU: the same path, nothing recorded
            self._captured()
            return self._replay()
        # (entering the capture waits for the device and empties the cache: what the eager
        # steps cached goes back, for the graph's own pool)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                out = self.body(self.static)
        except Exception as e:  # an operation a capture cannot hold: this step runs eagerly
            graph = None
            self._turn_off(f"the capture failed ({type(e).__name__}: {str(e)[:200]})")
            self.eager += 1
            return self.body(inputs)
        self.graph, self.out = graph, out
        self._captured()
        return self._replay()

    def _captured(self) -> None:
        self.captures += 1
        if self.captures == 1:
            self.notes.append(f"the training step runs as one CUDA graph from here on (captured after {self.warmup} "
                              "eager steps; LTX2_TRAINER_STEP_GRAPH)")

    def _replay(self) -> torch.Tensor:
        self.replays += 1
        if self.graph is None:  # the CPU
            return self.body(self.static)
        self.graph.replay()
        return self.out.clone()  # (the next replay overwrites ``out``)

    def report(self) -> dict:
        return {"captures": self.captures, "replays": self.replays, "eager_steps": self.eager, "off": self.off,
                "dropped_for_other_shapes": self.drops}
