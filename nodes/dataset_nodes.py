"""Load Clips, Split Scenes and Bucket: thin V3 nodes over trainer_core's dataset pipeline."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from comfy_api.latest import io

from ._common import (
    CAT_DATASET, TYPED_PATH_HINT, Clips, DatasetT, dataset_folder_options, image_batch,
    make_progress, preview_ui, resolve_dataset_folder,
)


class LoadClips(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LTX2TrainLoadClips",
            display_name="Load Clips",
            search_aliases=["lora dataset", "training videos", "ltx-2 lora"],
            category=CAT_DATASET,
            description=(
                "Step 1 of a LoRA: pick the folder (inside ComfyUI's input folder) that holds your "
                "training videos and pictures. The node shows the first frame of each clip and how many "
                "it found; connect 'clips' to Split Scenes. Captions already there (a .txt with the same "
                "name) are kept. Files it cannot read are listed in the summary with the reason."),
            inputs=[
                io.Combo.Input("folder", options=dataset_folder_options(), default=TYPED_PATH_HINT,
                               tooltip="A sub-folder of ComfyUI's input folder holding the clips."),
                io.String.Input("path", default="", optional=True,
                                tooltip="Or type a dataset folder path (absolute, or relative to the input "
                                        "folder). When set it wins over the list. '..' is not allowed."),
                io.Boolean.Input("recursive", default=True, advanced=True,
                                 tooltip="Also read media in sub-folders."),
                io.String.Input("reference_folder", default="", optional=True,
                                tooltip="IC-LoRA: a folder of reference clips (depth, pose, edges, the 'before' of a "
                                        "restyle) with the same names as the clips, any extension; relative paths "
                                        "are under the input folder. Also paired without it: clip.reference.mp4 "
                                        "beside clip.mp4, or dataset.json's reference_video column."),
                io.Image.Input("reference_frames", optional=True,
                               tooltip="IC-LoRA references made in the graph: frames from a preprocessor (e.g. "
                                       "Canny) over the clips' frames, in clip order, one per frame (a picture: "
                                       "one). They become the clips' references."),
                io.Combo.Input("masks", options=list(MASK_CHOICES), default="from files", optional=True,
                               tooltip="Inpainting masks (white = kept, black = learned to fill): from files "
                                       "(clip.mask.png / .mp4 beside the clip, or dataset.json's video_mask column), "
                                       "or generated per sample (seeded boxes or strokes over a stretch of frames) "
                                       "for clips that have none."),
                io.Combo.Input("audio_masks", options=list(AUDIO_MASK_CHOICES), default="from files", optional=True,
                               tooltip="Audio inpainting masks: from files (clip.audio_mask.wav: loud = kept; or "
                                       "dataset.json's audio_mask column), or generated spans to fill."),
                io.Int.Input("mask_seed", default=0, min=0, max=2**31 - 1, optional=True, advanced=True,
                             tooltip="Seed of the generated masks (each sample draws its own from it)."),
            ],
            outputs=[
                Clips.Output(display_name="clips", tooltip="The clip list, for Split Scenes, Caption or Bucket."),
                io.Image.Output(display_name="contact_sheet",
                                tooltip="First frame of every clip with its duration, size and audio."),
                io.String.Output(display_name="summary", tooltip="What was read and what was skipped, and why."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def fingerprint_inputs(cls, folder, path="", recursive=True, reference_folder="", reference_frames=None,
                           masks="from files", audio_masks="from files", mask_seed=0):
        """Re-run when files in the folder (or the reference folder) change (names, sizes, times)."""
        try:
            root = resolve_dataset_folder(folder, path)
            roots = [root] + ([resolve_dataset_folder(TYPED_PATH_HINT, reference_folder)] if reference_folder else [])
        except Exception as e:  # let execute report the error
            return f"error:{e}"
        h = hashlib.sha1(f"{masks}|{audio_masks}|{mask_seed}".encode())
        if reference_frames is not None:
            h.update(hashlib.sha1(reference_frames.cpu().numpy().tobytes()).digest())
        for dirpath, dirs, files in (w for r in roots for w in os.walk(r)):
            dirs.sort()
            if not recursive:
                dirs[:] = []
            for f in sorted(files):
                try:
                    st = os.stat(os.path.join(dirpath, f))
                except OSError:
                    continue
                h.update(f"{dirpath}/{f}:{st.st_size}:{st.st_mtime_ns}".encode())
        return h.hexdigest()

    @classmethod
    def execute(cls, folder, path="", recursive=True, reference_folder="", reference_frames=None,
                masks="from files", audio_masks="from files", mask_seed=0) -> io.NodeOutput:
        from ..trainer_core import media, pairs, preview

        root = resolve_dataset_folder(folder, path)
        ref_dir = None
        if (reference_folder or "").strip():
            ref_dir = resolve_dataset_folder(TYPED_PATH_HINT, reference_folder)
        progress = make_progress(1, cls)
        clipset = media.load_clips(str(root), recursive=recursive, progress=progress,
                                   exclude_dirs=[ref_dir] if ref_dir else [])
        pair_lines = []
        if reference_frames is not None and clipset.clips:
            import folder_paths
            import numpy as np

            frames = (reference_frames.clamp(0, 1) * 255).round().to(dtype=__import__("torch").uint8).cpu().numpy()
            if frames.shape[-1] == 1:
                frames = np.repeat(frames, 3, axis=-1)
            pair_lines += pairs.attach_reference_frames(clipset, frames[..., :3],
                                                        Path(folder_paths.get_temp_directory()) / "ltx2_refs")
        pair_lines += pairs.attach_pairs(clipset, ref_dir)
        if MASK_CHOICES.get(masks):
            pairs.set_generated_masks(clipset, "video_mask", MASK_CHOICES[masks], mask_seed)
            pair_lines.append(f"generated {MASK_CHOICES[masks]} masks (seed {mask_seed}) where a clip has no mask file")
        if AUDIO_MASK_CHOICES.get(audio_masks):
            pairs.set_generated_masks(clipset, "audio_mask", AUDIO_MASK_CHOICES[audio_masks], mask_seed)
            pair_lines.append(f"generated audio mask spans (seed {mask_seed}) where a clip has no audio mask file")
        if not clipset.clips:
            why = "; ".join(f"{os.path.basename(s.path)}: {s.reason}" for s in clipset.skipped[:5])
            raise ValueError(f"no readable clips or images in {root}" + (f" ({why})" if why else "")
                             + " — supported: mp4, mov, mkv, webm, gif, webp, png, jpg")
        sheet = preview.clips_contact_sheet(clipset)
        text = preview.clips_summary(clipset)
        if pair_lines:
            text += "\npairs: " + "; ".join(pair_lines)
        img = image_batch(sheet)
        return io.NodeOutput(clipset, img, text, ui=preview_ui(img, text, cls))


# Load Clips' mask choices -> the generated shape (None: files only)
MASK_CHOICES = {"from files": None, "generated boxes": "boxes", "generated strokes": "strokes"}
AUDIO_MASK_CHOICES = {"from files": None, "generated spans": "spans"}


class SplitScenes(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LTX2TrainSplitScenes",
            display_name="Split Scenes",
            search_aliases=["scene detect", "lora dataset", "ltx-2 lora"],
            category=CAT_DATASET,
            description=(
                "Cuts long clips into shots at each scene change, drops shots shorter than min_seconds and "
                "splits ones longer than max_seconds, sound included. Connect it after Load Clips; turn "
                "'enabled' off for motion LoRAs whose clips must stay in one piece."),
            inputs=[
                Clips.Input("clips", tooltip="From Load Clips."),
                io.Boolean.Input("enabled", default=True,
                                 tooltip="Off: each clip stays one continuous segment (only the length limits apply)."),
                io.Combo.Input("detector", options=["content", "adaptive", "dissolve"], default="content",
                               tooltip="content: cuts on large frame changes (hard cuts). adaptive: compares "
                                       "against a rolling average, fewer false cuts in fast motion. dissolve: "
                                       "hard cuts plus gradual transitions (cross-dissolves up to 0.8 s) that "
                                       "the other two miss."),
                io.Float.Input("threshold", default=0.0, min=0.0, max=100.0, step=0.5,
                               tooltip="Detector sensitivity; 0 uses the detector's default "
                                       "(content 27, adaptive 3, dissolve 20). Lower finds more cuts."),
                io.Float.Input("min_seconds", default=1.0, min=0.0, max=600.0, step=0.1,
                               tooltip="Scenes shorter than this are dropped."),
                io.Float.Input("max_seconds", default=10.0, min=0.0, max=3600.0, step=0.5,
                               tooltip="Longer scenes are cut into even chunks no longer than this (0: no limit)."),
            ],
            outputs=[
                Clips.Output(display_name="clips", tooltip="The clip list with segments."),
                io.Image.Output(display_name="scene_sheet", tooltip="First frame of each segment."),
                io.String.Output(display_name="summary", tooltip="Segments found per clip."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, clips, enabled=True, detector="content", threshold=0.0, min_seconds=1.0,
                max_seconds=10.0) -> io.NodeOutput:
        from ..trainer_core import preview, scenes

        progress = make_progress(len(clips.clips), cls)
        out = scenes.split_scenes(clips, detector=detector, threshold=threshold or None,
                                  min_len=min_seconds, max_len=max_seconds, enabled=enabled,
                                  progress=progress)
        if not out.segments:
            raise ValueError(f"no segment is at least {min_seconds:g} s long; lower min_seconds "
                             "or turn scene splitting off")
        sheet = preview.segments_contact_sheet(out)
        text = preview.segments_summary(out)
        img = image_batch(sheet)
        return io.NodeOutput(out, img, text, ui=preview_ui(img, text, cls))


class Bucket(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        from ..trainer_core.buckets import DEFAULT_PRESET, PRESETS

        return io.Schema(
            node_id="LTX2TrainBucket",
            display_name="Bucket",
            search_aliases=["lora dataset", "resolution buckets", "ltx-2 lora"],
            category=CAT_DATASET,
            description=(
                "Fits every shot to a size and length LTX-2 can train on, and shows what training will "
                "see: each sample cropped to its size. Read the report before training: it lists clips "
                "that are too short, silent, static, too small or without a caption. Connect it after "
                "Caption and before Encode Latents."),
            inputs=[
                Clips.Input("clips", tooltip="From Load Clips, Split Scenes or Caption."),
                io.Combo.Input("preset", options=[*PRESETS, "custom"], default=DEFAULT_PRESET,
                               tooltip="Bucket set. 'custom' uses the list below."),
                io.String.Input("buckets", default="768x512x121;512x768x121", optional=True,
                                tooltip="Custom buckets as WxHxF separated by ';' (used when preset is 'custom')."),
                io.Float.Input("target_fps", default=24.0, min=0.0, max=120.0, step=1.0,
                               tooltip="Frame rate of training samples, so durations are consistent "
                                       "(LTX-2 is trained at 24-25 fps). 0 keeps each clip's own rate."),
                io.Boolean.Input("audio", default=True,
                                 tooltip="Audio-video training planned: flag clips without an audio track."),
                io.Float.Input("static_threshold", default=1.0, min=0.0, max=50.0, step=0.1, advanced=True,
                               tooltip="Segments whose mean frame-to-frame change (0-255) is below this are "
                                       "flagged as nearly static."),
                io.Combo.Input("reference_scale", options=["1", "2", "4"], default="1", optional=True,
                               tooltip="IC-LoRA: the reference's size as a fraction of the target's (1/2, 1/4: "
                                       "fewer tokens, faster; the official scaled references). A pair stays in "
                                       "one bucket, its reference at the scaled size."),
            ],
            outputs=[
                DatasetT.Output(display_name="dataset", tooltip="The bucketed dataset, for Encode Latents."),
                io.String.Output(display_name="report",
                                 tooltip="Inspection report: counts per bucket and flagged clips."),
                io.Image.Output(display_name="gallery",
                                tooltip="What training will see: each sample's first frame, cropped to its bucket."),
            ],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,  # runs on its own too: inspect a dataset before encoding it
        )

    @classmethod
    def validate_inputs(cls, buckets=None):
        """Checks the custom bucket list before anything runs.

        Only ``buckets`` is declared on purpose: ComfyUI hands a ``validate_inputs`` the
        inputs it names (all of them with ``**kwargs``), skips its own min/max/list checks
        for exactly those, and reports a failure once per named input. Naming ``buckets``
        alone keeps the range checks of target_fps and the others, and puts the message on
        the input it is about. A list that is there is checked whatever the preset (it is
        what 'custom' would use); an empty one is refused by execute when preset is custom.
        """
        from ..trainer_core.buckets import BucketError, parse_buckets

        if buckets is None or not str(buckets).strip():  # linked (not known yet) or empty
            return True
        try:
            parse_buckets(buckets)
        except BucketError as e:
            return f"{e} (the bucket list is what preset 'custom' uses: fix it, or clear it)"
        return True

    @classmethod
    def execute(cls, clips, preset, buckets="", target_fps=24.0, audio=True,
                static_threshold=1.0, reference_scale="1") -> io.NodeOutput:
        from ..trainer_core import buckets as bk
        from ..trainer_core import preview

        from ..trainer_core.media import Cancelled
        from ._common import interrupted

        spec = buckets if preset == "custom" else bk.PRESETS[preset]
        blist = bk.parse_buckets(spec)
        n = len(clips.all_segments())
        progress = make_progress(n, cls)
        progress(0, n, "measuring motion and assigning buckets")
        try:  # cancel is checked per segment (progress) and inside each clip's decode (should_stop)
            ds, report = bk.build_dataset(clips, blist, target_fps=target_fps, audio_planned=audio,
                                          static_threshold=static_threshold,
                                          measure_motion=bk.motion_measurer(clips, should_stop=interrupted),
                                          progress=progress, reference_scale=int(reference_scale))
        except Cancelled:
            import comfy.model_management

            comfy.model_management.throw_exception_if_processing_interrupted()
            raise
        progress(n, n)
        text = report.summary()
        if not ds.samples:
            raise ValueError("no segment fits any bucket: " + text.replace("\n", "; ")
                             + " — add shorter buckets (e.g. 768x512x49) or longer clips")
        ds.settings["report"] = report.to_dict()
        sheet = preview.dataset_gallery(ds, report)
        img = image_batch(sheet)
        # the node shows the gallery (web/js/ltx2_gallery.js) and its summary: the gallery
        # image goes to the output only, not as a second picture under the live gallery
        ui = {"text": (text,)}
        g = gallery_payload(ds, progress)
        ui["ltx2_gallery"] = [g]
        from . import live

        live.set_gallery(progress.node_id, g)  # for a page reloaded later
        return io.NodeOutput(ds, text, img, ui=ui)


GALLERY_SUBFOLDER = "ltx2_gallery"


def gallery_payload(ds, progress) -> dict:
    """Thumbnails and playable sample clips in ComfyUI's temp folder, for the web gallery."""
    import folder_paths

    from ..trainer_core.gallery import build_gallery

    folder = Path(folder_paths.get_temp_directory()) / GALLERY_SUBFOLDER
    g = build_gallery(ds, folder, max_items=48,
                      progress=lambda i, k: progress(i, k, f"gallery: sample clip {i}/{k}"))
    g.update(subfolder=GALLERY_SUBFOLDER, type="temp")
    return g


DATASET_NODES = [LoadClips, SplitScenes, Bucket]
