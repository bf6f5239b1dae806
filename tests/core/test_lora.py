"""LoRA targets, hooks, and the file format on a small tree with LTX-2's module names."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from trainer_core.lora import (
    LoRAError, LoRASet, LoRASpec, load_lora, resolve_targets, save_lora, split_patterns,
)


def _attn(d):
    m = nn.Module()
    m.to_q, m.to_k, m.to_v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
    m.to_out = nn.Sequential(nn.Linear(d, d), nn.Dropout(0.0))
    return m


def _ff(d):
    m = nn.Module()
    proj = nn.Module()
    proj.proj = nn.Linear(d, 4 * d)
    m.net = nn.Sequential(proj, nn.Dropout(0.0), nn.Linear(4 * d, d))
    return m


class Tiny(nn.Module):
    def __init__(self, v=8, a=4, blocks=2):
        super().__init__()
        self.transformer_blocks = nn.ModuleList()
        for _ in range(blocks):
            b = nn.Module()
            b.attn1, b.attn2 = _attn(v), _attn(v)
            b.audio_attn1, b.audio_attn2 = _attn(a), _attn(a)
            b.audio_to_video_attn, b.video_to_audio_attn = _attn(v), _attn(a)
            b.ff, b.audio_ff = _ff(v), _ff(a)
            self.transformer_blocks.append(b)
        self.proj_out = nn.Linear(v, v)


def test_presets_select_the_right_layers():
    m = Tiny()
    v = resolve_targets(m, "video attention")
    assert len(v) == 2 * 2 * 4 and all(".attn1." in n or ".attn2." in n for n in v)
    assert not any("audio" in n for n in v)
    assert len(resolve_targets(m, "audio attention")) == 16
    assert len(resolve_targets(m, "cross-modal attention")) == 16
    assert len(resolve_targets(m, "all attention")) == 48
    allff = resolve_targets(m, "all attention + feed-forward")
    assert len(allff) == 48 + 8 and "transformer_blocks.0.ff.net.0.proj" in allff
    assert "proj_out" not in allff


def test_free_patterns_globs_and_errors():
    m = Tiny()
    assert resolve_targets(m, None, ["*.attn1.to_q"]) == ["transformer_blocks.0.attn1.to_q",
                                                         "transformer_blocks.1.attn1.to_q"]
    assert resolve_targets(m, None, [r"transformer_blocks\.1\.audio_ff\.net\.2"]) == ["transformer_blocks.1.audio_ff.net.2"]
    assert split_patterns("a, b;c\n") == ["a", " b", "c"]
    with pytest.raises(LoRAError, match="match no linear"):
        resolve_targets(m, None, ["nothing_here"])
    with pytest.raises(LoRAError, match="unknown target preset"):
        resolve_targets(m, "bogus")
    with pytest.raises(LoRAError, match="not a valid regular"):
        resolve_targets(m, None, ["(unclosed"])


def test_hook_equals_merged_weight_and_detach_restores():
    torch.manual_seed(0)
    m = Tiny()
    lora = LoRASet.for_model(m, LoRASpec(rank=2, alpha=4, preset="video attention"), seed=1)
    name = "transformer_blocks.0.attn1.to_q"
    lin = dict(m.named_modules())[name]
    x = torch.randn(3, 8)
    base = lin(x)
    lora.attach(m)
    assert torch.equal(lin(x), base)  # B = 0: starts as a no-op
    with torch.no_grad():
        lora.adapter(name).lora_B.normal_()
    merged = nn.functional.linear(x, lin.weight + lora.adapter(name).delta_weight(), lin.bias)
    assert torch.allclose(lin(x), merged, atol=1e-5)
    lora.detach()
    assert torch.equal(lin(x), base) and not lora.attached


def test_gradients_reach_only_lora():
    m = Tiny()
    for p in m.parameters():
        p.requires_grad_(False)
    lora = LoRASet.for_model(m, LoRASpec(rank=4, alpha=4, preset="all attention"), seed=0).attach(m)
    with torch.no_grad():
        for n in lora.names:
            lora.adapter(n).lora_B.normal_(std=0.1)
    b = m.transformer_blocks[0]
    y = b.attn1.to_out[0](b.attn1.to_q(torch.randn(2, 8))).sum()
    y.backward()
    assert lora.adapter("transformer_blocks.0.attn1.to_q").lora_A.grad is not None
    assert b.attn1.to_q.weight.grad is None


def test_file_round_trip_format_and_metadata(tmp_path):
    m = Tiny()
    lora = LoRASet.for_model(m, LoRASpec(rank=3, alpha=6, preset="cross-modal attention"), seed=2)
    with torch.no_grad():
        for n in lora.names:
            lora.adapter(n).lora_B.normal_()
    p = tmp_path / "x.safetensors"
    save_lora(p, lora, {"base_model": "ltx-2.0", "steps": 10, "settings": {"lr": 1e-4}})
    sd, meta = load_lora(p)
    n0 = lora.names[0]
    assert sd[f"diffusion_model.{n0}.lora_A.weight"].dtype == torch.bfloat16
    lin = dict(m.named_modules())[n0]
    assert sd[f"diffusion_model.{n0}.lora_A.weight"].shape == (3, lin.in_features)
    assert sd[f"diffusion_model.{n0}.lora_B.weight"].shape == (lin.out_features, 3)
    assert float(sd[f"diffusion_model.{n0}.alpha"]) == 6.0
    assert len(sd) == 3 * len(lora.names)
    assert meta["base_model"] == "ltx-2.0" and meta["steps"] == "10" and '"lr"' in meta["settings"]
    back = LoRASet.from_comfy_state_dict(sd)
    assert back.names == lora.names and back.rank == 3 and back.alpha == 6.0
    w0 = lora.adapter(n0).delta_weight()
    assert torch.allclose(back.adapter(n0).delta_weight(), w0, rtol=2e-2, atol=2e-2)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left no temp file
