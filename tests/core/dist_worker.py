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
