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


# ----------------------------------------------------------------------------- projection groups

def _grouped_tiny(**spec):
    torch.manual_seed(0)
    m = Tiny()
    for p in m.parameters():
        p.requires_grad_(False)
    lora = LoRASet.for_model(m, LoRASpec(**{"rank": 3, "alpha": 6, "preset": "all attention", **spec}), seed=1)
    with torch.no_grad():
        for n in lora.names:
            lora.adapter(n).lora_B.normal_(std=0.5)
    return m, lora.attach(m)


def _through_group(attn, x, key):
    from trainer_core.lora import projection_group

    g = projection_group(attn, key)
    assert g is not None
    return g.outputs(x)


@pytest.mark.parametrize("key", ["qkv", "kv"])
def test_a_projection_group_gives_each_layers_hooked_output_and_gradients(key):
    m, lora = _grouped_tiny()
    attn = m.transformer_blocks[1].audio_to_video_attn
    layers = [attn.to_q, attn.to_k, attn.to_v][3 - len(key):]
    assert lora.grouped == 12  # every attention of both blocks
    x = torch.randn(2, 5, 8)
    got = _through_group(attn, x, key)
    ads = [lora.adapter(f"transformer_blocks.1.audio_to_video_attn.{p}") for p in ("to_q", "to_k", "to_v")][3 - len(key):]
    w = [torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(i)) for i in range(len(got))]
    sum((o * wi).sum() for o, wi in zip(got, w)).backward()
    g_got = [torch.cat([ad.lora_A.grad.flatten(), ad.lora_B.grad.flatten()]) for ad in ads]
    lora.zero_grad(set_to_none=True)
    ref = [lin(x) for lin in layers]  # each layer through its own hook
    sum((o * wi).sum() for o, wi in zip(ref, w)).backward()
    g_ref = [torch.cat([ad.lora_A.grad.flatten(), ad.lora_B.grad.flatten()]) for ad in ads]
    for a, b in zip(got, ref):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)
    for a, b in zip(g_got, g_ref):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)
    # the adapters really change the outputs (the comparison is not between two base outputs)
    assert not torch.allclose(ref[0], layers[0].forward(x), atol=1e-3)


def test_mixed_ranks_and_scales_group_without_the_batched_up_projection():
    from trainer_core.lora import ProjectionGroup

    m, lora = _grouped_tiny()
    attn = m.transformer_blocks[0].attn1
    names = [f"transformer_blocks.0.attn1.{p}" for p in ("to_q", "to_k", "to_v")]
    shapes = {n: (8, 8) for n in names}
    s = LoRASet(shapes, 2, 2.0, ranks={names[1]: 5}, alphas={names[2]: 7.0})
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for n in s.names:
            s.adapter(n).lora_A.normal_(generator=g)
            s.adapter(n).lora_B.normal_(generator=g)
    lora.detach()
    s.attach(m)
    group = attn.__dict__["_ltx2_lora_groups"]["qkv"]
    assert isinstance(group, ProjectionGroup) and not group.batched_up and group.scale is None
    x = torch.randn(4, 8)
    for a, b in zip(_through_group(attn, x, "qkv"), (attn.to_q(x), attn.to_k(x), attn.to_v(x))):
        assert torch.allclose(a, b, atol=1e-5)


def test_no_groups_with_dropout_or_other_hooks_and_none_after_detach():
    _, lora = _grouped_tiny(dropout=0.1)
    assert lora.grouped == 0  # each layer draws its own dropout mask
    m, lora = _grouped_tiny()
    attn = m.transformer_blocks[0].attn1
    assert lora.attach(m, group=False).grouped == 0
    # a layer someone else hooks (FSDP2 gathers its weight in a pre-hook) is not grouped at attach …
    h = attn.to_k.register_forward_pre_hook(lambda mod, args: None)
    lora.attach(m)
    assert "qkv" not in attn.__dict__.get("_ltx2_lora_groups", {}) and lora.grouped == 11
    h.remove()
    # … nor used when the hook comes after attach: each layer's own hook applies then
    lora.attach(m)
    from trainer_core.lora import projection_group

    assert projection_group(attn, "qkv") is not None
    h = attn.to_v.register_forward_pre_hook(lambda mod, args: None)
    assert projection_group(attn, "qkv") is None and projection_group(attn, "kv") is None
    h.remove()
    lora.detach()
    assert lora.grouped == 0 and not any("_ltx2_lora_groups" in mod.__dict__ for mod in m.modules())
