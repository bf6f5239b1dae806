"""Paired clips (IC-LoRA references, inpainting masks) from the folder to the cache: the
naming rule, dataset.json's columns, a reference folder, unpaired clips reported, a pair kept
in one bucket (scaled reference), Split Scenes' boundaries shared, masks on the latent grid
as ltx-trainer's preprocessing puts them."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from trainer_core import buckets as bk
from trainer_core import media, pairs
from trainer_core.cache import CachedLatents
from trainer_core.dataset import Bucket, Segment
from trainer_core.encode import Encoders, encode_dataset

from .mediagen import write_clip, write_image


def _clips(root, n=3, size=(128, 64)):
    for i in range(n):
        write_clip(root / f"c{i}.mp4", scenes=(1.0,), fps=24, size=size, audio=True, seed=i, preset="ultrafast")


def test_naming_rule_table_and_folder_pairing_and_unpaired_reported(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    _clips(root, 4)
    write_clip(root / "c0.reference.mp4", scenes=(1.0,), fps=24, size=(128, 64), audio=False, seed=9,
               preset="ultrafast")
    refs = tmp_path / "refs"
    refs.mkdir()
    write_clip(refs / "c1.mp4", scenes=(1.0,), fps=24, size=(128, 64), audio=True,
               seed=8, preset="ultrafast")
    write_clip(root / "other.mp4", scenes=(1.0,), fps=24, size=(128, 64), audio=False, seed=7, preset="ultrafast")
    (root / "dataset.json").write_text(json.dumps([
        {"media_path": "c2.mp4", "caption": "two", "reference_video": "other.mp4"},
        {"media_path": "c3.mp4", "caption": "three", "reference_video": "../outside.mp4"}]))
    cs = media.load_clips(root)
    names = sorted(c.name for c in cs.clips)
    assert "c0.reference.mp4" not in names and "c0.mask.png" not in names  # pair files are not clips
    lines = pairs.attach_pairs(cs, refs)
    by = {c.name: c for c in cs.clips}
    assert by["c0.mp4"].pair_source == {"reference": "name"}
    assert by["c1.mp4"].pair_source["reference"] == "folder"
    assert by["c1.mp4"].reference_audio == by["c1.mp4"].reference  # a reference with sound: its audio too
    assert by["c2.mp4"].pair_source["reference"] == "dataset.json"
    assert by["c2.mp4"].reference.endswith("other.mp4")
    # c3 has no reference (its row points outside the dataset): reported and left out, never trained
    assert "c3.mp4" not in by
    assert any("c3.mp4" in s.path and "no reference" in s.reason for s in cs.skipped)
    assert any("outside the dataset folder" in w.reason for w in cs.warnings)
    assert "3 clips with a reference" in lines
    # a mask file beside one clip: the clips without one are left out, named
    write_image(root / "c0.mask.png", size=(128, 64))
    cs = media.load_clips(root)
    pairs.attach_pairs(cs, refs)
    assert [c.name for c in cs.clips] == ["c0.mp4"] and cs.clips[0].pair_source["video_mask"] == "name"
    assert sum("video mask" in s.reason for s in cs.skipped) == 3  # c1, c2, c3 ("other.mp4" is c2's pair)
    assert "other.mp4" not in [c.name for c in cs.clips]


def test_reference_frames_split_in_clip_order(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    _clips(root, 2)
    cs = media.load_clips(root)
    n = [c.num_frames for c in cs.clips]
    frames = np.zeros((sum(n), 64, 128, 3), np.uint8)
    frames[n[0]:] = 200
    pairs.attach_reference_frames(cs, frames, tmp_path / "refs")
    a = pairs.frames_at(cs.clips[0].reference, [0.0, 0.5], 24.0)
    b = pairs.frames_at(cs.clips[1].reference, [0.0], 24.0)
    assert a.max() == 0 and b.min() == 200
    with pytest.raises(pairs.PairError, match="reference_frames has 3 frames"):
        pairs.attach_reference_frames(cs, frames[:3], tmp_path / "refs")


def test_video_mask_on_the_latent_grid_as_official():
    """ltx-trainer compute_video_masks (scripts/process_videos.py at 400fd31): 32×32 average,
    max over groups of 8 frames from frame 0 (last group padded), > 0.5 — checked on cases
    whose result follows from those rules by hand."""
    f, h, w = 3, 2, 2  # 17 frames of 64×64
    px = np.ones((17, 64, 64), np.float32)
    m = pairs.video_mask_to_latent(px, (f, h, w))
    assert m.shape == (3, 2, 2) and torch.all(m == 1)
    px2 = px.copy()
    px2[:, :32, :32] = 0.0  # top-left patch black in every frame
    px2[:, 32:, 32:48] = 0.0  # bottom-right patch half black: its mean 0.5 is not > 0.5
    m = pairs.video_mask_to_latent(px2, (f, h, w))
    assert m[:, 0, 0].sum() == 0 and m[:, 0, 1].sum() == 3 and m[:, 1, 1].sum() == 0
    px3 = px.copy()
    px3[:8] = 0.0  # frames 0-7 black: group 0 (frames 0..7) is all 0 -> its max 0
    px3[16] = 0.0  # frame 16 alone in the padded last group (with zeros): max 0
    m = pairs.video_mask_to_latent(px3, (f, h, w))
    assert m[0].sum() == 0 and m[1].sum() == 4 and m[2].sum() == 0
    a = pairs.audio_mask_to_latent(np.r_[np.zeros(50), np.ones(50)], 10)
    assert a.tolist() == [0.0] * 5 + [1.0] * 5


def test_generated_masks_are_seeded_per_sample():
    a = pairs.generated_video_mask("generated:boxes:3", 9, 64, 96, "c0#0")
    b = pairs.generated_video_mask("generated:boxes:3", 9, 64, 96, "c0#0")
    c = pairs.generated_video_mask("generated:boxes:3", 9, 64, 96, "c1#0")
    s = pairs.generated_video_mask("generated:strokes:3", 9, 64, 96, "c0#0")
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    for m in (a, s):
        assert 0 < (m == 0).mean() < 0.9 and set(np.unique(m)) <= {0.0, 1.0}
    sp = pairs.generated_audio_mask("generated:spans:1", 100, "k")
    assert 0 < (sp == 0).sum() <= 66


def _fake_encoders():
    def ev(frames):  # [F, H, W, 3] -> [128, F', H/32, W/32]: block means, so content shows
        x = torch.from_numpy(frames).float().mean(-1) / 255.0
        f = 1 + (x.shape[0] - 1) // 8
        x = x[:: 8][:f]
        x = torch.nn.functional.avg_pool2d(x[:, None], 32)[:, 0]
        return x[None].expand(128, -1, -1, -1).clone()

    def ea(pcm, rate):
        t = int(round(pcm.shape[1] / rate * 25))
        return torch.full((8, t, 16), float(np.abs(pcm).mean()))

    return Encoders(encode_video=ev, encode_text=lambda c: {"context": torch.zeros(3, 8)}, encode_audio=ea,
                    audio_rate=16000, identity={"vae": "fake"})


def test_pairs_through_split_bucket_and_encode(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    write_clip(root / "c0.mp4", scenes=(1.0, 1.0), fps=24, size=(256, 128), audio=True, seed=1, preset="ultrafast")
    write_clip(root / "c0.reference.mp4", scenes=(2.0,), fps=24, size=(256, 128), audio=True, seed=2,
               preset="ultrafast")
    cs = media.load_clips(root)
    pairs.attach_pairs(cs)
    pairs.set_generated_masks(cs, "video_mask", "boxes", 5)
    pairs.set_generated_masks(cs, "audio_mask", "spans", 5)
    cs.segments = [Segment(0, 0.0, 1.0, 0), Segment(0, 1.0, 2.0, 1)]  # Split Scenes' cut at 1 s
    ds, rep = bk.build_dataset(cs, [Bucket(256, 128, 17)], target_fps=24, reference_scale=2)
    assert len(ds.samples) == 2
    for s in ds.samples:
        assert s.reference_bucket == Bucket(128, 64, 17) and s.reference_scale == 2 and s.reference_audio
    with pytest.raises(bk.BucketError, match="multiples of 128"):
        bk.build_dataset(cs, [Bucket(288, 128, 17)], target_fps=24, reference_scale=4)
    cache = tmp_path / "cache"
    r1 = encode_dataset(ds, cache, _fake_encoders())
    assert r1.paired == {"reference": 2, "reference audio": 2, "video mask": 2, "audio mask": 2}
    data = CachedLatents(cache)
    items = [data.get(i) for i in range(2)]
    for it in items:
        assert it.reference.shape == (128, 3, 2, 4) and it.video.shape == (128, 3, 4, 8)
        assert it.reference_audio.shape == (8, 18, 16) and it.reference_scale == 2
        assert it.video_mask.shape == (3, 4, 8) and it.audio_mask.shape == (18,)
        assert 0 < it.video_mask.sum() < it.video_mask.numel()
    # the reference is read at the sample's own times (the pair shares the clip's timeline)
    ref_frames = media.frames_at(root / "c0.reference.mp4", [1.0])
    want = torch.nn.functional.avg_pool2d(torch.from_numpy(ref_frames).float().mean(-1)[:, None] / 255, 64)[0, 0]
    assert torch.allclose(items[1].reference[0, 0], want, atol=0.03)
    # hashed like the rest: a second run encodes nothing
    r2 = encode_dataset(ds, cache, _fake_encoders())
    assert r2.encoded == {"video": 0, "audio": 0, "text": 0}
    from trainer_core import modes as md

    data.verify(md.get("av2av_ic_lora"))
    bare = tmp_path / "bare"
    cs2 = media.load_clips(root)
    ds2, _ = bk.build_dataset(cs2, [Bucket(256, 128, 17)], target_fps=24)
    encode_dataset(ds2, bare, _fake_encoders())
    from trainer_core.cache import CacheError

    with pytest.raises(CacheError, match="no reference for 1 of 1 samples"):
        CachedLatents(bare).verify(md.get("v2v_ic_lora"))


def test_gallery_shows_the_mask_over_the_sample_and_the_reference_beside(tmp_path):
    from PIL import Image

    from trainer_core import preview

    root = tmp_path / "ds"
    root.mkdir()
    write_clip(root / "c0.mp4", scenes=(1.0,), fps=24, size=(256, 128), audio=False, seed=1, preset="ultrafast")
    write_clip(root / "c0.reference.mp4", scenes=(1.0,), fps=24, size=(256, 128), audio=False, seed=2,
               preset="ultrafast")
    cs = media.load_clips(root)
    pairs.attach_pairs(cs)
    pairs.set_generated_masks(cs, "video_mask", "boxes", 1)
    ds, _ = bk.build_dataset(cs, [Bucket(256, 128, 17)], target_fps=24, audio_planned=False, reference_scale=2)
    s = ds.samples[0]
    grey = Image.new("RGB", (192, 96), (128, 128, 128))
    out = np.asarray(preview._with_pairs(grey, ds, s, ds.segments[0].key(cs.clips), 96))
    assert out.shape == (96, 192 + 2 + 192, 3)  # the reference (1/2 size, same aspect) beside it
    sample = out[:, -192:].astype(int)
    hole = pairs.video_mask_pixels(s.video_mask, [0.0], (256, 128), 24.0, key=ds.segments[0].key(cs.clips))[0]
    tinted = (sample[..., 0] - sample[..., 1]) > 60
    assert 0 < tinted.mean() < 1 and abs(tinted.mean() - (hole <= 0.5).mean()) < 0.05


def test_a_reference_folder_inside_the_dataset_is_not_read_as_clips(tmp_path):
    root = tmp_path / "ds"
    (root / "refs").mkdir(parents=True)
    write_clip(root / "c0.mp4", scenes=(0.5,), fps=24, size=(64, 64), audio=False, seed=1, preset="ultrafast")
    write_image(root / "refs" / "c0.png", size=(64, 64))
    assert len(media.load_clips(root).clips) == 2
    cs = media.load_clips(root, exclude_dirs=[root / "refs"])
    pairs.attach_pairs(cs, root / "refs")
    assert [c.name for c in cs.clips] == ["c0.mp4"] and cs.clips[0].reference.endswith("refs/c0.png")
    assert cs.clips[0].reference_audio is None  # a still has no sound
