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
    # a returning user: no first-run template browser over the graph
    server.post("/settings/Comfy.TutorialCompleted", True)
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


def _train_status(page) -> dict:
    """The Train node's status line: its text and whether it is drawn inside the window."""
    return page.evaluate("""() => {
        const n = (window.app.graph._nodes || window.app.graph.nodes).find(x => x.type === 'LTX2TrainLoRA');
        const el = n.__ltx2Status.el, r = el.getBoundingClientRect();
        const cs = getComputedStyle(el);
        return {text: el.dataset.text || '', kind: el.dataset.kind,
                on_screen: r.width > 20 && r.height > 10 && r.left >= 0 && r.top >= 0 && r.right <= innerWidth
                           && r.bottom <= innerHeight && cs.visibility !== 'hidden' && cs.display !== 'none'};
    }""")


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
    # the summary on screen: the saved file and how to load it
    _shoot(page, "loss_chart_done")
    st = _train_status(page)
    assert "saved ltx2/browser_check_00001.safetensors" in st["text"] and "Load LoRA" in st["text"], st
    assert st["on_screen"], st
    assert "$$node-text-preview" not in after["widgets"] and "$$canvas-image-preview" not in after["widgets"], after
    assert after["imgs"] == 0, after
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


# ---- the graph as a ComfyUI user sees it: every template tidy, a small Train node, old workflows

_NODE_RECTS = """() => {
    const H = (window.LiteGraph && LiteGraph.NODE_TITLE_HEIGHT) || 30;
    return (window.app.graph._nodes || window.app.graph.nodes).map(n => ({
        id: n.id, type: n.type, title: n.title, x0: n.pos[0], y0: n.pos[1] - H,
        x1: n.pos[0] + n.size[0], y1: n.pos[1] + n.size[1]}));
}"""

# per Train node: the chart's band (y from the node's top, height) and every other widget's,
# whether the frontend's own text widget is there, and the node height
_TRAIN_LAYOUT = """() => (window.app.graph._nodes || window.app.graph.nodes).filter(n => n.type === 'LTX2TrainLoRA')
    .map(n => {
        const WH = (window.LiteGraph && LiteGraph.NODE_WIDGET_HEIGHT) || 20;
        const band = (w) => {
            const y = w.last_y ?? w.y ?? 0;
            const h = w.computedHeight ?? (w.computeSize ? w.computeSize(n.size[0])[1] : WH);
            return [y, y + h, w.name];
        };
        const ws = (n.widgets || []).filter(w => !w.hidden);
        const chart = ws.find(w => w.name === 'loss_chart');
        return {id: n.id, h: n.size[1], chart: chart ? band(chart) : null,
                others: ws.filter(w => w !== chart).map(band), names: ws.map(w => w.name)};
    })"""


def _overlaps(rects: list[dict]) -> list[tuple]:
    bad = []
    for i, a in enumerate(rects):
        for b in rects[i + 1:]:
            if a["x0"] < b["x1"] and b["x0"] < a["x1"] and a["y0"] < b["y1"] and b["y0"] < a["y1"]:
                bad.append((a["title"], b["title"]))
    return bad


def _close_dialogs(page) -> None:
    for _ in range(5):  # ComfyUI greets a new user with its template browser: close it
        if page.locator(".p-dialog-mask").count() == 0:
            break
        page.keyboard.press("Escape")
        page.wait_for_timeout(300)


def _fit(page) -> None:
    """Close the frontend's dialogs and zoom so the whole graph is in the window."""
    _close_dialogs(page)
    page.evaluate("() => { const c = window.app.canvas; const ns = window.app.graph._nodes || window.app.graph.nodes;"
                  " let x0 = 1e9, y0 = 1e9, x1 = -1e9, y1 = -1e9; for (const n of ns) { x0 = Math.min(x0, n.pos[0]);"
                  " y0 = Math.min(y0, n.pos[1] - 80); x1 = Math.max(x1, n.pos[0] + n.size[0]);"
                  " y1 = Math.max(y1, n.pos[1] + n.size[1]); }"
                  " for (const g of (window.app.graph._groups || window.app.graph.groups || [])) { const b = g._bounding"
                  " || g.bounding; if (b) { x0 = Math.min(x0, b[0]); y0 = Math.min(y0, b[1]); } }"
                  " const s = Math.min(1500 / (x1 - x0 + 40), 960 / (y1 - y0 + 40), 1);"
                  " c.ds.scale = s; c.ds.offset = [-x0 + 70 / s, -y0 + 20 / s]; c.setDirty(true, true); }")
    page.wait_for_timeout(500)


def _focus(page, node_type: str, scale: float = 0.8) -> None:
    """Zoom to a readable scale with the first ``node_type`` node near the top left."""
    _close_dialogs(page)
    page.evaluate("""([t, s]) => { const c = window.app.canvas;
        const n = (window.app.graph._nodes || window.app.graph.nodes).find(x => x.type === t);
        if (!n) return; c.ds.scale = s; c.ds.offset = [-n.pos[0] + 420 / s, -n.pos[1] + 120 / s];
        c.setDirty(true, true); }""", [node_type, scale])
    page.wait_for_timeout(400)


def _stem(p) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in p.stem).strip("_")


def test_every_template_loads_tidy_in_the_frontend(server, browser):
    """Every shipped template in the real frontend, after it laid the nodes out: no two node
    rectangles (title bars included) overlap, the Train node's chart lies inside the node and
    no other widget (the status line, a progress text) is drawn over it, the pack logs no
    error. One screenshot per template."""
    from tests.core import mediagen as mg

    # the files the templates' stock loaders name, as a user has them: their previews (a Load
    # Video player) take room too
    mg.make_mode_inputs(server.base / "input")
    paths = sorted((REPO / "example_workflows").glob("*.json"))
    assert len(paths) >= 8
    page, errors, failed = _open(browser, server, json.loads(paths[0].read_text()), "canvas.ltx2-loss-chart")
    _close_dialogs(page)
    report = {}
    for p in paths:
        page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", json.loads(p.read_text()))
        page.wait_for_timeout(600)
        _fit(page)
        rects = page.evaluate(_NODE_RECTS)
        assert not _overlaps(rects), (p.name, _overlaps(rects))
        layout = page.evaluate(_TRAIN_LAYOUT)
        assert layout, p.name
        for t in layout:
            c = t["chart"]
            assert c is not None and 0 <= c[0] and c[1] <= t["h"] + 1, (p.name, t)  # inside the frame
            assert "$$node-text-preview" not in t["names"], (p.name, t["names"])
            for o in t["others"]:
                assert o[1] <= c[0] + 1 or o[0] >= c[1] - 1, (p.name, "drawn over the chart:", o, c)
        page.screenshot(path=str(ART / f"template_{_stem(p)}.png"))
        _focus(page, "LTX2TrainLoRA")
        page.screenshot(path=str(ART / f"template_{_stem(p)}_train.png"))
        report[p.name] = {"nodes": len(rects), "train": layout}
    ours = [e for e in errors if "ltx2" in e.lower() or "ltx-2 trainer" in e.lower()]
    assert not ours, ours
    (ART / "templates_layout.json").write_text(json.dumps(report, indent=1))


def test_train_node_is_small_and_a_recipe_fills_it(server, browser):
    """On a new canvas the Train node is no taller than core Train LoRA, shows real values
    with a fixed seed; picking a recipe fills steps, rank, learning rate, mode and a connected
    Training Options node's targets and audio weight."""
    g = mw.Graph(server.get("/object_info"))
    g.add("LTX2TrainLoadLatentCache", (0, 0))
    page, errors, failed = _open(browser, server, g.ui("empty"), "div.ltx2-status")
    _close_dialogs(page)
    got = page.evaluate("""() => {
        const g = window.app.graph; g.clear();
        const add = (t, x) => { const n = LiteGraph.createNode(t); n.pos = [x, 80]; g.add(n); return n; };
        const core = add('TrainLoraNode', 20), ours = add('LTX2TrainLoRA', 340), opts = add('LTX2TrainOptions', 660);
        const val = (n, k) => n.widgets.find(w => w.name === k)?.value;
        const fresh = {steps: val(ours, 'steps'), rank: val(ours, 'rank'), lr: val(ours, 'learning_rate'),
                       seed_control: ours.widgets[ours.widgets.findIndex(w => w.name === 'seed') + 1]?.value};
        opts.connect(0, ours, ours.inputs.findIndex(i => i.name === 'options'));
        const onConnect = {targets: val(opts, 'targets'), audio: val(opts, 'audio_weight')};
        const r = ours.widgets.find(w => w.name === 'recipe'); r.value = 'Motion'; r.callback?.('Motion');
        const motion = {steps: val(ours, 'steps'), rank: val(ours, 'rank'), mode: val(ours, 'mode'),
                        targets: val(opts, 'targets'), audio: val(opts, 'audio_weight')};
        r.value = 'Audio'; r.callback?.('Audio');
        const audio = {mode: val(ours, 'mode'), targets: val(opts, 'targets'), audio: val(opts, 'audio_weight')};
        g.setDirtyCanvas(true, true);
        return {core: core.size[1], ours: ours.size[1], ours_min: ours.computeSize()[1], fresh, onConnect, motion, audio,
                widgets: ours.widgets.filter(w => !w.name.startsWith('$$')).length};
    }""")
    _fit(page)
    page.screenshot(path=str(ART / "train_node_next_to_core.png"))
    print("heights: core Train LoRA", got["core"], "Train LTX-2 LoRA", got["ours"], got)
    assert got["ours"] <= got["core"] and got["ours_min"] <= got["core"], got
    assert got["fresh"] == {"steps": 2000, "rank": 32, "lr": 1e-4, "seed_control": "fixed"}, got
    assert got["onConnect"] == {"targets": "all attention", "audio": 0.5}, got
    assert got["motion"] == {"steps": 3000, "rank": 64, "mode": "text_to_audio_video",
                             "targets": "all attention + feed-forward", "audio": 0.5}, got
    assert got["audio"] == {"mode": "audio_only", "targets": "audio attention", "audio": 1.0}, got
    ours = [e for e in errors if "ltx2" in e.lower()]
    assert not ours, ours


OLD = REPO / "tests" / "e2e" / "old_workflows"


def _prompt(page) -> dict:
    return page.evaluate("async () => (await window.app.graphToPrompt()).output")


def _by_class(prompt: dict) -> dict:
    """class_type -> its inputs, links written as the linked node's class and slot."""
    out = {}
    for v in prompt.values():
        ins = {k: (prompt[x[0]]["class_type"], x[1]) if isinstance(x, list) else x for k, x in v["inputs"].items()}
        out.setdefault(v["class_type"], []).append(ins)
    return out


def test_old_saved_workflows_load_and_queue_as_before(server, browser):
    """Workflows saved before the Train node was split (36 settings on one node) load without
    errors: their settings land on LTX-2 Training Options / Validation nodes, links follow
    (validation encoders and image), and the old install check makes the very prompt the new
    template makes."""
    new_install = json.loads((REPO / "example_workflows" / f"{mw.file_name(mw.INSTALL)}.json").read_text())
    page, errors, failed = _open(browser, server, new_install, "canvas.ltx2-loss-chart")
    _close_dialogs(page)
    want = _by_class(_prompt(page))
    for p in sorted(OLD.glob("*.json")):
        errors.clear()
        page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", json.loads(p.read_text()))
        page.wait_for_timeout(600)
        got = _by_class(_prompt(page))
        rects = page.evaluate(_NODE_RECTS)
        assert not _overlaps(rects), (p.name, _overlaps(rects))  # the new nodes sit where the old one was
        _fit(page)
        page.screenshot(path=str(ART / f"old_workflow_{_stem(p)}.png"))
        ours = [e for e in errors if "ltx2" in e.lower() or "ltx-2 trainer" in e.lower()]
        assert not ours, (p.name, ours)
        (tr,) = got["LTX2TrainLoRA"]
        assert tr["options"] == ("LTX2TrainOptions", 0), (p.name, tr)
        assert tr["steps"] > 0 and tr["rank"] > 0 and tr["learning_rate"] > 0 and tr["mode"] != "recipe default", tr
        (op,) = got["LTX2TrainOptions"]
        assert op["targets"] != "recipe default" and op["audio_weight"] >= 0, op
        if "Check my install" in p.name:
            assert got == want, (p.name, got, want)
        else:
            (va,) = got["LTX2TrainValidation"]
            assert tr["validation"] == ("LTX2TrainValidation", 0)
            assert va["every"] == 250 and va["prompts"].startswith("sks") and va["clip"][0] and va["vae"][0], va
            if "Image to video" in p.name:
                assert va["image"] == ("LoadImage", 0) and tr["mode"] == "image_to_video", va
    # the migrated graph is saved in the new layout: loading it again changes nothing
    again = page.evaluate("() => window.app.graph.serialize()")
    page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", again)
    page.wait_for_timeout(400)
    assert _by_class(_prompt(page)) == got


def test_install_check_cancel_from_the_ui_shows_the_cancel_message(server, browser):
    """Queue the install check from the frontend with many steps, cancel it as the Cancel
    button does once the chart has points: the Train node's status line says the run was
    cancelled, at which step, and that a checkpoint was kept."""
    install_check_files(server.base)
    wf = json.loads((REPO / "example_workflows" / f"{mw.file_name(mw.INSTALL)}.json").read_text())
    for n in wf["nodes"]:
        if n["type"] == "LTX2TrainLoRA":
            n["widgets_values"][1] = "browser_cancel"
            n["widgets_values"][2] = 2000  # steps: far more than the test waits for
    page, errors, failed = _open(browser, server, wf, "canvas.ltx2-loss-chart")
    _close_dialogs(page)
    page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
    page.wait_for_function("() => [...document.querySelectorAll('canvas.ltx2-loss-chart')]"
                           ".some(c => Number(c.dataset.points || 0) >= 3)", timeout=180_000)
    page.evaluate("async () => { await window.app.api.interrupt(); }")
    page.wait_for_function("() => [...document.querySelectorAll('div.ltx2-status')]"
                           ".some(d => /cancelled at step \\d+/.test(d.dataset.text || ''))", timeout=120_000)
    _fit(page)
    page.screenshot(path=str(ART / "install_check_cancelled.png"))
    st = _train_status(page)
    assert "checkpoint saved" in st["text"] and st["on_screen"], st
    ours = [e for e in errors if "ltx2" in e.lower()]
    assert not ours, ours
