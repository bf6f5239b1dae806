"""The Train node's ``devices`` input in real ComfyUI: the run handed to 2 torchrun worker
processes (gloo on the CPU, ``cpu:2``), progress streamed back, cancel honoured, resume after
a cancel, the LoRA returned and applied (one cancelled and one resumed hand-off: two worker
launches, the cost of this file)."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch

from trainer_core.lora import load_lora
from trainer_core.tiny_checkpoint import make_tiny_cache, make_tiny_checkpoint


@pytest.fixture(scope="module")
def tiny20(comfy):
    name = "tiny_dev_ltx-2.0.safetensors"
    make_tiny_checkpoint(comfy.base / "models" / "checkpoints" / name, variant="ltx-2.0", seed=1)
    loader = comfy.nodes.NODE_CLASS_MAPPINGS["CheckpointLoaderSimple"]()
    with torch.inference_mode():
        return loader.load_checkpoint(name)[0]


def _train(comfy, model, cache, name, **kw):
    node = comfy.pack["LTX2TrainLoRA"]
    args = dict(model=model, latents={"path": cache}, recipe="Character", lora_name=name, steps=3,
                learning_rate=2e-3, rank=4, mode="text_to_audio_video", seed=7, resume="none",
                caption_dropout=0.0, precision="fp32", checkpoint_every=0, targets="all attention",
                devices="cpu:2")
    args.update(kw)
    import sys

    with torch.inference_mode():  # (the old single-node names, split onto the option nodes)
        return node.execute(**sys.modules[node.__module__].flat_inputs(**args))


def test_devices_cancel_then_resume_returns_the_lora(comfy, tiny20, tmp_path):
    """One ComfyUI session, two hand-offs to 2 worker processes: a run cancelled once it has a
    checkpoint stops the workers with a checkpoint saved (no half-written file); queued again
    with resume = latest it finishes from there and returns the LoRA, applied."""
    import comfy.model_management as mm
    import yaml

    cache = str(make_tiny_cache(tmp_path / "cache", "ltx-2.0", n=2))
    run = Path(comfy.folder_paths.get_output_directory()) / "ltx2_lora_runs" / "dev2"
    stop = threading.Event()

    def interrupt_after_first_checkpoint():
        t0 = time.time()
        while not stop.is_set() and time.time() - t0 < 200:
            if (run / "checkpoints" / "step_000002.safetensors").exists():
                mm.interrupt_current_processing(True)
                return
            time.sleep(0.02)

    th = threading.Thread(target=interrupt_after_first_checkpoint)
    th.start()
    try:
        with pytest.raises(mm.InterruptProcessingException):
            _train(comfy, tiny20, cache, "dev2", steps=500, checkpoint_every=2)
    finally:
        stop.set()
        th.join()
        mm.interrupt_current_processing(False)
    cks = sorted(p.name for p in (run / "checkpoints").glob("step_*.safetensors"))
    assert cks and cks[-1] != "step_000500.safetensors"
    assert not list((run / "checkpoints").glob(".*tmp"))
    stopped_at = int(cks[-1][5:11])

    out = _train(comfy, tiny20, cache, "dev2", steps=stopped_at + 2, checkpoint_every=2, resume="latest")
    patched, name, history, img, _ = out.result
    assert history[-1]["step"] == stopped_at + 2 and all(h["loss"] > 0 for h in history)
    sd, meta = load_lora(comfy.folder_paths.get_full_path("loras", name))
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in sd.items())
    doc = yaml.safe_load((run / "settings.yaml").read_text())
    assert doc["batch_size"] == 2  # one sample per process
    assert f"step_{stopped_at + 2:06d}.safetensors" in [p.name for p in (run / "checkpoints").iterdir()]
    assert patched is not tiny20 and img.shape[-1] == 3


def test_devices_input_refuses_what_it_cannot_do(comfy):
    import sys

    mg = None
    for k, m in list(sys.modules.items()):
        if k.endswith("nodes.multi_gpu") and hasattr(m, "parse_devices"):
            mg = m
    if mg is None:
        pytest.skip("pack not loaded")
    assert mg.parse_devices("this GPU") is None and mg.parse_devices("") is None
    assert mg.parse_devices("cpu:2") == ("cpu", ["0", "1"])
    for bad, why in (("cpu:x", "cpu:N"), ("0,a", "GPU numbers"), ("7", "does not exist")):
        if why == "does not exist" and torch.cuda.device_count() > 7:
            continue
        with pytest.raises(ValueError, match=why):
            mg.parse_devices(bad)
