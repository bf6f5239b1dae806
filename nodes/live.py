"""Live training telemetry for the browser: websocket events plus a replay route.

While a Train node runs, every step is pushed to the frontend as a ``ltx2_trainer.step``
event and kept in a bounded in-process log keyed by the node's id, so a page reloaded during
a run can fetch what it missed from ``GET /ltx2_trainer/live/{node_id}``. Bucket's dataset
gallery is kept the same way (``GET /ltx2_trainer/gallery/{node_id}``, the last few nodes), so
it comes back after a reload too. This is UI state of the server process (like ComfyUI's own
progress state), not state of a node class.
"""
from __future__ import annotations

import threading
from collections import OrderedDict, deque
from typing import Optional

EVENT_STEP = "ltx2_trainer.step"
EVENT_MARK = "ltx2_trainer.marker"
MAX_POINTS = 20000

_lock = threading.Lock()
_runs: dict[str, dict] = {}


def start(node_id: Optional[str], total: int, name: str) -> None:
    if node_id is None:
        return
    with _lock:
        _runs[str(node_id)] = {"total": total, "name": name, "points": deque(maxlen=MAX_POINTS), "markers": [],
                               "running": True}


def push(node_id: Optional[str], point: dict) -> None:
    if node_id is None:
        return
    keep = {k: point[k] for k in ("step", "loss", "smoothed", "lr", "s_per_step", "loss_video", "loss_audio")
            if k in point}
    with _lock:
        run = _runs.get(str(node_id))
        if run is not None:
            run["points"].append(keep)
    _send(EVENT_STEP, {"node": str(node_id), **keep, "total": point.get("steps")})


def marker(node_id: Optional[str], step: int, kind: str, label: str = "") -> None:
    if node_id is None:
        return
    with _lock:
        run = _runs.get(str(node_id))
        if run is not None:
            run["markers"].append({"step": step, "kind": kind, "label": label})
    _send(EVENT_MARK, {"node": str(node_id), "step": step, "kind": kind, "label": label})


def finish(node_id: Optional[str]) -> None:
    if node_id is None:
        return
    with _lock:
        run = _runs.get(str(node_id))
        if run is not None:
            run["running"] = False


def snapshot(node_id: str) -> dict:
    with _lock:
        run = _runs.get(str(node_id))
        if run is None:
            return {"node": str(node_id), "points": [], "markers": [], "running": False}
        return {"node": str(node_id), "name": run["name"], "total": run["total"], "points": list(run["points"]),
                "markers": list(run["markers"]), "running": run["running"]}


MAX_GALLERIES = 16
_galleries: "OrderedDict[str, dict]" = OrderedDict()


def set_gallery(node_id: Optional[str], payload: dict) -> None:
    if node_id is None:
        return
    with _lock:
        _galleries.pop(str(node_id), None)
        _galleries[str(node_id)] = payload
        while len(_galleries) > MAX_GALLERIES:
            _galleries.popitem(last=False)


def gallery(node_id: str) -> dict:
    with _lock:
        return dict(_galleries.get(str(node_id)) or {"items": [], "total": 0, "shown": 0})


def _send(event: str, data: dict) -> None:
    try:
        from server import PromptServer

        inst = getattr(PromptServer, "instance", None)
        if inst is not None:
            inst.send_sync(event, data)
    except Exception:
        pass


_routes_added = False


def add_routes() -> None:
    """Register ``GET /ltx2_trainer/live/{node_id}`` and ``/ltx2_trainer/gallery/{node_id}``
    on ComfyUI's server (once)."""
    global _routes_added
    if _routes_added:
        return
    from aiohttp import web

    from ._common import prompt_server

    inst = prompt_server()
    if inst is None:
        return

    @inst.routes.get("/ltx2_trainer/live/{node_id}")
    async def live(request):  # noqa: ANN001
        return web.json_response(snapshot(request.match_info["node_id"]))

    @inst.routes.get("/ltx2_trainer/gallery/{node_id}")
    async def gallery_route(request):  # noqa: ANN001
        return web.json_response(gallery(request.match_info["node_id"]))

    _routes_added = True
