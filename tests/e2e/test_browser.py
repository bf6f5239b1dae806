"""The web extension in headless Chromium against ComfyUI's real frontend (the
comfyui-frontend-package our server serves): load the install-check workflow, queue it, the
Train node's live loss chart draws its points, survives a page reload (the replay route),
and the page logs no error from the pack. Screenshots go to tests/_artifacts/.

Skipped with the reason when Playwright or a Chromium binary is missing."""
from __future__ import annotations

import json
import os
import shutil
import sys

import pytest

from tests.conftest import REPO
from tests.e2e.conftest import install_check_files

sys.path.insert(0, str(REPO / "scripts"))
import make_workflows as mw  # noqa: E402

ART = REPO / "tests" / "_artifacts"


def _chromium():
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        pytest.skip(f"browser test skipped: Playwright not installed ({e})")
    exe = _chromium()
    if exe is None:
        pytest.skip("browser test skipped: no Chromium binary (apt-get install chromium)")
    pw = sync_playwright().start()
    b = pw.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
    yield b
    b.close()
    pw.stop()


def _shoot(page, name: str) -> None:
    """Zoom the graph out so the whole Train node (chart included) is on screen, then save a
    page screenshot and one of the chart itself."""
    page.evaluate("() => { const c = window.app.canvas; if (c && c.ds) { c.ds.scale = 0.55; c.ds.offset = [40, 20];"
                  " c.setDirty(true, true); } }")
    page.wait_for_timeout(800)
    page.screenshot(path=str(ART / f"{name}.png"))
    try:
        page.locator("canvas.ltx2-loss-chart").first.screenshot(path=str(ART / f"{name}_chart.png"), timeout=5000)
    except Exception:
        pass


def _open(browser, server, wf: dict, selector: str):
    """A page on the server's frontend with ``wf`` loaded and ``selector`` attached; returns
    (page, console errors, HTTP errors) — the lists fill as the page runs. HTTP errors are
    kept to tell the frontend's own (optional user files, no internet here) from the pack's."""
    ART.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.goto(server.url, wait_until="domcontentloaded")
    page.wait_for_function("() => window.app && window.app.graph && window.app.extensionManager !== undefined",
                           timeout=120_000)
    page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", wf)
    page.wait_for_selector(selector, state="attached", timeout=120_000)
    return page, errors, failed


def _points(page) -> int:
    return page.evaluate("() => Math.max(0, ...[...document.querySelectorAll('canvas.ltx2-loss-chart')]"
                         ".map(c => Number(c.dataset.points || 0)))")


def test_live_loss_chart_draws_and_survives_reload(server, browser):

    base = server.base
    install_check_files(base)
    wf = json.loads((REPO / "example_workflows" / f"{mw.file_name(mw.INSTALL)}.json").read_text())
    for n in wf["nodes"]:  # a fresh LoRA name: the chart must draw this run's points
        if n["type"] == "LTX2TrainLoRA":
            n["widgets_values"][1] = "browser_check"
            n["widgets_values"][2] = 30  # steps
    page, errors, failed = _open(browser, server, wf, "canvas.ltx2-loss-chart")
    page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
    page.wait_for_function("() => [...document.querySelectorAll('canvas.ltx2-loss-chart')]"
                           ".some(c => Number(c.dataset.points || 0) >= 10)", timeout=120_000)
    _shoot(page, "loss_chart_running")
    # let the run end, then reload: the chart comes back from the replay route
    lora = base / "models" / "loras" / "ltx2" / "browser_check_00001.safetensors"
    page.wait_for_function("() => true", timeout=1000)
    for _ in range(600):
        if lora.exists():
            break
        page.wait_for_timeout(500)
    assert lora.exists()
    page.wait_for_timeout(1500)
    done = _points(page)
    assert done >= 30, done
    # the Train node after its run: its summary in the status line (not the last progress
    # line), no frontend text widget over the chart, no second chart (the loss image) under it
    after = page.evaluate("""() => {
        const n = (window.app.graph._nodes || window.app.graph.nodes).find(x => x.type === 'LTX2TrainLoRA');
        const st = document.querySelector('div.ltx2-status[data-kind]');
        const mine = n.__ltx2Status.el;
        return {kind: mine.dataset.kind, text: mine.dataset.text,
                widgets: (n.widgets || []).map(w => w.name), imgs: (n.imgs || []).length};
    }""")
    assert after["kind"] == "summary" and after["text"] and after["text"] != "running…", after
    assert "$$node-text-preview" not in after["widgets"] and "$$canvas-image-preview" not in after["widgets"], after
    assert after["imgs"] == 0, after
    _shoot(page, "loss_chart_done")
    page.reload(wait_until="domcontentloaded")
    page.wait_for_function("() => window.app && window.app.graph", timeout=120_000)
    page.wait_for_function("() => [...document.querySelectorAll('canvas.ltx2-loss-chart')]"
                           ".some(c => Number(c.dataset.points || 0) >= 30)", timeout=60_000)
    _shoot(page, "loss_chart_after_reload")
    ours = [e for e in errors if "ltx2" in e.lower() or "loss_chart" in e.lower()]
    assert not ours, ours
    ours_http = [f for f in failed if "ltx2" in f.lower() or "comfyui-ltx2-lora-trainer" in f.lower()]
    assert not ours_http, ours_http
    (ART / "browser_console_errors.json").write_text(json.dumps({"console": errors, "http": failed}, indent=1))
    print(f"chart points after the run: {done}; screenshots in {ART}")


def test_dataset_gallery_shows_tiles_and_plays_a_sample(server, browser):
    """Load Clips -> Bucket in the real frontend: after the run the Bucket node shows one tile
    per sample (thumbnail, bucket, flags, caption); clicking a tile opens the player on that
    sample's clip, which the server serves as an mp4 the browser can load."""
    from tests.core import mediagen as mg

    ds = server.base / "input" / "gallery_ds"
    ds.mkdir(parents=True, exist_ok=True)
    mg.write_clip(ds / "two_scenes.mp4", [1.0, 1.0], fps=24, size=(96, 64), seed=3)
    mg.write_clip(ds / "silent.mp4", [1.2], fps=24, size=(64, 96), audio=False, seed=4)
    (ds / "two_scenes.txt").write_text("a clip with two scenes and a tone")
    info = server.get("/object_info")
    g = mw.Graph(info)
    lc = g.add("LTX2TrainLoadClips", (0, 0), folder="gallery_ds")
    bk = g.add("LTX2TrainBucket", (380, 0), preset="custom", buckets="64x64x9;96x64x9;64x96x9")
    g.link(lc, 0, bk, "clips")
    wf = g.ui("gallery check")
    page, errors, failed = _open(browser, server, wf, "div.ltx2-gallery")
    page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
    page.wait_for_function("() => [...document.querySelectorAll('div.ltx2-gallery')]"
                           ".some(d => Number(d.dataset.tiles || 0) > 0)", timeout=180_000)
    tiles = page.locator("div.ltx2-gallery-tile")
    n = tiles.count()
    assert n >= 2
    text = " ".join(tiles.nth(i).inner_text() for i in range(n))
    assert "two scenes" in text and "no audio" in text, text  # captions and flags on the tiles
    page.wait_for_function("() => [...document.querySelectorAll('div.ltx2-gallery-tile img')]"
                           ".every(i => i.complete && i.naturalWidth > 0)", timeout=90_000)
    for _ in range(5):  # ComfyUI greets a new user with its template browser: close it
        if page.locator(".p-dialog-mask").count() == 0:
            break
        page.keyboard.press("Escape")
        page.wait_for_timeout(400)
    page.evaluate("() => { const c = window.app.canvas; if (c && c.ds) { c.ds.scale = 0.9; c.ds.offset = [20, 20];"
                  " c.setDirty(true, true); } }")
    page.wait_for_timeout(500)
    page.screenshot(path=str(ART / "dataset_gallery.png"))
    tiles.first.click()
    video = page.locator("video.ltx2-gallery-video")
    video.wait_for(state="attached", timeout=30_000)
    src = video.get_attribute("src")
    assert "/view?" in src and "type=temp" in src
    r = page.request.get(src if src.startswith("http") else server.url + src)
    assert r.status == 200 and r.body()[4:8] == b"ftyp"  # an mp4 served from the temp folder
    page.wait_for_function("() => { const v = document.querySelector('video.ltx2-gallery-video');"
                           " return v && (v.readyState >= 1 || v.error); }", timeout=90_000)
    state = page.evaluate("() => { const v = document.querySelector('video.ltx2-gallery-video');"
                          " return {ready: v.readyState, err: v.error && v.error.code, w: v.videoWidth, d: v.duration}; }")
    page.screenshot(path=str(ART / "dataset_gallery_player.png"))
    # Chromium builds without H.264 report a decode error (code 4); any other error is ours
    assert state["err"] in (None, 4), state
    if state["err"] is None:
        assert state["w"] > 0 and 0.3 < state["d"] < 0.5, state  # 9 frames at 24 fps
    page.keyboard.press("Escape")
    assert page.locator("div.ltx2-gallery-player").count() == 0
    # a reloaded page gets the gallery back from the server
    page.reload(wait_until="domcontentloaded")
    page.wait_for_function("() => window.app && window.app.graph", timeout=120_000)
    page.wait_for_function("() => [...document.querySelectorAll('div.ltx2-gallery')]"
                           ".some(d => Number(d.dataset.tiles || 0) === %d)" % n, timeout=120_000)
    ours = [e for e in errors if "ltx2" in e.lower()]
    assert not ours, ours
    ours_http = [f for f in failed if "ltx2" in f.lower() or "comfyui-ltx2-lora-trainer" in f.lower()]
    assert not ours_http, ours_http
    (ART / "browser_gallery_errors.json").write_text(json.dumps({"console": errors, "http": failed}, indent=1))
    print(f"gallery: {n} tiles, player state {state}")
