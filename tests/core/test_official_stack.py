"""The benchmark's official-stack side (bench/official_stack.py) on CPU with tiny configs:
ltx-core's LTXModel with a PEFT LoRA on the same 1152-projection set as ours trains, and
only the LoRA moves. ``scripts/setup.sh`` installs both (ltx-core from a Lightricks/LTX-2
source copy at 203d484 — 1.1.4 — else PyPI's 1.0.0, without its torch pin; the calls used
here are the same in both); skipped with the reason where either is not importable."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import official_stack as off  # noqa: E402

WHY = off.unavailable()


@pytest.mark.skipif(WHY is not None, reason=WHY or "")
@pytest.mark.parametrize("variant", ["ltx-2.0", "ltx-2.3"])
def test_official_step_trains_only_the_lora(variant):
    from trainer_core.lora import resolve_targets
    from trainer_core.ltx2 import LTX2Config, build_tree
    from trainer_core.tiny_checkpoint import tiny_config

    cfg = tiny_config(variant)["transformer"]
    assert off.describe().startswith("ltx-core ")
    model = off.build_official(cfg, "cpu", rank=4)
    video, audio, vt, at = off.official_inputs(cfg, 128, 64, 17, 24.0, "cpu", text_tokens=16)
    step = off.official_step_fn(model, video, audio, vt, at, lr=1e-2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = [float(step()) for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(losses)))
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert changed and all("lora_" in n for n in changed)
    # the same LoRA targets as our "all attention" preset, parameter for parameter
    ours = build_tree(LTX2Config.from_transformer_config(cfg), init="meta")
    mods = dict(ours.named_modules())
    names = resolve_targets(ours, "all attention")
    assert off.lora_param_count(model) == sum(4 * (mods[n].in_features + mods[n].out_features) for n in names)
