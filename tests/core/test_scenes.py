"""trainer_core.scenes: PySceneDetect on real h264 clips with known cuts (no ComfyUI)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.core import mediagen as mg
from trainer_core import media, scenes
from trainer_core.dataset import ClipInfo, ClipSet


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return mg.make_dataset(tmp_path_factory.mktemp("scenes_ds"))


@pytest.fixture(scope="module")
def clips(ds):
    return media.load_clips(ds.root)


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    d = tmp_path_factory.mktemp("multi")
    return mg.write_clip(d / "multi.mp4", [2.0, 1.2, 3.0, 2.4, 1.6], fps=25, size=(320, 180), seed=31)


@pytest.fixture(scope="module")
def static(tmp_path_factory):
    d = tmp_path_factory.mktemp("static")
    return mg.write_clip(d / "static.mp4", [mg.Scene(2.0, motion=0), mg.Scene(2.0, motion=3)], fps=25,
                         size=(256, 144), counter=False, seed=32)


def _index(cs: ClipSet, name: str) -> int:
    return next(i for i, c in enumerate(cs.clips) if c.name == name)


def _within_frames(found, truth, fps, frames=2):
    assert len(found) == len(truth), (found, truth)
    for f, c in zip(found, truth):
        assert abs(f - c) <= frames / fps + 1e-9, (found, truth)


@pytest.fixture(scope="module")
def dissolve(tmp_path_factory):
    d = tmp_path_factory.mktemp("dissolve")
    return mg.write_clip(d / "dissolve.mp4", [2.0, 2.0, 2.0], fps=25, size=(320, 180), dissolve=16, seed=3)


@pytest.mark.parametrize("detector", ["content", "adaptive", "dissolve"])
def test_cuts_found_within_two_frames(multi, detector):
    spans, motion = scenes.detect_scenes(media.probe(multi.path), detector=detector)
    assert len(motion) == len(spans) and all(2.0 < m < 60.0 for m in motion)  # textures scroll 2 px/frame
    _within_frames([s for s, _ in spans[1:]], multi.cuts, multi.fps)
    assert spans[0][0] == 0.0 and spans[-1][1] == pytest.approx(multi.duration)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # contiguous


def test_a_16_frame_dissolve_is_cut_by_the_dissolve_detector(dissolve):
    info = media.probe(dissolve.path)
    # the hard-cut detectors see only small per-frame changes: no cut at their defaults
    assert scenes.analyze_scenes(info, detector="content").cuts == []
    assert scenes.analyze_scenes(info, detector="adaptive").cuts == []
    a = scenes.analyze_scenes(info, detector="dissolve")
    assert len(a.cuts) == len(dissolve.dissolves) == 2, (a.cuts, dissolve.dissolves)
    for c, (first, last) in zip(a.cuts, dissolve.dissolves):
        # inside the dissolve, or on the first clean frame after it: a blend's per-frame changes
        # are all alike, so the largest can fall on its last step (seen once, in a fresh-clone CI
        # run: a cut at 4.32 s for a dissolve of 3.68–4.28 s; not reproduced in 7 runs since)
        assert first <= c <= last + 1 / dissolve.fps + 1e-6, (c, first, last)
    cs = scenes.split_scenes(ClipSet(root="/", clips=[info]), detector="dissolve", min_len=1.0, max_len=0)
    assert len(cs.segments) == 3


def test_dissolve_detector_adds_no_cut_to_steady_motion(tmp_path):
    fast = mg.write_clip(tmp_path / "pan.mp4", [mg.Scene(4.0, motion=8)], fps=25, size=(320, 180), seed=5)
    assert scenes.analyze_scenes(media.probe(fast.path), detector="dissolve").cuts == []


def test_cuts_on_vfr_and_gif_use_timestamps(ds):
    v = ds.files["vfr.mkv"]
    spans, _ = scenes.detect_scenes(media.probe(v.path))
    assert [s for s, _ in spans[1:]] == [pytest.approx(v.cuts[0], abs=0.101)]  # 10 fps part: one frame
    g = ds.files["anim.gif"]
    assert [s for s, _ in scenes.detect_scenes(g.path)[0][1:]] == [pytest.approx(0.5)]


def test_downscale_keeps_accuracy_and_threshold_matters(multi):
    info = media.probe(multi.path)
    a = scenes.analyze_scenes(info, max_side=96)
    assert max(a.size) == 96
    _within_frames(a.cuts, multi.cuts, multi.fps)
    # an absurd threshold finds nothing: one scene spanning the clip
    none, motion = scenes.detect_scenes(info, threshold=250.0)
    assert none == [(0.0, pytest.approx(multi.duration))] and len(motion) == 1


def test_min_len_drops_short_scenes(multi):
    cs = ClipSet(root="/", clips=[media.probe(multi.path)])
    out = scenes.split_scenes(cs, min_len=1.5, max_len=0)
    kept = [(round(s.start, 2), round(s.end, 2)) for s in out.segments]
    truth = [(round(a, 2), round(b, 2)) for a, b in multi.scenes if b - a >= 1.5]
    assert len(kept) == len(truth) == 4  # the 1.2 s scene is gone
    for (s, e), (ts, te) in zip(kept, truth):
        assert abs(s - ts) <= 2 / 25 and abs(e - te) <= 2 / 25
    assert [s.index for s in out.segments] == [0, 1, 2, 3]
    assert cs.segments is None  # input untouched


def test_max_len_cuts_even_chunks(multi):
    cs = ClipSet(root="/", clips=[media.probe(multi.path)])
    out = scenes.split_scenes(cs, min_len=0.5, max_len=1.0)
    segs = out.segments
    assert all(s.duration <= 1.0 + 1e-6 for s in segs)
    # 2.0 -> 2 x 1.0; 1.2 -> 2 x 0.6; 3.0 -> 3 x 1.0; 2.4 -> 3 x 0.8; 1.6 -> 2 x 0.8
    assert len(segs) == 12
    per_scene = {}
    for s in segs:
        sc = multi.scene_at(s.start + 0.05)
        per_scene.setdefault(sc, []).append(round(s.duration, 3))
    assert per_scene == {0: [1.0, 1.0], 1: [0.6, 0.6], 2: [1.0, 1.0, 1.0], 3: [0.8, 0.8, 0.8], 4: [0.8, 0.8]}
    assert all(a.end == pytest.approx(b.start) for a, b in zip(segs, segs[1:]))  # chunks touch
    assert [s.index for s in segs] == list(range(12))


def test_chunk_scene_rules():
    assert scenes.chunk_scene(0, 0.9, 1.0, 5.0) == []
    assert scenes.chunk_scene(0, 4.0, 1.0, 5.0) == [(0, 4.0)]
    assert scenes.chunk_scene(0, 4.0, 1.0, 0) == [(0, 4.0)]  # no limit
    got = scenes.chunk_scene(1.0, 11.0, 1.0, 4.0)  # 10 s, max 4 -> three even 3.333 s chunks
    assert np.allclose(got, [(1.0, 1 + 10 / 3), (1 + 10 / 3, 1 + 20 / 3), (1 + 20 / 3, 11.0)])
    assert got[-1][1] == 11.0
    # min 3, max 4, scene 5: even chunks (2.5) would be too short -> one 4 s piece, 1 s rest dropped
    assert scenes.chunk_scene(0, 5.0, 3.0, 4.0) == [(0, 4.0)]
    assert scenes.chunk_scene(0, 0.0, 0.0, 4.0) == []
    with pytest.raises(ValueError, match="longer than max_len"):
        scenes.split_scenes(ClipSet(root="/"), min_len=5, max_len=2)
    with pytest.raises(ValueError, match="unknown detector"):
        scenes.split_scenes(ClipSet(root="/"), detector="histogram")


def test_off_switch_keeps_clips_whole(clips):
    out = scenes.split_scenes(clips, enabled=False, min_len=0.0, max_len=0.0)
    assert len(out.segments) == len(clips.clips)
    for s in out.segments:
        c = clips.clips[s.clip]
        assert s.index == 0 and s.motion is None
        assert (s.start, s.end) == ((0.0, 0.0) if c.kind == "image" else (0.0, pytest.approx(c.duration)))
    # length limits still apply when off: scenes.mp4 (4.4 s, 3 scenes) -> 3 continuous chunks of 1.467 s
    i = _index(clips, "scenes.mp4")
    chunked = [s for s in scenes.split_scenes(clips, enabled=False, min_len=0.5, max_len=2.0).segments if s.clip == i]
    assert [round(s.duration, 3) for s in chunked] == [1.467] * 3


def test_segments_inherit_captions_images_and_motion(clips, ds):
    out = scenes.split_scenes(clips, min_len=0.3, max_len=10.0)
    assert out.segments and all(s.caption == clips.clips[s.clip].caption for s in out.segments)
    assert all(s.caption_source == clips.clips[s.clip].caption_source for s in out.segments)
    for i, c in enumerate(clips.clips):
        segs = [s for s in out.segments if s.clip == i]
        if c.kind == "image":
            assert [(s.start, s.end, s.motion) for s in segs] == [(0.0, 0.0, None)]
        else:
            assert segs and all(s.motion is not None and 0 <= s.motion <= 255 for s in segs)
    by = {c.name: [s for s in out.segments if s.clip == i] for i, c in enumerate(clips.clips)}
    assert [(s.start, s.end) for s in by["scenes.mp4"]] == [(0.0, 1.6), (1.6, 2.8), (2.8, 4.4)]
    assert by["scenes.mp4"][0].caption == ds.captions["scenes.mp4"]
    again = ClipSet.from_dict(json.loads(json.dumps(out.to_dict())))
    assert again.segments == out.segments


def test_motion_separates_static_from_moving(static):
    a = scenes.analyze_scenes(media.probe(static.path))
    assert len(a.scenes) == 2
    still, moving = (a.motion(s, e) for s, e in a.scenes)
    assert still < 1.0 < 3.0 < moving
    spans, motion = scenes.detect_scenes(static.path)
    assert spans == a.scenes and motion == [pytest.approx(still), pytest.approx(moving)]
    seg = scenes.split_scenes(ClipSet(root="/", clips=[media.probe(static.path)]), min_len=1.0).segments
    assert seg[0].motion == pytest.approx(still) and seg[1].motion == pytest.approx(moving)


@pytest.mark.parametrize("detector", ["content", "adaptive"])
def test_fade_through_black_gives_two_clean_scenes(ds, clips, detector):
    t = ds.files["fade.mp4"]  # 1.6 s + 1.6 s, fading out over 0.4 s and in over 0.4 s, black at 1.6
    i = _index(clips, "fade.mp4")
    segs = [s for s in scenes.split_scenes(clips, detector=detector, min_len=1.0, max_len=10.0).segments
            if s.clip == i]
    assert len(segs) == 2, segs
    assert all(s.duration >= 1.0 for s in segs)  # no sliver from the fade survives
    a, b = segs
    assert a.start == 0.0 and a.end <= t.cuts[0] + 1e-6  # scene A ends at or before the black frame
    assert abs(b.start - t.cuts[0]) <= 2 / t.fps and b.end == pytest.approx(t.duration)
    for s, tone in zip(segs, t.tones):  # and each segment's audio is its own scene's tone
        x, r = media.read_audio(t.path, s.start, s.duration, sample_rate=16000, channels=1)
        assert mg.dominant_frequency(x, r) == pytest.approx(tone, abs=3)
    # every frame of segment B is scene B's (or black): no scene A colour leaks in
    fr = media.frames_at(t.path, [b.start + k / t.fps for k in range(int(b.duration * t.fps))])
    red = fr[:, 30:, :, 0].astype(int).mean(axis=(1, 2)) - fr[:, 30:, :, 1].astype(int).mean(axis=(1, 2))
    assert red.max() < 15  # scene A is red, scene B green


def test_audio_of_each_segment_matches_its_scene(multi):
    cs = ClipSet(root="/", clips=[media.probe(multi.path)])
    segs = scenes.split_scenes(cs, min_len=1.0, max_len=0).segments
    for s in segs:
        x, r = media.read_audio(multi.path, s.start, s.duration, sample_rate=16000, channels=1)
        assert x.shape[1] == round(s.duration * 16000)
        assert mg.dominant_frequency(x, r) == pytest.approx(multi.tones[multi.scene_at(s.start + 0.1)], abs=3)


def test_progress_cancel_and_undecodable_clip(clips, tmp_path):
    calls = []
    out = scenes.split_scenes(clips, progress=lambda i, n, text=None: calls.append((i, n, text)))
    n = len(clips.clips)
    assert calls[0][:2] == (0, n) and calls[-1][:2] == (n, n) and "segments" in calls[-1][2]
    with pytest.raises(media.Cancelled):
        scenes.split_scenes(clips, should_stop=lambda: True)
    bad = tmp_path / "bad.mp4"
    mg.write_corrupt(bad, "garbage")
    fake = ClipInfo(path=str(bad), name="bad.mp4", kind="video", width=64, height=64, fps=25, duration=2.0)
    cs = ClipSet(root=str(tmp_path), clips=list(clips.clips) + [fake], skipped=[])
    res = scenes.split_scenes(cs)
    assert len(res.skipped) == 1 and res.skipped[0].path == str(bad) and "scene detection" in res.skipped[0].reason
    assert not any(s.clip == len(cs.clips) - 1 for s in res.segments)
    assert len(res.segments) == len(out.segments)


def test_progress_that_raises_interrupts(clips):
    """The nodes pass a progress callable that raises ComfyUI's interrupt: it must escape untouched
    (not be turned into a skipped clip) and stop the loop."""
    class Interrupted(Exception):
        pass

    seen = []

    def progress(i, n, text=None):
        seen.append(i)
        if i >= 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        scenes.split_scenes(clips, progress=progress)
    assert max(seen) == 2
    with pytest.raises(Interrupted):
        media.load_clips(clips.root, progress=progress)
