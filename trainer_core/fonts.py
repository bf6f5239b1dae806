"""Text in preview images that shows any file name, not boxes.

Pillow's built-in font (Aileron in Pillow >= 10.1) has ASCII only: "café_東京.mp4" came out
as "caf□_□□.mp4". Labels are drawn here character run by character run with the first font
of a chain that has the glyph:

1. DejaVu Sans — Latin, Greek, Cyrillic, most symbols: matplotlib's bundled copy when
   matplotlib is installed (found without importing it), else the system's
   (``fonts-dejavu-core`` on Debian/Ubuntu, most Linux desktops);
2. Pillow's built-in scalable font, when DejaVu is nowhere;
3. fonts for scripts DejaVu lacks (CJK and others), where the system has them: Noto Sans
   CJK, WenQuanYi, Droid Sans Fallback, and the Windows/macOS system fonts.

A character no font of the chain has is drawn as "?" (never as the .notdef box). Whether
a font has a glyph is decided by rendering: a glyph whose bitmap equals the font's .notdef
bitmap (what it draws for U+10FFFD, a private-use code point no font maps) is missing.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import sys
from pathlib import Path
from typing import Optional

MISSING = "?"
_NOTDEF_PROBE = "\U0010FFFD"

# file names, in order of preference, of fonts for scripts DejaVu Sans lacks
FALLBACK_FONTS = (
    "NotoSansCJK-Regular.ttc", "NotoSansCJKsc-Regular.otf", "NotoSansCJKjp-Regular.otf",
    "NotoSansCJK-Regular.otf", "SourceHanSans-Regular.otf", "wqy-microhei.ttc", "wqy-zenhei.ttc",
    "DroidSansFallbackFull.ttf", "DroidSansFallback.ttf", "NotoSans-Regular.ttf",
    "msyh.ttc", "msgothic.ttc", "YuGothM.ttc", "malgun.ttf", "arialuni.ttf", "seguisym.ttf",
    "PingFang.ttc", "Hiragino Sans GB.ttc", "ヒラギノ角ゴシック W3.ttc", "AppleSDGothicNeo.ttc",
    "Arial Unicode.ttf", "unifont.ttf", "unifont.otf",
)
DEJAVU = "DejaVuSans.ttf"


def font_dirs() -> list[Path]:
    """Where system fonts live on this platform."""
    home = Path.home()
    if sys.platform == "win32":
        win = Path(os.environ.get("WINDIR", r"C:\Windows"))
        local = Path(os.environ.get("LOCALAPPDATA", home / "AppData" / "Local"))
        return [win / "Fonts", local / "Microsoft" / "Windows" / "Fonts"]
    if sys.platform == "darwin":
        return [Path("/System/Library/Fonts"), Path("/Library/Fonts"), home / "Library" / "Fonts"]
    data = os.environ.get("XDG_DATA_DIRS", "/usr/local/share:/usr/share").split(":")
    return ([Path(d) / "fonts" for d in data if d] + [home / ".local" / "share" / "fonts", home / ".fonts"])


@functools.lru_cache(maxsize=1)
def _font_files() -> dict[str, str]:
    """Lower-case file name -> path of every font file in the system font folders (one walk)."""
    out: dict[str, str] = {}
    seen = 0
    for d in font_dirs():
        if not d.is_dir():
            continue
        for dirpath, _dirs, files in os.walk(d, followlinks=True):
            for f in files:
                if f.lower().endswith((".ttf", ".otf", ".ttc")):
                    out.setdefault(f.lower(), os.path.join(dirpath, f))
            seen += len(files)
            if seen > 50_000:  # a huge font collection: enough looked at
                return out
    return out


def _matplotlib_dejavu() -> Optional[str]:
    try:
        spec = importlib.util.find_spec("matplotlib")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "mpl-data" / "fonts" / "ttf" / DEJAVU
        if p.is_file():
            return str(p)
    return None


def font_paths() -> list[str]:
    """The chain's font files that exist here, in order (Pillow's built-in font not included)."""
    files = _font_files()
    out = []
    dv = _matplotlib_dejavu() or files.get(DEJAVU.lower())
    if dv:
        out.append(dv)
    for name in FALLBACK_FONTS:
        p = files.get(name.lower())
        if p and p not in out:
            out.append(p)
    return out


class _Font:
    """One font of the chain and which characters it has."""

    def __init__(self, font, name: str):
        self.font = font
        self.name = name
        self._notdef = self._bitmap(_NOTDEF_PROBE)
        self._has: dict[str, bool] = {}

    def _bitmap(self, ch: str):
        m = self.font.getmask(ch)
        return m.size, bytes(m)

    def has(self, ch: str) -> bool:
        got = self._has.get(ch)
        if got is None:
            got = self._has[ch] = self._bitmap(ch) != self._notdef
        return got


@functools.lru_cache(maxsize=8)
def font_chain(size: int = 11) -> tuple:
    """The fonts labels are drawn with at ``size`` px, in order of preference."""
    from PIL import ImageFont

    chain = []
    for p in font_paths():
        try:
            chain.append(_Font(ImageFont.truetype(p, size), os.path.basename(p)))
        except OSError:
            continue
    try:
        builtin = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a bitmap font without .notdef rendering
        builtin = ImageFont.load_default()
    if hasattr(builtin, "getmask"):
        # after DejaVu when DejaVu exists (it covers all the built-in font does), else first
        pos = 1 if chain and chain[0].name == DEJAVU else 0
        chain.insert(pos, _Font(builtin, "Pillow built-in"))
    return tuple(chain)


def runs(text: str, size: int = 11) -> list[tuple[object, str]]:
    """``text`` split into (font, piece) runs; characters no font has become MISSING in the
    first font. Whitespace stays with the run it is in."""
    chain = font_chain(size)
    if not chain:
        return [(None, text)]
    out: list[tuple[object, str]] = []
    for ch in text:
        f = None
        if ch.isspace() and out:
            f = out[-1][0]
        else:
            f = next((c for c in chain if c.has(ch)), None)
            if f is None:
                f, ch = chain[0], MISSING
        if out and out[-1][0] is f:
            out[-1] = (f, out[-1][1] + ch)
        else:
            out.append((f, ch))
    return [(f.font if f is not None else None, s) for f, s in out]


def draw_text(draw, xy: tuple[float, float], text: str, fill, size: int = 11) -> float:
    """Draw one line of ``text`` with its top-left at ``xy`` (fonts aligned on one baseline);
    returns the width drawn."""
    x, y = xy
    pieces = runs(text, size)
    fonts = [f for f, _ in pieces if f is not None]
    if not fonts:
        draw.text((x, y), text, fill=fill)
        return float(draw.textlength(text))
    ascent = max(f.getmetrics()[0] for f in fonts) if all(hasattr(f, "getmetrics") for f in fonts) else None
    x0 = x
    for f, s in pieces:
        if ascent is not None:
            draw.text((x, y + ascent), s, fill=fill, font=f, anchor="ls")
        else:
            draw.text((x, y), s, fill=fill, font=f)
        x += draw.textlength(s, font=f)
    return x - x0
