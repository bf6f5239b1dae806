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


def _points(page) -> int:
    return page.evaluate("() => Math.max(0, ...[...document.querySelectorAll('canvas.ltx2-loss-chart')]"
                         ".map(c => Number(c.dataset.points || 0)))")


def test_live_loss_chart_draws_and_survives_reload(server, browser):
    from trainer_core.tiny_checkpoint import make_tiny_cache, make_tiny_checkpoint

    base = server.base
    ck = base / "models" / "checkpoints" / mw.TINY_CKPT
    if not ck.exists():
        make_tiny_checkpoint(ck, "ltx-2.0", seed=1)
    cache = base / "output" / "ltx2_cache" / mw.INSTALL_CACHE
    if not (cache / "manifest.json").exists():
        make_tiny_cache(cache, "ltx-2.0")
    wf = json.loads((REPO / "example_workflows" / f"{mw.INSTALL}.json").read_text())
    for n in wf["nodes"]:  # a fresh LoRA name: the chart must draw this run's points
        if n["type"] == "LTX2TrainLoRA":
            n["widgets_values"][1] = "browser_check"
            n["widgets_values"][2] = 30  # steps
    ART.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server.url, wait_until="domcontentloaded")
    page.wait_for_function("() => window.app && window.app.graph && window.app.extensionManager !== undefined",
                           timeout=120_000)
    page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", wf)
    page.wait_for_selector("canvas.ltx2-loss-chart", state="attached", timeout=30_000)
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
    page.reload(wait_until="domcontentloaded")
    page.wait_for_function("() => window.app && window.app.graph", timeout=120_000)
    page.wait_for_function("() => [...document.querySelectorAll('canvas.ltx2-loss-chart')]"
                           ".some(c => Number(c.dataset.points || 0) >= 30)", timeout=60_000)
    _shoot(page, "loss_chart_after_reload")
    ours = [e for e in errors if "ltx2" in e.lower() or "loss_chart" in e.lower()]
    assert not ours, ours
    (ART / "browser_console_errors.json").write_text(json.dumps(errors, indent=1))
    print(f"chart points after the run: {done}; screenshots in {ART}")
