"""The Train node's ``devices`` input: hand the run to several GPUs (or CPU processes).

ComfyUI's own copy of the model is unloaded from the GPU, the run's settings are written to
its run folder, and ``python -m torch.distributed.run`` starts one worker per device as a
child process of ComfyUI, running the headless CLI (trainer_core.cli) on the checkpoint file
the MODEL was loaded from. Rank 0's per-step JSON lines are fed to the node's usual progress
and loss callbacks; ComfyUI's cancel sends SIGTERM to the launcher, which passes it to the
workers: they agree to stop after the step in flight, save a checkpoint and exit. The LoRA the
workers wrote is returned as the in-process run returns its own.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Optional

PACK = Path(__file__).resolve().parents[1]
THIS_GPU = "this GPU"


def parse_devices(text: str) -> Optional[tuple[str, list[str]]]:
    """None: train in ComfyUI's process (``this GPU``). Else (kind, ids): ``all GPUs`` or
    ``0,1`` (CUDA devices), ``cpu:N`` (N gloo processes on the CPU)."""
    t = (text or "").strip()
    if not t or t.lower() == THIS_GPU.lower():
        return None
    if t.lower().startswith("cpu:"):
        n = t[4:].strip()
        if not n.isdigit() or int(n) < 1:
            raise ValueError(f"devices {text!r}: write cpu:N with N processes, e.g. cpu:2")
        return "cpu", [str(i) for i in range(int(n))]
    import torch

    count = torch.cuda.device_count()
    if t.lower() in ("all gpus", "all"):
        if count < 1:
            raise ValueError("devices 'all GPUs': this machine has no CUDA GPU; use 'this GPU'")
        return "cuda", [str(i) for i in range(count)]
    ids = [x.strip() for x in t.split(",") if x.strip()]
    if not ids or not all(x.isdigit() for x in ids):
        raise ValueError(f"devices {text!r}: use 'this GPU', 'all GPUs' or GPU numbers such as 0,1")
    bad = [x for x in ids if int(x) >= count]
    if bad:
        raise ValueError(f"devices {text!r}: GPU {', '.join(bad)} does not exist (this machine has {count}: "
                         f"{', '.join(map(str, range(count))) or 'none'})")
    if len(set(ids)) != len(ids):
        raise ValueError(f"devices {text!r} names a GPU twice")
    return "cuda", ids


def train_on_devices(devices: tuple[str, list[str]], checkpoint: str, cfg, cache_dir: str, run_dir: Path,
                     lora_path: Path, resume: str, callbacks, base: dict, should_stop=None, on_stopping=None,
                     batch_per_device: int = 1):
    """Run the training as torchrun workers and return a RunOutcome like run_training's; each
    step's global batch is ``batch_per_device`` clips for each worker.
    Raises TrainingStopped (reason "cancelled" when ``should_stop`` asked) as run_training does."""
    from ..trainer_core.engine import TrainingStopped, TrainResult
    from ..trainer_core.run import RunOutcome, settings_document, write_yaml

    from ..trainer_core.cli import EVENT, PROGRESS

    kind, ids = devices
    n = len(ids)
    if not checkpoint or not Path(checkpoint).is_file():
        raise ValueError("devices: the workers load the model from its checkpoint file, and this MODEL does not say "
                         "which file it came from; load it with Load Checkpoint, or set devices to 'this GPU'")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    settings = run_dir / "settings.yaml"
    write_yaml(settings, settings_document(cfg, cache_dir, base, str(lora_path), str(run_dir),
                                                  batch_size=n * int(batch_per_device)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
           "-m", "trainer_core.cli", "train", str(settings), "--checkpoint", str(checkpoint),
           "--device", "cpu" if kind == "cpu" else "cuda", "--dtype", "fp32" if cfg.mixed_precision == "fp32" else "bf16",
           "--resume", resume or "none", "--lora", str(lora_path), "--progress-json", "--log-every", "1000000000"]
    env = dict(os.environ, PYTHONPATH=str(PACK) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if kind == "cuda":
        env["CUDA_VISIBLE_DEVICES"] = ",".join(ids)
    else:
        env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "1")
    proc = subprocess.Popen(cmd, cwd=PACK, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            bufsize=1, start_new_session=True)
    lines: "queue.Queue[tuple[str, Optional[str]]]" = queue.Queue()
    err_tail: list[str] = []

    def pump(stream, name):
        for line in stream:
            lines.put((name, line.rstrip("\n")))
        lines.put((name, None))

    for st, name in ((proc.stdout, "out"), (proc.stderr, "err")):
        threading.Thread(target=pump, args=(st, name), daemon=True).start()
    final, open_streams, cancelled = None, 2, False
    try:
        while open_streams:
            if not cancelled and should_stop is not None and should_stop():
                cancelled = True
                if on_stopping:
                    on_stopping()
                os.killpg(proc.pid, signal.SIGTERM)  # the launcher passes it on to every worker
            try:
                name, line = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                open_streams -= 1
                continue
            if name == "err":
                err_tail = (err_tail + [line])[-40:]
            elif line.startswith(PROGRESS):
                if callbacks.on_step:
                    callbacks.on_step(json.loads(line[len(PROGRESS):]))
            elif line.startswith(EVENT):
                ev = json.loads(line[len(EVENT):])
                if callbacks.on_event:
                    callbacks.on_event(ev.pop("name"), ev)
            elif line.startswith("{"):
                try:
                    final = json.loads(line)
                except json.JSONDecodeError:
                    pass
        rc = proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    stopped = next((ln[len("stopped: "):] for ln in err_tail if ln.startswith("stopped: ")), None)
    history = []
    hp = run_dir / "history.json"
    if rc == 0 and final is not None and hp.exists():
        history = json.loads(hp.read_text())
        import numpy as np
        from PIL import Image

        img = np.asarray(Image.open(run_dir / "loss.png").convert("RGB"))
        res = TrainResult(lora=None, history=history, steps_done=int(final["steps"]), notes=list(final.get("notes", [])))
        return RunOutcome(res, final["lora"], str(settings), img, list(res.notes))
    from ..trainer_core.engine import list_checkpoints

    cks = list_checkpoints(run_dir)
    ck = str(cks[-1]) if cks else None
    step = int(cks[-1].stem.split("_")[-1]) if cks else 0
    if cancelled or rc == 130:
        raise TrainingStopped(stopped or f"cancelled at step {step}; queue again with resume = latest to continue",
                              step, ck, reason="cancelled")
    why = stopped or " | ".join(ln for ln in err_tail[-6:] if ln.strip())
    raise TrainingStopped(f"the {n} training processes stopped (exit code {rc}): {why}", step, ck,
                          reason="rank_failed" if rc == 4 else "failed")
