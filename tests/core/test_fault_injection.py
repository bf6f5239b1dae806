"""Fault injection: the headless trainer (``python -m trainer_core.cli``) on the tiny LTX-2
checkpoint is killed (SIGKILL) at random moments — between steps, inside checkpoint saves
(the moment a temporary checkpoint file appears), at start-up — at least 20 times. After
every kill the newest checkpoint loads and verifies; the run, continued each time with
``--resume latest``, ends with exactly the LoRA and loss history of a run that never stopped,
and no temporary file is left."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO
from trainer_core.engine import TrainConfig, list_checkpoints, read_checkpoint
from trainer_core.lora import load_lora
from trainer_core.run import settings_document, write_yaml
from trainer_core.tiny_checkpoint import make_tiny_cache, make_tiny_checkpoint

STEPS = 48
KILLS = 20


def _settings(tmp: Path, name: str, cache: Path) -> Path:
    cfg = TrainConfig(steps=STEPS, rank=2, learning_rate=1e-3, mixed_precision="fp32", checkpoint_every=1,
                      keep_checkpoints=2, sigma_sampler="uniform", caption_dropout=0.2, seed=11, grad_accum=1)
    run = tmp / name
    doc = settings_document(cfg, str(cache), {}, str(tmp / f"{name}.safetensors"), str(run))
    write_yaml(tmp / f"{name}.yaml", doc)
    return tmp / f"{name}.yaml"


def _cmd(settings: Path, ckpt: Path) -> list[str]:
    return [sys.executable, "-m", "trainer_core.cli", "train", str(settings), "--checkpoint", str(ckpt),
            "--device", "cpu", "--dtype", "fp32", "--log-every", "100000", "--resume", "latest"]


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO))


def _newest_step(ck_dir: Path) -> int:
    steps = [int(p.name[5:11]) for p in ck_dir.glob("step_*.safetensors")] if ck_dir.exists() else []
    return max(steps, default=0)


def _temps(ck_dir: Path) -> list[str]:
    try:
        return [e.name for e in os.scandir(ck_dir) if e.name.endswith(".tmp") or ".tmp" in e.name]
    except FileNotFoundError:
        return []


def test_killed_at_random_moments_the_run_still_ends_bit_exact(tmp_path):
    ckpt = make_tiny_checkpoint(tmp_path / "tiny.safetensors", variant="ltx-2.0", seed=3)
    cache = make_tiny_cache(tmp_path / "cache", "ltx-2.0", n=3, seed=6)
    ref_settings = _settings(tmp_path, "ref", cache)
    run_settings = _settings(tmp_path, "run", cache)
    t0 = time.time()
    ref = subprocess.run(_cmd(ref_settings, ckpt), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-3000:]
    t_ref = time.time() - t0

    rng = random.Random(1234)
    ck_dir = tmp_path / "run" / "checkpoints"
    kills, in_save, at_start, finished = 0, 0, 0, False
    while kills < KILLS:
        before = _newest_step(ck_dir)
        p = subprocess.Popen(_cmd(run_settings, ckpt), cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
        kind = ("save", "steps", "save", "start")[kills % 4]
        target = before + rng.randint(1, 3)
        t_start = time.time()
        delay = rng.uniform(0.05, 1.5)
        killed = False
        while p.poll() is None and time.time() - t_start < 120:
            if kind == "start" and time.time() - t_start > delay:
                killed = True
            elif kind == "steps" and _newest_step(ck_dir) >= target:
                time.sleep(rng.uniform(0, 0.05))  # somewhere inside the next step
                killed = True
            elif kind == "save" and _newest_step(ck_dir) >= before + 1 and _temps(ck_dir):
                killed = True
            if killed:
                p.send_signal(signal.SIGKILL)
                break
            time.sleep(0.0002 if kind == "save" else 0.005)
        p.wait(timeout=30)
        err = p.stderr.read()
        p.stderr.close()
        if not killed:
            assert p.returncode == 0, err[-3000:]
            finished = True
            break
        kills += 1
        if _temps(ck_dir):
            in_save += 1
        if kind == "start":
            at_start += 1
        # after every kill: the newest checkpoint loads and its checksum holds
        cks = list_checkpoints(tmp_path / "run")
        if cks:
            read_checkpoint(cks[-1])
    assert kills >= KILLS, f"the run finished after only {kills} kills: make it longer"
    assert not finished
    assert in_save >= 3, f"only {in_save} of {kills} kills landed inside a save"
    # the run goes on to the end from its newest checkpoint
    last = subprocess.run(_cmd(run_settings, ckpt), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert last.returncode == 0, last.stderr[-3000:]
    a, ma = load_lora(tmp_path / "ref.safetensors")
    b, mb = load_lora(tmp_path / "run.safetensors")
    assert a.keys() == b.keys() and a
    assert all(torch.equal(a[k], b[k]) for k in a), "the killed-and-resumed run ended with another LoRA"
    ha = json.loads((tmp_path / "ref" / "history.json").read_text())
    hb = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["loss"] for h in ha] == [h["loss"] for h in hb] and len(hb) == STEPS
    fa = read_checkpoint(list_checkpoints(tmp_path / "ref")[-1])[0]
    fb = read_checkpoint(list_checkpoints(tmp_path / "run")[-1])[0]
    assert fa.keys() == fb.keys() and all(torch.equal(fa[k], fb[k]) for k in fa)  # optimizer state too
    assert not _temps(ck_dir) and not [f for f in (tmp_path / "run").iterdir() if f.name.endswith(".tmp")]
    print(f"fault injection: {kills} kills ({in_save} inside a save, {at_start} at start-up); "
          f"uninterrupted run {t_ref:.1f} s, whole test {time.time() - t0:.0f} s")
