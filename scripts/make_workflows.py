"""Build the shared workflows (ComfyUI UI format, with a .jpg diagram each) from a running
ComfyUI's ``/object_info``, so every widget value sits where the frontend expects it, and
convert UI workflows to the API format that ``/prompt`` and ``comfy run`` take.

    python scripts/make_workflows.py --url http://127.0.0.1:8188 [--out example_workflows]
    python scripts/make_workflows.py to-api IN.json OUT.json --object-info URL|FILE

ComfyUI's template browser titles a custom node's templates by their file names, so the
files carry human titles (``FILE_NAMES``); each workflow has groups and notes saying what to
put where, node rectangles that do not overlap (previews and charts included), and
``properties.models`` on every loader (name, url, directory: the frontend's missing-model
dialog offers the download into the right folder).

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
import sys
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
# the official downloads (the URLs ComfyUI's own LTX-2 / LTX-2.5 templates use)
HF_LTX2 = "https://huggingface.co/Lightricks/LTX-2/resolve/main/"
HF_LTX25 = "https://huggingface.co/Lightricks/LTX-2.5/resolve/main/"
MODEL_URLS = {
    CKPT: (HF_LTX2 + CKPT, "checkpoints"),
    GEMMA: ("https://huggingface.co/Comfy-Org/ltx-2/resolve/main/split_files/text_encoders/" + GEMMA, "text_encoders"),
    "ltx-2.3-22b-dev.safetensors": ("https://huggingface.co/Lightricks/LTX-2.3/resolve/main/ltx-2.3-22b-dev.safetensors",
                                    "checkpoints"),
    TRANSFORMER_25: (HF_LTX25 + "diffusion_models/" + TRANSFORMER_25, "diffusion_models"),
    GEMMA4_25: (HF_LTX25 + "text_encoders/" + GEMMA4_25, "text_encoders"),
    VIDEO_VAE_25: (HF_LTX25 + "vae/" + VIDEO_VAE_25, "vae"),
    AUDIO_VAE_25: (HF_LTX25 + "vae/" + AUDIO_VAE_25, "vae"),
}
# frontend-only nodes: no server class, skipped when a workflow becomes a prompt
UI_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}

# layout: LiteGraph draws the title bar above ``pos`` (30 px); the body is ``size``
TITLE_H = 30
SLOT_H = 20
WIDGET_H = 24
MULTILINE_H = 80
STATUS_H = 48           # the pack's status line (web/js/ltx2_status.js) on every pack node
IMAGE_PREVIEW_H = 280   # an IMAGE output shown under the node
EXTRA_H = {             # what the frontend and the pack's JS add below the widgets
    "LTX2TrainLoadClips": STATUS_H + 170 + IMAGE_PREVIEW_H,   # folder preview strip + contact sheet
    "LTX2TrainSplitScenes": STATUS_H + IMAGE_PREVIEW_H,
    "LTX2TrainCaption": STATUS_H + IMAGE_PREVIEW_H,
    "LTX2TrainBucket": STATUS_H + 280,                        # the dataset gallery (no second image)
    "LTX2TrainEncodeLatents": STATUS_H + IMAGE_PREVIEW_H,
    "LTX2TrainLoadLatentCache": STATUS_H,
    "LTX2TrainLoRA": STATUS_H + 140,                          # the live loss chart
    "LTX2TrainOptions": 0,                                    # (no status line on the option nodes)
    "LTX2TrainValidation": 0,
    "LTX2TrainSample": STATUS_H + 300,                        # the video player
    "LoadImage": 260,
    "LoadImageMask": 260,
    "LoadVideo": 360,                                         # the video player (a square clip at the node's width)
    "LoadAudio": 120,                                         # the audio player
    "Canny": IMAGE_PREVIEW_H,
    "LTX2TrainSampleConditioning": STATUS_H,
}
WIDTH = {"LTX2TrainBucket": 440, "LTX2TrainLoRA": 420, "LTX2TrainCaption": 380, "LTX2TrainSample": 400,
         "LTX2TrainLoadClips": 400}
GAP = 40


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
        self.groups: list[dict] = []

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
        props: dict[str, Any] = {"Node name for S&R": node_type}
        models = [{"name": v, "url": MODEL_URLS[v][0], "directory": MODEL_URLS[v][1]}
                  for v in dict.fromkeys(w for w in widgets if isinstance(w, str) and w in MODEL_URLS)]
        if models:
            props["models"] = models
        self.nodes.append({"id": nid, "type": node_type, "pos": list(pos),
                           "size": [WIDTH.get(node_type, 340), body_height(info, inputs, outputs, node_type)],
                           "flags": {}, "order": nid - 1, "mode": 0, "inputs": inputs, "outputs": outputs,
                           "properties": props, "widgets_values": widgets,
                           "title": info.get("display_name", node_type)})
        return nid

    def note(self, pos: tuple[int, int], text: str, width: int = 340, height: int = 130) -> int:
        """A Markdown note (frontend only) that says what to do."""
        nid = len(self.nodes) + 1
        self.nodes.append({"id": nid, "type": "MarkdownNote", "pos": list(pos), "size": [width, height], "flags": {},
                           "order": nid - 1, "mode": 0, "inputs": [], "outputs": [], "properties": {},
                           "widgets_values": [text], "color": "#432", "bgcolor": "#653", "title": "Read me"})
        return nid

    def group(self, title: str, ids: list[int], color: str = "#3f789e") -> None:
        """A group around nodes ``ids`` (their title bars and a margin included)."""
        ns = [self.nodes[i - 1] for i in ids]
        x0 = min(n["pos"][0] for n in ns) - 20
        y0 = min(n["pos"][1] for n in ns) - TITLE_H - 60
        x1 = max(n["pos"][0] + n["size"][0] for n in ns) + 20
        y1 = max(n["pos"][1] + n["size"][1] for n in ns) + 20
        self.groups.append({"id": len(self.groups) + 1, "title": title, "bounding": [x0, y0, x1 - x0, y1 - y0],
                            "color": color, "font_size": 24, "flags": {}})

    def bottom(self, nid: int) -> int:
        n = self.nodes[nid - 1]
        return n["pos"][1] + n["size"][1]

    def right(self, nid: int) -> int:
        n = self.nodes[nid - 1]
        return n["pos"][0] + n["size"][0]

    def link(self, src: int, out_slot: int, dst: int, input_name: str) -> None:
        lid = len(self.links) + 1
        s, d = self.nodes[src - 1], self.nodes[dst - 1]
        inp = next(i for i in d["inputs"] if i["name"] == input_name)
        to_slot = d["inputs"].index(inp)
        t = s["outputs"][out_slot]["type"]
        inp["link"] = lid
        s["outputs"][out_slot]["links"].append(lid)
        self.links.append([lid, src, out_slot, dst, to_slot, t])

    def ui(self, title: str, description: str = "") -> dict:
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": self.groups, "config": {}, "version": 0.4,
                "extra": {"ltx2_trainer": {"title": title, "description": description}}}


def body_height(info: dict, inputs: list, outputs: list, node_type: str) -> int:
    """The node body's height (title bar excluded): sockets, widgets, then what the frontend
    and the pack's JS draw below them (previews, chart, gallery, status line)."""
    h = 0
    for name, t, opts, _ in _inputs(info):
        if _is_widget(t, opts):
            h += MULTILINE_H if t == "STRING" and opts.get("multiline") else WIDGET_H
            h += WIDGET_H if _has_control(name, t, opts) else 0
    return max(len(inputs), len(outputs)) * SLOT_H + h + 16 + EXTRA_H.get(node_type, 0)


def rect(n: dict) -> tuple[float, float, float, float]:
    """A node's on-canvas rectangle (x0, y0, x1, y1), its title bar included."""
    x, y = n["pos"]
    w, h = n["size"]
    return x, y - TITLE_H, x + w, y + h


def to_api(ui: dict, object_info: dict) -> dict:
    """UI workflow -> API prompt (widget values by name, links as [node, slot])."""
    links = {l[0]: l for l in ui["links"]}
    prompt = {}
    for n in ui["nodes"]:
        if n["type"] in UI_ONLY:
            continue
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
    """(node, slot) pairs of the loaders: MODEL, VAE, audio VAE, CLIP; ``ids`` the loader nodes."""

    def __init__(self, model, vae, audio_vae, clip, ids):
        self.model, self.vae, self.audio_vae, self.clip, self.ids = model, vae, audio_vae, clip, ids


def _stack(g: Graph, x: int, y: int, specs: list[tuple[str, dict]]) -> list[int]:
    """Nodes one under the other from (x, y), title bars and a gap between them."""
    ids = []
    for node_type, values in specs:
        nid = g.add(node_type, (x, y), **values)
        ids.append(nid)
        y = g.bottom(nid) + GAP + TITLE_H
    return ids


NOTE_H = 150
TOP = 60 + TITLE_H + NOTE_H + GAP + TITLE_H  # first node row under a group's title and note


def _loaders(g: Graph, ltx25: bool) -> _Out:
    if ltx25:  # split files, loaded as ComfyUI's LTX-2.5 template loads them
        un, vv, av, te = _stack(g, 0, TOP, [
            ("UNETLoader", dict(unet_name=TRANSFORMER_25, weight_dtype="default")),
            ("VAELoader", dict(vae_name=VIDEO_VAE_25)),
            ("VAELoader", dict(vae_name=AUDIO_VAE_25)),
            ("CLIPLoader", dict(clip_name=GEMMA4_25, type="ltxv", device="default"))])
        n = g.note((0, 60 + TITLE_H), "**Models (LTX-2.5).** Four files, as ComfyUI's LTX-2.5 template loads them: "
                   "the transformer in `models/diffusion_models`, the two VAEs in `models/vae`, Gemma 4 in "
                   "`models/text_encoders`. A missing file? ComfyUI offers the download.", height=NOTE_H)
        g.group("1 · Models", [un, vv, av, te, n], "#444")
        return _Out((un, 0), (vv, 0), (av, 0), (te, 0), [un, vv, av, te])
    ck, av, te = _stack(g, 0, TOP, [
        ("CheckpointLoaderSimple", dict(ckpt_name=CKPT)),
        ("LTXVAudioVAELoader", dict(ckpt_name=CKPT)),
        ("LTXAVTextEncoderLoader", dict(text_encoder=GEMMA, ckpt_name=CKPT))])
    n = g.note((0, 60 + TITLE_H), f"**Models (LTX-2).** `{CKPT}` in `models/checkpoints`, `{GEMMA}` in "
               "`models/text_encoders`. A missing file? ComfyUI offers the download.", height=NOTE_H)
    g.group("1 · Models", [ck, av, te, n], "#444")
    return _Out((ck, 0), (ck, 2), (av, 0), (te, 0), [ck, av, te])


def recipe_values(info: dict, recipe: str) -> dict:
    """What picking ``recipe`` puts in the Train node (steps, rank, learning_rate, mode,
    targets, audio_weight), from the Train node's object_info (as the web extension reads it)."""
    spec = info["LTX2TrainLoRA"]["input"]["required"]["recipe"][1]
    return dict(spec.get("ltx2_recipes", {}).get(recipe, {}))


def train_nodes(g: Graph, pos: tuple[int, int], *, recipe: str, model, latents, lora_name: str,
                options: Optional[dict] = None, validation: Optional[dict] = None, clip=None, vae=None,
                audio_vae=None, **train_values) -> tuple[int, int, Optional[int]]:
    """The Train node at ``pos`` with its recipe's values, an LTX-2 Training Options node to
    its right (targets and audio weight from the recipe, then ``options``) and, when
    ``validation`` is given, an LTX-2 Validation node under it fed by ``clip`` / ``vae`` /
    ``audio_vae`` ((node, slot) pairs). ``model`` and ``latents`` are (node, slot) pairs.
    Returns (train, options, validation or None)."""
    rv = recipe_values(g.info, recipe)
    tv = {k: rv[k] for k in ("steps", "rank", "learning_rate", "mode") if k in rv}
    tv.update(train_values)
    x, y = pos
    tr = g.add("LTX2TrainLoRA", (x, y), recipe=recipe, lora_name=lora_name, **tv)
    ov = {k: rv[k] for k in ("targets", "audio_weight") if k in rv}
    ov.update(options or {})
    op = g.add("LTX2TrainOptions", (g.right(tr) + GAP, y), **ov)
    g.nodes[op - 1]["properties"]["ltx2_recipe_filled"] = True  # the JS leaves these values alone
    g.link(*model, tr, "model")
    g.link(*latents, tr, "latents")
    g.link(op, 0, tr, "options")
    va = None
    if validation is not None:
        va = g.add("LTX2TrainValidation", (g.right(tr) + GAP, g.bottom(op) + GAP + TITLE_H), **validation)
        for src, name in ((clip, "clip"), (vae, "vae"), (audio_vae, "audio_vae")):
            if src is not None:
                g.link(*src, va, name)
        g.link(va, 0, tr, "validation")
    return tr, op, va


# what Sample with LoRA (and validation) starts from, per conditioning workflow: the stock
# ComfyUI nodes that load it, in order, and the Sample Conditioning input they feed
CONDITIONING = {
    "reference_canny": dict(
        nodes=[("LoadVideo", dict(file="control_source.mp4")), ("GetVideoComponents", {}),
               ("Canny", dict(low_threshold=0.4, high_threshold=0.8))],
        feeds=[(1, 0, 2, "video"), (2, 0, 3, "image")], into=(3, 0, "reference_video"),
        values=dict(include_in_output=True),
        text="Load Video: a clip to take the motion from (`input/control_source.mp4`); Detect Edges "
             "(Canny) turns it into the control the LoRA follows; the result shows beside its edges."),
    "prefix": dict(
        nodes=[("LoadVideo", dict(file="extend_start.mp4")), ("GetVideoComponents", {})],
        feeds=[(1, 0, 2, "video")], into=(2, 0, "source_video"), values={},
        text="Load Video: the start to continue (`input/extend_start.mp4`, shorter than `frames`): its "
             "frames are kept and the LoRA continues them."),
    "inpaint": dict(
        nodes=[("LoadVideo", dict(file="inpaint_source.mp4")), ("GetVideoComponents", {}),
               ("LoadImageMask", dict(image="inpaint_mask.png", channel="red"))],
        feeds=[(1, 0, 2, "video")], into=(2, 0, "source_video"), extra=[(3, 0, "mask")], values={},
        text="Load Video: the clip to repair (`input/inpaint_source.mp4`); Load Image (as Mask): white = "
             "what to regenerate (`input/inpaint_mask.png`, paint it in ComfyUI's mask editor)."),
    "foley": dict(
        nodes=[("LoadVideo", dict(file="foley_source.mp4")), ("GetVideoComponents", {})],
        feeds=[(1, 0, 2, "video")], into=(2, 0, "source_video"), values={},
        text="Load Video: the silent clip to add sound to (`input/foley_source.mp4`, at least `frames` "
             "long): the picture is kept, the LoRA makes its sound."),
    "reference_audio": dict(
        nodes=[("LoadAudio", dict(audio="restyle_source.wav"))],
        feeds=[], into=(1, 0, "reference_audio"), values={},
        text="Load Audio: the voice or sound to restyle (`input/restyle_source.wav`); the LoRA remakes it "
             "the way it learned."),
}


def _conditioning(g: Graph, kind: str, x: int, y: int) -> tuple[int, list[int], str]:
    """The stock loaders of a conditioning and a Sample Conditioning node, in one column from
    (x, y): (the Sample Conditioning node, every node, the note's text)."""
    c = CONDITIONING[kind]
    ids = _stack(g, x, y, [*c["nodes"], ("LTX2TrainSampleConditioning", c["values"])])
    sc = ids[-1]
    for src, slot, dst, name in c["feeds"]:
        g.link(ids[src - 1], slot, ids[dst - 1], name)
    src, slot, name = c["into"]
    g.link(ids[src - 1], slot, sc, name)
    for src, slot, name in c.get("extra", []):
        g.link(ids[src - 1], slot, sc, name)
    return sc, ids, c["text"]


def _pipeline(info: dict, *, recipe: str, split: bool, first_frame: bool, prompt: str, mode: str,
              folder: str = "my_dataset", ltx25: bool = False, conditioning: Optional[str] = None,
              dataset_text: str = "", canny_references: str = "", options: Optional[dict] = None,
              **_ignored) -> Graph:
    g = Graph(info)
    L = _loaders(g, ltx25)
    x = max(g.right(i) for i in L.ids) + 100
    y_note = 60 + TITLE_H
    # 2 · the dataset: one row, left to right
    x0 = x
    refs = []
    if canny_references:  # the clip's frames -> core Canny -> Load Clips' reference_frames (in-graph references)
        refs = _stack(g, x, TOP, [("LoadVideo", dict(file=canny_references)), ("GetVideoComponents", {}),
                                  ("Canny", dict(low_threshold=0.4, high_threshold=0.8))])
        g.link(refs[0], 0, refs[1], "video")
        g.link(refs[1], 0, refs[2], "image")
        x = max(g.right(i) for i in refs) + GAP
    lc = g.add("LTX2TrainLoadClips", (x, TOP), folder=folder)
    if refs:
        g.link(refs[2], 0, lc, "reference_frames")
    x = g.right(lc) + GAP
    sp = g.add("LTX2TrainSplitScenes", (x, TOP), enabled=split)
    g.link(lc, 0, sp, "clips")
    x = g.right(sp) + GAP
    cp = g.add("LTX2TrainCaption", (x, TOP), model=CAPTIONER, trigger_word="sks")
    g.link(sp, 0, cp, "clips")
    x = g.right(cp) + GAP
    bk = g.add("LTX2TrainBucket", (x, TOP), audio=mode != "video_only")
    g.link(cp, 0, bk, "clips")
    n2 = g.note((x0, y_note), f"**Your clips.** Put your videos in `ComfyUI/input/{folder}` and pick the folder in "
                "Load Clips: it shows what it found. "
                + dataset_text
                + ("Split Scenes cuts them into shots. " if split else "Scene splitting is off: motion clips stay whole. ")
                + f"Caption needs a captioner folder (e.g. `{CAPTIONER}`) in `models/captioners`. "
                "Read Bucket's report and click its tiles before training.",
                width=g.right(bk) - x0, height=NOTE_H)
    g.group("2 · Dataset: what to learn from", [*refs, lc, sp, cp, bk, n2], "#3f789e")
    # 3 · encode once, then train
    x = g.right(bk) + 100
    x0 = x
    en = g.add("LTX2TrainEncodeLatents", (x, TOP), trigger_word="sks", cache_name=folder)
    g.link(bk, 0, en, "dataset")
    g.link(*L.vae, en, "vae")
    g.link(*L.clip, en, "clip")
    g.link(*L.audio_vae, en, "audio_vae")
    x = g.right(en) + GAP
    tr, op, va = train_nodes(g, (x, TOP), recipe=recipe, model=L.model, latents=(en, 0),
                             lora_name=f"my_{'ltx25_' if ltx25 else ''}{recipe.lower()}_lora", mode=mode,
                             validation=dict(every=250, prompts=prompt), clip=L.clip, vae=L.vae,
                             audio_vae=L.audio_vae, options=options)
    n3 = g.note((x0, y_note), "**Train.** Encode Latents prepares the dataset once (`output/ltx2_cache`). "
                "On the Train node pick a recipe (it fills steps, rank, learning rate, mode) and name your LoRA, "
                "then Run: the chart shows the loss, LTX-2 Validation makes previews every 250 steps, the LoRA "
                "is saved in `models/loras/ltx2`. More settings: LTX-2 Training Options.",
                width=max(g.right(op), g.right(va)) - x0, height=NOTE_H)
    g.group("3 · Train the LoRA", [en, tr, op, va, n3], "#8a5")
    # 4 · try it
    x = max(g.right(op), g.right(va)) + 100
    x_four, cond_ids, cond_text = x, [], ""
    if conditioning:  # the stock loaders -> Sample Conditioning, left of the Sample node
        sc, cond_ids, cond_text = _conditioning(g, conditioning, x, TOP)
        g.link(sc, 0, va, "conditioning")
        x = max(g.right(i) for i in cond_ids) + GAP
    sm = g.add("LTX2TrainSample", (x, TOP), prompt=prompt)
    if conditioning:
        g.link(sc, 0, sm, "conditioning")
    g.link(tr, 0, sm, "model")
    g.link(*L.vae, sm, "vae")
    g.link(*L.audio_vae, sm, "audio_vae")
    g.link(*L.clip, sm, "clip")
    four = [sm, *cond_ids]
    text = ("**Try it.** Sample with LoRA makes a video with sound from the trained model. Start the prompt "
            "with the trigger word (`sks`).") + (" " + cond_text if cond_text else "")
    if first_frame:
        li = g.add("LoadImage", (x, g.bottom(sm) + GAP + TITLE_H), image="first_frame.png")
        g.link(li, 0, sm, "first_frame")
        g.link(li, 0, va, "image")
        four.append(li)
        text += " Load Image: the first frame the video starts from (`ComfyUI/input/first_frame.png`)."
    four.append(g.note((x_four, y_note), text, width=g.right(sm) - x_four, height=NOTE_H))
    g.group("4 · Try your LoRA", four, "#a1309b")
    return g


WORKFLOWS = {
    "ltx2_lora_character_audio_video": dict(
        title="Character LoRA, video and voice (LTX-2)", recipe="Character", split=True, first_frame=False,
        mode="text_to_audio_video", makes="a person who looks and sounds like your clips",
        prompt="sks, a woman with short red hair looks into the camera and says \"hello, it's me\"; soft room tone."),
    "ltx2_lora_style": dict(
        title="Style LoRA (LTX-2)", recipe="Style", split=True, first_frame=False, mode="video_only",
        makes="any scene in the look of your clips",
        prompt="sks style, a harbour at dawn, fishing boats rock gently, the camera pans slowly right."),
    "ltx2_lora_motion": dict(
        title="Motion LoRA (LTX-2)", recipe="Motion", split=False, first_frame=False,
        mode="text_to_audio_video", makes="the movement of your clips (kept whole, no scene split)",
        prompt="sks move, a dancer spins twice and lands facing the camera; music plays."),
    "ltx2_lora_image_to_video": dict(
        title="Image to video LoRA (LTX-2)", recipe="Character", split=True, first_frame=True, mode="image_to_video",
        makes="videos that start from your picture",
        prompt="sks, the person in the picture turns and smiles; birds sing nearby."),
    "ltx2_lora_audio_only": dict(
        title="Sound LoRA, audio only (LTX-2)", recipe="Audio", split=True, first_frame=False, mode="audio_only",
        makes="sounds like the ones in your clips",
        prompt="sks sound, a heavy wooden door creaks open and slams shut in a stone hall."),
}

# the training modes' workflows (issue 17): each samples with its mode's conditioning through
# Sample Conditioning, fed by ComfyUI's stock loaders (and its core Canny node for control)
MODE_WORKFLOWS = {
    "ltx2_ic_lora_canny_control": dict(
        title="IC-LoRA control from Canny edges (LTX-2)", recipe="Style", split=True, first_frame=False,
        mode="v2v_ic_lora", conditioning="reference_canny", thumb="Control", folder="my_control_clips",
        canny_references="my_control_clips/clip.mp4",
        makes="videos that follow the edges of a control clip (IC-LoRA)",
        dataset_text="One long video `input/my_control_clips/clip.mp4`, loaded again by Load Video: Detect "
                     "Edges (Canny) makes its references in the graph, and Split Scenes cuts clip and edges at "
                     "the same cuts. Many clips? Put each one's edges beside it as `x.reference.mp4` instead "
                     "(and remove Load Video). ",
        prompt="sks, a woman in a red coat walks through a snowy street at night, lanterns glow."),
    "ltx2_video_extension": dict(
        title="Video extension LoRA (LTX-2)", recipe="Motion", split=True, first_frame=False,
        mode="video_extension", conditioning="prefix", thumb="Extension", folder="my_dataset",
        makes="how your clips go on: it continues the start of a clip",
        prompt="sks, the camera keeps moving forward along the forest path as birds call."),
    "ltx2_video_inpainting": dict(
        title="Video inpainting LoRA (LTX-2)", recipe="Style", split=True, first_frame=False,
        mode="video_inpainting", conditioning="inpaint", thumb="Inpaint", folder="my_inpaint_clips",
        makes="the masked part of a clip, filled the way your clips look",
        dataset_text="Each clip `x.mp4` has its mask beside it as `x.mask.png` or `x.mask.mp4` (white = "
                     "kept, black = what the LoRA learns to fill). ",
        prompt="sks, a quiet living room, a vase of flowers on the wooden table."),
    "ltx2_foley_video_to_audio": dict(
        title="Foley LoRA, video to sound (LTX-2)", recipe="Audio", split=True, first_frame=False,
        mode="v2a", conditioning="foley", thumb="Foley", folder="my_dataset",
        makes="the sound of a silent video, like the sound of your clips",
        prompt="sks sound, footsteps on gravel, a door closes, wind in the trees."),
    "ltx2_audio_restyle": dict(
        title="Voice restyle, audio to audio (LTX-2)", recipe="Audio", split=True, first_frame=False,
        mode="a2a_ic_lora", conditioning="reference_audio", thumb="Restyle", folder="my_voice_pairs",
        makes="a voice or sound remade in the style of your clips (audio IC-LoRA)",
        dataset_text="Each clip `x.mp4` (a video with sound) has its source sound beside it as "
                     "`x.reference_audio.wav`; the clip's own sound is what the LoRA learns to make. ",
        # sampled through ComfyUI's LTXV Reference Audio: train the reference where it puts it
        options=dict(audio_reference_positions="comfyui"),
        prompt="sks voice, a calm deep voice says \"welcome back\" in a small room."),
}
WORKFLOWS.update(MODE_WORKFLOWS)

# LTX-2.5 variants (split files): the same graphs with the LTX-2.5 loaders
WORKFLOWS_25 = {
    "ltx25_lora_character_audio_video": dict(WORKFLOWS["ltx2_lora_character_audio_video"],
                                             title="Character LoRA, video and voice (LTX-2.5)", ltx25=True),
}


TINY_CKPT = "ltx2-tiny-2.0.safetensors"
INSTALL_CACHE = "ltx2_install_check"
INSTALL = "ltx2_validate_install"
# the LTX-2.5 install check: the tiny 2.5 transformer (split like the real one)
TINY_TRANSFORMER_25 = "ltx2-tiny-2.5-transformer.safetensors"
INSTALL_CACHE_25 = "ltx25_install_check"
INSTALL_25 = "ltx25_validate_install"
INSTALLS = (INSTALL, INSTALL_25)
INSTALL_TITLES = {INSTALL: "Check my install (LTX-2, tiny model, 1 min)",
                  INSTALL_25: "Check my install (LTX-2.5, tiny model, 1 min)"}


def file_name(key: str) -> str:
    """The template's file name (no .json): ComfyUI's template browser shows it as the title."""
    spec = all_workflows().get(key)
    return spec["title"] if spec else INSTALL_TITLES[key]


def key_for_file(stem: str) -> str:
    """The workflow key of a shipped file name (the inverse of ``file_name``)."""
    for k in (*all_workflows(), *INSTALLS):
        if file_name(k) == stem:
            return k
    raise KeyError(stem)


def _install_graph(info: dict, loader: tuple[str, dict], cache: str, lora_name: str, how: str) -> Graph:
    g = Graph(info)
    ld, lc = _stack(g, 0, TOP, [loader, ("LTX2TrainLoadLatentCache", dict(cache_name=cache))])
    x = max(g.right(ld), g.right(lc)) + GAP
    tr, op, _ = train_nodes(g, (x, TOP), recipe="Character", model=(ld, 0), latents=(lc, 0), lora_name=lora_name,
                            steps=20, rank=4, learning_rate=1e-3, resume="none",
                            options=dict(precision="fp32", checkpoint_every=0))
    n = g.note((0, 60 + TITLE_H), "**Check my install.** First make the tiny model and cache: " + how +
               " Then Run: 20 training steps on the CPU (about a minute); the chart shows the loss falling "
               "and a LoRA file appears in `models/loras/ltx2`.", width=g.right(op), height=NOTE_H)
    g.group("Check my install", [ld, lc, tr, op, n], "#8a5")
    return g


def _install_check(info: dict) -> Graph:
    """Tiny checkpoint + tiny latent cache -> 20 training steps: about a minute on a CPU."""
    return _install_graph(info, ("CheckpointLoaderSimple", dict(ckpt_name=TINY_CKPT)), INSTALL_CACHE, "install_check",
                          "`python custom_nodes/comfyui-ltx2-lora-trainer/scripts/tiny_checkpoint.py --out "
                          "models/checkpoints/" + TINY_CKPT + " --cache output/ltx2_cache/" + INSTALL_CACHE +
                          "` (from the ComfyUI folder; scripts/quickstart.sh already did it).")


def _install_check_25(info: dict) -> Graph:
    """The LTX-2.5 install check: the tiny 2.5 transformer through Load Diffusion Model (as
    the real split file loads) + a tiny 2.5 latent cache -> 20 training steps."""
    return _install_graph(info, ("UNETLoader", dict(unet_name=TINY_TRANSFORMER_25, weight_dtype="default")),
                          INSTALL_CACHE_25, "install_check_ltx25",
                          "`python custom_nodes/comfyui-ltx2-lora-trainer/scripts/tiny_checkpoint.py --variant "
                          "ltx-2.5 --tiny-names --out models --cache output/ltx2_cache/" + INSTALL_CACHE_25 +
                          "` (from the ComfyUI folder; scripts/quickstart.sh already did it).")


def all_workflows() -> dict[str, dict]:
    """Every pipeline workflow's spec (2.0-style single file and LTX-2.5 split files)."""
    return {**WORKFLOWS, **WORKFLOWS_25}


def build(object_info: dict) -> dict[str, dict]:
    """Workflow key -> UI workflow."""
    out = {}
    for name, spec in all_workflows().items():
        kw = {k: v for k, v in spec.items() if k not in ("title", "makes", "thumb")}
        out[name] = _pipeline(object_info, **kw).ui(spec["title"], f"Train a LoRA that makes {spec['makes']}.")
    out[INSTALL] = _install_check(object_info).ui(INSTALL_TITLES[INSTALL], "A 1-minute CPU run on a tiny model.")
    out[INSTALL_25] = _install_check_25(object_info).ui(INSTALL_TITLES[INSTALL_25], "A 1-minute CPU run on a tiny model.")
    return out


# ---- thumbnails: what the workflow makes, drawn from small synthetic frames, with a big title

def _frame(kind: str, k: int, w: int, h: int):
    """Frame ``k`` of a tiny synthetic clip of ``kind`` (what the LoRA learns)."""
    import math

    from PIL import Image, ImageDraw

    if kind in ("Control", "Extension", "Inpaint", "Foley", "Restyle"):
        return _mode_frame(kind, k, w, h)
    im = Image.new("RGB", (w, h))
    d = ImageDraw.Draw(im)
    if kind == "Style":  # a harbour at dawn in flat painterly colours, panning right
        for y in range(h):
            c = int(255 * y / h)
            d.line([(0, y), (w, y)], fill=(250 - c // 3, 150 + c // 4, 110 + c // 2) if y < h * 0.55 else
                   (40 + c // 6, 70 + c // 5, 120 + c // 4))
        d.ellipse([w * 0.6 - k * 8, h * 0.25, w * 0.6 - k * 8 + 40, h * 0.25 + 40], fill=(255, 230, 160))
        for b in range(3):
            bx = (b * w // 3 + 30 - k * 14) % w
            d.polygon([(bx, h * 0.62), (bx + 50, h * 0.62), (bx + 40, h * 0.72), (bx + 10, h * 0.72)], fill=(60, 30, 30))
            d.line([(bx + 25, h * 0.62), (bx + 25, h * 0.38)], fill=(60, 30, 30), width=3)
        return im
    if kind == "Audio":  # a waveform of a door creak and slam
        d.rectangle([0, 0, w, h], fill=(24, 26, 34))
        mid = h / 2
        pts = [(x, mid + math.sin(x * 0.21 + k) * (h * 0.35) * math.exp(-((x / w - 0.25 - k * 0.18) ** 2) * 30)
                * (0.6 + 0.4 * math.sin(x * 1.7))) for x in range(w)]
        d.line(pts, fill=(255, 190, 60), width=2)
        return im
    # a person (Character / image to video) or a dancer (Motion) against a room
    d.rectangle([0, 0, w, h], fill=(70, 80, 98))
    d.rectangle([0, h * 0.7, w, h], fill=(96, 78, 64))
    cx = w / 2 + (math.sin(k * 1.6) * w * 0.25 if kind == "Motion" else 0)
    tilt = (k - 1.5) * 6 if kind != "Motion" else math.sin(k * 1.6) * 25
    d.polygon([(cx - 34, h * 0.95), (cx + 34, h * 0.95), (cx + 24 + tilt / 3, h * 0.5), (cx - 24 + tilt / 3, h * 0.5)],
              fill=(200, 60, 60))
    hx, hy, r = cx + tilt / 2, h * 0.36, h * 0.13
    d.ellipse([hx - r, hy - r, hx + r, hy + r], fill=(238, 200, 170))
    d.pieslice([hx - r - 3, hy - r - 5, hx + r + 3, hy + r * 0.3], 180, 360, fill=(200, 70, 30))  # red hair
    ex = hx + (k - 1.5) * 2
    d.ellipse([ex - 9, hy - 3, ex - 4, hy + 2], fill=(30, 30, 30))
    d.ellipse([ex + 4, hy - 3, ex + 9, hy + 2], fill=(30, 30, 30))
    if kind == "Motion":
        d.line([(cx - 24, h * 0.55), (cx - 60, h * 0.45 - tilt)], fill=(200, 60, 60), width=8)
        d.line([(cx + 24, h * 0.55), (cx + 60, h * 0.45 + tilt)], fill=(200, 60, 60), width=8)
    elif k % 2:  # speaking: an open mouth
        d.ellipse([hx - 6, hy + r * 0.45, hx + 6, hy + r * 0.75], fill=(120, 30, 40))
    return im


def _mode_frame(kind: str, k: int, w: int, h: int):
    """Thumbnail frames of the training modes' workflows, from the base drawings: the
    conditioning on the left frames, what the LoRA makes on the right ones."""
    from PIL import Image, ImageChops, ImageDraw, ImageFilter

    if kind == "Control":  # Canny edges of a person -> the person
        im = _frame("Character", k, w, h)
        if k < 2:
            edges = im.convert("L").filter(ImageFilter.FIND_EDGES).point(lambda v: 255 if v > 24 else 0)
            return Image.merge("RGB", [edges] * 3)
        return im
    if kind == "Extension":  # the given start, then the continuation (tinted)
        im = _frame("Motion", k, w, h)
        if k >= 2:
            im = ImageChops.blend(im, Image.new("RGB", (w, h), (90, 140, 255)), 0.18)
            ImageDraw.Draw(im).text((6, 4), "continued", fill=(255, 255, 255))
        return im
    if kind == "Inpaint":  # the mask over the clip, then the filled clip
        im = _frame("Style", k, w, h)
        if k < 2:
            over = Image.new("RGB", (w, h), (255, 60, 200))
            m = Image.new("L", (w, h), 0)
            ImageDraw.Draw(m).rectangle([w * 0.3, h * 0.3, w * 0.7, h * 0.75], fill=110)
            im = Image.composite(over, im, m)
        return im
    if kind == "Foley":  # a video, then its sound under it
        im = _frame("Character", k, w, h)
        if k >= 2:
            wave = _frame("Audio", k, w, h // 3)
            im.paste(wave, (0, h - h // 3))
        return im
    # Restyle: a plain voice, then the restyled one
    im = _frame("Audio", k, w, h)
    if k < 2:
        im = Image.merge("RGB", [im.convert("L")] * 3)
    return im


def thumbnail(ui: dict, path: Path, kind: str = "Character", first_frame: bool = False, install: bool = False) -> None:
    """What the workflow makes: four frames of a tiny synthetic clip of the kind of LoRA (the
    install check: a falling loss curve), with the title in large type."""
    from PIL import Image, ImageDraw

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from trainer_core.fonts import draw_text

    W, H = 640, 400
    img = Image.new("RGB", (W, H), (28, 30, 36))
    d = ImageDraw.Draw(img)
    title = ui["extra"]["ltx2_trainer"]["title"]
    name, _, variant = title.rpartition(" (")
    draw_text(d, (24, 18), name if name else title, fill=(245, 245, 245), size=34)
    draw_text(d, (24, 64), ("(" + variant) if name else "", fill=(150, 180, 240), size=20)
    fw, fh = 140, 105
    if install:
        d.rectangle([24, 110, W - 24, H - 70], fill=(20, 20, 24), outline=(80, 80, 90))
        import math
        pts = [(40 + i * (W - 100) / 60, 130 + (H - 220) * (1 - math.exp(-i / 12)) + 6 * math.sin(i * 1.3))
               for i in range(61)]
        d.line(pts, fill=(255, 190, 60), width=4)
        draw_text(d, (40, H - 60), "loss falls  ·  a LoRA file appears", fill=(200, 200, 200), size=22)
    else:
        for k in range(4):
            x = 24 + k * (fw + 10)
            im = _frame(kind, k, fw, fh)
            if first_frame and k == 0:
                im = _frame(kind, 0, fw, fh)
            img.paste(im, (x, 130))
            d.rectangle([x - 1, 129, x + fw, 130 + fh], outline=(90, 90, 100))
        if first_frame:
            draw_text(d, (24, 130 + fh + 8), "your picture  →  a video", fill=(150, 180, 240), size=18)
        desc = ui["extra"]["ltx2_trainer"].get("description", "")
        words, lines, line = desc.split(), [], ""
        for w_ in words:
            if len(line) + len(w_) > 40:
                lines.append(line)
                line = w_
            else:
                line = (line + " " + w_).strip()
        lines.append(line)
        for j, ln in enumerate(lines[:3]):
            draw_text(d, (24, 275 + 32 * j), ln, fill=(220, 220, 220), size=24)
    img.save(path, "JPEG", quality=88)


def object_info_from(source: str) -> dict:
    """``/object_info`` from a running ComfyUI (http://…) or a saved JSON file."""
    if source.startswith(("http://", "https://")):
        url = source.rstrip("/")
        if not url.endswith("/object_info"):
            url += "/object_info"
        with urllib.request.urlopen(url, timeout=60) as r:
            return json.loads(r.read())
    return json.loads(Path(source).read_text())


def main_to_api(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="make_workflows.py to-api",
                                 description="Convert a UI workflow (saved from ComfyUI) to the API prompt format.")
    ap.add_argument("input", help="a UI-format workflow .json")
    ap.add_argument("output", help="where to write the API-format prompt .json ('-' = stdout)")
    ap.add_argument("--object-info", required=True,
                    help="a running ComfyUI's URL (http://127.0.0.1:8188) or a saved /object_info JSON file")
    a = ap.parse_args(argv)
    ui = json.loads(Path(a.input).read_text())
    if "nodes" not in ui:
        raise SystemExit(f"{a.input}: not a UI workflow (no 'nodes'); an API prompt needs no conversion")
    info = object_info_from(a.object_info)
    missing = sorted({n["type"] for n in ui["nodes"] if n["type"] not in UI_ONLY and n["type"] not in info})
    if missing:
        raise SystemExit(f"{a.input}: node types this ComfyUI does not have: {', '.join(missing)} "
                         "(install the custom nodes, or point --object-info at the right server)")
    text = json.dumps(to_api(ui, info), indent=1) + "\n"
    if a.output == "-":
        sys.stdout.write(text)
    else:
        Path(a.output).write_text(text)
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("to-api", "to_api"):
        return main_to_api(argv[1:])
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8188")
    ap.add_argument("--object-info", default=None, help="a saved /object_info JSON instead of --url")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "example_workflows"))
    ap.add_argument("--only", default=None, help="comma-separated workflow keys to write (default: all)")
    a = ap.parse_args(argv)
    info = object_info_from(a.object_info or a.url)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    only = set(a.only.split(",")) if a.only else None
    specs = all_workflows()
    for key, ui in build(info).items():
        if only is not None and key not in only:
            continue
        name = file_name(key)
        (out / f"{name}.json").write_text(json.dumps(ui, indent=1, ensure_ascii=False) + "\n")
        spec = specs.get(key, {})
        thumbnail(ui, out / f"{name}.jpg", kind=spec.get("thumb", spec.get("recipe", "Character")),
                  first_frame=spec.get("first_frame", False), install=key in INSTALLS)
        print("wrote", out / f"{name}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
