"""Build the shared workflows (ComfyUI UI format, with a .jpg diagram each) from a running
ComfyUI's ``/object_info``, so every widget value sits where the frontend expects it, and
convert UI workflows to the API format that ``/prompt`` and ``comfy run`` take.

    python scripts/make_workflows.py --url http://127.0.0.1:8188 [--out example_workflows]

Model files are named by their standard names (drop them in place):
ltx-2-19b-dev.safetensors in models/checkpoints, gemma_3_12B_it.safetensors in
models/text_encoders, a Qwen Omni folder in models/captioners. The LTX-2.5 workflows
(``ltx25_*``) load the split files the way ComfyUI's own LTX-2.5 template does, under its
file names: Load Diffusion Model (models/diffusion_models/TRANSFORMER_25), Load CLIP type
ltxv (models/text_encoders/GEMMA4_25), Load VAE twice (models/vae/VIDEO_VAE_25 and
AUDIO_VAE_25).
"""
from __future__ import annotations

import argparse
import json
import urllib.request
from pathlib import Path
from typing import Any, Optional

CKPT = "ltx-2-19b-dev.safetensors"
GEMMA = "gemma_3_12B_it.safetensors"
CAPTIONER = "Qwen2.5-Omni-7B"
# LTX-2.5: the file names of ComfyUI's LTX-2.5 templates (comfyui_workflow_templates
# video_ltx2_5_t2v / _i2v; huggingface.co/Lightricks/LTX-2.5), one loader node each
TRANSFORMER_25 = "ltx-2.5-22b-distilled-transformer-comfy-int8-convrot.safetensors"
GEMMA4_25 = "gemma4-12b-with-proj-ltx-2.5-comfy-int8-convrot.safetensors"
VIDEO_VAE_25 = "ltx-2.5-video-vae-bf16.safetensors"
AUDIO_VAE_25 = "ltx-2.5-audio-vae-bf16.safetensors"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def _inputs(info: dict) -> list[tuple[str, Any, dict, bool]]:
    """(name, type, options, required) in the frontend's order: required, then optional."""
    out = []
    for section, req in (("required", True), ("optional", False)):
        order = info.get("input_order", {}).get(section) or list(info.get("input", {}).get(section, {}))
        spec = info.get("input", {}).get(section, {})
        for name in order:
            t = spec[name][0]
            opts = spec[name][1] if len(spec[name]) > 1 and isinstance(spec[name][1], dict) else {}
            out.append((name, t, opts, req))
    return out


def _is_widget(t, opts: dict) -> bool:
    if isinstance(t, list):
        return True
    return t in WIDGET_TYPES and not opts.get("forceInput")


def _has_control(name: str, t, opts: dict) -> bool:
    return t == "INT" and (opts.get("control_after_generate") or name in ("seed", "noise_seed"))


class Graph:
    def __init__(self, object_info: dict):
        self.info = object_info
        self.nodes: list[dict] = []
        self.links: list[list] = []

    def add(self, node_type: str, pos: tuple[int, int], **values) -> int:
        info = self.info[node_type]
        nid = len(self.nodes) + 1
        widgets, inputs = [], []
        for name, t, opts, req in _inputs(info):
            if _is_widget(t, opts) and name not in values.get("_links", {}):
                if name in values:
                    v = values[name]
                elif "default" in opts:
                    v = opts["default"]
                elif isinstance(t, list):
                    v = t[0] if t else ""
                elif t == "COMBO":
                    v = (opts.get("options") or [""])[0]
                else:
                    v = {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}[t]
                widgets.append(v)
                if _has_control(name, t, opts):
                    widgets.append("fixed")
            elif not _is_widget(t, opts):
                inputs.append({"name": name, "type": t if isinstance(t, str) else "COMBO", "link": None})
        outputs = [{"name": n, "type": t, "links": [], "slot_index": i}
                   for i, (t, n) in enumerate(zip(info["output"], info.get("output_name", info["output"])))]
        self.nodes.append({"id": nid, "type": node_type, "pos": list(pos), "size": [320, 120], "flags": {},
                           "order": nid - 1, "mode": 0, "inputs": inputs, "outputs": outputs,
                           "properties": {"Node name for S&R": node_type}, "widgets_values": widgets,
                           "title": info.get("display_name", node_type)})
        return nid

    def link(self, src: int, out_slot: int, dst: int, input_name: str) -> None:
        lid = len(self.links) + 1
        s, d = self.nodes[src - 1], self.nodes[dst - 1]
        inp = next(i for i in d["inputs"] if i["name"] == input_name)
        to_slot = d["inputs"].index(inp)
        t = s["outputs"][out_slot]["type"]
        inp["link"] = lid
        s["outputs"][out_slot]["links"].append(lid)
        self.links.append([lid, src, out_slot, dst, to_slot, t])

    def ui(self, title: str) -> dict:
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": [], "config": {}, "version": 0.4,
                "extra": {"ltx2_trainer": {"title": title}}}


def to_api(ui: dict, object_info: dict) -> dict:
    """UI workflow -> API prompt (widget values by name, links as [node, slot])."""
    links = {l[0]: l for l in ui["links"]}
    prompt = {}
    for n in ui["nodes"]:
        info = object_info[n["type"]]
        vals = list(n.get("widgets_values") or [])
        connected = {i["name"]: i["link"] for i in n.get("inputs", []) if i.get("link") is not None}
        inputs: dict[str, Any] = {}
        k = 0
        for name, t, opts, req in _inputs(info):
            if name in connected:
                l = links[connected[name]]
                inputs[name] = [str(l[1]), l[2]]
                if _is_widget(t, opts):
                    k += 1 + (1 if _has_control(name, t, opts) else 0)
                continue
            if _is_widget(t, opts):
                if k < len(vals):
                    inputs[name] = vals[k]
                k += 1 + (1 if _has_control(name, t, opts) else 0)
        prompt[str(n["id"])] = {"class_type": n["type"], "inputs": inputs}
    return prompt


class _Out:
    """(node, slot) pairs of the loaders: MODEL, VAE, audio VAE, CLIP."""

    def __init__(self, model, vae, audio_vae, clip):
        self.model, self.vae, self.audio_vae, self.clip = model, vae, audio_vae, clip


def _loaders(g: Graph, ltx25: bool) -> _Out:
    if ltx25:  # split files, loaded as ComfyUI's LTX-2.5 template loads them
        un = g.add("UNETLoader", (0, 0), unet_name=TRANSFORMER_25, weight_dtype="default")
        vv = g.add("VAELoader", (0, 130), vae_name=VIDEO_VAE_25)
        av = g.add("VAELoader", (0, 240), vae_name=AUDIO_VAE_25)
        te = g.add("CLIPLoader", (0, 350), clip_name=GEMMA4_25, type="ltxv", device="default")
        return _Out((un, 0), (vv, 0), (av, 0), (te, 0))
    ck = g.add("CheckpointLoaderSimple", (0, 0), ckpt_name=CKPT)
    av = g.add("LTXVAudioVAELoader", (0, 180), ckpt_name=CKPT)
    te = g.add("LTXAVTextEncoderLoader", (0, 340), text_encoder=GEMMA, ckpt_name=CKPT)
    return _Out((ck, 0), (ck, 2), (av, 0), (te, 0))


def _pipeline(info: dict, *, recipe: str, split: bool, first_frame: bool, prompt: str, mode: str,
              folder: str = "my_dataset", ltx25: bool = False) -> Graph:
    g = Graph(info)
    L = _loaders(g, ltx25)
    lc = g.add("LTX2TrainLoadClips", (360, 0), folder=folder)
    sp = g.add("LTX2TrainSplitScenes", (720, 0), enabled=split)
    g.link(lc, 0, sp, "clips")
    cp = g.add("LTX2TrainCaption", (1080, 0), model=CAPTIONER, trigger_word="sks")
    g.link(sp, 0, cp, "clips")
    bk = g.add("LTX2TrainBucket", (1440, 0), audio=mode != "video_only")
    g.link(cp, 0, bk, "clips")
    en = g.add("LTX2TrainEncodeLatents", (1440, 300), trigger_word="sks", cache_name=folder)
    g.link(bk, 0, en, "dataset")
    g.link(*L.vae, en, "vae")
    g.link(*L.clip, en, "clip")
    g.link(*L.audio_vae, en, "audio_vae")
    tr = g.add("LTX2TrainLoRA", (1800, 0), recipe=recipe,
               lora_name=f"my_{'ltx25_' if ltx25 else ''}{recipe.lower()}_lora", mode=mode,
               validation_every=250, validation_prompts=prompt)
    g.link(*L.model, tr, "model")
    g.link(en, 0, tr, "latents")
    # validation previews during training: the same text encoder and VAEs as the Sample node
    g.link(*L.clip, tr, "validation_clip")
    g.link(*L.vae, tr, "validation_vae")
    g.link(*L.audio_vae, tr, "validation_audio_vae")
    sm = g.add("LTX2TrainSample", (2160, 0), prompt=prompt)
    g.link(tr, 0, sm, "model")
    g.link(*L.vae, sm, "vae")
    g.link(*L.audio_vae, sm, "audio_vae")
    g.link(*L.clip, sm, "clip")
    if first_frame:
        li = g.add("LoadImage", (1800, 400), image="first_frame.png")
        g.link(li, 0, sm, "first_frame")
        g.link(li, 0, tr, "validation_image")
    return g


WORKFLOWS = {
    "ltx2_lora_character_audio_video": dict(
        title="Character (audio + video)", recipe="Character", split=True, first_frame=False, mode="text_to_audio_video",
        prompt="sks, a woman with short red hair looks into the camera and says \"hello, it's me\"; soft room tone."),
    "ltx2_lora_style": dict(
        title="Style", recipe="Style", split=True, first_frame=False, mode="video_only",
        prompt="sks style, a harbour at dawn, fishing boats rock gently, the camera pans slowly right."),
    "ltx2_lora_motion": dict(
        title="Motion (continuous clips, no scene split)", recipe="Motion", split=False, first_frame=False,
        mode="text_to_audio_video", prompt="sks move, a dancer spins twice and lands facing the camera; music plays."),
    "ltx2_lora_image_to_video": dict(
        title="Image → Video", recipe="Character", split=True, first_frame=True, mode="image_to_video",
        prompt="sks, the person in the picture turns and smiles; birds sing nearby."),
    "ltx2_lora_audio_only": dict(
        title="Audio only (sound design)", recipe="Audio", split=True, first_frame=False, mode="audio_only",
        prompt="sks sound, a heavy wooden door creaks open and slams shut in a stone hall."),
}


# LTX-2.5 variants (split files): the same graphs with the LTX-2.5 loaders
WORKFLOWS_25 = {
    "ltx25_lora_character_audio_video": dict(WORKFLOWS["ltx2_lora_character_audio_video"],
                                             title="LTX-2.5: Character (audio + video)", ltx25=True),
}


TINY_CKPT = "ltx2-tiny-2.0.safetensors"
INSTALL_CACHE = "ltx2_install_check"
INSTALL = "ltx2_validate_install"
# the LTX-2.5 install check: the tiny 2.5 transformer (split like the real one)
TINY_TRANSFORMER_25 = "ltx2-tiny-2.5-transformer.safetensors"
INSTALL_CACHE_25 = "ltx25_install_check"
INSTALL_25 = "ltx25_validate_install"
INSTALLS = (INSTALL, INSTALL_25)


def _install_check(info: dict) -> Graph:
    """Tiny checkpoint + tiny latent cache (``python -m trainer_core.tiny_checkpoint --out
    models/checkpoints/ltx2-tiny-2.0.safetensors --cache output/ltx2_cache/ltx2_install_check``)
    -> 20 training steps: about a minute on a CPU, a LoRA file at the end."""
    g = Graph(info)
    ck = g.add("CheckpointLoaderSimple", (0, 0), ckpt_name=TINY_CKPT)
    lc = g.add("LTX2TrainLoadLatentCache", (0, 200), cache_name=INSTALL_CACHE)
    tr = g.add("LTX2TrainLoRA", (380, 0), recipe="Character", lora_name="install_check", steps=20, rank=4,
               learning_rate=1e-3, precision="fp32", checkpoint_every=0, resume="none")
    g.link(ck, 0, tr, "model")
    g.link(lc, 0, tr, "latents")
    return g


def _install_check_25(info: dict) -> Graph:
    """The LTX-2.5 install check: the tiny 2.5 transformer through Load Diffusion Model (as
    the real split file loads) + a tiny 2.5 latent cache (``python -m
    trainer_core.tiny_checkpoint --variant ltx-2.5 --tiny-names --out models --cache
    output/ltx2_cache/ltx25_install_check``) -> 20 training steps."""
    g = Graph(info)
    un = g.add("UNETLoader", (0, 0), unet_name=TINY_TRANSFORMER_25, weight_dtype="default")
    lc = g.add("LTX2TrainLoadLatentCache", (0, 200), cache_name=INSTALL_CACHE_25)
    tr = g.add("LTX2TrainLoRA", (380, 0), recipe="Character", lora_name="install_check_ltx25", steps=20, rank=4,
               learning_rate=1e-3, precision="fp32", checkpoint_every=0, resume="none")
    g.link(un, 0, tr, "model")
    g.link(lc, 0, tr, "latents")
    return g


def all_workflows() -> dict[str, dict]:
    """Every pipeline workflow's spec (2.0-style single file and LTX-2.5 split files)."""
    return {**WORKFLOWS, **WORKFLOWS_25}


def build(object_info: dict) -> dict[str, dict]:
    out = {}
    for name, spec in all_workflows().items():
        kw = {k: v for k, v in spec.items() if k != "title"}
        out[name] = _pipeline(object_info, **kw).ui(spec["title"])
    out[INSTALL] = _install_check(object_info).ui("Validate my install (tiny model, CPU, ~1 min)")
    out[INSTALL_25] = _install_check_25(object_info).ui("LTX-2.5: validate my install (tiny model, CPU, ~1 min)")
    return out


def thumbnail(ui: dict, path: Path) -> None:
    """A clean diagram of the graph: one box per node, arrows for links."""
    from PIL import Image, ImageDraw

    nodes = {n["id"]: n for n in ui["nodes"]}
    xs = [n["pos"][0] for n in ui["nodes"]]
    ys = [n["pos"][1] for n in ui["nodes"]]
    sx, sy = 0.2, 0.2
    W, H = int((max(xs) + 380) * sx) + 20, int((max(ys) + 160) * sy) + 60
    img = Image.new("RGB", (max(W, 480), max(H, 200)), (30, 32, 38))
    d = ImageDraw.Draw(img)
    title = ui["extra"]["ltx2_trainer"]["title"].replace("→", "->")
    d.text((10, 8), "LTX-2 Trainer - " + title, fill=(240, 240, 240))

    def box(n):
        x, y = n["pos"][0] * sx + 10, n["pos"][1] * sy + 30
        return x, y, x + 64, y + 24

    for l in ui["links"]:
        a, b = box(nodes[l[1]]), box(nodes[l[3]])
        d.line([(a[2], (a[1] + a[3]) / 2), (b[0], (b[1] + b[3]) / 2)], fill=(120, 160, 220), width=1)
    for n in ui["nodes"]:
        x0, y0, x1, y1 = box(n)
        ours = n["type"].startswith("LTX2Train")
        d.rectangle([x0, y0, x1, y1], fill=(70, 90, 140) if ours else (70, 70, 76), outline=(200, 200, 210))
        label = n["type"].replace("LTX2Train", "")[:11]
        d.text((x0 + 3, y0 + 6), label, fill=(255, 255, 255))
    img.save(path, "JPEG", quality=90)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8188")
    ap.add_argument("--object-info", default=None, help="a saved /object_info JSON instead of --url")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "example_workflows"))
    ap.add_argument("--only", default=None, help="comma-separated workflow names to write (default: all)")
    a = ap.parse_args(argv)
    if a.object_info:
        info = json.loads(Path(a.object_info).read_text())
    else:
        with urllib.request.urlopen(a.url.rstrip("/") + "/object_info", timeout=60) as r:
            info = json.loads(r.read())
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    only = set(a.only.split(",")) if a.only else None
    for name, ui in build(info).items():
        if only is not None and name not in only:
            continue
        (out / f"{name}.json").write_text(json.dumps(ui, indent=1) + "\n")
        thumbnail(ui, out / f"{name}.jpg")
        print("wrote", out / f"{name}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
