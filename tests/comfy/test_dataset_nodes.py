"""Load Clips → Split Scenes → Bucket in real ComfyUI, on real media the tests write."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.core import mediagen as mg


@pytest.fixture(scope="module")
def dataset(comfy):
    root = comfy.base / "input" / "ds"
    truth = mg.make_dataset(root)
    return truth


def _run(comfy, node_id, **kw):
    with torch.inference_mode():
        return comfy.pack[node_id].execute(**kw)


def test_load_clips_reads_everything_and_skips_with_reasons(comfy, dataset):
    out = _run(comfy, "LTX2TrainLoadClips", folder="ds", path="", recursive=True)
    clips, sheet, summary = out.result
    names = {c.name for c in clips.clips}
    assert names == set(dataset.files), names ^ set(dataset.files)
    skipped = {s.path.rsplit("/", 1)[-1]: s.reason for s in clips.skipped}
    for bad in dataset.bad:
        assert bad in skipped and skipped[bad], bad
        assert bad in summary
    by = {c.name: c for c in clips.clips}
    assert by["scenes.mp4"].caption == dataset.captions["scenes.mp4"]
    assert by["silent.mov"].caption == "a silent clip" and by["silent.mov"].caption_source.startswith("dataset")
    assert by["still.png"].caption == "a png still from txt"
    assert by["silent.mov"].audio is None and by["scenes.mp4"].audio is not None
    assert by["vfr.mkv"].vfr and not by["scenes.mp4"].vfr
    assert (by["rotated.mp4"].width, by["rotated.mp4"].height) == (dataset.files["rotated.mp4"].width,
                                                                 dataset.files["rotated.mp4"].height)
    assert by["portrait.mp4"].height > by["portrait.mp4"].width
    assert sheet.ndim == 4 and sheet.shape[0] == 1 and sheet.shape[-1] == 3 and float(sheet.std()) > 0.01
    assert "ui" not in summary and len(summary) > 20
    assert out.ui and "images" in out.ui


def test_typed_paths_cannot_escape(comfy, dataset):
    # (the pack is loaded by ComfyUI under its own module name: match the message, not the class)
    with pytest.raises(ValueError, match=r"'\.\.'"):
        _run(comfy, "LTX2TrainLoadClips", folder="ds", path="../ds", recursive=True)
    with pytest.raises(ValueError, match=r"'\.\.'"):
        _run(comfy, "LTX2TrainLoadClips", folder="../../etc", path="", recursive=True)
    # an absolute typed path is read in place
    out = _run(comfy, "LTX2TrainLoadClips", folder="(type a path below)", path=str(comfy.base / "input" / "ds"),
               recursive=False)
    assert "sub/nested.mp4" not in {c.name for c in out.result[0].clips}


def test_split_scenes_finds_cuts_and_keeps_audio_aligned(comfy, dataset):
    from trainer_core import media

    clips = _run(comfy, "LTX2TrainLoadClips", folder="ds", path="").result[0]
    out = _run(comfy, "LTX2TrainSplitScenes", clips=clips, enabled=True, detector="content", threshold=0.0,
               min_seconds=0.5, max_seconds=10.0)
    split, sheet, summary = out.result
    idx = next(i for i, c in enumerate(split.clips) if c.name == "scenes.mp4")
    segs = [s for s in split.segments if s.clip == idx]
    truth = dataset.files["scenes.mp4"]
    assert len(segs) == len(truth.scenes)
    for s, cut in zip(segs[1:], truth.cuts):
        assert abs(s.start - cut) <= 2 / truth.fps, (s.start, cut)
    for s, tone in zip(segs, truth.tones):
        pcm, rate = media.read_audio(split.clips[idx].path, s.start + 0.1, s.duration - 0.2, 16000, 1)
        assert abs(mg.dominant_frequency(pcm, rate) - tone) < 30, (s, tone)
    assert all(s.caption == dataset.captions["scenes.mp4"] for s in segs)
    assert sheet.shape[0] == 1 and sheet.shape[-1] == 3
    # the dissolve detector keeps the hard cuts (and adds none to the fades)
    dis = _run(comfy, "LTX2TrainSplitScenes", clips=clips, enabled=True, detector="dissolve", threshold=0.0,
               min_seconds=0.5, max_seconds=10.0).result[0]
    assert sum(s.clip == idx for s in dis.segments) == len(truth.scenes)
    # off switch: one continuous segment per clip
    whole = _run(comfy, "LTX2TrainSplitScenes", clips=clips, enabled=False, detector="content", threshold=0.0,
                 min_seconds=0.0, max_seconds=0.0).result[0]
    assert sum(s.clip == idx for s in whole.segments) == 1


def test_bucket_assignment_spans_and_report(comfy, dataset):
    clips = _run(comfy, "LTX2TrainLoadClips", folder="ds", path="").result[0]
    split = _run(comfy, "LTX2TrainSplitScenes", clips=clips, enabled=True, detector="content", threshold=0.0,
                 min_seconds=0.5, max_seconds=10.0).result[0]
    assert comfy.pack["LTX2TrainBucket"].validate_inputs(buckets="65x64x9") != True  # noqa: E712
    out = _run(comfy, "LTX2TrainBucket", clips=split, preset="custom", buckets="96x64x17;64x96x17;64x64x9",
               target_fps=24.0, audio=True, static_threshold=1.0)
    ds, report, gallery = out.result
    by_clip = {}
    for s in ds.samples:
        by_clip.setdefault(ds.clipset.clips[s.clip].name, []).append(s)
    assert all(str(s.bucket) == "64x96x17" for s in by_clip["portrait.mp4"])
    assert all(str(s.bucket) == "96x64x17" for s in by_clip["scenes.mp4"])
    for s in ds.samples:
        if s.bucket.frames > 1:
            a, b = s.audio_span
            assert b - a == pytest.approx(s.bucket.frames / 24.0)
            seg = ds.segments[s.segment]
            assert seg.start - 1e-6 <= a and b <= seg.end + 1e-6
    assert any(s.bucket.frames == 1 for s in ds.samples)  # stills become one-frame samples
    assert "no audio" in report and "silent.mov" in report
    assert gallery.shape[-1] == 3 and gallery.shape[0] == 1
    # the web gallery: files in ComfyUI's temp folder, one entry per sample (first 48)
    ui = out.ui.as_dict() if hasattr(out.ui, "as_dict") else out.ui
    g = ui["ltx2_gallery"][0]
    # the node shows the live gallery and its report; the gallery image only goes to the output
    assert "images" not in ui and "no audio" in ui["text"][0]
    assert g["type"] == "temp" and g["total"] == len(ds.samples) and g["shown"] == min(48, len(ds.samples))
    folder = Path(comfy.folder_paths.get_temp_directory()) / g["subfolder"]
    for item in g["items"]:
        assert (folder / item["thumb"]).is_file()
        assert item["still"] or (folder / item["clip"]).is_file(), item


# ---------------------------------------------------------------- validation through ComfyUI


def _validate(comfy, bucket_inputs: dict, folder: str):
    """ComfyUI's own prompt validation of Load Clips -> Bucket: (ok, errors of the Bucket node)."""
    import asyncio

    import execution

    inputs = dict(preset="custom", buckets="96x64x17", target_fps=24.0, audio=True, static_threshold=1.0)
    inputs.update(bucket_inputs)
    prompt = {
        "1": {"class_type": "LTX2TrainLoadClips",
              "inputs": {"folder": "(type a path below)", "path": folder, "recursive": True}},
        "2": {"class_type": "LTX2TrainBucket", "inputs": {"clips": ["1", 0], **inputs}},
    }
    ok, errors, _ = asyncio.run(execution.validate_inputs("test", prompt, "2", {}))
    return ok, errors


def test_bucket_ranges_are_checked_and_the_custom_error_is_reported_once(comfy, dataset):
    ok, errors = _validate(comfy, {}, dataset.root)
    assert ok and not errors, errors
    for fps, kind in ((500.0, "value_bigger_than_max"), (-5.0, "value_smaller_than_min")):
        ok, errors = _validate(comfy, {"target_fps": fps}, dataset.root)
        assert not ok and [(e["type"], e["extra_info"]["input_name"]) for e in errors] == [(kind, "target_fps")]
    ok, errors = _validate(comfy, {"static_threshold": 80.0}, dataset.root)
    assert not ok and errors[0]["extra_info"]["input_name"] == "static_threshold"
    ok, errors = _validate(comfy, {"preset": "no such preset"}, dataset.root)
    assert not ok and [e["type"] for e in errors] == ["value_not_in_list"]
    ok, errors = _validate(comfy, {"buckets": "65x64x10"}, dataset.root)
    assert not ok and len(errors) == 1, errors
    assert errors[0]["type"] == "custom_validation_failed" and errors[0]["extra_info"]["input_name"] == "buckets"
    assert "multiple of 32" in errors[0]["details"] and "8n+1" in errors[0]["details"]


def test_no_node_of_the_pack_takes_over_validation_of_inputs_it_does_not_check(comfy):
    """A validate_inputs with **kwargs makes ComfyUI skip min/max/list checks of every input
    and repeat its error on each; one naming an input it does not check skips that one's."""
    import inspect

    for node_id, cls in comfy.pack.items():
        fn = cls.__dict__.get("validate_inputs")
        if fn is None:
            continue
        spec = inspect.getfullargspec(fn.__func__)
        assert spec.varkw is None, f"{node_id}.validate_inputs takes **{spec.varkw}"
        src = inspect.getsource(fn.__func__)
        for arg in spec.args[1:]:
            assert src.count(arg) >= 3, f"{node_id}.validate_inputs names {arg!r} but hardly uses it"


# ---------------------------------------------------------------- typed paths on an open server


@pytest.fixture
def outside(tmp_path):
    """A dataset folder outside ComfyUI's input folder, and a missing sibling."""
    d = tmp_path / "elsewhere"
    d.mkdir()
    mg.write_image(d / "a.png", size=(96, 64))
    return d, tmp_path / "missing"


@pytest.fixture
def listen(comfy, monkeypatch):
    import comfy.cli_args

    def set_(value):
        monkeypatch.setattr(comfy.cli_args.args, "listen", value)
    return set_


def _settings(comfy, text):
    f = Path(comfy.folder_paths.get_user_directory()) / "ltx2_trainer" / "settings.yaml"
    f.parent.mkdir(parents=True, exist_ok=True)
    if text is None:
        f.unlink(missing_ok=True)
    else:
        f.write_text(text)
    return f


def test_local_server_reads_absolute_paths_anywhere(comfy, outside, listen):
    listen("127.0.0.1")
    _settings(comfy, None)
    d, missing = outside
    (d / "a.txt").write_bytes("un café".encode("cp1252"))
    out = _run(comfy, "LTX2TrainLoadClips", folder="(type a path below)", path=str(d))
    assert [c.name for c in out.result[0].clips] == ["a.png"]
    assert out.result[0].clips[0].caption == "un café"
    assert "warning a.txt: not UTF-8" in out.result[2]  # the summary names the file
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _run(comfy, "LTX2TrainLoadClips", folder="(type a path below)", path=str(missing))


@pytest.mark.parametrize("address", ["0.0.0.0,::", "192.168.1.20"])
def test_open_server_refuses_paths_outside_input_alike_for_existing_and_missing(comfy, dataset, outside,
                                                                               listen, address):
    listen(address)
    sfile = _settings(comfy, None)
    d, missing = outside
    msgs = {}
    for name, p in (("existing", d), ("missing", missing), ("file", d / "a.png")):
        with pytest.raises(PermissionError) as e:
            _run(comfy, "LTX2TrainLoadClips", folder="(type a path below)", path=str(p))
        msgs[name] = str(e.value).replace(str(p), "<path>")
        fp = comfy.pack["LTX2TrainLoadClips"].fingerprint_inputs(folder="(type a path below)", path=str(p))
        assert fp.replace(str(p), "<path>") == "error:" + msgs[name]
    assert msgs["existing"] == msgs["missing"] == msgs["file"], msgs
    assert str(sfile) in msgs["existing"] and "dataset_roots" in msgs["existing"]
    # a link inside the input folder that points out is judged by where it points
    link = comfy.base / "input" / "link_out"
    link.unlink(missing_ok=True)
    link.symlink_to(d, target_is_directory=True)
    try:
        with pytest.raises(PermissionError):
            _run(comfy, "LTX2TrainLoadClips", folder="(type a path below)", path=str(link))
    finally:
        link.unlink()
    # the input folder itself stays readable, typed absolute or relative, and by the list
    for folder, path in (("(type a path below)", str(comfy.base / "input" / "ds")), ("(type a path below)", "ds"),
                         ("ds", "")):
        assert _run(comfy, "LTX2TrainLoadClips", folder=folder, path=path, recursive=False).result[0].clips
    # a folder listed in the settings file is readable again
    _settings(comfy, f"dataset_roots:\n  - {d.parent}\n")
    try:
        out = _run(comfy, "LTX2TrainLoadClips", folder="(type a path below)", path=str(d))
        assert [c.name for c in out.result[0].clips] == ["a.png"]
        with pytest.raises(FileNotFoundError):  # inside a root: existence may be told
            _run(comfy, "LTX2TrainLoadClips", folder="(type a path below)", path=str(missing))
    finally:
        _settings(comfy, None)


# ---------------------------------------------------------------- cancel, sound and names at the node


def _pack_module(comfy, name):
    import sys

    pkg = comfy.pack["LTX2TrainBucket"].__module__.rsplit(".nodes.", 1)[0]
    return sys.modules[f"{pkg}.{name}"]


def test_cancel_during_motion_measurement_stops_at_the_next_clip(comfy, dataset, monkeypatch):
    import comfy.model_management as mm

    clips = _run(comfy, "LTX2TrainLoadClips", folder="ds", path="").result[0]
    bk = _pack_module(comfy, "trainer_core.buckets")
    real = bk.motion_score
    scored = []

    def score_then_cancel(frames):
        scored.append(1)
        if len(scored) == 2:
            mm.interrupt_current_processing(True)  # the user presses cancel while clip 2 is measured
        return real(frames)

    monkeypatch.setattr(bk, "motion_score", score_then_cancel)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            _run(comfy, "LTX2TrainBucket", clips=clips, preset="custom", buckets="96x64x9;64x96x9;64x64x9",
                 target_fps=24.0, audio=True, static_threshold=1.0)
    finally:
        mm.interrupt_current_processing(False)
    videos = sum(c.kind == "video" for c in clips.clips)
    assert len(scored) == 2 < videos  # not the whole phase


def test_bucket_node_says_before_encode_which_samples_have_no_sound(comfy, dataset):
    clips = _run(comfy, "LTX2TrainLoadClips", folder="ds", path="").result[0]
    ds, report, _ = _run(comfy, "LTX2TrainBucket", clips=clips, preset="custom", buckets="96x64x17;64x96x17;64x64x9",
                         target_fps=24.0, audio=True, static_threshold=1.0).result
    silent = {ds.segments[s.segment].key(ds.clipset.clips) for s in ds.samples if not s.has_audio}
    assert {"card.jpg#0", "still.png#0", "silent.mov#0"} <= silent
    assert f"{len(silent)} of {len(ds.samples)} samples have no sound" in report
    assert sorted(ds.settings["soundless"]) == sorted(silent)


def test_folder_preview_reads_what_load_clips_may_read_and_refuses_the_rest_alike(comfy, outside, listen):
    """The Load Clips preview route's resolver: on an open server a path outside the input
    folder is refused with Load Clips' own message (the same for existing and missing
    folders); on a local one it is previewed, counts and first frames."""
    import importlib

    pkg = comfy.pack["LTX2TrainBucket"].__module__.rsplit(".nodes.", 1)[0]
    fp = importlib.import_module(f"{pkg}.nodes.folder_preview")
    d, missing = outside
    listen("0.0.0.0,::")
    _settings(comfy, None)
    got = [fp.preview_for("(type a path below)", str(p)) for p in (d, missing)]
    assert not got[0]["ok"] and not got[1]["ok"]
    assert got[0]["error"].replace(str(d), "<p>") == got[1]["error"].replace(str(missing), "<p>")
    with pytest.raises(PermissionError) as e:
        _run(comfy, "LTX2TrainLoadClips", folder="(type a path below)", path=str(d))
    assert str(e.value) == got[0]["error"]
    listen("127.0.0.1")
    ok = fp.preview_for("(type a path below)", str(d))
    assert ok["ok"] and ok["images"] == 1 and ok["videos"] == 0 and ok["sheet"].startswith("data:image/jpeg;base64,")
