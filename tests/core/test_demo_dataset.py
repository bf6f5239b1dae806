"""The quickstart's demo dataset trains in the shipped workflows as they are: Split Scenes with
the workflow's settings, then the Bucket node's default preset, keep every shot (none "too
short for any bucket")."""
from __future__ import annotations

import sys

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import make_demo_dataset as demo  # noqa: E402


def test_every_demo_shot_fits_the_default_buckets(tmp_path):
    from trainer_core import buckets as bk
    from trainer_core import media, scenes

    demo.make_demo_dataset(tmp_path, clips=2, size=(192, 128))
    clips = media.load_clips(str(tmp_path))
    split = scenes.split_scenes(clips)  # Split Scenes' defaults (the Character workflow's)
    segs = split.all_segments()
    assert len(segs) == 4, segs  # two shots per clip, each whole (6 s < max_seconds 10)
    ds, report = bk.build_dataset(split, bk.parse_buckets(bk.PRESETS[bk.DEFAULT_PRESET]))
    assert not report.flagged("too_short"), report.summary()
    assert report.kept == 4 and len(ds.samples) == 4, report.summary()
    assert all(s.bucket.frames == 121 for s in ds.samples), [s.bucket for s in ds.samples]
    assert not report.flagged("no_caption") and not report.flagged("no_audio"), report.summary()
