"""Issue 16, dataset side: nothing lost, nothing silent — links, caption encodings and sizes,
audio that does not cover a sample, cancel inside motion measurement (no ComfyUI)."""
from __future__ import annotations

import numpy as np
import pytest

from tests.core import mediagen as mg
from trainer_core import buckets as bk
from trainer_core import media
from trainer_core.dataset import ClipSet, Segment
from trainer_core.gallery import GALLERY_CAPTION_CHARS, build_gallery


# ------------------------------------------------------------------ symbolic links


def test_file_links_out_of_the_folder_are_refused_and_links_inside_keep_their_name(tmp_path):
    root, elsewhere = tmp_path / "ds", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    mg.write_image(root / "own.png", size=(64, 48))
    mg.write_image(elsewhere / "secret.png", size=(64, 48))
    (elsewhere / "secret.txt").write_text("a caption from outside\n")
    (root / "out.png").symlink_to(elsewhere / "secret.png")
    (root / "alias.png").symlink_to(root / "own.png")
    (root / "own.txt").write_text("own caption\n")
    (root / "linkdir").symlink_to(elsewhere, target_is_directory=True)
    (root / "alias.txt").symlink_to(elsewhere / "secret.txt")
    cs = media.load_clips(root)
    names = sorted(c.name for c in cs.clips)
    assert names == ["alias.png", "own.png"]  # never "secret.png"
    skipped = {s.path.rsplit("/", 1)[-1]: s.reason for s in cs.skipped}
    assert "outside the dataset folder" in skipped["out.png"]
    assert "folder" in skipped["linkdir"] and "not followed" in skipped["linkdir"]
    alias = next(c for c in cs.clips if c.name == "alias.png")
    assert alias.path == str(root.resolve() / "alias.png")  # the link itself (its own .txt, gallery name)
    assert alias.caption is None  # its .txt is a link out: not read ...
    assert any(w.path.endswith("alias.txt") and "outside" in w.reason for w in cs.warnings)  # ... and said so
    from trainer_core import preview

    text = preview.clips_summary(cs)
    assert "out.png" in text and "linkdir" in text and "alias.txt" in text


# ------------------------------------------------------------------ caption encodings and sizes


def test_non_utf8_caption_is_decoded_as_cp1252_with_a_warning(tmp_path):
    mg.write_image(tmp_path / "a.png", size=(64, 48))
    (tmp_path / "a.txt").write_bytes("un café très “doux”".encode("cp1252"))
    mg.write_image(tmp_path / "b.png", size=(64, 48))
    (tmp_path / "b.txt").write_bytes("\ufeffnaïve utf-8 — ok".encode("utf-8"))
    cs = media.load_clips(tmp_path)
    by = {c.name: c for c in cs.clips}
    assert by["a.png"].caption == "un café très “doux”"
    assert "\ufffd" not in by["a.png"].caption
    assert by["b.png"].caption == "naïve utf-8 — ok"
    warns = [w for w in cs.warnings if w.path.endswith("a.txt")]
    assert len(warns) == 1 and "not UTF-8" in warns[0].reason and "Windows-1252" in warns[0].reason
    assert not any(w.path.endswith("b.txt") for w in cs.warnings)
    # ... and Bucket's report repeats it, so it is seen before encoding
    _, report = bk.build_dataset(cs, bk.parse_buckets("64x64x1"), audio_planned=False)
    assert "a.txt" in report.summary() and "not UTF-8" in report.summary()
    # bytes Windows-1252 leaves undefined still decode (Latin-1), never to U+FFFD
    text, note = media.decode_caption(b"x\x81y")
    assert text == "x\x81y" and "Latin-1" in note


def test_huge_caption_is_flagged_cut_and_shortened_in_the_gallery(tmp_path):
    mg.write_image(tmp_path / "big.png", size=(64, 48))
    word = "word "
    (tmp_path / "big.txt").write_text(word * (1_000_000 // len(word)))  # a 1 MB caption
    cs = media.load_clips(tmp_path)
    clip = cs.clips[0]
    assert len(clip.caption) <= media.MAX_CAPTION_BYTES
    reasons = " | ".join(w.reason for w in cs.warnings if w.path.endswith(("big.txt", "big.png")))
    assert "only its start was read" in reasons and "characters long" in reasons
    ds, report = bk.build_dataset(cs, bk.parse_buckets("64x64x1"), audio_planned=False)
    assert "long_caption" in ds.samples[0].flags and "very long" in report.summary()
    g = build_gallery(ds, tmp_path / "gallery")
    item = g["items"][0]
    assert len(item["caption"]) < GALLERY_CAPTION_CHARS + 60 and item["caption_chars"] == len(clip.caption)
    assert item["caption"].startswith("word word") and "characters in all" in item["caption"]


def test_caption_keeps_an_existing_non_utf8_txt_decoded_with_a_warning(tmp_path):
    from trainer_core.caption import caption_clips

    mg.write_image(tmp_path / "a.png", size=(64, 48))
    cs = media.load_clips(tmp_path)
    (tmp_path / "a.txt").write_bytes("déjà vu".encode("cp1252"))  # written after Load Clips ran
    out, rep = caption_clips(cs, None, writable_roots=[tmp_path])
    assert rep.kept == ["a.png#0"] and out.segments[0].caption == "déjà vu"
    assert any(w.path.endswith("a.txt") and "not UTF-8" in w.reason for w in out.warnings)


# ------------------------------------------------------------------ audio coverage per sample


@pytest.fixture(scope="module")
def late_audio(tmp_path_factory):
    """4 s of picture whose audio track has sound only from 1.0 s to 3.0 s."""
    d = tmp_path_factory.mktemp("late")
    t = mg.write_clip(d / "late.mp4", [4.0], fps=24, size=(96, 64), seed=4, audio_span=(1.0, 3.0))
    mg.write_image(d / "card.jpg", size=(64, 96))
    return t, media.load_clips(d)


def test_probe_reports_where_a_late_track_starts(late_audio):
    t, cs = late_audio
    a = next(c for c in cs.clips if c.name == "late.mp4").audio
    assert a is not None
    assert a.start == pytest.approx(1.0, abs=0.05) and a.end == pytest.approx(3.0, abs=0.05)


def test_bucket_flags_missing_and_partial_sound_per_sample_and_stills(late_audio):
    t, cs = late_audio
    vi = next(i for i, c in enumerate(cs.clips) if c.name == "late.mp4")
    ii = next(i for i, c in enumerate(cs.clips) if c.name == "card.jpg")
    spans = [(0.0, 0.8), (0.6, 1.4), (1.5, 2.3), (2.6, 3.4), (3.2, 4.0)]
    segs = [Segment(clip=vi, start=a, end=b, index=k, caption="c") for k, (a, b) in enumerate(spans)]
    segs.append(Segment(clip=ii, start=0.0, end=0.0, index=0, caption="c"))
    cs2 = ClipSet(root=cs.root, clips=cs.clips, segments=segs)
    ds, report = bk.build_dataset(cs2, bk.parse_buckets("96x64x17"), target_fps=24.0, audio_planned=True)
    flags = {e.key: e.flags for e in report.entries}
    keys = [s.key(cs.clips) for s in segs]
    assert "no_audio" in flags[keys[0]] and "no_audio" in flags[keys[4]]  # before / after the sound
    assert "partial_audio" in flags[keys[1]] and "partial_audio" in flags[keys[3]]  # it starts / ends inside
    assert not {"no_audio", "partial_audio"} & set(flags[keys[2]])  # fully covered
    assert "no_audio" in flags["card.jpg#0"]  # a still has no sound
    cov = {e.key: e.audio_coverage for e in report.entries}
    assert cov[keys[1]] == pytest.approx((1.308 - 1.0) / (17 / 24), abs=0.06)
    has = {segs[s.segment].key(cs.clips): s.has_audio for s in ds.samples}
    assert has[keys[0]] is False and has[keys[4]] is False and has["card.jpg#0"] is False
    assert has[keys[1]] and has[keys[2]]
    assert sorted(ds.settings["soundless"]) == sorted([keys[0], keys[4], "card.jpg#0"])
    text = report.summary()
    assert "3 of 6 samples have no sound" in text and "card.jpg#0" in text and "video only" in text
    # video-only training: no sound flags, no warning line
    _, quiet = bk.build_dataset(cs2, bk.parse_buckets("96x64x17"), target_fps=24.0, audio_planned=False)
    assert not any({"no_audio", "partial_audio"} & set(e.flags) for e in quiet.entries)
    assert "have no sound" not in quiet.summary()


# ------------------------------------------------------------------ cancel during motion measurement


@pytest.fixture(scope="module")
def many_clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("many")
    for k in range(6):
        mg.write_clip(d / f"c{k}.mp4", [1.0], fps=24, size=(64, 48), audio=False, seed=k, counter=False)
    mg.write_clip(d / "long.mp4", [12.0], fps=24, size=(64, 48), audio=False, seed=9, counter=False, gop=400)
    return media.load_clips(d)


def test_cancel_is_checked_per_clip_in_motion_measurement(many_clips):
    calls = []

    def progress(i, n, text=None):
        calls.append(i)
        if i == 2:
            raise KeyboardInterrupt  # what a host's cancel check raises, here at the third segment

    measured = []
    m = bk.motion_measurer(many_clips)

    def measure(ci, seg):
        measured.append(ci)
        return m(ci, seg)

    with pytest.raises(KeyboardInterrupt):
        bk.build_dataset(many_clips, bk.parse_buckets("64x64x9"), measure_motion=measure, progress=progress)
    assert calls == [0, 1, 2] and len(measured) == 2  # stopped before the third clip was decoded


def test_cancel_is_checked_inside_a_long_clip(many_clips):
    li = next(i for i, c in enumerate(many_clips.clips) if c.name == "long.mp4")
    seg = Segment(clip=li, start=0.0, end=12.0)
    asked = []

    def stop():
        asked.append(1)
        return len(asked) >= 3  # the third question: cancel, in the middle of this one clip

    with pytest.raises(media.Cancelled):
        bk.motion_measurer(many_clips, should_stop=stop)(li, seg)
    assert len(asked) == 3
    # without a cancel the same measurement completes and asks more often than once per clip
    asked.clear()
    score = bk.motion_measurer(many_clips, should_stop=lambda: asked.append(1) and False)(li, seg)
    assert score is not None and score > 0 and len(asked) > 3
