"""trainer_core.media on real files written by tests/core/mediagen.py (PyAV, Pillow; no ComfyUI).

Frames carry a binary frame counter, so every frames_at / iter_frames answer is checked
against the index of the frame that should be on screen; audio carries one sine tone per
scene, so audio spans are checked by frequency and by where the tone changes.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.core import mediagen as mg
from trainer_core import media
from trainer_core.dataset import ClipSet


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return mg.make_dataset(tmp_path_factory.mktemp("media_ds"))


@pytest.fixture(scope="module")
def clips(ds):
    return media.load_clips(ds.root)


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    """12 s, one keyframe a second, three tones: exercises seeking in frames_at/read_audio."""
    d = tmp_path_factory.mktemp("long")
    return mg.write_clip(d / "long.mp4", [4.0, 3.0, 5.0], fps=25, size=(160, 96), gop=25, seed=21)


# ----------------------------------------------------------------------------- probe


def test_probe_every_kind_matches_truth(ds):
    for name, t in ds.files.items():
        c = media.probe(t.path, root=ds.root)
        assert c.name == name and Path(c.path).is_absolute()
        assert c.kind == t.kind, name
        assert (c.width, c.height) == (t.width, t.height), name
        assert c.size_bytes == Path(t.path).stat().st_size
        if t.kind == "image":
            assert c.num_frames == 1 and c.duration == 0 and c.audio is None, name
            continue
        assert c.num_frames == t.num_frames, name
        assert c.vfr is t.vfr, name
        if t.vfr:
            # the last frame's length is not stored exactly: within one frame interval
            assert c.duration == pytest.approx(t.duration, abs=0.1), name
            assert c.fps == pytest.approx(t.num_frames / c.duration, rel=1e-3), name
        else:
            assert c.duration == pytest.approx(t.duration, abs=1e-3), name
            assert c.fps == pytest.approx(t.fps, abs=1e-3), name
        assert c.rotation == t.rotation, name
        if t.has_audio:
            assert c.audio is not None, name
            assert c.audio.sample_rate == t.audio_rate and c.audio.channels == t.audio_channels, name
            assert c.audio.duration == pytest.approx(t.audio_duration, abs=0.03), name
            assert c.audio.codec == "aac"
        else:
            assert c.audio is None, name


def test_probe_specific_values(ds):
    p = {n: media.probe(t.path) for n, t in ds.files.items()}
    assert (p["portrait.mp4"].width, p["portrait.mp4"].height) == (180, 320) and p["portrait.mp4"].rotation == 0
    assert p["portrait.mp4"].audio.sample_rate == 44100 and p["portrait.mp4"].audio.channels == 1
    # stored 320x180 with a display matrix turning it 90 degrees clockwise -> shown 180x320
    assert (p["rotated.mp4"].width, p["rotated.mp4"].height, p["rotated.mp4"].rotation) == (180, 320, 90)
    assert p["vfr.mkv"].vfr and not p["scenes.mp4"].vfr and not p["silent.mov"].vfr
    assert p["silent.mov"].fps == pytest.approx(24.0) and p["silent.mov"].audio is None
    assert (p["anim.gif"].kind, p["anim.gif"].fps, p["anim.gif"].num_frames, p["anim.gif"].duration) == ("video", 10.0, 10, 1.0)
    assert (p["anim.webp"].kind, p["anim.webp"].fps, p["anim.webp"].num_frames, p["anim.webp"].duration) == ("video", 20.0, 8, 0.4)
    assert p["tile.webp"].kind == "image" and p["card.jpg"].kind == "image"


def test_single_frame_gif_is_an_image_and_vfr_gif_is_flagged(tmp_path):
    from PIL import Image

    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "one.gif")
    c = media.probe(tmp_path / "one.gif")
    assert (c.kind, c.width, c.height) == ("image", 40, 30)
    frames = [Image.new("RGB", (40, 30), (i * 60, 0, 0)) for i in range(3)]
    frames[0].save(tmp_path / "v.gif", save_all=True, append_images=frames[1:], duration=[100, 300, 100])
    v = media.probe(tmp_path / "v.gif")
    assert v.kind == "video" and v.vfr and v.duration == pytest.approx(0.5)
    got = media.frames_at(tmp_path / "v.gif", [0.05, 0.15, 0.39, 0.41])[:, 0, 0, 0]
    assert list(got) == [0, 60, 60, 120]


def test_exif_rotated_jpeg_is_shown_upright(tmp_path):
    from PIL import Image

    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:5, :5] = 255  # marker top-left of the stored picture
    im = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    im.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    c = media.probe(tmp_path / "phone.jpg")
    assert (c.width, c.height, c.rotation) == (20, 40, 90)
    f = media.frames_at(tmp_path / "phone.jpg", [0.0])[0]
    assert f.shape == (40, 20, 3)
    assert f[:5, -5:].mean() > 200 and f[:5, :5].mean() < 50  # top-left went to top-right


@pytest.mark.parametrize("mode,word", [("truncated", "damaged"), ("garbage", "damaged"), ("empty", "empty")])
def test_probe_unreadable_raises_with_reason(tmp_path, mode, word):
    p = tmp_path / f"bad_{mode}.mp4"
    mg.write_corrupt(p, mode)
    with pytest.raises(media.MediaError) as e:
        media.probe(p)
    assert word in e.value.reason and str(p) not in e.value.reason


def test_probe_audio_only_and_missing_file(tmp_path):
    mg.write_audio_only(tmp_path / "a.mp4")
    with pytest.raises(media.MediaError, match="no video stream"):
        media.probe(tmp_path / "a.mp4")
    with pytest.raises(media.MediaError, match="not found"):
        media.probe(tmp_path / "nope.mp4")


# ----------------------------------------------------------------------------- load_clips


def test_load_clips_names_order_paths_and_skips(ds, clips):
    names = [c.name for c in clips.clips]
    assert names == ["anim.gif", "anim.webp", "card.jpg", "fade.mp4", "portrait.mp4", "rotated.mp4",
                     "scenes.mp4", "silent.mov", "still.png", "sub/nested.mp4", "tile.webp", "vfr.mkv"]
    assert set(names) == set(ds.files)
    assert clips.root == str(Path(ds.root).resolve())
    assert all(Path(c.path).is_absolute() and Path(c.path).is_file() for c in clips.clips)
    skipped = {Path(s.path).name: s.reason for s in clips.skipped}
    assert set(skipped) == set(ds.bad)  # notes.md, .txt and dataset.json are not media
    for name, word in ds.bad.items():
        assert word in skipped[name] or "damaged" in skipped[name], (name, skipped[name])
    assert "no video stream" in skipped["audio_only.mp4"]
    assert "damaged" in skipped["corrupt.mp4"]
    # JSON round trip of the whole set
    assert ClipSet.from_dict(json.loads(json.dumps(clips.to_dict()))) == clips


def test_load_clips_captions_txt_wins_over_json(ds, clips):
    by = {c.name: c for c in clips.clips}
    for name, cap in ds.captions.items():
        assert by[name].caption == cap, name
    assert by["scenes.mp4"].caption_source == "txt"
    assert by["still.png"].caption_source == "txt"  # also listed in dataset.json: .txt wins
    assert by["silent.mov"].caption_source == "dataset.json"
    assert by["sub/nested.mp4"].caption_source == "dataset.json"
    assert by["fade.mp4"].caption is None and by["fade.mp4"].caption_source is None


def test_load_clips_not_recursive_and_hidden(tmp_path, ds):
    import shutil

    root = tmp_path / "flat"
    (root / "sub").mkdir(parents=True)
    (root / ".cache").mkdir()
    shutil.copy(ds.files["silent.mov"].path, root / "a10.mov")
    shutil.copy(ds.files["silent.mov"].path, root / "a9.mov")
    shutil.copy(ds.files["silent.mov"].path, root / "sub" / "b.mov")
    shutil.copy(ds.files["silent.mov"].path, root / ".cache" / "c.mov")
    mg.write_corrupt(root / "._a9.mov", "garbage")  # macOS resource fork: ignored, not "skipped"
    cs = media.load_clips(root, recursive=False)
    assert [c.name for c in cs.clips] == ["a9.mov", "a10.mov"]  # natural order
    assert cs.skipped == []
    assert [c.name for c in media.load_clips(root).clips] == ["a9.mov", "a10.mov", "sub/b.mov"]
    with pytest.raises(FileNotFoundError):
        media.load_clips(root / "missing")


@pytest.mark.parametrize("fmt", ["jsonl_video", "json_dict", "csv", "json_object_list", "json_abs"])
def test_caption_table_variants(tmp_path, ds, fmt):
    import shutil

    root = tmp_path / fmt
    (root / "v").mkdir(parents=True)
    shutil.copy(ds.files["silent.mov"].path, root / "v" / "x.mov")
    shutil.copy(ds.files["still.png"].path, root / "s.png")
    if fmt == "jsonl_video":  # ltx-trainer's current column name is "video"
        (root / "dataset.jsonl").write_text(
            json.dumps({"caption": "cap x", "video": "v/x.mov"}) + "\n\n" + json.dumps({"caption": "cap s", "video": "./s.png"}) + "\n")
        src = "dataset.jsonl"
    elif fmt == "json_dict":
        (root / "dataset.json").write_text(json.dumps({"v/x.mov": "cap x", "s.png": "cap s"}))
        src = "dataset.json"
    elif fmt == "csv":  # caption_videos.py --output dataset.csv writes caption,media_path
        (root / "dataset.csv").write_text('caption,media_path\n"cap x","v/x.mov"\n"cap s",s.png\n')
        src = "dataset.csv"
    elif fmt == "json_object_list":
        (root / "dataset.json").write_text(json.dumps({"data": [{"Caption": "cap x", "media_path": "v\\x.mov"},
                                                                 {"text": "cap s", "image": "s.png"}]}))
        src = "dataset.json"
    else:
        (root / "dataset.json").write_text(json.dumps([{"caption": "cap x", "media_path": str(root / "v" / "x.mov")},
                                                       {"prompt": "cap s", "path": "s.png"}]))
        src = "dataset.json"
    cs = media.load_clips(root)
    by = {c.name: c for c in cs.clips}
    assert (by["v/x.mov"].caption, by["v/x.mov"].caption_source) == ("cap x", src)
    assert (by["s.png"].caption, by["s.png"].caption_source) == ("cap s", src)
    assert cs.skipped == []


def test_broken_caption_file_is_reported_and_empty_txt_falls_back(tmp_path, ds):
    import shutil

    root = tmp_path / "broken"
    root.mkdir()
    shutil.copy(ds.files["silent.mov"].path, root / "x.mov")
    shutil.copy(ds.files["silent.mov"].path, root / "y.mov")
    (root / "dataset.json").write_text("[{not json")
    (root / "dataset.jsonl").write_text(json.dumps({"caption": "from jsonl", "media_path": "y.mov"}) + "\n")
    (root / "y.txt").write_text("  \n")
    cs = media.load_clips(root)
    assert [c.name for c in cs.clips] == ["x.mov", "y.mov"]
    assert len(cs.skipped) == 1 and cs.skipped[0].path.endswith("dataset.json")
    assert "caption file could not be read" in cs.skipped[0].reason
    y = cs.clips[1]
    assert (y.caption, y.caption_source) == ("from jsonl", "dataset.jsonl")


def test_load_clips_progress_and_cancel(ds):
    calls2, calls3 = [], []
    media.load_clips(ds.root, progress=lambda i, n: calls2.append((i, n)))
    media.load_clips(ds.root, progress=lambda i, n, text=None: calls3.append((i, n, text)))
    n = len(ds.files) + len(ds.bad)
    assert calls2[0] == (0, n) and calls2[-1] == (n, n) and len(calls2) == n + 1
    assert calls3[0][2].startswith("probing ")
    seen = []

    def stop():
        seen.append(1)
        return len(seen) > 3

    with pytest.raises(media.Cancelled):
        media.load_clips(ds.root, should_stop=stop)
    assert len(seen) == 4


# ----------------------------------------------------------------------------- frames


@pytest.mark.parametrize("name", ["scenes.mp4", "vfr.mkv", "silent.mov", "portrait.mp4", "anim.gif", "anim.webp"])
def test_frames_at_picks_the_frame_on_screen(ds, name):
    t = ds.files[name]
    ft = t.frame_times
    times = []
    for k in range(0, t.num_frames, 2):
        times.append(ft[k])  # exactly on a frame
        nxt = ft[k + 1] if k + 1 < t.num_frames else t.duration
        times.append(ft[k] + 0.9 * (nxt - ft[k]))  # just before the next one
    times += [-1.0, t.duration + 5.0]
    order = np.random.default_rng(0).permutation(len(times))
    shuffled = [times[i] for i in order] + [times[order[0]]]  # any order, with a repeat
    frames = media.frames_at(t.path, shuffled)
    assert frames.shape == (len(shuffled), t.height, t.width, 3) and frames.dtype == np.uint8
    got = [mg.read_counter(f) for f in frames]
    want = [t.frame_at(x) for x in shuffled]
    assert got == want
    assert want[shuffled.index(-1.0)] == 0 and want[shuffled.index(t.duration + 5.0)] == t.num_frames - 1


@pytest.mark.parametrize("ext", ["mp4", "mov", "webm"])
def test_vfr_in_other_containers(tmp_path, ext):
    """mp4/mov: VFR read from the index and the end from the last packets (the stream duration
    there counts decode times and ended before the last frame); webm: from demuxed packets."""
    ft = [round(k / 30, 3) for k in range(30)] + [round(1.0 + k / 10, 3) for k in range(10)]
    t = mg.write_clip(tmp_path / f"v.{ext}", [1.2, 0.8], size=(96, 64), frame_times=ft, seed=4)
    c = media.probe(t.path)
    assert c.vfr and c.num_frames == 40
    assert t.frame_times[-1] < c.duration <= t.duration + 1e-6
    assert c.duration == pytest.approx(t.duration, abs=0.1)
    cfr = media.probe(mg.write_clip(tmp_path / f"c.{ext}", [1.0], fps=25, size=(96, 64), seed=5).path)
    assert not cfr.vfr and cfr.duration == pytest.approx(1.0, abs=1e-3) and cfr.fps == pytest.approx(25.0)
    times = [0.5, 0.99, 1.0, 1.55, 1.95]
    assert [mg.read_counter(x) for x in media.frames_at(t.path, times)] == [t.frame_at(x) for x in times]


def test_frames_at_vfr_uses_timestamps_not_indices(ds):
    t = ds.files["vfr.mkv"]
    # 30 fps for a second, then 10 fps: at 1.55 s the frame index is 35, not round(1.55 * 20.5)
    f = media.frames_at(t.path, [1.55, 1.0, 0.5])
    assert [mg.read_counter(x) for x in f] == [35, 30, 15]


def test_frames_at_resize_and_rotation(ds):
    t = ds.files["rotated.mp4"]
    f = media.frames_at(t.path, [0.4, 0.8])
    assert f.shape == (2, 320, 180, 3)  # display orientation
    # the counter sits at the stored top-left; undo the clockwise turn to read it
    assert [mg.read_counter(np.rot90(x, k=1)) for x in f] == [10, 20]
    small = media.frames_at(t.path, [0.4], size=(90, 160))
    assert small.shape == (1, 160, 90, 3)
    big = media.frames_at(ds.files["scenes.mp4"].path, [2.0], size=(384, 216))
    assert big.shape == (1, 216, 384, 3)
    assert mg.read_counter(big[0][::2, ::2]) == 50
    still = media.frames_at(ds.files["card.jpg"].path, [0.0, 3.0], size=(75, 100))
    assert still.shape == (2, 100, 75, 3)
    assert mg.read_counter(media.frames_at(ds.files["still.png"].path, [0.0])[0]) == 5


def test_frames_at_sparse_times_in_a_long_clip_seek(long_clip):
    t = long_clip
    times = [11.5, 0.2, 6.04, 9.0, 3.0, 6.0]
    f = media.frames_at(t.path, times)
    assert [mg.read_counter(x) for x in f] == [t.frame_at(x) for x in times]
    # the frame at each time carries the colour of its scene
    for x, frame in zip(times, f):
        col = np.asarray(mg.SCENE_COLOURS[t.scene_at(x)], dtype=float)
        assert np.abs(frame[40:, :].reshape(-1, 3).mean(axis=0) - col).max() < 40


def test_iter_frames_range_step_and_downscale(ds):
    t = ds.files["scenes.mp4"]
    got = list(media.iter_frames(t.path, start=1.0, end=1.4, step=2))
    assert [round(x, 3) for x, _ in got] == [1.0, 1.08, 1.16, 1.24, 1.32]
    assert [mg.read_counter(f) for _, f in got] == [25, 27, 29, 31, 33]
    small = list(media.iter_frames(t.path, max_side=64))
    assert len(small) == t.num_frames and small[0][1].shape == (36, 64, 3)
    bgr = next(media.iter_frames(t.path, fmt="bgr24"))[1]
    rgb = next(media.iter_frames(t.path))[1]
    assert np.array_equal(bgr[..., ::-1], rgb)
    rot = list(media.iter_frames(ds.files["rotated.mp4"].path, max_side=80))
    assert rot[0][1].shape == (80, 45, 3)
    gif = list(media.iter_frames(ds.files["anim.gif"].path, start=0.3, end=0.7))
    assert [mg.read_counter(f) for _, f in gif] == [3, 4, 5, 6]


# ----------------------------------------------------------------------------- audio


def _switch_time(x: np.ndarray, rate: int, fa: float, fb: float, t0: float) -> float:
    """Where tone ``fa`` gives way to ``fb`` in ``x`` (seconds, timeline of ``t0``)."""
    win, hop = rate // 100, rate // 1000
    ks = range(0, x.shape[1] - win, hop)
    a = np.array([mg.tone_power(x[:, k:k + win], rate, fa) for k in ks])
    b = np.array([mg.tone_power(x[:, k:k + win], rate, fb) for k in ks])
    k = int(np.argmax(b > a))
    return t0 + (k * hop + win / 2) / rate


def test_read_audio_spans_follow_scene_tones(ds):
    t = ds.files["scenes.mp4"]
    for (a, b), tone in zip(t.scenes, t.tones):
        x, rate = media.read_audio(t.path, a + 0.05, b - a - 0.1)
        assert x.dtype == np.float32 and x.shape == (2, round((b - a - 0.1) * 48000)) and rate == 48000
        assert mg.dominant_frequency(x, rate) == pytest.approx(tone, abs=3)
        y, r2 = media.read_audio(t.path, a + 0.05, b - a - 0.1, sample_rate=16000, channels=1)
        assert y.shape == (1, round((b - a - 0.1) * 16000)) and r2 == 16000
        assert mg.dominant_frequency(y, r2) == pytest.approx(tone, abs=3)


@pytest.mark.parametrize("rate", [None, 16000, 44100])
def test_read_audio_tone_changes_exactly_at_the_cut(long_clip, rate):
    t = long_clip
    for cut, (fa, fb) in zip(t.cuts, zip(t.tones, t.tones[1:])):  # 4.0 s and 7.0 s: needs a seek
        x, r = media.read_audio(t.path, cut - 0.2, 0.4, sample_rate=rate, channels=1)
        assert x.shape == (1, round(0.4 * (rate or 48000)))
        assert _switch_time(x, r, fa, fb, cut - 0.2) == pytest.approx(cut, abs=0.006)


def test_read_audio_padding_and_errors(ds, long_clip):
    t = ds.files["scenes.mp4"]
    x, rate = media.read_audio(t.path, t.duration - 0.5, 1.0, sample_rate=8000)
    assert x.shape == (2, 8000)
    assert np.abs(x[:, :3500]).max() > 0.1 and np.abs(x[:, 4100:]).max() == 0  # zeros past the end
    y, _ = media.read_audio(t.path, -0.25, 0.5, sample_rate=8000)
    assert np.abs(y[:, :1900]).max() == 0 and np.abs(y[:, 2100:]).max() > 0.1  # silence before 0
    z, r = media.read_audio(long_clip.path, 10.0, 0.0)
    assert z.shape == (2, 0)
    m, _ = media.read_audio(ds.files["portrait.mp4"].path, 0.2, 0.5, channels=2)
    assert m.shape == (2, round(0.5 * 44100)) and np.allclose(m[0], m[1], atol=1e-4)  # mono -> stereo
    with pytest.raises(media.MediaError, match="no audio"):
        media.read_audio(ds.files["silent.mov"].path, 0.0, 0.5)
