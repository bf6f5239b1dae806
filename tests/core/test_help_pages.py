"""Node help pages (web/docs/<node id>.md, shown in ComfyUI's node help panel) open with what
the node does and how to use it, and their tables fit the panel: two columns, short cells.
Internals live in web/docs/internals.md, which has a section for every page that links it."""
from __future__ import annotations

import re

import pytest

from tests.conftest import REPO

DOCS = REPO / "web" / "docs"
PAGES = sorted(DOCS.glob("LTX2Train*.md"))


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_page_opens_with_what_and_how(page):
    lines = [l for l in page.read_text().splitlines()]
    assert lines[0].startswith("# ") and "LTX-2 Trainer" not in lines[0], lines[0]
    body = [l for l in lines[1:] if l.strip()]
    assert body[0].startswith("**") and len(body[0]) <= 110, body[0]  # one bold line: what it does
    head = "\n".join(lines[:12])
    assert re.search(r"How to use it", head), page.name


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_tables_fit_the_help_panel(page):
    for line in page.read_text().splitlines():
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) <= 2, line
        assert all(len(re.sub(r"[`*]", "", c)) <= 48 for c in cells), line


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_internals_links_land_on_a_section(page):
    anchors = {re.sub(r"[^a-z0-9 -]", "", h[3:].strip().lower()).replace(" ", "-")
               for h in (DOCS / "internals.md").read_text().splitlines() if h.startswith("## ")}
    for a in re.findall(r"internals\.md#([a-z0-9-]+)", page.read_text()):
        assert a in anchors, (page.name, a, anchors)
