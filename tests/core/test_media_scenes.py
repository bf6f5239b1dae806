"""Media probing, frame and audio reading, and scene splitting on real media (no ComfyUI)."""
from __future__ import annotations

import pytest

from tests.core import mediagen as mg
from trainer_core import media, scenes
from trainer_core.dataset import ClipSet


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return mg.make_dataset(tmp_path_factory.mktemp("ds"))


@pytest.fixture(scope="module")
def clips(ds):
    return media.load_clips(ds.root)


def test_probe_matches_truth(ds, clips):
    by = {c.name: c for c in clips.clips}
    assert set(by) == set(ds.files)
    for name, t in ds.files.items():
        c = by[name]
        assert (c.width, c.height) == (t.width, t.height), name
        assert c.kind == t.kind, name
        if t.kind == "video":
            assert c.num_frames == t.num_frames, name
            assert c.duration == pytest.approx(t.duration, abs=1.5 / max(t.fps, 1)), name
            assert c.vfr == t.vfr, name
            assert (c.audio is not None) == (t.audio_rate is not None), name
            if t.audio_rate:
                assert c.audio.sample_rate == t.audio_rate and c.audio.channels == t.audio_channels
    assert by["rotated.mp4"].rotation != 0


def test_bad_files_skipped_with_reasons_and_captions_kept(ds, clips):
    skipped = {s.path.replace("\\", "/").rsplit("/", 1)[-1]: s.reason for s in clips.skipped}
    for name, word in ds.bad.items():
        assert name in skipped, name
        assert skipped[name], name
    by = {c.name: c for c in clips.clips}
    for name, cap in ds.captions.items():
        assert by[name].caption == cap, name


@pytest.mark.parametrize("name", ["scenes.mp4", "vfr.mkv", "portrait.mp4", "anim.gif"])
def test_frames_at_returns_the_frame_on_screen(ds, name):
    t = ds.files[name]
    idx = list(range(0, t.num_frames, 3))
    times = [t.frame_times[i] + 1e-3 for i in idx]
    frames = media.frames_at(str(ds.root) + "/" + name, times[::-1])[::-1]
    got = [mg.read_counter(f) for f in frames]
    assert got == idx, (name, got, idx)
    assert frames.shape[1:3] == (t.height, t.width)


def test_audio_span_follows_the_scene(ds):
    t = ds.files["scenes.mp4"]
    for (a, b), tone in zip(t.scenes, t.tones):
        pcm, rate = media.read_audio(t.path, a + 0.1, b - a - 0.2, sample_rate=16000, channels=1)
        assert pcm.shape == (1, round((b - a - 0.2) * 16000))
        assert abs(mg.dominant_frequency(pcm, rate) - tone) < 30
    pcm, _ = media.read_audio(t.path, t.duration - 0.1, 1.0, sample_rate=8000)
    assert pcm.shape[1] == 8000 and abs(pcm[:, -2000:]).max() == 0  # padded past the end


def test_scene_cuts_within_two_frames(ds, clips):
    t = ds.files["scenes.mp4"]
    spans, _ = scenes.detect_scenes(t.path)
    assert len(spans) == len(t.scenes)
    for (s, _), cut in zip(spans[1:], t.cuts):
        assert abs(s - cut) <= 2 / t.fps


def test_split_min_max_and_off_switch(ds, clips):
    split = scenes.split_scenes(clips, min_len=1.3, max_len=10.0)
    idx = next(i for i, c in enumerate(clips.clips) if c.name == "scenes.mp4")
    segs = [s for s in split.segments if s.clip == idx]
    assert len(segs) == 2  # the 1.2 s middle scene is dropped
    chunked = scenes.split_scenes(clips, min_len=0.3, max_len=0.5)
    assert all(s.duration <= 0.5 + 1e-6 for s in chunked.segments if clips.clips[s.clip].kind == "video")
    off = scenes.split_scenes(clips, enabled=False, min_len=0.0, max_len=0.0)
    assert sum(s.clip == idx for s in off.segments) == 1
    assert ClipSet.from_dict(split.to_dict()).segments == split.segments
