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


def _setup(tmp_path, **train):
    from trainer_core.tiny_checkpoint import make_tiny_cache

    ckpt = make_tiny_checkpoint(tmp_path / "tiny.safetensors", variant="ltx-2.0", seed=0)
    cache = make_tiny_cache(tmp_path / "cache", "ltx-2.0", n=2)
    cfg = TrainConfig(steps=2, rank=2, mixed_precision="fp32", checkpoint_every=0, learning_rate=1e-3)
    doc = settings_document(cfg, str(cache), {}, str(tmp_path / "out.safetensors"), str(tmp_path / "run"))
    doc["train"].update(train)
    write_yaml(tmp_path / "settings.yaml", doc)
    return ckpt


def test_cli_refuses_bad_settings_and_outputs_before_loading(tmp_path, capsys):
    """steps "10" (a string in the YAML), audio_weight -1, a --lora that is a folder or a
    device name: refused with exit code 2 and the reason, before the model loads and before
    any training (no run folder appears)."""
    ckpt = _setup(tmp_path, steps="10", audio_weight=-1)
    rc = cli.main(["train", str(tmp_path / "settings.yaml"), "--checkpoint", str(ckpt), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "steps must be a whole number, not '10'" in err and "audio_weight = -1" in err, err
    assert not (tmp_path / "run").exists()
    ckpt = _setup(tmp_path)
    (tmp_path / "a_folder").mkdir()
    for bad, says in [(tmp_path / "a_folder", "is a folder"), (tmp_path / "nul.safetensors", "Windows device name"),
                      (tmp_path / ("x" * 300 + ".safetensors"), "characters long"), (tmp_path / "out.bin", ".safetensors")]:
        rc = cli.main(["train", str(tmp_path / "settings.yaml"), "--checkpoint", str(ckpt), "--lora", str(bad)])
        err = capsys.readouterr().err
        assert rc == 2 and says in err, (bad, err)
    assert not (tmp_path / "run").exists()


def test_cli_starts_from_an_init_lora(tmp_path, capsys):
    from safetensors.torch import save_file

    from trainer_core.lora import resolve_targets
    from trainer_core.ltx2 import load_tree_from_checkpoint

    ckpt = _setup(tmp_path)
    root = load_tree_from_checkpoint(ckpt, dtype=torch.float32)
    mods = dict(root.named_modules())
    sd = {}
    for n in resolve_targets(root, "audio attention"):
        sd[f"diffusion_model.{n}.lora_A.weight"] = torch.randn(3, mods[n].in_features).bfloat16()
        sd[f"diffusion_model.{n}.lora_B.weight"] = torch.zeros(mods[n].out_features, 3).bfloat16()
    save_file(sd, str(tmp_path / "start.safetensors"))
    rc = cli.main(["train", str(tmp_path / "settings.yaml"), "--checkpoint", str(ckpt), "--device", "cpu",
                   "--dtype", "fp32", "--init-lora", str(tmp_path / "start.safetensors")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "note: starting from start.safetensors:" in out and "rank 3" in out
    got, meta = load_lora(tmp_path / "out.safetensors")
    assert {k for k in got if k.endswith("lora_A.weight")} == {k for k in sd if k.endswith("lora_A.weight")}
    assert meta["rank"] == "3" and meta["alpha"] == "3.0" and "Lightricks' loader ignores .alpha" in meta["alpha_note"]


def test_cli_trains_under_the_memory_plan_the_train_node_makes(tmp_path, capsys):
    """Headless runs with a VRAM budget (on a GPU: always) plan memory as the Train node does,
    for the process's share of the global batch, and say so; a plan that would stream weights
    the process has loaded whole falls back to recomputing every block. The LoRA equals the
    plan-less run's (every block checkpointed): the plan changes what is saved, not what is learnt."""
    from types import SimpleNamespace as NS

    from trainer_core.ltx2 import load_tree_from_checkpoint

    def run(tag, **train):
        ckpt = _setup(tmp_path / tag, **train)
        rc = cli.main(["train", str(tmp_path / tag / "settings.yaml"), "--checkpoint", str(ckpt), "--device", "cpu",
                       "--dtype", "fp32"])
        out = capsys.readouterr().out
        assert rc == 0, out
        return out, load_lora(tmp_path / tag / "out.safetensors")[0]

    plain_out, plain = run("plain")
    assert "memory plan" not in plain_out
    roomy_out, roomy = run("roomy", vram_budget_gb=64.0)
    assert "note: memory plan (budget 64.0 GiB)" in roomy_out and "blocks keep activations" in roomy_out
    tight_out, tight = run("tight", vram_budget_gb=1e-4)
    assert "weights do not fit in the 0.0 GiB budget" in tight_out and "--strategy fsdp2" in tight_out
    keep_out, keep = run("keep", vram_budget_gb=1e-4, grad_checkpointing=False)
    assert "gradient checkpointing is off: every block keeps" in keep_out and "all weights resident" in keep_out
    for got in (roomy, tight, keep):
        assert got.keys() == plain.keys()
        for k in plain:
            assert torch.allclose(got[k], plain[k], rtol=1e-5, atol=1e-7), k
    # data parallel: the plan is made for this process's share of the global batch
    ckpt = _setup(tmp_path / "share", vram_budget_gb=64.0)
    root = load_tree_from_checkpoint(ckpt, dtype=torch.float32)
    from trainer_core.engine import TrainConfig
    from trainer_core.run import read_settings

    doc = read_settings(tmp_path / "share" / "settings.yaml")
    cfg = TrainConfig.from_dict(dict(doc["train"]))
    said = []
    pred = cli._predict_for(cfg, root, doc["cache"], torch.device("cpu"), NS(exact=False, world=2), sp=False,
                            sharded=False, batch_size=4, say=lambda *a, **k: said.append(a[0]))
    assert pred.memory_plan is not None and "planned for batches of 2 clips" in said[0]
    exact = cli._predict_for(cfg, root, doc["cache"], torch.device("cpu"), NS(exact=True, world=2), sp=False,
                             sharded=False, batch_size=4, say=lambda *a, **k: None)
    assert "batches of" not in exact.memory_plan.summary() + " ".join(exact.memory_plan.notes)
    # sharded base or split tokens: no plan
    assert cli._predict_for(cfg, root, doc["cache"], torch.device("cpu"), NS(exact=False, world=2), sp=False,
                            sharded=True, batch_size=4, say=said.append).memory_plan is None
