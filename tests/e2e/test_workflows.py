"""The shared workflows (example_workflows/, shown in ComfyUI's template browser under the
pack): every node and widget exists in the running server, the converter gives an API prompt
that ComfyUI's own validation accepts, the template route lists them, and every one of them
runs headless through ``comfy run --workflow`` on tiny models placed under the standard file
names (tiny LTX-2 checkpoint as ltx-2-19b-dev.safetensors, the tiny LTX-2.5 split set under
the names of ComfyUI's LTX-2.5 template, tiny Qwen2.5-Omni as the captioner), on clips with
scene cuts and sound written by the test.

The one stand-in is the text encoder at its own boundary (Gemma 3 12B and Gemma 4 12B have
no tiny form): the run swaps the LTXAV text encoder loader (2.0) and Load CLIP (2.5) for
tests/e2e/standin_text_encoder, whose conditioning has the variant's true layout. Sizes, steps and intervals are turned down so CPU runs
take seconds; everything else is the shipped graph."""
from __future__ import annotations

import json
import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import make_workflows as mw  # noqa: E402

FILES = sorted((REPO / "example_workflows").glob("*.json"))


def test_every_workflow_has_a_thumbnail_and_the_set_is_complete():
    names = {f.stem for f in FILES}
    assert names == {mw.file_name(k) for k in (*mw.all_workflows(), *mw.INSTALLS)}
    for f in FILES:
        assert f.with_suffix(".jpg").is_file(), f.name


@pytest.fixture(scope="module")
def info(server):
    """Tiny models under the standard names, a dataset, a first frame; then /object_info."""
    from PIL import Image

    from tests.core import mediagen as mg
    from tests.core.tinycaption import make_tiny_omni
    from trainer_core.tiny_checkpoint import make_tiny_cache, make_tiny_checkpoint, make_tiny_set

    base = server.base
    make_tiny_checkpoint(base / "models" / "checkpoints" / mw.CKPT, "ltx-2.0", seed=1)
    (base / "models" / "text_encoders" / mw.GEMMA).write_bytes(b"")  # only validated; stood in for at run time
    make_tiny_omni(base / "models" / "captioners" / mw.CAPTIONER, seed=0)
    ds = base / "input" / "my_dataset"
    ds.mkdir(parents=True, exist_ok=True)
    mg.write_clip(ds / "talk.mp4", [1.0, 1.0], fps=24, size=(96, 64), seed=1)  # a scene cut, with sound
    mg.write_clip(ds / "walk.mp4", [1.2], fps=25, size=(64, 96), seed=2)
    Image.new("RGB", (64, 64), (200, 120, 40)).save(base / "input" / "first_frame.png")
    mg.make_mode_inputs(base / "input")  # paired datasets + sampling inputs of the training modes' workflows
    make_tiny_checkpoint(base / "models" / "checkpoints" / mw.TINY_CKPT, "ltx-2.0", seed=1)
    make_tiny_cache(base / "output" / "ltx2_cache" / mw.INSTALL_CACHE, "ltx-2.0")
    # LTX-2.5: the tiny split set under the real files' names (the text encoder file holds the
    # bundled projection only: Gemma 4 12B is stood in for at run time) and the install check's
    paths = make_tiny_set(base / "models", "ltx-2.5", seed=1)
    assert {p.name for p in paths.values()} == {mw.TRANSFORMER_25, mw.GEMMA4_25, mw.VIDEO_VAE_25, mw.AUDIO_VAE_25}
    make_tiny_set(base / "models", "ltx-2.5", seed=1, tiny_names=True)
    make_tiny_cache(base / "output" / "ltx2_cache" / mw.INSTALL_CACHE_25, "ltx-2.5")
    return server.get("/object_info")


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_workflow_opens_and_validates(server, info, path):
    ui = json.loads(path.read_text())
    for n in ui["nodes"]:
        if n["type"] in mw.UI_ONLY:
            continue  # notes: frontend only
        assert n["type"] in info, f"{path.name}: node {n['type']} is missing"
        want = sum(1 + (1 if mw._has_control(nm, t, o) else 0)
                   for nm, t, o, _ in mw._inputs(info[n["type"]]) if mw._is_widget(t, o)
                   and nm not in {i["name"] for i in n["inputs"] if i.get("link")})
        assert len(n["widgets_values"]) == want, f"{path.name}: {n['type']} has {len(n['widgets_values'])} widget values, expected {want}"
    prompt = mw.to_api(ui, info)
    assert not any(v["class_type"] in mw.UI_ONLY for v in prompt.values())
    key = mw.key_for_file(path.stem)
    train = next(v for v in prompt.values() if v["class_type"] == "LTX2TrainLoRA")
    assert train["inputs"]["recipe"] == mw.all_workflows().get(key, {"recipe": "Character"})["recipe"]
    if key in mw.INSTALLS:
        return  # it runs for real below
    r = server.post("/prompt", {"prompt": prompt, "client_id": "wf-test"})
    assert r.get("prompt_id") and not r.get("node_errors"), r
    server.post("/interrupt", {})
    server.post("/queue", {"clear": True})


def test_template_route_lists_the_workflows(server):
    listing = server.get("/workflow_templates")
    ours = next(v for k, v in listing.items() if "ltx2" in k.lower())
    assert set(ours) == {mw.file_name(k) for k in (*mw.all_workflows(), *mw.INSTALLS)}


@pytest.mark.parametrize("install, lora_name", [(mw.INSTALL, "install_check"), (mw.INSTALL_25, "install_check_ltx25")])
def test_install_check_runs_headless_with_comfy_cli(server, info, install, lora_name):
    """``comfy run --workflow`` (comfy-cli, UI format converted client-side) against the
    server: the install-check workflow trains 20 steps on the tiny model and saves a LoRA
    (LTX-2.5: the tiny split transformer through Load Diffusion Model)."""
    import subprocess
    import time

    for _ in range(60):  # let earlier validation prompts finish or fail
        q = server.get("/queue")
        if not q["queue_running"] and not q["queue_pending"]:
            break
        time.sleep(1)
    wf = REPO / "example_workflows" / f"{mw.file_name(install)}.json"
    cmd = [sys.executable, "-m", "comfy_cli", "--skip-prompt", "run", "--workflow", str(wf), "--host", "127.0.0.1",
           "--port", str(server.port), "--wait", "--timeout", "300"]
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    lora = server.base / "models" / "loras" / "ltx2" / f"{lora_name}_00001.safetensors"
    for _ in range(120):
        if lora.exists():
            break
        time.sleep(1)
    assert lora.exists(), (r.stdout[-2000:], server.log_text()[-3000:])
    from trainer_core.lora import load_lora

    sd, meta = load_lora(lora)
    assert meta["steps"] == "20" and sd
    if install == mw.INSTALL_25:
        assert meta["base_model"] == "2.5", meta
    print(f"{install}: {time.time() - t0:.0f} s")


def _set(node: dict, info: dict, **values) -> None:
    """Set widget values of a UI-format node by input name."""
    k = 0
    linked = {i["name"] for i in node.get("inputs", []) if i.get("link") is not None}
    for name, t, opts, _ in mw._inputs(info[node["type"]]):
        if not mw._is_widget(t, opts) or name in linked:
            continue
        if name in values:
            node["widgets_values"][k] = values.pop(name)
        k += 1 + (1 if mw._has_control(name, t, opts) else 0)
    assert not values, f"{node['type']} has no widgets {list(values)}"


def _get(node: dict, info: dict, name: str):
    """A widget value of a UI-format node by input name."""
    k = 0
    linked = {i["name"] for i in node.get("inputs", []) if i.get("link") is not None}
    for nm, t, opts, _ in mw._inputs(info[node["type"]]):
        if not mw._is_widget(t, opts) or nm in linked:
            continue
        if nm == name:
            return node["widgets_values"][k]
        k += 1 + (1 if mw._has_control(nm, t, opts) else 0)
    raise KeyError(name)


def _cpu_sized(ui: dict, info: dict, stem: str) -> dict:
    from trainer_core.tiny_checkpoint import text_context_width

    for n in ui["nodes"]:
        t = n["type"]
        if t in ("LTXAVTextEncoderLoader", "CLIPLoader"):  # the one stand-in: Gemma 3 / Gemma 4 12B at its boundary
            variant = "ltx-2.5" if t == "CLIPLoader" else "ltx-2.0"  # CLIPLoader (ltxv): the 2.5 workflows' Gemma 4
            n["type"] = "LTX2TestGemmaStandIn"
            n["widgets_values"] = [text_context_width(variant, processed=False)]
            n["properties"] = {"Node name for S&R": n["type"]}
        elif t == "LTX2TrainCaption":
            _set(n, info, frames=2, max_side=112, max_words=12)
        elif t == "LTX2TrainBucket":
            _set(n, info, preset="custom", buckets="64x64x9;96x64x9;64x96x9")
        elif t == "LTX2TrainLoRA":
            _set(n, info, lora_name=f"e2e_{stem}", steps=4, rank=4, resume="none")
        elif t == "LTX2TrainOptions":
            _set(n, info, checkpoint_every=2)
        elif t == "LTX2TrainValidation":
            _set(n, info, every=2, width=64, height=64, frames=9, steps=2)
        elif t == "LTX2TrainSample":
            _set(n, info, width=64, height=64, frames=9, steps=2, filename_prefix=f"ltx2_samples/{stem}")
    return ui


def _wait_idle(server, seconds: int = 120) -> None:
    import time

    for _ in range(seconds):
        q = server.get("/queue")
        if not q["queue_running"] and not q["queue_pending"]:
            return
        time.sleep(1)


@pytest.mark.parametrize("stem", sorted(mw.all_workflows()))
def test_shipped_workflow_runs_headless_end_to_end(server, info, stem, tmp_path):
    """``comfy run --workflow`` on each shipped workflow: scenes are split (or not), clips are
    captioned by the captioner, bucketed, encoded, a LoRA is trained with validation previews
    at the interval, and Sample writes an mp4 with sound."""
    import subprocess
    import time

    import av

    from trainer_core.lora import load_lora

    spec = mw.all_workflows()[stem]
    ui = _cpu_sized(json.loads((REPO / "example_workflows" / f"{mw.file_name(stem)}.json").read_text()), info, stem)
    wf = tmp_path / f"{stem}.json"
    wf.write_text(json.dumps(ui))
    _wait_idle(server)
    cmd = [sys.executable, "-m", "comfy_cli", "--skip-prompt", "run", "--workflow", str(wf), "--host", "127.0.0.1",
           "--port", str(server.port), "--wait", "--timeout", "600"]
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:], server.log_text()[-3000:])
    _wait_idle(server, 600)
    took = time.time() - t0
    loras = sorted((server.base / "models" / "loras" / "ltx2").glob(f"e2e_{stem}_*.safetensors"))
    assert loras, (r.stdout[-2000:], server.log_text()[-4000:])
    sd, meta = load_lora(loras[-1])
    assert sd and meta["steps"] == "4" and meta["mode"] == spec["mode"], meta
    # validation previews at the interval, beside the checkpoints
    run_dir = server.base / "output" / "ltx2_lora_runs" / f"e2e_{stem}"
    got = sorted(p.name for p in (run_dir / "samples").glob("step_*.mp4"))
    assert got == ["step_000002_0.mp4", "step_000004_0.mp4"], got
    side = any(n["type"] == "LTX2TrainSampleConditioning" and _get(n, info, "include_in_output")
               for n in ui["nodes"])
    want_w = 128 if side else 64  # IC-LoRA with include_in_output: reference | result
    with av.open(str(run_dir / "samples" / got[-1])) as c:  # validation sampled with the workflow's conditioning
        assert c.streams.video[0].codec_context.width == want_w
    # the Sample node's mp4: 9 frames of 64x64 at the workflow's fps, with an audio track
    outs = sorted((server.base / "output" / "ltx2_samples").glob(f"{stem}_*.mp4"))
    assert outs, server.log_text()[-3000:]
    with av.open(str(outs[-1])) as c:
        v = c.streams.video[0]
        frames = list(c.decode(video=0))
        assert len(frames) == 9 and (frames[0].width, frames[0].height) == (want_w, 64)
        assert abs(float(v.average_rate) - 24) < 0.01
        assert c.streams.audio, "the preview has no sound"
    # captions were written by the captioner (the dataset had none)
    caps = sorted((server.base / "input" / spec.get("folder", "my_dataset")).rglob("*.txt"))
    assert caps, "no captions written"
    print(f"{stem}: {took:.0f} s, LoRA {loras[-1].name} ({len(sd)} tensors), preview {outs[-1].name}")


def test_a_missing_model_file_refuses_the_whole_run(server, info):
    """A missing checkpoint upstream of Train: ComfyUI alone would drop the Train and Sample
    branch and run the dataset nodes (Bucket is an output) to "Job completed". With the pack's
    prompt guard the prompt is refused whole, with ComfyUI's own error on the loader."""
    import time

    for _ in range(120):  # let earlier prompts finish
        q = server.get("/queue")
        if not q["queue_running"] and not q["queue_pending"]:
            break
        time.sleep(1)
    ui = json.loads((REPO / "example_workflows" / f"{mw.file_name('ltx2_lora_character_audio_video')}.json").read_text())
    prompt = mw.to_api(ui, info)
    ckpt = next(k for k, v in prompt.items() if v["class_type"] == "CheckpointLoaderSimple")
    prompt[ckpt]["inputs"]["ckpt_name"] = "not_downloaded_yet.safetensors"
    before = len(server.get("/history") or {})
    with pytest.raises(AssertionError) as e:
        server.post("/prompt", {"prompt": prompt, "client_id": "guard-test"})
    msg = str(e.value)
    assert "-> 400" in msg and "prompt_outputs_failed_validation" in msg, msg[:2000]
    body = json.loads(msg.split(": ", 1)[1])
    assert ckpt in body["node_errors"], body["node_errors"].keys()
    assert "not_downloaded_yet.safetensors" in json.dumps(body["node_errors"][ckpt])
    q = server.get("/queue")
    assert not q["queue_running"] and not q["queue_pending"]  # nothing of it runs
    assert len(server.get("/history") or {}) == before
    assert "not starting a partial run" in server.log_text()
    # the same prompt with the file in place is accepted (the guard changes nothing then)
    prompt[ckpt]["inputs"]["ckpt_name"] = mw.CKPT
    r = server.post("/prompt", {"prompt": prompt, "client_id": "guard-test"})
    assert r.get("prompt_id") and not r.get("node_errors"), r
    server.post("/interrupt", {})
    server.post("/queue", {"clear": True})


@pytest.mark.parametrize("stem", sorted(mw.MODE_WORKFLOWS))
def test_mode_workflow_samples_with_its_conditioning_headless(server, info, stem):
    """The "Try your LoRA" half of each training mode's workflow, as shipped (ComfyUI's stock
    loaders, core Canny, Sample Conditioning, Sample with LoRA) run through the server on the
    tiny checkpoint: the stock nodes' outputs fit Sample Conditioning's inputs and the mp4
    comes out with sound at the size the conditioning gives (IC-LoRA: reference | result)."""
    import av

    ui = _cpu_sized(json.loads((REPO / "example_workflows" / f"{mw.file_name(stem)}.json").read_text()), info, stem)
    prompt = mw.to_api(ui, info)
    sample = next(k for k, v in prompt.items() if v["class_type"] == "LTX2TrainSample")
    ckpt = next(k for k, v in prompt.items() if v["class_type"] == "CheckpointLoaderSimple")
    prompt[sample]["inputs"]["model"] = [ckpt, 0]  # the base model instead of the Train node's
    prompt[sample]["inputs"]["filename_prefix"] = f"ltx2_samples/half_{stem}"
    keep, todo = set(), [sample]
    while todo:  # the Sample node and what it depends on
        k = todo.pop()
        if k in keep:
            continue
        keep.add(k)
        todo += [v[0] for v in prompt[k]["inputs"].values() if isinstance(v, list) and len(v) == 2
                 and isinstance(v[0], str)]
    prompt = {k: v for k, v in prompt.items() if k in keep}
    assert any(v["class_type"] == "LTX2TrainSampleConditioning" for v in prompt.values())
    _wait_idle(server, 600)
    server.run_prompt(prompt, timeout=600)
    outs = sorted((server.base / "output" / "ltx2_samples").glob(f"half_{stem}_*.mp4"))
    assert outs, server.log_text()[-3000:]
    side = mw.MODE_WORKFLOWS[stem]["conditioning"] == "reference_canny"
    with av.open(str(outs[-1])) as c:
        frames = list(c.decode(video=0))
        assert len(frames) == 9 and (frames[0].width, frames[0].height) == (128 if side else 64, 64)
        assert c.streams.audio, "the preview has no sound"
