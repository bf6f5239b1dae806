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
