"""Headless runs of the same engine the Train node uses.

    python -m trainer_core.cli train <run>/settings.yaml --checkpoint ltx-2-19b-dev.safetensors \
        [--device cuda] [--steps N] [--lora out.safetensors] [--resume latest|none|step_000500] \
        [--init-lora start.safetensors]

Ctrl-C saves a checkpoint at the last finished step (exit code 130); run the same command
again to continue. Settings are checked before anything loads (exit code 2 with the reasons).

The settings file is the one the Train node wrote beside the LoRA (or in its run folder): it
names the latent cache and every training setting, so the run repeats without ComfyUI. The
transformer is read straight from the checkpoint (safetensors) into trainer_core's plain-torch
LTX-2 tree.

Several GPUs (or CPU processes): the same command under torchrun, one process per device —

    torchrun --standalone --nproc_per_node 2 -m trainer_core.cli train <run>/settings.yaml \
        --checkpoint ltx-2-19b-dev.safetensors [--batch-size 2] [--reduce sum|exact]

--batch-size is the global batch (default: the settings file's, else one sample per process),
split evenly over the processes; N processes at global batch B train the LoRA one process at
batch B would (--reduce exact: bit for bit on CPU). Only rank 0 prints and writes. A
checkpoint resumes on any number of processes that divides the global batch. A process that
dies stops the others with the last finished step saved, naming its rank (exit code 4).

On a GPU each process trains as the Train node trains one: compiled blocks under the memory
plan for its share of the global batch (the settings' vram_budget_gb, else what the GPU has
free; printed as a note) — unless the frozen base is sharded or the video tokens split, which
run eager blocks, checkpointed as the settings say.

--strategy fsdp2 shards the frozen blocks over the processes; --strategy sp (or fsdp2+sp, with
the sharding) splits each clip's video tokens over them instead of the batch, for clips one
GPU cannot hold: every process runs the whole global batch (default 1) on 1/N of the video
tokens (the video token count and the head count must divide by N; --reduce sum).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def check_lora_output(path: str) -> Path:
    """The output LoRA path, checked before training: a file name (not a folder) ending in
    .safetensors, a valid name on every OS, in a folder that exists or can be made."""
    from .fsutil import UnsafePathError, check_name

    p = Path(path).expanduser()
    try:
        is_dir = p.is_dir()
    except OSError:  # e.g. a name too long for the file system: the name check says so below
        is_dir = False
    if is_dir or str(path).endswith(("/", "\\")):
        raise UnsafePathError(f"--lora {path} is a folder; give a file name such as {p / 'my_lora.safetensors'}")
    check_name(p.stem, "the LoRA's file name (--lora)")
    if p.suffix.lower() != ".safetensors":
        raise UnsafePathError(f"--lora {path} must end in .safetensors")
    parent = p.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UnsafePathError(f"--lora {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK):
        raise UnsafePathError(f"--lora {path}: the folder {parent} is not writable")
    return p


def _train(args) -> int:
    from .engine import SettingsError, TrainConfig
    from .fsutil import UnsafePathError
    from .run import read_settings

    # everything that can be checked is checked before torch and the model load
    try:
        doc = read_settings(args.settings)
        cfg_d = dict(doc["train"])
        if args.steps:
            cfg_d["steps"] = args.steps
        if args.init_lora:
            ip = Path(args.init_lora).expanduser()
            if not ip.is_file():
                raise FileNotFoundError(f"--init-lora {args.init_lora} does not exist")
            cfg_d["init_lora"] = str(ip.resolve())
        cfg = TrainConfig.from_dict(cfg_d)
        lora = args.lora or doc.get("lora")
        if lora:
            lora = str(check_lora_output(lora))
        if not Path(args.checkpoint).is_file():
            raise FileNotFoundError(f"--checkpoint {args.checkpoint} does not exist")
    except (SettingsError, UnsafePathError, FileNotFoundError, ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return _run(args, doc, cfg, lora)


def _predict_for(cfg, root, cache: str, device, dist, *, sp: bool, sharded: bool, batch_size: int, say):
    """The block function of a headless run. On a GPU (or with a VRAM budget in the settings)
    and unless the base is sharded or the video tokens split: the Train node's memory plan for
    this process's share of the global batch, with compiled blocks on CUDA (the settings'
    ``compile_blocks``, or ``LTX2_TRAINER_COMPILE``) — the same step one GPU trains with in
    ComfyUI. The weights are already on the device here, so a plan that would stream them
    falls back to every block recomputed in backward (FSDP2 shards them instead). Otherwise
    (CPU, FSDP2, sequence parallel): eager blocks, checkpointed as the settings say."""
    import torch

    from .ltx2 import make_predict
    from .ltx2.memory import GIB, calibrate_speed
    from .run import compiles_blocks, plan_for_training, without_checkpointing

    cuda = device.type == "cuda"
    if sp or sharded or not (cuda or cfg.vram_budget_gb > 0):
        return make_predict(checkpointing=cfg.grad_checkpointing, sp=dist if sp else None)
    compiled = compiles_blocks(cfg, device.type)
    budget = float(cfg.vram_budget_gb or 0.0)
    if budget <= 0:  # what is free, plus the weights this process has already put there
        budget = max(1.0, (torch.cuda.mem_get_info(device)[0] + torch.cuda.memory_allocated(device)) / GIB - 1.0)
    share = 1 if dist.exact else -(-batch_size // max(1, dist.world))
    plan = plan_for_training(root, cache, cfg, budget, batch_size=share, compiled=compiled,
                             speed=calibrate_speed(device) if cuda else None)
    if not cfg.grad_checkpointing:
        plan = without_checkpointing(plan)
    elif plan.streamed:
        say(f"note: the weights do not fit in the {plan.budget_gib:.1f} GiB budget beside the activations and the "
            "weights are loaded whole here: every block recomputes in backward (--strategy fsdp2 shards the frozen "
            "blocks over the processes instead)", flush=True)
        return make_predict(checkpointing=True, compile_blocks=compiled)
    say("note: " + plan.report(), flush=True)
    return make_predict(memory_plan=plan, compile_blocks=compiled)


def _run(args, doc, cfg, lora) -> int:
    import torch

    from .cache import CacheError
    from .engine import Callbacks, CheckpointError, TrainingStopped
    from .lora import LoRAError
    from .ltx2 import load_tree_from_checkpoint, read_checkpoint_config
    from .run import run_training

    from . import distributed as D

    if D.launched():
        dist = D.init(exact=args.reduce == "exact", backend="gloo" if args.device == "cpu" else None,
                      timeout_s=args.timeout)
    else:
        dist = D.Dist(exact=args.reduce == "exact")
    sp = args.strategy in ("sp", "fsdp2+sp") and dist.active
    dist.sp = sp
    device = D.device_for(dist, args.device)
    # data parallel: one sample per process by default; sequence parallel: every process takes the whole batch
    batch_size = args.batch_size or int(doc.get("batch_size") or 0) or (1 if sp else dist.world)
    main = dist.is_main
    stop = _stop_on_sigterm() if dist.active else None
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    mcfg = read_checkpoint_config(args.checkpoint)
    root = load_tree_from_checkpoint(args.checkpoint, device=device, dtype=dtype)
    if args.strategy in ("fsdp2", "fsdp2+sp") and dist.active:
        n = D.shard_base(root, dist)
        if main:
            print(f"note: frozen base sharded over {dist.world} processes (FSDP2, {n} layers)", flush=True)
    if sp and main:
        print(f"note: sequence parallel: each of the {dist.world} processes runs 1/{dist.world} of the video tokens "
              "(the audio and text run whole on every process)", flush=True)
    predict = _predict_for(cfg, root, doc["cache"], device, dist, sp=sp,
                           sharded=args.strategy in ("fsdp2", "fsdp2+sp") and dist.active,
                           batch_size=batch_size, say=print if main else (lambda *a, **k: None))
    run_dir = Path(args.run_dir or doc.get("run_dir") or Path(args.settings).parent)

    def on_step(rec):
        if args.progress_json:  # one machine-readable line per step (the Train node reads them)
            print(PROGRESS + json.dumps(rec), flush=True)
        if rec["step"] % args.log_every == 0 or rec["step"] == rec["steps"]:
            print(f"step {rec['step']}/{rec['steps']} loss {rec['loss']:.4f} smoothed {rec['smoothed']:.4f} "
                  f"lr {rec['lr']:.2e} {rec['s_per_step']:.2f}s/step", flush=True)

    def on_event(name, payload):
        if args.progress_json:
            print(EVENT + json.dumps({"name": name, **payload}, default=str), flush=True)
        if name == "notice":
            print(f"note: {payload['message']}", flush=True)
        elif name == "resumed":
            print(f"resumed from {Path(payload['checkpoint']).name} (step {payload['step']})", flush=True)

    try:
        out = run_training(root, predict, doc["cache"], cfg, run_dir, lora, device=device,
                           callbacks=Callbacks(on_step=on_step, on_event=on_event, should_stop=stop),
                           resume=args.resume, batch_size=batch_size, dist=dist,
                           base={"variant": getattr(mcfg, "variant", "unknown"), "checkpoint": Path(args.checkpoint).name})
    except TrainingStopped as e:
        if main or getattr(e, "saved_here", False):
            print(f"stopped: {e}", file=sys.stderr, flush=True)
        return {"cancelled": 130, "rank_failed": 4}.get(e.reason, 3)
    except (CheckpointError, CacheError, LoRAError, FileNotFoundError, ValueError) as e:
        if main:
            print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        dist.close()
    if main:
        print(json.dumps({"lora": out.lora_path, "steps": out.result.steps_done,
                          "final_loss": out.result.history[-1]["loss"] if out.result.history else None,
                          "processes": dist.world, "batch_size": batch_size, "notes": out.notes}), flush=True)
    return 0


PROGRESS, EVENT = "@ltx2-progress ", "@ltx2-event "


def _stop_on_sigterm():
    """Under torchrun: SIGTERM (the launcher stopping the run, e.g. after Ctrl-C or when
    another rank died) asks for a stop at the next step — agreed by every rank, checkpoint
    saved — instead of killing the process mid-write."""
    import signal

    flag = [False]

    def handler(signum, frame):
        flag[0] = True

    signal.signal(signal.SIGTERM, handler)
    return lambda: flag[0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer_core.cli", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a LoRA from a settings.yaml written by the Train node")
    t.add_argument("settings")
    t.add_argument("--checkpoint", required=True, help="LTX-2 checkpoint (.safetensors)")
    t.add_argument("--device", default="cuda" if _cuda() else "cpu")
    t.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"], help="frozen weights' dtype")
    t.add_argument("--steps", type=int, default=0, help="override the number of steps")
    t.add_argument("--lora", default=None, help="output LoRA path (default: the settings file's)")
    t.add_argument("--run-dir", default=None)
    t.add_argument("--resume", default="latest", help="latest (newest good checkpoint), none, or a checkpoint name")
    t.add_argument("--init-lora", default=None, help="start from this LoRA file (this pack's, ltx-trainer's or "
                   "any ComfyUI-format LTX-2 LoRA): its modules, rank and alpha")
    t.add_argument("--log-every", type=int, default=10)
    t.add_argument("--batch-size", type=int, default=0, help="global batch over all processes (default: the "
                   "settings file's, else one sample per process)")
    t.add_argument("--reduce", default="sum", choices=["sum", "exact"], help="several processes: all-reduce the "
                   "LoRA gradients (sum), or one forward per sample and a fixed summation order (exact: the same "
                   "bits on any number of processes)")
    t.add_argument("--progress-json", action="store_true", help="also print every step and event as a JSON line")
    t.add_argument("--strategy", default="ddp", choices=["ddp", "fsdp2", "sp", "fsdp2+sp"], help="several "
                   "processes: every one holds the whole frozen base and its share of the batch (ddp); the "
                   "transformer blocks are sharded over them (fsdp2); every one runs the whole batch but a "
                   "slice of the video tokens, for clips one GPU cannot hold (sp: needs --reduce sum, a head count "
                   "and a video token count divisible by the number of processes); or both (fsdp2+sp)")
    t.add_argument("--timeout", type=float, default=1800.0, help="seconds a process waits for another that "
                   "stopped answering before the run stops")
    args = p.parse_args(argv)
    if args.cmd == "train":
        return _train(args)
    return 2


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


if __name__ == "__main__":
    sys.exit(main())
