"""The Train node holds what a user decides per run, with real values; the rest comes from two
typed option nodes (LTX-2 Training Options, LTX-2 Validation). Schema and settings only: no
training here (test_train_node trains)."""
from __future__ import annotations

import sys

import pytest


def _mod(comfy):
    return sys.modules[comfy.pack["LTX2TrainLoRA"].__module__]


def _widgets(info: dict) -> dict:
    out = {}
    for sec in ("required", "optional"):
        for name, spec in info["input"].get(sec, {}).items():
            t = spec[0]
            if isinstance(t, list) or t in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"):
                out[name] = spec[1] if len(spec) > 1 else {}
    return out


def test_train_node_shows_real_values_and_a_fixed_seed(comfy):
    from trainer_core.engine import RECIPES

    info = comfy.pack["LTX2TrainLoRA"].GET_NODE_INFO_V1()
    w = _widgets(info)
    assert list(w) == ["recipe", "lora_name", "steps", "rank", "learning_rate", "mode", "resume", "seed"], list(w)
    ch = RECIPES["Character"]
    assert w["recipe"]["default"] == "Character"
    # a new node shows the default recipe's own values, not "0 = recipe" placeholders
    for k in ("steps", "rank", "learning_rate", "mode"):
        assert w[k]["default"] == ch[k], (k, w[k]["default"], ch[k])
    assert w["steps"]["min"] >= 1 and w["rank"]["min"] >= 1 and w["learning_rate"]["min"] > 0
    assert w["seed"]["control_after_generate"] == "fixed"
    # the web extension fills the fields from these (every recipe, every field it fills)
    shipped = w["recipe"]["ltx2_recipes"]
    assert set(shipped) == set(RECIPES) and set(w["recipe"]["options"]) == set(RECIPES) | {"Custom"}
    for name, r in RECIPES.items():
        for k in ("steps", "rank", "learning_rate", "mode", "targets", "audio_weight"):
            assert shipped[name][k] == r[k], (name, k)
    # the option nodes plug in through their own types
    opt = info["input"]["optional"]
    assert opt["options"][0] == "LTX2_TRAIN_OPTIONS" and opt["validation"][0] == "LTX2_VALIDATION"
    assert comfy.pack["LTX2TrainOptions"].GET_NODE_INFO_V1()["output"] == ["LTX2_TRAIN_OPTIONS"]
    assert comfy.pack["LTX2TrainValidation"].GET_NODE_INFO_V1()["output"] == ["LTX2_VALIDATION"]


def _opts(comfy, **kw) -> dict:
    info = comfy.pack["LTX2TrainOptions"].GET_NODE_INFO_V1()
    vals = {k: v[1]["default"] for k, v in info["input"]["required"].items()}
    vals.update(kw)
    return comfy.pack["LTX2TrainOptions"].execute(**vals).result[0]


def test_the_recipe_decides_targets_until_an_options_node_does(comfy):
    m = _mod(comfy)
    run = dict(steps=10, rank=8, learning_rate=2e-4, mode="video_only", seed=3)
    bare = m.build_config("Style", run, None)
    assert (bare.targets, bare.audio_weight, bare.alpha) == ("video attention", 0.0, 8.0)
    assert (bare.steps, bare.rank, bare.learning_rate, bare.mode) == (10, 8, 2e-4, "video_only")
    # the Training Options defaults are the old Train node's defaults
    assert (bare.caption_dropout, bare.checkpoint_every, bare.mixed_precision) == (0.05, 250, "bf16")
    wired = m.build_config("Style", run, _opts(comfy, targets="all attention", audio_weight=0.7, alpha_ratio=2.0,
                                                 precision="fp32", checkpoint_every=5))
    assert (wired.targets, wired.audio_weight, wired.alpha) == ("all attention", 0.7, 16.0)
    assert (wired.mixed_precision, wired.checkpoint_every) == ("fp32", 5)


def test_old_flat_names_split_into_the_option_nodes(comfy):
    m = _mod(comfy)
    got = m.flat_inputs(recipe="Character", lora_name="x", steps=5, rank=4, precision="fp32", alpha=8.0,
                        targets="audio attention", validation_every=2, validation_width=64)
    assert got["options"] == {"precision": "fp32", "targets": "audio attention", "alpha_ratio": 2.0}
    assert got["validation"]["every"] == 2 and got["validation"]["width"] == 64 and got["validation"]["frames"] == 49
    assert "validation" not in m.flat_inputs(validation_every=0)


def test_validation_node_refuses_a_frame_count_before_training(comfy):
    with pytest.raises(ValueError, match="8·n \\+ 1"):
        comfy.pack["LTX2TrainValidation"].execute(every=2, prompts="p", vae=None, audio_vae=None, frames=10)


def test_an_old_api_prompt_is_upgraded(comfy):
    """An API prompt for the old single Train node (sentinels, validation on it) becomes the
    three-node form with the recipe's values, every input one the new nodes define (the
    server's run of an old prompt: tests/e2e/test_cancel.py)."""

    m = _mod(comfy)
    old = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x.safetensors"}},
           "2": {"class_type": "LTX2TrainLoRA", "inputs": {
               "model": ["1", 0], "latents": ["3", 0], "recipe": "Style", "lora_name": "old", "steps": 0,
               "learning_rate": 0.0, "rank": 0, "mode": "recipe default", "targets": "recipe default", "seed": 5,
               "resume": "none", "alpha": 0.0, "audio_weight": -1.0, "precision": "fp32", "checkpoint_every": 7,
               "validation_every": 3, "validation_prompts": "sks", "validation_clip": ["1", 1],
               "validation_vae": ["1", 2], "validation_audio_vae": ["4", 0], "validation_width": 64}}}
    assert m.upgrade_old_prompt(old, m.recipe_fields()) == ["2"]
    tr = old["2"]["inputs"]
    assert (tr["steps"], tr["rank"], tr["learning_rate"], tr["mode"]) == (1500, 32, 1e-4, "video_only")
    op = old[tr["options"][0]]
    assert op["class_type"] == "LTX2TrainOptions"
    assert op["inputs"]["targets"] == "video attention" and op["inputs"]["audio_weight"] == 0.0
    assert op["inputs"]["precision"] == "fp32" and op["inputs"]["checkpoint_every"] == 7
    va = old[tr["validation"][0]]
    assert va["class_type"] == "LTX2TrainValidation"
    assert va["inputs"]["clip"] == ["1", 1] and va["inputs"]["vae"] == ["1", 2] and va["inputs"]["width"] == 64
    assert not any(k.startswith("validation_") for k in tr)
    assert m.upgrade_old_prompt(old, m.recipe_fields()) == []  # the new form is left alone
    # every input the new nodes get is one they define
    for nid in (tr["options"][0], tr["validation"][0]):
        info = comfy.pack[old[nid]["class_type"]].GET_NODE_INFO_V1()["input"]
        names = set(info["required"]) | set(info.get("optional", {}))
        assert set(old[nid]["inputs"]) <= names, set(old[nid]["inputs"]) - names
