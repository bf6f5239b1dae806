"""Bucket parsing, assignment and inspection on synthetic clip lists (no media needed)."""
from __future__ import annotations

import pytest

from trainer_core.buckets import (
    PRESETS, BucketError, build_dataset, choose_bucket, cover_crop, frames_available,
    parse_buckets, sample_times,
)
from trainer_core.dataset import AudioInfo, Bucket, ClipInfo, ClipSet, Dataset, Segment, Skipped


def test_parse_valid_and_separators():
    bs = parse_buckets("768x512x121; 512X768x121,640x640x121\n768x512x121")
    assert bs == [Bucket(768, 512, 121), Bucket(512, 768, 121), Bucket(640, 640, 121)]
    assert bs[0].latent_shape == (128, 16, 16, 24)


@pytest.mark.parametrize("spec,needles", [
    ("770x512x121", ["width 770", "768 or 800"]),
    ("768x500x121", ["height 500", "480 or 512"]),
    ("768x512x120", ["frame count 120", "113 or 121"]),
    ("768x512x0", ["frame count 0", "1"]),
    ("768by512", ["not of the form WxHxF"]),
])
def test_parse_rejects_with_nearest_values(spec, needles):
    with pytest.raises(BucketError) as e:
        parse_buckets(spec)
    for n in needles:
        assert n in str(e.value)


def test_every_preset_is_valid():
    for name, spec in PRESETS.items():
        assert parse_buckets(spec), name


def test_frames_available_and_times():
    assert frames_available(5.0, 24) == 120
    assert frames_available(121 / 24, 24) == 121
    assert frames_available(0.0, 24) == 0


def test_choose_bucket_aspect_then_frames_then_area():
    bs = parse_buckets("768x512x121;768x512x49;512x768x121;640x640x121;384x256x121")
    # landscape 16:9 with plenty of frames -> 3:2 bucket (closest), most frames, larger area
    assert choose_bucket(1920, 1080, 500, bs) == Bucket(768, 512, 121)
    # portrait
    assert choose_bucket(1080, 1920, 500, bs) == Bucket(512, 768, 121)
    # square
    assert choose_bucket(1000, 1000, 500, bs) == Bucket(640, 640, 121)
    # too short for 121 -> the 49-frame landscape bucket
    assert choose_bucket(1920, 1080, 60, bs) == Bucket(768, 512, 49)
    # nothing fits
    assert choose_bucket(1920, 1080, 10, bs) is None
    # only the square fits in frames? no: aspect is compared among fitting buckets only
    bs2 = parse_buckets("768x512x121;640x640x49")
    assert choose_bucket(1920, 1080, 60, bs2) == Bucket(640, 640, 49)


def test_cover_crop():
    rw, rh, x, y = cover_crop(1920, 1080, 768, 512)
    assert rh == 512 and rw >= 768 and x == (rw - 768) // 2 and y == 0
    rw, rh, x, y = cover_crop(1080, 1920, 768, 512)
    assert rw == 768 and rh >= 512 and y == (rh - 512) // 2


def _clip(name, w, h, dur, fps=24.0, audio=True, caption="a caption", kind="video"):
    return ClipInfo(path=f"/data/{name}", name=name, kind=kind, width=w, height=h, fps=fps,
                    duration=dur, num_frames=int(dur * fps),
                    audio=AudioInfo(48000, 2, dur) if audio else None, caption=caption)


def test_build_dataset_report():
    cs = ClipSet(root="/data", clips=[
        _clip("land.mp4", 1920, 1080, 6.0),
        _clip("port.mp4", 720, 1280, 6.0, audio=False),
        _clip("short.mp4", 1920, 1080, 0.5),
        _clip("tiny.mp4", 320, 240, 6.0, caption=None),
        _clip("still.png", 800, 800, 0.0, kind="image", audio=False),
    ], skipped=[Skipped("/data/bad.mp4", "no video stream")])
    cs.segments = [
        Segment(clip=0, start=0.0, end=3.0, index=0, caption="a", motion=12.0),
        Segment(clip=0, start=3.0, end=6.0, index=1, caption="b", motion=0.2),
        Segment(clip=1, start=0.0, end=6.0, caption="c", motion=9.0),
        Segment(clip=2, start=0.0, end=0.5, caption="d"),
        Segment(clip=3, start=0.0, end=6.0, caption=None, motion=5.0),
        Segment(clip=4, start=0.0, end=0.0, caption="e"),
    ]
    ds, rep = build_dataset(cs, parse_buckets("768x512x121;768x512x49;512x768x121;512x768x49"),
                            target_fps=24.0, audio_planned=True)
    by_key = {e.key: e for e in rep.entries}
    assert by_key["land.mp4#0"].bucket == "768x512x49"  # 3 s = 72 frames < 121
    assert by_key["land.mp4#1"].flags == ["static"]
    assert by_key["port.mp4#0"].bucket == "512x768x121"
    assert "no_audio" in by_key["port.mp4#0"].flags
    assert by_key["short.mp4#0"].kept is False and "too_short" in by_key["short.mp4#0"].flags
    assert set(by_key["tiny.mp4#0"].flags) >= {"low_res", "no_caption"}
    assert by_key["still.png#0"].bucket == "768x512x1"
    assert rep.counts == {"768x512x49": 2, "512x768x121": 1, "768x512x121": 1, "768x512x1": 1}
    assert len(ds.samples) == 5
    s = next(s for s in ds.samples if ds.segments[s.segment].key(cs.clips) == "land.mp4#1")
    assert s.audio_span == pytest.approx((3.0, 3.0 + 49 / 24))
    assert sample_times(s)[-1] == pytest.approx(3.0 + 48 / 24)
    assert sample_times(s)[-1] < 6.0
    txt = rep.summary()
    assert "too short" in txt and "bad.mp4" in txt and "no audio" in txt
    # round trip through JSON-able dicts
    ds2 = Dataset.from_dict(ds.to_dict())
    assert ds2.samples[0].bucket == ds.samples[0].bucket and ds2.clipset.clips[1].audio is None


def test_motion_measured_on_demand_and_source_fps():
    cs = ClipSet(root="/d", clips=[_clip("a.mp4", 1280, 720, 10.0, fps=30.0)])
    asked = []

    def measure(ci, seg):
        asked.append(ci)
        return 0.1

    ds, rep = build_dataset(cs, parse_buckets("768x512x121"), target_fps=0, measure_motion=measure)
    assert asked == [0]
    assert ds.samples[0].fps == 30.0
    assert rep.entries[0].flags == ["static"]
