"""Load Clips' folder preview route on a running ComfyUI: counts and first frames of the
folder the node would read, resolved by Load Clips' own rules ('..' refused, missing folders
named), before any run."""
from __future__ import annotations

import base64
import io
import urllib.parse


def _get(server, **q):
    return server.get("/ltx2_trainer/folder_preview?" + urllib.parse.urlencode(q))


def test_folder_preview_counts_and_shows_first_frames(server):
    from PIL import Image

    from tests.core import mediagen as mg

    ds = server.base / "input" / "preview_ds"
    (ds / "sub").mkdir(parents=True, exist_ok=True)
    mg.write_clip(ds / "a.mp4", [0.5], fps=24, size=(96, 64), seed=5)
    mg.write_clip(ds / "sub" / "b.mp4", [0.5], fps=24, size=(64, 96), seed=6)
    Image.new("RGB", (64, 48), (10, 200, 30)).save(ds / "still.png")
    (ds / "a.txt").write_text("a caption")
    (ds / "notes.md").write_text("not media")
    r = _get(server, folder="preview_ds")
    assert r["ok"], r
    assert (r["videos"], r["images"], r["captions"], r["total"]) == (2, 1, 1, 3), r
    sheet = Image.open(io.BytesIO(base64.b64decode(r["sheet"].split(",", 1)[1])))
    assert sheet.width > 3 * 96 and sheet.height > 96
    # the still's green is in the strip: real first frames, not placeholders
    px = sheet.convert("RGB").getdata()
    assert sum(1 for p in px if p[1] > 180 and p[0] < 40 and p[2] < 60) > 500
    flat = _get(server, folder="preview_ds", recursive="0")
    assert flat["videos"] == 1 and flat["total"] == 2, flat


def test_folder_preview_follows_load_clips_path_rules(server):
    bad = _get(server, folder="preview_ds", path="../../etc")
    assert not bad["ok"] and ".." in bad["error"], bad
    missing = _get(server, folder="no_such_folder_here")
    assert not missing["ok"] and "no_such_folder_here" in missing["error"], missing
    hint = _get(server, folder="(type a path below)")
    assert not hint["ok"] and "choose a dataset folder" in hint["error"], hint
