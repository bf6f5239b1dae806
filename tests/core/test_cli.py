"""Headless training from a settings.yaml, on a tiny LTX-2 checkpoint (no ComfyUI)."""
from __future__ import annotations

import json

import torch

from trainer_core import cli
from trainer_core.cache import LatentCache
from trainer_core.engine import TrainConfig
from trainer_core.lora import load_lora
from trainer_core.run import settings_document, write_yaml
from trainer_core.tiny_checkpoint import make_tiny_checkpoint, text_context_width


def test_cli_trains_from_settings(tmp_path, capsys):
    ckpt = make_tiny_checkpoint(tmp_path / "tiny.safetensors", variant="ltx-2.0", seed=0)
    c = LatentCache(tmp_path / "cache")
    w = text_context_width("ltx-2.0", processed=False)
    g = torch.Generator().manual_seed(0)
    c.put("video", "v", {"latents": torch.randn(128, 2, 2, 2, generator=g)})
    c.put("audio", "a", {"latents": torch.randn(8, 9, 16, generator=g)})
    c.put("text", "t", {"context": torch.randn(5, w, generator=g)})
    c.put("text", "e", {"context": torch.zeros(2, w)})
    c.manifest.samples = [dict(key="x#0", video="v", audio="a", text="t", bucket="64x64x9", fps=24.0)]
    c.manifest.empty_text = "e"
    c.save_manifest()
    cfg = TrainConfig(steps=3, rank=2, alpha=2, mixed_precision="fp32", checkpoint_every=0, learning_rate=1e-3)
    run = tmp_path / "run"
    lora = tmp_path / "out.safetensors"
    write_yaml(tmp_path / "settings.yaml", settings_document(cfg, str(tmp_path / "cache"), {}, str(lora), str(run)))
    rc = cli.main(["train", str(tmp_path / "settings.yaml"), "--checkpoint", str(ckpt), "--device", "cpu",
                   "--dtype", "fp32", "--log-every", "1"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "step 3/3" in out
    res = json.loads(out.strip().splitlines()[-1])
    assert res["steps"] == 3 and res["lora"] == str(lora)
    sd, meta = load_lora(lora)
    assert meta["base_model"] == "2.0" and any(k.endswith("lora_B.weight") for k in sd)
    assert (run / "settings.yaml").exists() and (run / "history.json").exists()
