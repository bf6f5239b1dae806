"""Caption in real ComfyUI: Load Clips → Split Scenes → Caption → Bucket, with a tiny
Qwen2.5-VL model in a registered ``models/captioners`` folder; the captions reach the
dataset value, are written beside the clips, and a second run loads no model."""
from __future__ import annotations

import pytest
import torch

from tests.core import mediagen as mg
from tests.core.tinycaption import make_tiny_vl


def _run(comfy, node_id, **kw):
    with torch.inference_mode():
        return comfy.pack[node_id].execute(**kw)


@pytest.fixture(scope="module")
def captioner(comfy):
    root = comfy.base / "models" / "captioners"
    comfy.folder_paths.add_model_folder_path("captioners", str(root), is_default=True)
    make_tiny_vl(root / "tiny-qwen2.5-vl")
    return "tiny-qwen2.5-vl"


def test_caption_between_split_and_bucket(comfy, captioner, monkeypatch):
    d = comfy.base / "input" / "capset"
    d.mkdir(parents=True, exist_ok=True)
    mg.write_clip(d / "two.mp4", scenes=[mg.Scene(1.0, tone=440.0), mg.Scene(1.0, tone=880.0)], size=(96, 64), fps=24)
    opts = comfy.pack["LTX2TrainCaption"].define_schema().inputs[1].options
    assert captioner in opts
    clips = _run(comfy, "LTX2TrainLoadClips", folder="capset", path="").result[0]
    split = _run(comfy, "LTX2TrainSplitScenes", clips=clips, enabled=True, detector="content", threshold=0.0,
                 min_seconds=0.5, max_seconds=10.0).result[0]
    assert len(split.segments) == 2
    out = _run(comfy, "LTX2TrainCaption", clips=split, model=captioner, precision="bf16", prompt="",
               trigger_word="sks", overwrite=False, frames=2, max_side=112, max_words=12)
    captioned, sheet, summary = out.result
    assert "captioned 2" in summary and sheet.shape[-1] == 3
    assert all(s.caption and s.caption.startswith("sks") for s in captioned.segments)
    assert (d / "two.scene000.txt").read_text().strip() == captioned.segments[0].caption
    ds = _run(comfy, "LTX2TrainBucket", clips=captioned, preset="custom", buckets="96x64x17",
              target_fps=24.0, audio=True, static_threshold=0.0).result[0]
    assert ds.samples and all(s.caption and s.caption.startswith("sks") for s in ds.samples)
    # hand edit survives, and a re-run needs no model
    (d / "two.scene001.txt").write_text("sks, edited by hand\n")
    again = _run(comfy, "LTX2TrainCaption", clips=split, model=captioner, precision="bf16", prompt="",
                 trigger_word="sks", overwrite=False, frames=2, max_side=112, max_words=12)
    assert "captioned 0, kept 2" in again.result[2]
    assert again.result[0].segments[1].caption == "sks, edited by hand"


def test_missing_model_says_where(comfy, captioner):
    (comfy.base / "models" / "captioners" / "half-model").mkdir(exist_ok=True)
    d = comfy.base / "input" / "capset2"
    d.mkdir(parents=True, exist_ok=True)
    mg.write_clip(d / "a.mp4", scenes=[1.0], size=(64, 64), fps=24)
    clips = _run(comfy, "LTX2TrainLoadClips", folder="capset2", path="").result[0]
    with pytest.raises(ValueError, match="missing: config.json.*models/captioners/half-model"):
        _run(comfy, "LTX2TrainCaption", clips=clips, model="half-model", precision="bf16", prompt="",
             trigger_word="", overwrite=False, frames=2, max_side=112, max_words=12)
    with pytest.raises(ValueError, match=r"\.\."):
        _run(comfy, "LTX2TrainCaption", clips=clips, model="../x", precision="bf16", prompt="",
             trigger_word="", overwrite=False, frames=2, max_side=112, max_words=12)
