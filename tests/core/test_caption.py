"""Caption pipeline (trainer_core.caption) through the real transformers code path, with
tiny random models of the two supported families built here, on clips written by mediagen.

A random model writes nonsense; what is tested is what the model receives (frames of the
right segment and count, audio at the processor's rate, the family's prompt), and what
happens to its output (cleaned, capped, trigger-prefixed, written atomically, kept on
re-runs, failures isolated)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.core import mediagen as mg
from tests.core.tinycaption import make_tiny_omni, make_tiny_vl
from trainer_core import caption as cap
from trainer_core import media
from trainer_core.dataset import Segment


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("captioners")
    return {"vision": make_tiny_vl(root / "tiny-qwen2.5-vl"), "omni": make_tiny_omni(root / "tiny-qwen2.5-omni")}


@pytest.fixture()
def clips(tmp_path):
    d = tmp_path / "input" / "set"
    d.mkdir(parents=True)
    mg.write_clip(d / "two.mp4", scenes=[mg.Scene(1.0, tone=440.0), mg.Scene(1.0, tone=880.0)], size=(160, 96), fps=24)
    mg.write_clip(d / "one.mp4", scenes=[mg.Scene(1.0, tone=660.0)], size=(96, 160), fps=24)
    cs = media.load_clips(str(d))
    two = next(i for i, c in enumerate(cs.clips) if c.name == "two.mp4")
    one = next(i for i, c in enumerate(cs.clips) if c.name == "one.mp4")
    cs.segments = [Segment(two, 0.0, 1.0, 0), Segment(two, 1.0, 2.0, 1), Segment(one, 0.0, 1.0, 0)]
    return cs, d


def _spy(captioner):
    """Record what generate receives, and the frames, audio and prompt given to the processor."""
    calls, given = [], []
    orig = captioner.model.generate
    orig_inputs = captioner.inputs

    def gen(**kw):
        calls.append(kw)
        return orig(**kw)

    def inputs(frames, audio, prompt, fps=None):
        given.append((frames, audio, prompt, fps))
        return orig_inputs(frames, audio, prompt, fps)

    captioner.model.generate = gen
    captioner.inputs = inputs
    return calls, given


def test_missing_model_files_are_named(tmp_path):
    d = tmp_path / "captioners" / "Qwen2.5-Omni-7B"
    with pytest.raises(cap.CaptionModelError, match="does not exist"):
        cap.check_model_dir(d)
    d.mkdir(parents=True)
    (d / "config.json").write_text('{"model_type": "qwen2_5_omni"}')
    (d / "model.safetensors.index.json").write_text('{"weight_map": {"a": "model-00001-of-00002.safetensors"}}')
    with pytest.raises(cap.CaptionModelError) as e:
        cap.check_model_dir(d)
    msg = str(e.value)
    assert "model-00001-of-00002.safetensors" in msg and "tokenizer.json" in msg and "preprocessor_config.json" in msg
    assert "models/captioners/Qwen2.5-Omni-7B" in msg
    for f in ("model-00001-of-00002.safetensors", "tokenizer.json", "preprocessor_config.json"):
        (d / f).write_text("{}")
    assert cap.check_model_dir(d)[0] == "omni"
    (d / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(cap.CaptionModelError, match="supported"):
        cap.check_model_dir(d)


def test_clean_caption():
    assert cap.clean_caption('  "The video shows a man walking."  ') == "A man walking."
    assert cap.clean_caption("In this clip, a dog runs.", trigger="sks") == "sks, A dog runs."
    assert cap.clean_caption("sks dog runs.", trigger="sks") == "sks dog runs."
    long = " ".join(["word"] * 30 + ["end."] + ["more"] * 30)
    out = cap.clean_caption(long, max_words=40)
    assert len(out.split()) <= 40 and out.endswith(".")
    assert cap.clean_caption("One. Two three four five six. Seven eight nine ten eleven", max_words=8) == \
        "One. Two three four five six."


def test_segment_media_samples_the_segment(clips):
    cs, _ = clips
    seg = cs.segments[1]  # second scene of two.mp4: 880 Hz
    clip = cs.clips[seg.clip]
    frames, audio = cap.segment_media(clip, seg, n_frames=4, max_side=80, audio_rate=16000)
    assert frames.shape == (4, 48, 80, 3) and frames.dtype == np.uint8
    want = media.frames_at(clip.path, [1.0 + (i + 0.5) / 4 for i in range(4)], size=(80, 48))
    assert np.array_equal(frames, want)
    assert audio.shape == (16000,) and audio.dtype == np.float32
    assert abs(mg.dominant_frequency(audio, 16000) - 880.0) < 20


def test_vision_family_end_to_end(models, clips, tmp_path):
    cs, d = clips
    c = cap.Captioner.load(models["vision"], "bf16", "cpu")
    assert c.family == "vision"
    calls, given = _spy(c)
    out, rep = cap.caption_clips(cs, c, trigger="sks", n_frames=4, max_side=112, max_words=6,
                                 writable_roots=[tmp_path / "input"], fallback_root=tmp_path / "output")
    assert len(rep.written) == 3 and not rep.failed
    assert len(calls) == 3
    kw = calls[0]
    # 4 frames, temporal patch 2 -> 2 grid steps; the prompt is the vision-only one, no audio input
    assert kw["video_grid_thw"][0, 0].item() == 2
    assert "input_features" not in kw
    assert given[0][2] == cap.DEFAULT_PROMPT_VISION and given[0][1] is None
    assert given[0][0].shape == (4, 68, 112, 3)  # 160x96 clip, longest side 112, even sizes (67.2 -> 68)
    # the processor is told the rate the 4 frames were sampled at (evenly over each 1-second scene)
    assert [g[3] for g in given] == pytest.approx([4 / seg.duration for seg in out.segments]) == [4.0] * 3
    vid = c.model.config.video_token_id
    assert (kw["input_ids"] == vid).sum().item() > 0
    for seg in out.segments:
        assert seg.caption.startswith("sks") and len(seg.caption.split()) <= 7 and seg.caption_source == "caption"
    assert (d / "two.scene000.txt").read_text().strip() == out.segments[0].caption
    assert (d / "two.scene001.txt").is_file() and (d / "one.txt").is_file()
    assert not list(d.glob("*.tmp*"))
    # a re-run keeps everything and never loads a model
    loads = []
    again, rep2 = cap.caption_clips(cs, None, load=lambda: loads.append(1),
                                    writable_roots=[tmp_path / "input"], fallback_root=tmp_path / "output")
    assert not loads and len(rep2.kept) == 3 and [s.caption for s in again.segments] == [s.caption for s in out.segments]
    # overwrite re-captions
    _, rep3 = cap.caption_clips(cs, c, overwrite=True, n_frames=2, writable_roots=[tmp_path / "input"],
                                fallback_root=tmp_path / "output")
    assert len(rep3.written) == 3


def test_omni_family_hears_the_audio(models, clips, tmp_path):
    cs, d = clips
    c = cap.Captioner.load(models["omni"], "bf16", "cpu")
    assert c.family == "omni" and c.audio_rate == 16000
    calls, given = _spy(c)
    seen_audio = [g[1] for g in given]
    out, rep = cap.caption_clips(cs, c, n_frames=2, max_side=112, writable_roots=[],
                                 fallback_root=tmp_path / "output")
    assert len(rep.written) == 3 and not rep.failed
    kw = calls[0]
    assert "input_features" in kw and kw["feature_attention_mask"].sum().item() == 100  # 1 s at 16 kHz, hop 160
    seen_audio = [g[1] for g in given]
    assert given[0][2] == cap.DEFAULT_PROMPT and "quote any speech verbatim" in given[0][2]
    assert [round(mg.dominant_frequency(a, 16000)) // 10 for a in seen_audio] == [44, 88, 66]
    # outside ComfyUI's folders, captions go to the fallback root with the same relative names
    assert (tmp_path / "output" / "two.scene001.txt").is_file() and not (d / "two.scene001.txt").exists()


def test_a_failing_clip_is_reported_and_others_go_on(models, clips, tmp_path):
    cs, d = clips
    c = cap.Captioner.load(models["vision"], "bf16", "cpu")
    (d / "one.mp4").write_bytes(b"broken")
    out, rep = cap.caption_clips(cs, c, n_frames=2, max_side=112, writable_roots=[tmp_path / "input"],
                                 fallback_root=tmp_path / "output")
    assert len(rep.written) == 2 and len(rep.failed) == 1 and rep.failed[0][0] == "one.mp4#0"
    assert "failed 1" in rep.summary()


def test_interrupt_between_clips_keeps_what_is_done(models, clips, tmp_path):
    cs, d = clips
    c = cap.Captioner.load(models["vision"], "bf16", "cpu")

    class Stop(Exception):
        pass

    def progress(i, n, text=None):
        if i == 2 and i < n:
            raise Stop()

    with pytest.raises(Stop):
        cap.caption_clips(cs, c, n_frames=2, writable_roots=[tmp_path / "input"], fallback_root=tmp_path,
                          progress=progress)
    assert (d / "two.scene000.txt").is_file() and (d / "two.scene001.txt").is_file() and not (d / "one.txt").exists()
    _, rep = cap.caption_clips(cs, c, n_frames=2, writable_roots=[tmp_path / "input"], fallback_root=tmp_path)
    assert len(rep.kept) == 2 and len(rep.written) == 1
    assert torch.is_grad_enabled()


def test_full_omni_folder_loads_its_thinker_only(tmp_path):
    """A published-layout Qwen2.5-Omni folder (model_type qwen2_5_omni): the thinker's weights
    load from the ``thinker.`` keys (no pickled speaker table is read) and it captions."""
    from tests.core.tinycaption import make_tiny_omni_full

    path, want = make_tiny_omni_full(tmp_path / "Qwen2.5-Omni-tiny")
    assert not (path / "spk_dict.pt").exists()
    c = cap.Captioner.load(path, "bf16", "cpu")
    got = c.model.state_dict()
    assert set(want) <= set(got)
    assert all(torch.equal(got[k], want[k]) for k in want)
    frames = np.random.default_rng(0).integers(0, 255, (2, 64, 96, 3), dtype=np.uint8)
    assert isinstance(c.caption(frames, np.zeros(16000, np.float32), "the video shows", max_new_tokens=4), str)
