"""Caption: local, audio-aware captions between Split Scenes and Bucket."""
from __future__ import annotations

import os

from comfy_api.latest import io

from ._common import CAT_DATASET, Clips, image_batch, make_progress, preview_ui

FOLDER = "captioners"
NO_MODEL = "(put a model folder in models/captioners)"


def register_folder() -> list[str]:
    """Register ComfyUI's ``models/captioners`` folder (Hugging Face model folders)."""
    import folder_paths

    default = os.path.join(folder_paths.models_dir, FOLDER)
    if FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[FOLDER] = ([default], set())
    return list(folder_paths.folder_names_and_paths[FOLDER][0])


def model_options() -> list[str]:
    names = []
    for root in register_folder():
        try:
            names += sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
        except OSError:
            continue
    return names or [NO_MODEL]


def model_path(name: str) -> str:
    from ..trainer_core.fsutil import safe_join

    if not name or name == NO_MODEL:
        raise ValueError("no captioning model: download one (e.g. Qwen/Qwen2.5-Omni-7B, or Qwen/Qwen2.5-VL-7B-Instruct "
                         f"for vision-only captions) into {register_folder()[0]}/<name>/ and pick it here")
    for root in register_folder():
        p = safe_join(root, name, allow_subdirs=False)
        if p.is_dir():
            return str(p)
    return str(safe_join(register_folder()[0], name, allow_subdirs=False))


class Caption(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        from ..trainer_core.caption import DEFAULT_PROMPT

        return io.Schema(
            node_id="LTX2TrainCaption",
            display_name="Caption",
            search_aliases=["auto caption", "lora dataset", "ltx-2 lora"],
            category=CAT_DATASET,
            description=(
                "Writes a caption for every shot with a captioning model on your machine (put a Qwen Omni "
                "folder in models/captioners; it hears the sound too). Captions are saved as .txt files "
                "beside the clips: edit them and run again, they are kept unless 'overwrite' is on. Set "
                "trigger_word to the word your prompts will use for the LoRA (e.g. 'sks')."),
            inputs=[
                Clips.Input("clips", tooltip="From Split Scenes (or Load Clips)."),
                io.Combo.Input("model", options=model_options(),
                               tooltip="A Hugging Face model folder in ComfyUI/models/captioners."),
                io.Combo.Input("precision", options=["bf16", "8-bit", "4-bit"], default="bf16",
                               tooltip="bf16, or 8-/4-bit through bitsandbytes (CUDA) to fit smaller cards "
                                       "(Omni 7B in 8-bit: about 10 GB instead of 17, captions about 5× slower)."),
                io.String.Input("prompt", multiline=True, default=DEFAULT_PROMPT,
                                tooltip="What to ask the model. With a vision-only model the default asks about "
                                        "the picture only (empty = the family's default)."),
                io.String.Input("trigger_word", default="", tooltip="Put at the start of every caption."),
                io.Boolean.Input("overwrite", default=False,
                                 tooltip="Re-caption segments that already have a caption."),
                io.Int.Input("frames", default=8, min=2, max=64, advanced=True,
                             tooltip="Frames sampled evenly over each segment."),
                io.Int.Input("max_side", default=448, min=112, max=1344, step=28, advanced=True,
                             tooltip="Longest side of the frames given to the model (pixels)."),
                io.Int.Input("max_words", default=200, min=10, max=1000, advanced=True,
                             tooltip="Captions are cut to this many words (at a sentence end when possible)."),
            ],
            outputs=[
                Clips.Output(display_name="clips", tooltip="The clip list with a caption on every segment."),
                io.Image.Output(display_name="caption_sheet", tooltip="Thumbnail and caption of each segment."),
                io.String.Output(display_name="summary", tooltip="Captioned, kept and failed segments."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def fingerprint_inputs(cls, clips, **kw):
        return float("nan")  # captions on disk may have been edited by hand: always look again

    @classmethod
    def execute(cls, clips, model, precision="bf16", prompt="", trigger_word="", overwrite=False, frames=8,
                max_side=448, max_words=200) -> io.NodeOutput:
        import comfy.model_management as mm
        import folder_paths

        from ..trainer_core import caption as cap
        from ..trainer_core import media, preview

        path = model_path(model)
        state: dict = {}

        def load():
            mm.unload_all_models()  # the captioner needs the memory the diffusion models hold
            mm.soft_empty_cache()
            state["c"] = cap.Captioner.load(path, precision, str(mm.get_torch_device()))
            return state["c"]

        if not os.path.isdir(path):
            cap.check_model_dir(path)  # raises with the missing-folder message
        n = len(clips.segments) if clips.segments else len(clips.clips)
        progress = make_progress(n, cls)
        roots = [folder_paths.get_input_directory(), folder_paths.get_output_directory(),
                 folder_paths.get_temp_directory()]
        fallback = os.path.join(folder_paths.get_output_directory(), "ltx2_captions")
        from ..trainer_core.caption import DEFAULT_PROMPT

        try:
            out, rep = cap.caption_clips(
                clips, None, prompt="" if prompt.strip() == DEFAULT_PROMPT else prompt.strip(),
                trigger=trigger_word, overwrite=overwrite, n_frames=frames, max_side=max_side, max_words=max_words,
                writable_roots=roots, fallback_root=fallback, progress=progress, load=load)
        finally:
            if "c" in state:
                del state["c"]
                mm.soft_empty_cache()
        entries = []
        for seg in out.segments:
            clip = out.clips[seg.clip]
            try:
                thumb = media.frames_at(clip.path, [seg.start + min(0.5, seg.duration / 2)],
                                        size=_thumb_size(clip))[0]
            except Exception:
                continue
            entries.append((thumb, seg.key(out.clips), seg.caption or ""))
        img = image_batch(preview.caption_sheet(entries) if entries else _blank())
        text = rep.summary()
        return io.NodeOutput(out, img, text, ui=preview_ui(img, text, cls))


def _thumb_size(clip) -> tuple[int, int]:
    s = 192 / max(clip.width, clip.height, 1)
    return max(2, int(clip.width * s) // 2 * 2), max(2, int(clip.height * s) // 2 * 2)


def _blank():
    import numpy as np

    return np.zeros((64, 64, 3), dtype=np.uint8)


CAPTION_NODES = [Caption]
