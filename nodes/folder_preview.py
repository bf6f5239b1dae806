"""Load Clips' folder preview before a run: ``GET /ltx2_trainer/folder_preview?folder=…&path=…
&recursive=1`` answers with the counts (videos, pictures, captions) and a strip of first
frames, so the node shows what a folder holds as soon as it is picked (as VideoHelperSuite's
loader previews one clip). The folder is resolved exactly as Load Clips resolves it
(:func:`._common.resolve_dataset_folder`: the input folder, or a typed path under the same
rules, ``dataset_roots`` included when ComfyUI listens beyond this computer); file symlinks
that lead outside the folder are not read, as in Load Clips."""
from __future__ import annotations

import base64
import io as _io
import os
from pathlib import Path

MAX_THUMBS = 8
THUMB_H = 96
_routes_added = False


def folder_preview(root: Path, recursive: bool = True, max_thumbs: int = MAX_THUMBS) -> dict:
    """Counts and a JPEG strip (data URL) of the first frames of the first ``max_thumbs`` media
    files under ``root``."""
    from PIL import Image, ImageDraw

    from ..trainer_core import media, preview
    from ..trainer_core.dataset import IMAGE_EXTS, VIDEO_EXTS
    from ..trainer_core.fonts import draw_text

    root = Path(root).resolve()
    files = []
    for p in media.list_media(root, recursive=recursive):
        if p.is_symlink() and not media._inside(p.resolve(), root):
            continue  # Load Clips skips these too
        files.append(p)
    stills = {e for e in IMAGE_EXTS if e not in VIDEO_EXTS}
    n_img = sum(1 for p in files if p.suffix.lower() in stills)
    n_vid = len(files) - n_img
    n_cap = sum(1 for p in files if p.with_suffix(".txt").is_file())
    table = any((root / n).is_file() for n in ("dataset.json", "dataset.jsonl"))
    thumbs = []
    for p in files[:max_thumbs]:
        try:
            fr = media.frames_at(str(p), [0.0])[0]
            thumbs.append((preview._thumb(fr, THUMB_H), p.relative_to(root).as_posix()))
        except Exception:  # an unreadable file: a grey tile (Load Clips says why)
            thumbs.append((None, p.relative_to(root).as_posix()))
    out = {"ok": True, "folder": str(root.name), "videos": n_vid, "images": n_img, "captions": n_cap,
           "caption_table": table, "total": len(files), "shown": len(thumbs), "sheet": None}
    if thumbs:
        cell_w = max(THUMB_H * 16 // 9, max((t.width for t, _ in thumbs if t is not None), default=THUMB_H))
        cols = min(len(thumbs), 4)
        rows = (len(thumbs) + cols - 1) // cols
        cell_h = THUMB_H + 24
        sheet = Image.new("RGB", (cols * (cell_w + 6) + 6, rows * (cell_h + 6) + 6), preview.BG)
        d = ImageDraw.Draw(sheet)
        for i, (t, name) in enumerate(thumbs):
            x, y = 6 + (i % cols) * (cell_w + 6), 6 + (i // cols) * (cell_h + 6)
            if t is None:
                d.rectangle([x, y, x + cell_w - 1, y + THUMB_H - 1], fill=(55, 55, 62))
            else:
                sheet.paste(t, (x + (cell_w - t.width) // 2, y))
            draw_text(d, (x + 2, y + THUMB_H + 4), preview._short(name, 24), fill=preview.FG, size=14)
        buf = _io.BytesIO()
        sheet.save(buf, "JPEG", quality=85)
        out["sheet"] = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    return out


def preview_for(folder: str, path: str = "", recursive: bool = True) -> dict:
    """The preview of the folder Load Clips would read, or ``{"ok": False, "error": …}`` with
    Load Clips' own message."""
    from ._common import resolve_dataset_folder

    try:
        root = resolve_dataset_folder(folder, path)
    except Exception as e:
        return {"ok": False, "error": str(e)}
    try:
        return folder_preview(root, recursive=recursive)
    except Exception as e:  # never a server error for a preview
        return {"ok": False, "error": f"could not preview {os.path.basename(str(root))}: {e}"}


def add_routes() -> None:
    """Register the preview route on ComfyUI's server (once)."""
    global _routes_added
    if _routes_added:
        return
    from aiohttp import web

    from ._common import prompt_server

    inst = prompt_server()
    if inst is None:
        return

    @inst.routes.get("/ltx2_trainer/folder_preview")
    async def folder_preview_route(request):  # noqa: ANN001
        import asyncio

        q = request.rel_url.query
        rec = q.get("recursive", "1").lower() not in ("0", "false", "no")
        res = await asyncio.get_running_loop().run_in_executor(
            None, preview_for, q.get("folder", ""), q.get("path", ""), rec)
        return web.json_response(res)

    _routes_added = True
