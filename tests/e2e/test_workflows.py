"""The shared workflows (example_workflows/, shown in ComfyUI's template browser under the
pack): every node and widget exists in the running server, the converter gives an API prompt
that ComfyUI's own validation accepts, and the template route lists them.

Executing them needs the real LTX-2 text encoder (Gemma 3 12B has no tiny form, and its
tokenizer is not in every checkout), so these tests stop at ComfyUI's validation."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import make_workflows as mw  # noqa: E402

FILES = sorted((REPO / "example_workflows").glob("*.json"))


def test_every_workflow_has_a_thumbnail_and_the_set_is_complete():
    names = {f.stem for f in FILES}
    assert names == set(mw.WORKFLOWS) | {mw.INSTALL}
    for f in FILES:
        assert f.with_suffix(".jpg").is_file(), f.name


@pytest.fixture(scope="module")
def info(server):
    base = server.base
    (base / "models" / "checkpoints" / mw.CKPT).write_bytes(b"")
    (base / "models" / "text_encoders" / mw.GEMMA).write_bytes(b"")
    (base / "models" / "captioners" / mw.CAPTIONER).mkdir(parents=True, exist_ok=True)
    (base / "input" / "my_dataset").mkdir(parents=True, exist_ok=True)
    from PIL import Image

    Image.new("RGB", (64, 64)).save(base / "input" / "first_frame.png")
    from trainer_core.tiny_checkpoint import make_tiny_cache, make_tiny_checkpoint

    make_tiny_checkpoint(base / "models" / "checkpoints" / mw.TINY_CKPT, "ltx-2.0", seed=1)
    make_tiny_cache(base / "output" / "ltx2_cache" / mw.INSTALL_CACHE, "ltx-2.0")
    return server.get("/object_info")


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_workflow_opens_and_validates(server, info, path):
    ui = json.loads(path.read_text())
    for n in ui["nodes"]:
        assert n["type"] in info, f"{path.name}: node {n['type']} is missing"
        want = sum(1 + (1 if mw._has_control(nm, t, o) else 0)
                   for nm, t, o, _ in mw._inputs(info[n["type"]]) if mw._is_widget(t, o)
                   and nm not in {i["name"] for i in n["inputs"] if i.get("link")})
        assert len(n["widgets_values"]) == want, f"{path.name}: {n['type']} has {len(n['widgets_values'])} widget values, expected {want}"
    prompt = mw.to_api(ui, info)
    train = next(v for v in prompt.values() if v["class_type"] == "LTX2TrainLoRA")
    assert train["inputs"]["recipe"] == mw.WORKFLOWS.get(path.stem, {"recipe": "Character"})["recipe"]
    if path.stem == mw.INSTALL:
        return  # it runs for real below
    r = server.post("/prompt", {"prompt": prompt, "client_id": "wf-test"})
    assert r.get("prompt_id") and not r.get("node_errors"), r
    server.post("/interrupt", {})
    server.post("/queue", {"clear": True})


def test_template_route_lists_the_workflows(server):
    listing = server.get("/workflow_templates")
    ours = next(v for k, v in listing.items() if "ltx2" in k.lower())
    assert set(ours) == set(mw.WORKFLOWS) | {mw.INSTALL}


def test_install_check_runs_headless_with_comfy_cli(server, info):
    """``comfy run --workflow`` (comfy-cli, UI format converted client-side) against the
    server: the install-check workflow trains 20 steps on the tiny model and saves a LoRA."""
    import subprocess
    import time

    for _ in range(60):  # let earlier validation prompts finish or fail
        q = server.get("/queue")
        if not q["queue_running"] and not q["queue_pending"]:
            break
        time.sleep(1)
    wf = REPO / "example_workflows" / f"{mw.INSTALL}.json"
    cmd = [sys.executable, "-m", "comfy_cli", "--skip-prompt", "run", "--workflow", str(wf), "--host", "127.0.0.1",
           "--port", str(server.port), "--wait", "--timeout", "300"]
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    lora = server.base / "models" / "loras" / "ltx2" / "install_check_00001.safetensors"
    for _ in range(120):
        if lora.exists():
            break
        time.sleep(1)
    assert lora.exists(), (r.stdout[-2000:], server.log_text()[-3000:])
    from trainer_core.lora import load_lora

    sd, meta = load_lora(lora)
    assert meta["steps"] == "20" and sd
    print(f"install check: {time.time() - t0:.0f} s")
