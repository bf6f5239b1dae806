"""A rank of a multi-process toy run, started by test_distributed in a spawned process (gloo).

Trains test_engine's toy transformer with the engine's distributed path and writes what it
ended with (the LoRA, or the stop message) to ``out/rank<r>.*``.
"""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path


def run(rank: int, world: int, port: int, spec: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    import torch

    torch.set_num_threads(1)
    from safetensors.torch import save_file

    from tests.core.test_engine import ToyRoot, ToySource, cfg, toy_predict
    from trainer_core import distributed as D
    from trainer_core import engine as en

    out = Path(spec["out"])
    d = D.init(exact=spec.get("exact", False), backend="gloo", timeout_s=spec.get("timeout", 60))
    predict = toy_predict
    kill = spec.get("kill")  # [rank, forward call] at which that rank kills itself
    if kill and kill[0] == rank:
        calls = [0]

        def predict(root, inputs):
            calls[0] += 1
            if calls[0] >= kill[1]:
                os.kill(os.getpid(), signal.SIGKILL)
            return toy_predict(root, inputs)

    tr = en.Trainer(ToyRoot(), predict, ToySource(n=spec.get("n", 6)), cfg(**spec["cfg"]), spec["run_dir"],
                    batch_size=spec["batch"], dist=d)
    ck = None
    if spec.get("resume"):
        tensors, meta = en.read_checkpoint(Path(spec["resume"]))
        ck = en.LoadedCheckpoint(Path(spec["resume"]), tensors, meta)
    try:
        res = tr.train(resume_from=ck)
        save_file({k: v.contiguous() for k, v in res.lora.state_dict().items()}, str(out / f"rank{rank}.safetensors"))
    except en.TrainingStopped as e:
        (out / f"rank{rank}.json").write_text(json.dumps({"reason": e.reason, "message": str(e), "step": e.step,
                                                          "checkpoint": e.checkpoint}))
    finally:
        d.close()


def sp_check(rank: int, world: int, port: int, spec: dict) -> None:
    """Ulysses attention on this rank's quarter of a sequence vs full attention in one process:
    the output and the q/k/v gradients of this rank's tokens."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    import torch

    torch.set_num_threads(1)
    from trainer_core import distributed as D

    d = D.init(backend="gloo", timeout_s=60)
    g = torch.Generator().manual_seed(0)
    B, N, H, Dh = 2, 12, 4, 8
    q, k, v, up = (torch.randn(B, N, H, Dh, generator=g, dtype=torch.float64) for _ in range(4))
    sdpa = torch.nn.functional.scaled_dot_product_attention
    full = [t.clone().requires_grad_(True) for t in (q, k, v)]
    ref = sdpa(*(t.transpose(1, 2) for t in full)).transpose(1, 2)
    (ref * up).sum().backward()
    n = N // world
    sl = slice(rank * n, (rank + 1) * n)
    mine = [t[:, sl].clone().requires_grad_(True) for t in (q, k, v)]
    out = D.ulysses_attention(*mine, d)
    (out * up[:, sl]).sum().backward()
    err = max([(out - ref[:, sl]).abs().max().item()]
              + [(m.grad - f.grad[:, sl]).abs().max().item() for m, f in zip(mine, full)])
    Path(spec["out"], f"sp{rank}.json").write_text(json.dumps({"err": err, "shape": list(out.shape)}))
    d.close()


def sp_forward_check(rank: int, world: int, port: int, spec: dict) -> None:
    """The LTX-2 forward with sequence parallelism over the video tokens on this rank vs the
    one-process forward (both here, float64, tiny trees): the video and audio outputs, and the
    LoRA gradients after the engine's reduction (all-reduce, divided by the world size)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    import torch

    torch.set_num_threads(1)
    from tests.core.test_ltx2_forward import _loss, _random_lora, step_inputs, tiny_config
    from trainer_core import distributed as D
    from trainer_core.ltx2 import build_tree, make_predict

    d = D.init(backend="gloo", timeout_s=60)
    d.sp = True
    rep = {}
    for variant, mode, checkpointing in spec["cases"]:
        c = tiny_config(variant)
        root = build_tree(c, seed=5, dtype=torch.float64)
        lora = _random_lora(root, "all attention + feed-forward", seed=2).double()
        inp = step_inputs(c, mode, B=2, F=2, H=2, W=3, T=5, seed=4)

        def run(sp):
            lora.zero_grad(set_to_none=True)
            v, a = make_predict(checkpointing=checkpointing, sp=sp)(root, inp)
            _loss(inp, v, a).backward()
            grads = {n: torch.cat([lora.adapter(n).lora_A.grad.flatten(), lora.adapter(n).lora_B.grad.flatten()])
                     for n in lora.names if lora.adapter(n).lora_A.grad is not None}
            return v, a, grads

        v1, a1, g1 = run(None)
        v2, a2, g2 = run(d)
        flat = torch.cat([g2[n] for n in sorted(g2)])
        red = d.all_reduce_sum(flat) / world  # what the engine does with a sequence-parallel gradient
        o, g2r = 0, {}
        for n in sorted(g2):
            g2r[n] = red[o:o + g2[n].numel()]
            o += g2[n].numel()

        def rel(x, y):
            return ((x - y).norm() / y.norm().clamp_min(1e-300)).item()

        errs = [rel(v2, v1)] if v1 is not None else []
        errs += [rel(a2, a1)] if a1 is not None else []
        rep[f"{variant}/{mode}/{checkpointing}"] = {
            "out": max(errs), "grad": max(rel(g2r[n], g1[n]) for n in g1), "same_names": sorted(g1) == sorted(g2r),
            "adapters": len(g1),
            # without the reduction the share of one rank is not the whole gradient
            "unreduced": max(rel(g2[n], g1[n]) for n in g1)}
    Path(spec["out"], f"spf{rank}.json").write_text(json.dumps(rep))
    d.close()
