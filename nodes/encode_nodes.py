"""Encode Latents: the dataset through ComfyUI's own LTX-2 VAEs and text encoder into the cache."""
from __future__ import annotations

from comfy_api.latest import io

from ._common import CAT_TRAIN, DatasetT, LatentsT, image_batch, make_progress, preview_ui


class EncodeLatents(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LTX2TrainEncodeLatents",
            display_name="Encode Latents",
            search_aliases=["lora latents", "latent cache", "ltx-2 lora"],
            category=CAT_TRAIN,
            description=(
                "Prepares the dataset for training: connect Bucket's dataset and the LTX-2 VAE, audio VAE "
                "and text encoder, and it saves everything training needs under output/ltx2_cache/"
                "<cache_name>. Run it once; later runs reuse what is there (only changed captions are "
                "redone), so you can train again with Load Latent Cache without the big models."),
            inputs=[
                DatasetT.Input("dataset", tooltip="From Bucket."),
                io.Vae.Input("vae", tooltip="The LTX-2 video VAE (Load Checkpoint's VAE output; for LTX-2.5 the video VAE file via Load VAE)."),
                io.Clip.Input("clip", tooltip="The LTX-2 text encoder (Gemma 3 12B via the LTX text encoder loader; for LTX-2.5 Gemma 4 12B with its projections via Load CLIP, type ltxv)."),
                io.Vae.Input("audio_vae", optional=True,
                             tooltip="The LTX-2 audio VAE (LTXV Audio VAE Loader). Leave empty for video-only training."),
                io.String.Input("trigger_word", default="", optional=True,
                                tooltip="Prepended to every caption (unless already there), e.g. 'sks person'."),
                io.String.Input("cache_name", default="my_dataset",
                                tooltip="Cache folder name under output/ltx2_cache/ (plain name, no folders)."),
            ],
            outputs=[
                LatentsT.Output(display_name="latents", tooltip="The latent cache, for Train LTX-2 LoRA."),
                io.Image.Output(display_name="preview",
                                tooltip="First frame of each bucket decoded back from its latent: what training sees."),
                io.String.Output(display_name="summary", tooltip="Encoded, reused and failed entries."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, dataset, vae, clip, audio_vae=None, trigger_word="", cache_name="my_dataset") -> io.NodeOutput:
        import torch

        import comfy.model_management as mm
        import folder_paths

        from ..trainer_core.encode import Encoders, encode_dataset
        from ..trainer_core.fsutil import safe_join
        from .vae_encode import encode_video as planned_encode
        from .vae_encode import summary_line

        name = safe_join(folder_paths.get_output_directory(), cache_name, allow_subdirs=False).name
        root = safe_join(folder_paths.get_output_directory(), f"ltx2_cache/{name}")

        video_runs = []  # how each clip was encoded, for the summary

        def encode_video(frames):
            px = torch.from_numpy(frames).float().div_(255.0)
            res = planned_encode(vae, px)  # on CUDA: whole or tiles planned from the free VRAM, one attempt
            if len(frames) > 1:  # not the first-frame latent
                video_runs.append(res)
            return res.latent[0]

        def encode_text(caption: str):
            tokens = clip.tokenize(caption)
            out = clip.encode_from_tokens(tokens, return_dict=True)
            return {"context": out["cond"][0]}

        encode_audio, rate = None, 16000
        if audio_vae is not None:
            rate = int(getattr(audio_vae, "audio_sample_rate", 44100))

            def encode_audio(pcm, r):
                wav = torch.from_numpy(pcm)[None]  # [1, C, N]
                return audio_vae.encode(wav.movedim(1, -1))[0]

        identity = {"vae": _identity(vae), "audio_vae": _identity(audio_vae) if audio_vae is not None else "",
                    "text": _identity(clip)}
        enc = Encoders(encode_video=encode_video, encode_text=encode_text, encode_audio=encode_audio,
                       audio_rate=rate, identity=identity)
        progress = make_progress(len(dataset.samples), cls)
        rep = encode_dataset(dataset, root, enc, trigger_word=trigger_word or "", progress=progress)
        if rep.samples == 0:
            raise ValueError("no sample could be encoded: " + rep.summary().replace("\n", "; "))
        img = image_batch(_bucket_preview(root, vae))
        mm.soft_empty_cache()
        text = rep.summary()
        how = summary_line(video_runs)
        if how:
            text += "\n" + how
        value = {"path": str(root), "trigger_word": trigger_word or "", "samples": rep.samples, "summary": text}
        return io.NodeOutput(value, img, text, ui=preview_ui(img, text, cls))


class LoadLatentCache(io.ComfyNode):
    """A latent cache written earlier by Encode Latents, without loading the VAEs or the text
    encoder again (train again with other settings, resume after a restart, run headless)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LTX2TrainLoadLatentCache",
            display_name="Load Latent Cache",
            search_aliases=["lora latents", "latent cache", "ltx-2 lora"],
            category=CAT_TRAIN,
            description=("Train again without the VAEs and text encoder: pick a cache that Encode Latents "
                         "saved (its cache_name) and connect 'latents' to the Train node."),
            inputs=[io.Combo.Input("cache_name", options=_cache_names(),
                                   tooltip="A cache folder in output/ltx2_cache (Encode Latents' cache_name).")],
            outputs=[
                LatentsT.Output(display_name="latents", tooltip="The latent cache, for Train LTX-2 LoRA."),
                io.String.Output(display_name="summary", tooltip="Samples, buckets and audio in the cache."),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, cache_name):
        import folder_paths

        from ..trainer_core.fsutil import safe_join

        m = safe_join(folder_paths.get_output_directory(), f"ltx2_cache/{cache_name}") / "manifest.json"
        return m.stat().st_mtime_ns if m.exists() else ""

    @classmethod
    def execute(cls, cache_name) -> io.NodeOutput:
        from collections import Counter

        import folder_paths

        from ..trainer_core.cache import CachedLatents
        from ..trainer_core.fsutil import safe_join

        name = safe_join(folder_paths.get_output_directory(), cache_name, allow_subdirs=False).name
        root = safe_join(folder_paths.get_output_directory(), f"ltx2_cache/{name}")
        if not (root / "manifest.json").is_file():
            raise FileNotFoundError(f"no latent cache at {root}: run Encode Latents with cache_name '{name}' first")
        data = CachedLatents(str(root))
        buckets = Counter(s.bucket for s in data.samples)
        audio = sum(1 for s in data.samples if s.audio)
        text = (f"{len(data)} samples ({audio} with audio) in {len(buckets)} bucket(s): "
                + ", ".join(f"{b} x{n}" for b, n in buckets.most_common()))
        paired = {k.replace("_", " "): sum(1 for s in data.samples if getattr(s, k)) for k in
                  ("reference", "reference_audio", "video_mask", "audio_mask")}
        if any(paired.values()):
            text += "; paired: " + ", ".join(f"{k} {n}" for k, n in paired.items() if n)
        value = {"path": str(root), "trigger_word": "", "samples": len(data), "summary": text}
        return io.NodeOutput(value, text, ui={"text": (text,)})


def _cache_names() -> list[str]:
    import os

    import folder_paths

    root = os.path.join(folder_paths.get_output_directory(), "ltx2_cache")
    try:
        names = sorted(e.name for e in os.scandir(root) if e.is_dir() and os.path.isfile(os.path.join(e.path, "manifest.json")))
    except OSError:
        names = []
    return names or ["(no cache yet: run Encode Latents)"]


def _identity(obj) -> str:
    """A stable name for a loaded model: its class and a fingerprint of a few weights."""
    import hashlib

    import torch

    h = hashlib.sha1(type(obj).__name__.encode())
    model = getattr(obj, "first_stage_model", None) or getattr(obj, "cond_stage_model", None) or obj
    try:
        for i, (k, v) in enumerate(model.state_dict().items()):
            if i >= 8:
                break
            h.update(k.encode())
            h.update(v.flatten()[:64].to(torch.float32).cpu().numpy().tobytes())
    except Exception:
        pass
    return h.hexdigest()[:16]


def _bucket_preview(root, vae):
    """First frame per bucket decoded from the cached first-frame latent, side by side."""
    import numpy as np

    from ..trainer_core.cache import LatentCache
    from ..trainer_core.preview import contact_sheet

    cache = LatentCache(root)
    seen, items = set(), []
    for s in cache.manifest.samples:
        if s["bucket"] in seen or not s.get("video"):
            continue
        seen.add(s["bucket"])
        lat = cache.get("video", s["video"])["first_frame"][None]
        img = vae.decode(lat.to(vae.vae_dtype if hasattr(vae, "vae_dtype") else lat.dtype))
        img = img.reshape(-1, *img.shape[-3:])[0].clamp(0, 1).mul(255).byte().cpu().numpy()
        items.append((np.ascontiguousarray(img), f"{s['bucket']}\n{s['key']}"))
    return contact_sheet(items, title="decoded from the cache")


ENCODE_NODES = [EncodeLatents, LoadLatentCache]
