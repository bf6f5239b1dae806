"""trainer_core.preview: contact sheets, labels and scene thumbnails (Pillow; no ComfyUI)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.core import mediagen as mg
from trainer_core import media, preview, scenes
from trainer_core.dataset import ClipSet

RED, GREEN, BLUE = (220, 30, 30), (30, 200, 40), (30, 50, 220)


def _solid(colour, w=64, h=48):
    return np.full((h, w, 3), colour, np.uint8)


def _centroid(sheet: np.ndarray, colour, tol=40):
    m = (np.abs(sheet.astype(int) - np.asarray(colour)).max(axis=2) < tol)
    ys, xs = np.nonzero(m)
    return (ys.mean(), xs.mean(), len(ys)) if len(ys) else None


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return mg.make_dataset(tmp_path_factory.mktemp("preview_ds"))


@pytest.fixture(scope="module")
def clips(ds):
    return media.load_clips(ds.root)


def test_contact_sheet_grid_order_and_inputs():
    items = [(_solid(RED), "red"), (Image.fromarray(_solid(GREEN)), "green"), (_solid(BLUE, 48, 64), "blue\nportrait")]
    sheet = preview.contact_sheet(items, cols=2, thumb_height=48)
    assert sheet.dtype == np.uint8 and sheet.ndim == 3 and sheet.shape[2] == 3
    r, g, b = (_centroid(sheet, c) for c in (RED, GREEN, BLUE))
    assert r and g and b
    assert r[2] == pytest.approx(64 * 48, rel=0.05) and b[2] == pytest.approx(48 * 48 * 0.75, rel=0.1)  # scaled to 48 tall
    assert abs(r[0] - g[0]) < 2 and g[1] > r[1] + 40  # same row, green to the right
    assert b[0] > r[0] + 40 and abs(b[1] - r[1]) < 40  # next row, first column
    one_row = preview.contact_sheet(items, cols=3, thumb_height=48)
    assert one_row.shape[1] > sheet.shape[1] and one_row.shape[0] < sheet.shape[0]


def test_labels_are_drawn_and_readable():
    base = preview.contact_sheet([(_solid(RED), "clip_a.mp4\n4.4s 25fps")], thumb_height=48)
    same = preview.contact_sheet([(_solid(RED), "clip_a.mp4\n4.4s 25fps")], thumb_height=48)
    other = preview.contact_sheet([(_solid(RED), "clip_b.mp4\n4.4s 25fps")], thumb_height=48)
    assert np.array_equal(base, same) and not np.array_equal(base, other)
    r = _centroid(base, RED)
    below = base[int(r[0]) + 26:]  # the label area under the thumbnail
    bright = (below.min(axis=2) > 120).sum()
    assert bright > 30  # text pixels in the label colour
    # a line starting with '!' is drawn as a warning (orange), without the '!'
    warn = preview.contact_sheet([(_solid(RED), "clip\n!no audio")], thumb_height=48)
    orange = ((warn[..., 0] > 180) & (warn[..., 1] > 100) & (warn[..., 1] < 200) & (warn[..., 2] < 110)).sum()
    assert orange > 10
    assert ((base[..., 0] > 180) & (base[..., 1] > 100) & (base[..., 1] < 200) & (base[..., 2] < 110)).sum() == 0


def test_placeholder_and_more_tile():
    items = [(_solid(RED), f"c{i}") for i in range(10)]
    sheet = preview.contact_sheet(items, cols=5, max_items=4, thumb_height=32)
    grey = (np.abs(sheet.astype(int) - np.array([55, 55, 62])).max(axis=2) == 0).sum()
    assert grey > 32 * 32  # the "+6 more" tile
    reds = _centroid(sheet, RED)[2]
    assert reds == pytest.approx(4 * 32 * 43, rel=0.1)  # only 4 thumbnails drawn (64x48 -> 43x32)
    empty = preview.contact_sheet([], thumb_height=32)
    assert empty.ndim == 3 and empty.shape[2] == 3
    none = preview.contact_sheet([(None, "unreadable")], thumb_height=32)
    assert (np.abs(none.astype(int) - np.array([55, 55, 62])).max(axis=2) == 0).sum() > 500


def test_clip_labels(clips):
    by = {c.name: c for c in clips.clips}
    s = preview.clip_label(by["scenes.mp4"])
    assert s.splitlines()[0] == "scenes.mp4" and "4.4s" in s and "25fps" in s and "192x108" in s
    assert "audio 48kHz" in s and "captioned" in s
    assert "!no audio" in preview.clip_label(by["silent.mov"])
    assert "VFR" in preview.clip_label(by["vfr.mkv"])
    st = preview.clip_label(by["still.png"])
    assert "still 200x150" in st and "audio" not in st
    assert preview.fmt_duration(4.44) == "4.4s" and preview.fmt_duration(65) == "1:05"
    assert preview.fmt_duration(3723) == "1:02:03"


def test_scene_thumbnails_are_first_frames_of_segments(ds):
    t = ds.files["scenes.mp4"]
    cs = scenes.split_scenes(ClipSet(root=ds.root, clips=[media.probe(t.path, ds.root)]), min_len=0.5)
    thumbs = preview.segment_thumbnails(cs, thumb_height=54)
    assert len(thumbs) == 3 and all(x.shape == (54, 96, 3) for x in thumbs)
    for x, colour in zip(thumbs, mg.SCENE_COLOURS[:3]):  # red, green, blue scenes
        assert np.abs(x[20:].reshape(-1, 3).mean(axis=0) - np.asarray(colour)).max() < 40
    sheet = preview.segments_contact_sheet(cs, thumb_height=54)
    cents = [_centroid(sheet, c, tol=60) for c in mg.SCENE_COLOURS[:3]]
    assert all(cents) and cents[0][1] < cents[1][1] < cents[2][1]  # in time order, left to right
    text = preview.segments_summary(cs)
    assert text.startswith("3 segments from 1 clips") and "scenes.mp4: 3 (0.00-1.60, 1.60-2.80, 2.80-4.40)" in text
    assert "motion" in preview.segment_label(cs, cs.segments[0])


def _colour_mask(sheet: np.ndarray, colour) -> np.ndarray:
    """Pixels whose hue matches a saturated scene colour despite the texture's brightness swings."""
    x = sheet.astype(int)
    c = np.asarray(colour)
    main = int(np.argmax(c))
    others = [k for k in range(3) if k != main]
    gap = c[main] - c[others].max()
    return (x[..., main] - x[..., others].max(axis=2)) > 0.6 * gap


def _bbox(mask: np.ndarray):
    ys, xs = np.nonzero(mask)
    return ys.min(), ys.max() + 1, xs.min(), xs.max() + 1


def test_clip_sheet_and_summary(clips, ds):
    sheet = preview.clips_contact_sheet(clips)
    assert sheet.dtype == np.uint8 and sheet.ndim == 3 and sheet.shape[2] == 3
    # 12 clips in 6 columns -> 2 rows of 96-pixel thumbnails plus labels and a title
    # (labels: up to 4 lines of 17 px, readable at the node's default zoom)
    assert 2 * 96 < sheet.shape[0] < 2 * 96 + 2 * 100 + 40 and 6 * 96 < sheet.shape[1] < 6 * 3 * 96
    # real first frames, not placeholders: every generated video starts with a red scene
    n_red_videos = sum(t.kind == "video" and t.frame_times and t.counter for t in ds.files.values())
    assert _colour_mask(sheet, mg.SCENE_COLOURS[0]).sum() > n_red_videos * 96 * 40
    assert (np.abs(sheet.astype(int) - np.array([55, 55, 62])).max(axis=2) == 0).sum() == 0
    assert sheet.std() > 20
    capped = preview.clips_contact_sheet(clips, max_items=4)
    assert capped.shape[0] * capped.shape[1] < sheet.shape[0] * sheet.shape[1]
    assert (np.abs(capped.astype(int) - np.array([55, 55, 62])).max(axis=2) == 0).sum() > 96 * 96  # "+8 more"
    text = preview.clips_summary(clips)
    assert text.splitlines()[0].startswith(f"{len(clips.clips) - 3} videos")
    for name in ds.bad:
        assert f"skipped {name}:" in text
    assert "vfr.mkv" in text


def test_segments_sheet_non_blank_and_capped(clips):
    split = scenes.split_scenes(clips, min_len=0.3)
    sheet = preview.segments_contact_sheet(split)
    assert sheet.dtype == np.uint8 and sheet.shape[2] == 3 and sheet.std() > 20
    n = len(split.segments)
    rows = (n + 5) // 6
    assert rows * 96 < sheet.shape[0] < rows * (96 + 80) + 40
    capped = preview.segments_contact_sheet(split, max_items=3)
    assert capped.shape[0] < sheet.shape[0]
    assert preview.segments_summary(split).startswith(f"{n} segments from {len(clips.clips)} clips")


def test_dataset_gallery(clips):
    from trainer_core.buckets import build_dataset, parse_buckets

    split = scenes.split_scenes(clips, min_len=0.3)
    dset, report = build_dataset(split, parse_buckets("128x96x9;96x128x9;64x64x1"), target_fps=24.0)
    assert len(dset.samples) > 12
    g = preview.dataset_gallery(dset, report)
    assert g.dtype == np.uint8 and g.shape[2] == 3 and g.shape[0] > 96 and g.std() > 20
    assert (np.abs(g.astype(int) - np.array([55, 55, 62])).max(axis=2) == 0).sum() == 0  # every frame read
    capped = preview.dataset_gallery(dset, report, max_items=4)
    assert (np.abs(capped.astype(int) - np.array([55, 55, 62])).max(axis=2) == 0).sum() > 96 * 96  # "+N more"
    assert capped.shape[0] < g.shape[0]


def test_dataset_gallery_crops_to_the_bucket(ds):
    """A landscape clip in a portrait bucket: thumbnails are the bucket's shape, centre of the frame."""
    from trainer_core.buckets import build_dataset, parse_buckets

    t = ds.files["scenes.mp4"]
    cs = scenes.split_scenes(ClipSet(root=ds.root, clips=[media.probe(t.path, ds.root)]), min_len=0.5)
    dset, report = build_dataset(cs, parse_buckets("64x128x9"), target_fps=24.0, audio_planned=True)
    assert [str(s.bucket) for s in dset.samples] == ["64x128x9"] * 3
    g = preview.dataset_gallery(dset, report, thumb_height=96)
    boxes = [_bbox(_colour_mask(g, c)) for c in mg.SCENE_COLOURS[:3]]
    for y0, y1, x0, x1 in boxes:
        assert 46 <= x1 - x0 <= 49  # 64:128 bucket at 96 tall -> 48 wide
        assert 80 <= y1 - y0 <= 96  # (the frame counter covers the top rows of the crop)
    assert boxes[0][2] < boxes[1][2] < boxes[2][2]  # scenes in order, left to right


def test_gallery_clips_play_exactly_the_training_sample(ds, tmp_path):
    """The Bucket gallery: per sample a thumbnail and an mp4 of the sample's frames (the
    bucket's frame count, at the sample's rate, bucket-shaped) with its sound when it has
    one; caption and flags carried; files reused when nothing changed."""
    import av

    from trainer_core import gallery
    from trainer_core.buckets import build_dataset, parse_buckets

    cs = media.load_clips(ds.root)
    split = scenes.split_scenes(cs, min_len=0.5)
    dset, report = build_dataset(split, parse_buckets("128x96x17;96x128x17;64x64x1"), target_fps=24.0,
                                 audio_planned=True)
    seen = []
    g = gallery.build_gallery(dset, tmp_path / "gal", max_items=6, clip_height=96, progress=lambda i, n: seen.append(i))
    assert g["total"] == len(dset.samples) > 6 and g["shown"] == 6 and seen == list(range(1, 7))
    assert sum(1 for it in g["items"] if it["clip"]) >= 4
    for item in g["items"]:
        s = dset.samples[item["index"]]
        assert item["thumb"] and "error" not in item, item
        assert item["bucket"] == str(s.bucket) and item["caption"] == (s.caption or "")
        if s.bucket.frames == 1:  # one-frame buckets are shown as stills
            assert item["still"] and item["clip"] is None
            continue
        assert item["clip"] and not item["still"]
        with av.open(str(tmp_path / "gal" / item["clip"])) as c:
            v = c.streams.video[0]
            frames = [f for f in c.decode(video=0)]
            assert len(frames) == s.bucket.frames
            w, h = frames[0].width, frames[0].height
            assert abs(w / h - s.bucket.width / s.bucket.height) < 0.06 and h == 96
            assert abs(float(v.average_rate) - s.fps) < 0.01
            assert bool(c.streams.audio) == s.has_audio
        if "silent.mov" in item["source"]:
            assert not item["audio"] and any("audio" in f for f in item["flags"])
    stamp = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "gal").iterdir()}
    again = gallery.build_gallery(dset, tmp_path / "gal", max_items=6, clip_height=96)
    assert again["items"] == g["items"]
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "gal").iterdir()} == stamp  # reused
    assert not [p for p in (tmp_path / "gal").iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_gallery_shows_stills_without_a_clip(ds, tmp_path):
    """Image samples (one-frame buckets) get a bucket-cropped picture, no mp4."""
    from PIL import Image as PILImage

    from trainer_core import gallery
    from trainer_core.buckets import build_dataset, parse_buckets

    cs = ClipSet(root=ds.root, clips=[media.probe(ds.files[n].path, ds.root) for n in ("still.png", "card.jpg")])
    dset, _ = build_dataset(scenes.split_scenes(cs), parse_buckets("64x64x1;64x96x1"), target_fps=24.0)
    g = gallery.build_gallery(dset, tmp_path / "g", clip_height=96)
    assert g["shown"] == 2
    for item in g["items"]:
        assert item["still"] and item["clip"] is None and "error" not in item, item
        with PILImage.open(tmp_path / "g" / item["thumb"]) as im:
            w, h = im.size
        b = dset.samples[item["index"]].bucket
        assert h == 96 and abs(w / h - b.width / b.height) < 0.03
    assert not list((tmp_path / "g").glob("*.mp4"))
