"""Preview text covers non-ASCII file names: glyphs, never the .notdef box (no ComfyUI)."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from trainer_core import fonts, preview

NAME = "café_東京.mp4"


def _render(text, font=None, size=11):
    img = Image.new("L", (64, 24), 0)
    d = ImageDraw.Draw(img)
    if font is None:
        fonts.draw_text(d, (2, 2), text, fill=255, size=size)
    else:
        d.text((2, 2), text, fill=255, font=font)
    return np.asarray(img)


def _cjk_font_here() -> bool:
    return any(not p.endswith(fonts.DEJAVU) for p in fonts.font_paths())


def test_every_character_of_a_non_ascii_name_is_a_glyph_not_the_notdef_box():
    chain = fonts.font_chain(11)
    assert chain, "no font at all"
    boxes = [_render(fonts._NOTDEF_PROBE, font=f.font) for f in chain]
    assert all(b.any() for b in boxes)  # each font draws a visible .notdef box
    for ch in NAME:
        got = _render(ch)
        assert got.any(), ch
        for f, box in zip(chain, boxes):
            assert not np.array_equal(got, box), f"{ch!r} drawn as the .notdef box of {f.name}"
    by_char = {}
    for font, piece in fonts.runs(NAME):
        for ch in piece:
            by_char.setdefault(ch, font)
    pieces = "".join(p for _, p in fonts.runs(NAME))
    # é has a real glyph (DejaVu Sans: fonts-dejavu-core, or matplotlib's copy)
    assert pieces.startswith("café_"), (pieces, fonts.font_paths())
    if _cjk_font_here():
        assert "東京" in pieces  # drawn from the system's CJK font
    else:
        assert pieces == "café_??.mp4"  # no CJK font here: a readable '?', not a box


def test_contact_sheet_and_gallery_labels_use_the_covering_fonts():
    sheet = preview.contact_sheet([(None, NAME)], thumb_height=32)
    boxes = preview.contact_sheet([(None, "caf" + fonts._NOTDEF_PROBE + "_" + fonts._NOTDEF_PROBE * 2 + ".mp4")],
                                  thumb_height=32)
    assert sheet.shape == boxes.shape
    assert not np.array_equal(sheet, boxes)  # the old built-in font drew both alike: boxes
    # a name the fonts lack entirely still leaves the rest of the label readable
    only_missing = preview.contact_sheet([(None, "a" + fonts._NOTDEF_PROBE)], thumb_height=32)
    question = preview.contact_sheet([(None, "a?")], thumb_height=32)
    assert np.array_equal(only_missing, question)
