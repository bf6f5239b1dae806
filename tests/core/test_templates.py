"""The shipped templates as a ComfyUI user sees them (read from the JSON, no server): human
file names (the template browser's titles), a group and a note in each, no two node
rectangles overlapping (title bars and the areas reserved for previews, charts and galleries
included), and every model file with its folder and official download as the frontend's
missing-model dialog reads them (``properties.models``: name, url, directory)."""
from __future__ import annotations

import itertools
import json
import re
import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import make_workflows as mw  # noqa: E402

FILES = sorted((REPO / "example_workflows").glob("*.json"))
# the loaders' file widgets, and the official names a workflow may point them at
FILE_WIDGETS = {"CheckpointLoaderSimple": 0, "LTXVAudioVAELoader": 0, "LTXAVTextEncoderLoader": 0,
                "UNETLoader": 0, "VAELoader": 0, "CLIPLoader": 0}
TINY = {mw.TINY_CKPT, mw.TINY_TRANSFORMER_25}  # made by trainer_core.tiny_checkpoint, no download


def _load(path):
    return json.loads(path.read_text())


def test_the_set_is_complete_and_titled_for_people():
    assert {f.stem for f in FILES} == {mw.file_name(k) for k in (*mw.all_workflows(), *mw.INSTALLS)}
    for f in FILES:
        assert f.with_suffix(".jpg").is_file(), f.name
        assert "_" not in f.stem and re.search(r"[A-Z][a-z]+ ", f.stem), f"{f.name}: not a human title"
        assert mw.key_for_file(f.stem)  # the inverse mapping the tests use


def test_rect_counts_the_title_bar():
    n = {"pos": [10, 100], "size": [300, 200]}
    assert mw.rect(n) == (10, 100 - mw.TITLE_H, 310, 300)


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_overlap_check_catches_a_title_bar_over_a_node():
    above = {"pos": [0, 0], "size": [300, 100]}
    below = {"pos": [0, 120], "size": [300, 100]}  # its title bar starts at 90, inside `above`
    assert _overlap(mw.rect(above), mw.rect(below))


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_no_two_nodes_overlap(path):
    ui = _load(path)
    for a, b in itertools.combinations(ui["nodes"], 2):
        assert not _overlap(mw.rect(a), mw.rect(b)), f"{path.name}: {a['title']} overlaps {b['title']}"


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_nodes_reserve_room_for_what_is_drawn_below_their_widgets(path):
    """A node whose JS or preview draws below the widgets is tall enough for it: a chart or
    gallery is never squeezed into (or hung below) a frame that was sized for widgets only."""
    for n in _load(path)["nodes"]:
        extra = mw.EXTRA_H.get(n["type"], 0)
        if extra:
            assert n["size"][1] >= extra + 2 * mw.WIDGET_H, (path.name, n["type"], n["size"])


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_groups_and_notes_say_what_to_do(path):
    ui = _load(path)
    notes = [n for n in ui["nodes"] if n["type"] in ("Note", "MarkdownNote")]
    assert ui["groups"] and notes, path.name
    for note in notes:
        assert len(note["widgets_values"][0]) > 60, note
    real = [n for n in ui["nodes"] if n["type"] not in mw.UI_ONLY]
    for n in ui["nodes"]:  # every node sits inside a group (title bar included)
        x0, y0, x1, y1 = mw.rect(n)
        assert any(g["bounding"][0] <= x0 and g["bounding"][1] <= y0 and x1 <= g["bounding"][0] + g["bounding"][2]
                   and y1 <= g["bounding"][1] + g["bounding"][3] for g in ui["groups"]), (path.name, n["title"])
    for g1, g2 in itertools.combinations(ui["groups"], 2):
        b1 = (g1["bounding"][0], g1["bounding"][1], g1["bounding"][0] + g1["bounding"][2], g1["bounding"][1] + g1["bounding"][3])
        b2 = (g2["bounding"][0], g2["bounding"][1], g2["bounding"][0] + g2["bounding"][2], g2["bounding"][1] + g2["bounding"][3])
        assert not _overlap(b1, b2), (path.name, g1["title"], g2["title"])
    assert real


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_every_model_file_has_its_folder_and_official_download(path):
    for n in _load(path)["nodes"]:
        if n["type"] not in FILE_WIDGETS:
            continue
        files = [v for v in n["widgets_values"] if isinstance(v, str) and v.endswith(".safetensors")]
        assert files, n
        entries = {m["name"]: m for m in n["properties"].get("models", [])}
        for f in files:
            if f in TINY:
                continue
            m = entries.get(f)
            assert m, f"{path.name}: {n['type']} loads {f} without a download entry"
            assert m["url"].startswith("https://huggingface.co/") and m["url"].endswith("/" + f), m
            assert "/resolve/main/" in m["url"], m
            assert m["directory"] in {"checkpoints", "text_encoders", "diffusion_models", "vae"}, m
            assert m["directory"] == mw.MODEL_URLS[f][1]
            if "Lightricks" in m["url"] or f.startswith("ltx-2"):
                assert m["url"].startswith(("https://huggingface.co/Lightricks/", "https://huggingface.co/Comfy-Org/")), m


def test_to_api_skips_notes_and_cli_converts(tmp_path):
    """``make_workflows.py to-api IN OUT --object-info FILE``: notes (frontend only) are left
    out, widget values land on their names, links become [node id, slot]."""
    info = {
        "A": {"input": {"required": {"n": ["INT", {"default": 1}], "seed": ["INT", {"control_after_generate": True}]}},
              "input_order": {"required": ["n", "seed"]}, "output": ["X"], "output_name": ["x"]},
        "B": {"input": {"required": {"x": ["X", {}], "s": ["STRING", {}]}}, "input_order": {"required": ["x", "s"]},
              "output": [], "output_name": []},
    }
    g = mw.Graph(info)
    a = g.add("A", (0, 0), n=5, seed=7)
    b = g.add("B", (400, 0), s="hi")
    g.link(a, 0, b, "x")
    g.note((0, 300), "a note for people, not for the server: it must not reach /prompt")
    ui = g.ui("t")
    assert ui["nodes"][a - 1]["widgets_values"] == [5, 7, "fixed"]
    (tmp_path / "oi.json").write_text(json.dumps(info))
    (tmp_path / "ui.json").write_text(json.dumps(ui))
    assert mw.main(["to-api", str(tmp_path / "ui.json"), str(tmp_path / "api.json"),
                    "--object-info", str(tmp_path / "oi.json")]) == 0
    api = json.loads((tmp_path / "api.json").read_text())
    assert api == {"1": {"class_type": "A", "inputs": {"n": 5, "seed": 7}},
                   "2": {"class_type": "B", "inputs": {"x": ["1", 0], "s": "hi"}}}
    # a node type the server lacks is named in the error
    info.pop("B")
    (tmp_path / "oi.json").write_text(json.dumps(info))
    with pytest.raises(SystemExit, match="B"):
        mw.main(["to-api", str(tmp_path / "ui.json"), str(tmp_path / "api.json"), "--object-info", str(tmp_path / "oi.json")])
