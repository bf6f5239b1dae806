"""Starting a run from an existing LoRA (issue 15): the official ltx-trainer's files and the
other layouts ComfyUI reads for LTX-2, alpha honoured, on the tiny LTX-2 checkpoint.

The reference is independent of the LoRA path: the file's B·A·(alpha/rank) is merged into the
weights of a second copy of the model, which then runs the plain forward with no adapters."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from trainer_core import engine as en
from trainer_core import objective as ob
from trainer_core.cache import CachedLatents
from trainer_core.lora import LoRAError, resolve_targets
from trainer_core.ltx2 import load_tree_from_checkpoint, make_predict
from trainer_core.tiny_checkpoint import make_tiny_cache, make_tiny_checkpoint


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("init_lora")
    ckpt = make_tiny_checkpoint(d / "tiny.safetensors", variant="ltx-2.0", seed=2)
    cache = make_tiny_cache(d / "cache", "ltx-2.0", n=2, seed=4)
    return ckpt, cache


def _foreign_lora(root, layout: str, rank: int = 4, alpha=None, seed: int = 0) -> dict:
    """A LoRA over every attention projection, in the key layout of another tool."""
    g = torch.Generator().manual_seed(seed)
    mods = dict(root.named_modules())
    sd = {}
    for n in resolve_targets(root, "all attention"):
        m = mods[n]
        A = torch.randn(rank, m.in_features, generator=g) * 0.2
        B = torch.randn(m.out_features, rank, generator=g) * 0.2
        if layout == "ltx-trainer":  # get_peft_model_state_dict, "diffusion_model." prefix, no alpha
            a_k, b_k, al_k = f"diffusion_model.{n}.lora_A.weight", f"diffusion_model.{n}.lora_B.weight", None
        elif layout == "kohya":  # lora_unet_ with underscores, lora_down / lora_up, alpha
            s = "lora_unet_" + n.replace(".", "_")
            a_k, b_k, al_k = f"{s}.lora_down.weight", f"{s}.lora_up.weight", f"{s}.alpha"
        elif layout == "diffusers":  # transformer. prefix
            a_k, b_k, al_k = f"transformer.{n}.lora_A.weight", f"transformer.{n}.lora_B.weight", f"transformer.{n}.alpha"
        else:
            raise ValueError(layout)
        sd[a_k] = A.to(torch.bfloat16)
        sd[b_k] = B.to(torch.bfloat16)
        if al_k and alpha is not None:
            sd[al_k] = torch.tensor(float(alpha), dtype=torch.bfloat16)
    return sd


def _merged_first_loss(ckpt, cache, sd_file: dict, layout: str, scale: float, cfg: en.TrainConfig, trainer) -> float:
    """The first step's loss computed without adapters: W + B·A·scale merged into a second
    copy of the model, the same batch and the same seeded draws as the trainer's step 1."""
    ref = load_tree_from_checkpoint(ckpt, dtype=torch.float32)
    sd_ref = ref.state_dict()
    with torch.no_grad():
        for k, A in sd_file.items():
            if k.endswith((".lora_A.weight", ".lora_down.weight")):
                b_k = k.replace("lora_A", "lora_B").replace("lora_down", "lora_up")
                stem = k.rsplit(".", 2)[0]
                if layout == "ltx-trainer":
                    mod = stem[len("diffusion_model."):]
                elif layout == "diffusers":
                    mod = stem[len("transformer."):]
                else:
                    under = {n.replace(".", "_"): n for n, _ in ref.named_modules()}
                    mod = under[stem[len("lora_unet_"):]]
                W = sd_ref[mod + ".weight"]
                W += (sd_file[b_k].float() @ A.float()) * scale
    data = CachedLatents(cache)
    mode = ob.get_mode(cfg.mode, first_frame_prob=cfg.first_frame_prob)
    batch = trainer._batches(0)[0]
    gen = torch.Generator().manual_seed(en._mix(cfg.seed, 0, 0))
    inputs = en.build_step_inputs([data.get(i) for i in batch], mode, cfg, gen, data.empty_text(), "cpu", torch.float32)
    with torch.no_grad():
        v, a = make_predict(checkpointing=False)(ref, inputs)
    lv = ob.masked_mse(v, inputs.video.noised.target, inputs.video.noised.loss_mask)
    la = ob.masked_mse(a, inputs.audio.noised.target, inputs.audio.noised.loss_mask)
    return float(ob.combine_losses(lv, la, cfg.audio_weight))


@pytest.mark.parametrize("layout,rank,alpha", [("ltx-trainer", 4, None), ("kohya", 4, 2.0), ("diffusers", 8, 16.0)])
def test_run_starts_from_a_foreign_lora_with_its_alpha(tiny, tmp_path, layout, rank, alpha):
    ckpt, cache = tiny
    root = load_tree_from_checkpoint(ckpt, dtype=torch.float32)
    sd = _foreign_lora(root, layout, rank=rank, alpha=alpha, seed=rank)
    f = tmp_path / f"{layout}.safetensors"
    save_file(sd, str(f), metadata={"tool": layout})
    # rank / alpha / targets of the settings are not the file's: the file decides
    cfg = en.TrainConfig(steps=1, learning_rate=1e-3, rank=16, targets="video attention", seed=5,
                         mixed_precision="fp32", checkpoint_every=0, sigma_sampler="uniform", caption_dropout=0.0,
                         first_frame_prob=0.0, init_lora=str(f))
    notes = []
    tr = en.Trainer(root, make_predict(checkpointing=False), CachedLatents(cache), cfg, tmp_path / "run",
                    callbacks=en.Callbacks(on_event=lambda n, p: notes.append(p.get("message", ""))))
    res = tr.train()
    n_mod = len(resolve_targets(root, "all attention"))
    assert res.lora.rank == rank and len(res.lora.names) == n_mod
    assert res.lora.alpha == (alpha if alpha is not None else rank)  # no .alpha: alpha = rank, as Lightricks'
    assert any(f"{n_mod} modules, rank {rank}" in m for m in notes), notes
    scale = (alpha if alpha is not None else rank) / rank
    want = _merged_first_loss(ckpt, cache, sd, layout, scale, cfg, tr)
    plain = _merged_first_loss(ckpt, cache, sd, layout, 0.0, cfg, tr)
    got = res.history[0]["loss"]
    assert got == pytest.approx(want, rel=2e-5), (got, want)
    assert abs(got - plain) > 100 * abs(got - want) + 1e-6, "the init LoRA made no difference to the first loss"


def test_modules_the_model_lacks_are_skipped_and_named(tiny, tmp_path):
    """A LoRA of a larger variant (2.3's gate projections, a block 2.0's tiny model lacks):
    the modules that fit load, the others are named; nothing fitting is refused."""
    ckpt, cache = tiny
    root = load_tree_from_checkpoint(ckpt, dtype=torch.float32)
    sd = _foreign_lora(root, "ltx-trainer", rank=4)
    nb = len(root.transformer_blocks)
    sd[f"diffusion_model.transformer_blocks.{nb}.attn1.to_q.lora_A.weight"] = torch.zeros(4, 8)
    sd[f"diffusion_model.transformer_blocks.{nb}.attn1.to_q.lora_B.weight"] = torch.zeros(8, 4)
    q = root.transformer_blocks[0].attn1.to_q
    sd["diffusion_model.transformer_blocks.0.attn1.to_q.lora_A.weight"] = torch.zeros(4, q.in_features + 3)
    f = tmp_path / "mixed.safetensors"
    save_file(sd, str(f))
    notes = []
    cfg = en.TrainConfig(steps=1, rank=4, mixed_precision="fp32", checkpoint_every=0, init_lora=str(f))
    res = en.Trainer(root, make_predict(checkpointing=False), CachedLatents(cache), cfg, tmp_path / "run",
                     callbacks=en.Callbacks(on_event=lambda n, p: notes.append(p.get("message", "")))).train()
    skipped = next(m for m in notes if "skipped" in m)
    assert f"transformer_blocks.{nb}.attn1.to_q" in skipped and "transformer_blocks.0.attn1.to_q (file" in skipped
    assert "transformer_blocks.0.attn1.to_q" not in res.lora.names and len(res.lora.names) > 10

    bad = {k: v for k, v in sd.items() if f"blocks.{nb}." in k}
    f2 = tmp_path / "other_model.safetensors"
    save_file(bad, str(f2))
    cfg2 = en.TrainConfig(steps=1, rank=4, mixed_precision="fp32", checkpoint_every=0, init_lora=str(f2))
    with pytest.raises(LoRAError, match="other_model.safetensors fits nothing in this model"):
        en.Trainer(root, make_predict(checkpointing=False), CachedLatents(cache), cfg2, tmp_path / "run2").train()
    f3 = tmp_path / "dora.safetensors"
    save_file({**sd, "diffusion_model.transformer_blocks.0.attn1.to_k.dora_scale": torch.ones(8)}, str(f3))
    cfg3 = en.TrainConfig(steps=1, rank=4, mixed_precision="fp32", checkpoint_every=0, init_lora=str(f3))
    with pytest.raises(LoRAError, match="not plain LoRA pairs"):
        en.Trainer(root, make_predict(checkpointing=False), CachedLatents(cache), cfg3, tmp_path / "run3").train()
