"""Sample with LoRA: an audio-video preview through ComfyUI's own LTX-2 sampling path.

The node runs exactly the stock LTX-2 text/image-to-video graph's first stage — LoRAs via
LoraLoaderModelOnly, LTXVConditioning, EmptyLTXVLatentVideo (+ LTXVImgToVideoInplace for a
first frame), LTXVEmptyLatentAudio, LTXVConcatAVLatent, CFGGuider, LTXVScheduler,
KSamplerSelect, RandomNoise, SamplerCustomAdvanced, LTXVSeparateAVLatent, VAEDecode,
LTXVAudioVAEDecode, CreateVideo — by calling those nodes in-process, so its result equals
what the stock workflow gives with the same LoRA, settings and seed.
"""
from __future__ import annotations

from typing import Optional

from comfy_api.latest import io

from ._common import CAT_SAMPLE, make_progress

NONE = "None"
SAMPLERS_DEFAULT = "euler_ancestral"


def _lora_options() -> list[str]:
    import folder_paths

    try:
        return [NONE] + folder_paths.get_filename_list("loras")
    except Exception:
        return [NONE]


def _sampler_options() -> list[str]:
    import comfy.samplers

    return list(comfy.samplers.SAMPLER_NAMES)


def _result(out):
    """A node's outputs, from a V3 NodeOutput or a V1 tuple."""
    return out.result if hasattr(out, "result") else out


CONDITIONING_TYPE = io.Custom("LTX2_SAMPLE_CONDITIONING")
MASK_WHITE = ("regenerate", "keep")
REFERENCE_SCALES = ("from LoRA", "1", "2", "4")


def _clip_8n1(frames, limit: Optional[int] = None):
    """The first 8·n + 1 frames (at most ``limit``): what the LTX-2 VAE encodes whole."""
    n = frames.shape[0] if limit is None else min(frames.shape[0], limit)
    return frames[: (n - 1) // 8 * 8 + 1]


def parse_region(text: str) -> Optional[tuple]:
    """'y1, x1, y2, x2' in pixels of the output (the training mode's spatial_crop) -> a tuple."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        vals = tuple(int(v) for v in text.replace(";", ",").split(","))
    except ValueError:
        vals = ()
    if len(vals) != 4 or vals[0] >= vals[2] or vals[1] >= vals[3] or min(vals) < 0:
        raise ValueError(f"region {text!r}: write four pixel numbers 'y1, x1, y2, x2' (top, left, bottom, right "
                         "of the part kept from source_video), e.g. '0, 64, 320, 448'")
    return vals


def region_noise_mask(region: tuple, latent_shape, scale: tuple):
    """[1, 1, F, h, w] noise mask of an outpainting region: 0 (kept) on the latent cells the
    pixel rectangle covers — the training mode's own mapping (floor division, clamped) — and 1
    (generated) elsewhere."""
    import torch

    from ..trainer_core.modes import spatial_crop_mask

    f, h, w = (int(v) for v in latent_shape[2:])
    keep = spatial_crop_mask((f, h, w), region, scale).view(1, 1, f, h, w)
    return (~keep).to(torch.float32)


def pixel_mask(mask, frames: int):
    """A MASK ([F, H, W], [H, W]) cut to the output's frames; Set Latent Noise Mask's layout."""
    m = mask if mask.ndim == 3 else mask.reshape((-1,) + tuple(mask.shape[-2:]))
    return m[:frames] if m.shape[0] > 1 else m


def side_by_side(reference, images):
    """Reference | result, the reference resized to the result's size and its frames padded with
    its last frame (IC-LoRA's include_in_output)."""
    import torch

    import comfy.utils

    F, H, W = images.shape[:3]
    ref = comfy.utils.common_upscale(reference[:F].movedim(-1, 1), W, H, "bilinear", "center").movedim(1, -1)
    if ref.shape[0] < F:
        ref = torch.cat([ref, ref[-1:].expand(F - ref.shape[0], -1, -1, -1)], 0)
    return torch.cat([ref[..., :3].to(images), images], dim=2)


def sample_av(model, positive, negative, vae, audio_vae, *, width: int, height: int, frames: int, fps: int,
              seed: int, steps: int, cfg: float, sampler_name: str = SAMPLERS_DEFAULT, max_shift: float = 2.05,
              base_shift: float = 0.95, first_frame=None, first_frame_strength: float = 1.0, conditioning=None,
              return_latents: bool = False):
    """The stock LTX-2 first-stage sampling, with each training mode's conditioning made by
    ComfyUI's own nodes (``conditioning``: a Sample Conditioning dict):

    - ``reference_video`` (IC-LoRA): LTXVAddGuide at frame 0, strength 1, with the LoRA's
      Get IC-LoRA Parameters (or ``reference_scale`` as its reference_downscale_factor);
      LTXVCropGuides drops the guide before decoding;
    - ``reference_audio`` (audio IC-LoRA): LTXVReferenceAudio (identity guidance off);
    - ``source_video``: LTXVImgToVideoInplace at strength 1 — a shorter clip is a prefix
      (extension), a clip as long as the output is kept whole (video → audio); with ``mask``
      (white = regenerate) Set Latent Noise Mask makes it inpainting, with ``region`` the part
      outside the rectangle is regenerated (outpainting);
    - ``audio`` (audio → video): LTXVAudioVAEEncode with a zero noise mask, swapped into the AV
      latent by LTXVConcatAVLatent (fitted to the video's length).

    Returns (images [F, H, W, 3], audio dict, fps) — and the sampled AV latent dict (guides
    still in) when ``return_latents``. With ``include_in_output`` the images are reference |
    result side by side.
    """
    import torch

    import nodes as comfy_nodes
    from comfy_extras import nodes_custom_sampler as cs
    from comfy_extras import nodes_lt as lt
    from comfy_extras import nodes_lt_audio as lta

    c = conditioning or {}
    pos, neg = _result(lt.LTXVConditioning.execute(positive, negative, float(fps)))
    if c.get("reference_audio") is not None:
        model, pos, neg = _result(lt.LTXVReferenceAudio.execute(model, pos, neg, c["reference_audio"], audio_vae,
                                                                 0.0, 0.0, 1.0))
    (vlat,) = _result(lt.EmptyLTXVLatentVideo.execute(width, height, frames, 1))
    if first_frame is not None:
        (vlat,) = _result(lt.LTXVImgToVideoInplace.execute(vae, first_frame, vlat, first_frame_strength))
    source = c.get("source_video")
    if source is not None:
        (vlat,) = _result(lt.LTXVImgToVideoInplace.execute(vae, _clip_8n1(source, frames), vlat, 1.0))
        if c.get("mask") is not None:
            (vlat,) = comfy_nodes.SetLatentNoiseMask().set_mask(vlat, pixel_mask(c["mask"], frames))
        elif c.get("region"):
            vlat = dict(vlat, noise_mask=region_noise_mask(c["region"], vlat["samples"].shape,
                                                           vae.downscale_index_formula))
    ref = c.get("reference_video")
    if ref is not None:
        params = None
        if c.get("reference_scale"):  # picked on Sample Conditioning
            params = {"reference_downscale_factor": int(c["reference_scale"])}
        elif hasattr(model, "get_attachment"):  # the LoRA file's metadata, as ComfyUI reads it
            (params,) = _result(lt.GetICLoRAParameters.execute(model))
        pos, neg, vlat = _result(lt.LTXVAddGuide.execute(pos, neg, vae, vlat, _clip_8n1(ref, frames), 0,
                                                         float(c.get("reference_strength", 1.0)),
                                                         iclora_parameters=params))
    (alat,) = _result(lta.LTXVEmptyLatentAudio.execute(frames, int(fps), 1, audio_vae))
    (av,) = _result(lt.LTXVConcatAVLatent.execute(vlat, alat))
    if c.get("audio") is not None:
        (enc,) = _result(lta.LTXVAudioVAEEncode.execute(c["audio"], audio_vae))
        s = enc["samples"]
        (enc,) = comfy_nodes.SetLatentNoiseMask().set_mask(enc, torch.zeros(s.shape[0], s.shape[2], s.shape[3]))
        (av,) = _result(lt.LTXVConcatAVLatent.execute(av, enc))
    (guider,) = _result(cs.CFGGuider.execute(model, pos, neg, cfg))
    (sigmas,) = _result(lt.LTXVScheduler.execute(steps, max_shift, base_shift, True, 0.1, latent=av))
    (sampler,) = _result(cs.KSamplerSelect.execute(sampler_name))
    (noise,) = _result(cs.RandomNoise.execute(seed))
    out = _result(cs.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas, av))[0]
    v, a = _result(lt.LTXVSeparateAVLatent.execute(out))
    if ref is not None:
        _, _, v = _result(lt.LTXVCropGuides.execute(pos, neg, v))
    (images,) = comfy_nodes.VAEDecode().decode(vae, v)
    (audio,) = _result(lta.LTXVAudioVAEDecode.execute(a, audio_vae))
    if ref is not None and c.get("include_in_output"):
        images = side_by_side(ref, images)
    if return_latents:
        return images, audio, fps, out
    return images, audio, fps


def encode_prompt(clip, text: str):
    import nodes as comfy_nodes

    return comfy_nodes.CLIPTextEncode().encode(clip, text)[0]


class SampleWithLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        lora = _lora_options()
        return io.Schema(
            node_id="LTX2TrainSample",
            display_name="Sample with LoRA",
            search_aliases=["lora sample", "test lora", "ltx-2 lora"],
            category=CAT_SAMPLE,
            description=(
                "Try your LoRA: connect the Train node's model, write a prompt that starts with the trigger "
                "word, and it makes a short video with sound and saves it as an mp4 in the output folder. "
                "Same result as ComfyUI's LTX-2 workflow with the LoRA loaded by Load LoRA."),
            inputs=[
                io.Model.Input("model", tooltip="An LTX-2 model: the Train node's output or any loaded LTX-2 model."),
                io.Vae.Input("vae", tooltip="The LTX-2 video VAE (Load Checkpoint; for LTX-2.5 the video VAE file via Load VAE)."),
                io.Vae.Input("audio_vae", tooltip="The LTX-2 audio VAE (LTXV Audio VAE Loader)."),
                io.String.Input("prompt", multiline=True, default="",
                                tooltip="What happens, what it looks like and what it sounds like, in order. "
                                        "Start with the trigger word when the LoRA has one."),
                io.String.Input("negative_prompt", multiline=True,
                                default="blurry, low quality, still frame, frames, watermark, overlay, titles, "
                                        "has blurbox, has subtitles",
                                tooltip="What to steer away from (the stock LTX-2 workflow's negative prompt)."),
                io.Clip.Input("clip", optional=True, tooltip="The LTX-2 text encoder (LTXAV Text Encoder Loader); "
                                                             "not needed when conditioning is connected."),
                io.Conditioning.Input("positive", optional=True, tooltip="Instead of prompt + clip."),
                io.Conditioning.Input("negative", optional=True, tooltip="Instead of negative_prompt + clip."),
                io.Image.Input("first_frame", optional=True, tooltip="Image → video: the first frame."),
                CONDITIONING_TYPE.Input("conditioning", optional=True,
                                        tooltip="What the LoRA's training mode conditions on (IC-LoRA reference, "
                                                "extension prefix, inpainting mask, audio…): a Sample "
                                                "Conditioning node."),
                io.Combo.Input("lora_1", options=lora, default=NONE, tooltip="An extra LoRA to stack (optional)."),
                io.Float.Input("strength_1", default=0.8, min=-4.0, max=4.0, step=0.05,
                               tooltip="Strength of lora_1 (0.5–0.9 typical)."),
                io.Combo.Input("lora_2", options=lora, default=NONE, tooltip="A second extra LoRA (optional)."),
                io.Float.Input("strength_2", default=0.8, min=-4.0, max=4.0, step=0.05,
                               tooltip="Strength of lora_2."),
                io.Int.Input("width", default=768, min=64, max=4096, step=32, tooltip="Width (multiple of 32)."),
                io.Int.Input("height", default=512, min=64, max=4096, step=32, tooltip="Height (multiple of 32)."),
                io.Int.Input("frames", default=97, min=9, max=1025, step=8, tooltip="8·n + 1 frames."),
                io.Int.Input("fps", default=24, min=1, max=120, tooltip="Frame rate of the video and its sound."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Noise seed: the same seed gives the same sample."),
                io.Int.Input("steps", default=20, min=1, max=200, tooltip="Sampling steps (20 = the stock workflow)."),
                io.Float.Input("cfg", default=4.0, min=0.0, max=30.0, step=0.1,
                               tooltip="Classifier-free guidance (4 = the stock workflow)."),
                io.Combo.Input("sampler_name", options=_sampler_options(), default=SAMPLERS_DEFAULT, advanced=True,
                               tooltip="Sampler (euler_ancestral = the stock workflow)."),
                io.String.Input("filename_prefix", default="ltx2_samples/sample", advanced=True,
                                tooltip="Name of the mp4 inside ComfyUI's output folder (numbered)."),
            ],
            outputs=[
                io.Video.Output(display_name="video", tooltip="Frames, sound and frame rate."),
                io.Audio.Output(display_name="audio", tooltip="The sound track."),
                io.Image.Output(display_name="images", tooltip="The frames."),
            ],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, model, vae, audio_vae, prompt="", negative_prompt="", clip=None, positive=None, negative=None,
                first_frame=None, conditioning=None, lora_1=NONE, strength_1=0.8, lora_2=NONE, strength_2=0.8, width=768, height=512,
                frames=97, fps=24, seed=0, steps=20, cfg=4.0, sampler_name=SAMPLERS_DEFAULT,
                filename_prefix="ltx2_samples/sample") -> io.NodeOutput:
        import os
        from fractions import Fraction

        import folder_paths
        import nodes as comfy_nodes
        from comfy_api.latest import InputImpl, Types, ui

        from ..trainer_core.fsutil import safe_join

        if (frames - 1) % 8:
            raise ValueError(f"frames must be 8·n + 1 (e.g. {((frames - 1) // 8) * 8 + 1} or "
                             f"{((frames - 1) // 8 + 1) * 8 + 1}), not {frames}")
        progress = make_progress(3, cls)
        m = model
        for name, strength in ((lora_1, strength_1), (lora_2, strength_2)):
            if name and name != NONE and strength != 0:
                m = comfy_nodes.LoraLoaderModelOnly().load_lora_model_only(m, name, strength)[0]
        if positive is None or negative is None:
            if clip is None:
                raise ValueError("connect the LTX-2 text encoder to 'clip' (or positive/negative conditioning)")
            positive = positive if positive is not None else encode_prompt(clip, prompt)
            negative = negative if negative is not None else encode_prompt(clip, negative_prompt)
        progress(1, 3, "sampling")
        images, audio, _ = sample_av(m, positive, negative, vae, audio_vae, width=width, height=height,
                                     frames=frames, fps=fps, seed=seed, steps=steps, cfg=cfg,
                                     sampler_name=sampler_name, first_frame=first_frame,
                                     conditioning=conditioning)
        progress(2, 3, "saving")
        video = InputImpl.VideoFromComponents(Types.VideoComponents(images=images, audio=audio,
                                                                    frame_rate=Fraction(int(fps))))
        out_dir = folder_paths.get_output_directory()
        safe_join(out_dir, filename_prefix)  # refuses '..' and absolute names
        full_folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, out_dir, int(images.shape[2]), int(images.shape[1]))
        file = f"{filename}_{counter:05}_.mp4"
        tmp = os.path.join(full_folder, f".{file}.part.mp4")
        video.save_to(tmp, format=Types.VideoContainer.MP4, codec=Types.VideoCodec.AUTO)
        os.replace(tmp, os.path.join(full_folder, file))
        progress(3, 3)
        return io.NodeOutput(video, audio, images,
                             ui=ui.PreviewVideo([ui.SavedResult(file, subfolder, io.FolderType.output)]))


class SampleConditioning(io.ComfyNode):
    """What a LoRA of each training mode is sampled with, gathered for Sample with LoRA and the
    Train node's validation: nothing here runs a model; Sample with LoRA hands each piece to
    ComfyUI's own LTX-2 conditioning node (see ``sample_av``)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LTX2TrainSampleConditioning",
            display_name="Sample Conditioning",
            search_aliases=["ic-lora reference", "inpaint mask ltx", "video extension", "foley", "ltx-2 guide"],
            category=CAT_SAMPLE,
            description=(
                "What your LoRA's training mode starts from when it samples: a reference video (IC-LoRA: "
                "control, restyle), a first part of a clip to continue (extension), a clip and a mask "
                "(inpainting) or a region (outpainting), a video to add sound to (foley), a sound track to "
                "make video for, or a reference sound (voice/audio restyle). Connect it to Sample with "
                "LoRA's conditioning and to the Train node's validation_conditioning."),
            inputs=[
                io.Image.Input("reference_video", optional=True,
                               tooltip="IC-LoRA: the reference clip (e.g. Canny edges, depth, a low-res or "
                                       "blurred clip) — added as an LTX-2 guide, kept clean."),
                io.Combo.Input("reference_scale", options=list(REFERENCE_SCALES), default=REFERENCE_SCALES[0],
                               tooltip="IC-LoRA trained on references at 1/2 or 1/4 of the target's size (Bucket's "
                                       "reference_scale): 'from LoRA' reads it from the LoRA file's metadata "
                                       "(Get IC-LoRA Parameters), or pick it."),
                io.Boolean.Input("include_in_output", default=False,
                                 tooltip="IC-LoRA: show the reference left of the result in the video."),
                io.Image.Input("source_video", optional=True,
                               tooltip="Frames kept clean: shorter than the output = the start to continue "
                                       "(extension); as long = the whole video kept (foley: video → sound); "
                                       "with a mask or region = the clip to inpaint or outpaint."),
                io.Mask.Input("mask", optional=True,
                              tooltip="Inpainting: which part of source_video to regenerate (see mask_white); "
                                      "one frame or one per frame."),
                io.Combo.Input("mask_white", options=list(MASK_WHITE), default=MASK_WHITE[0],
                               tooltip="What white means in the mask: 'regenerate' = ComfyUI's convention (the "
                                       "mask editor, Set Latent Noise Mask); 'keep' = the training masks' "
                                       "convention (ltx-trainer: white = conditioning)."),
                io.String.Input("region", default="",
                                tooltip="Outpainting: 'y1, x1, y2, x2' — top, left, bottom, right in output "
                                        "pixels of the part kept from source_video; the rest is generated."),
                io.Audio.Input("audio", optional=True,
                               tooltip="Audio → video: the sound track kept; the video is made to fit it."),
                io.Audio.Input("reference_audio", optional=True,
                               tooltip="Audio IC-LoRA (voice / sound restyle): the reference sound, through "
                                       "ComfyUI's LTXV Reference Audio."),
            ],
            outputs=[CONDITIONING_TYPE.Output(display_name="conditioning",
                                              tooltip="To Sample with LoRA / the Train node's validation.")],
        )

    @classmethod
    def execute(cls, reference_video=None, reference_scale=REFERENCE_SCALES[0], include_in_output=False, source_video=None, mask=None,
                mask_white=MASK_WHITE[0], region="", audio=None, reference_audio=None) -> io.NodeOutput:
        r = parse_region(region)
        if (mask is not None or r) and source_video is None:
            raise ValueError("a mask or region says what to regenerate of source_video: connect source_video "
                             "(the clip to inpaint / outpaint)")
        if mask is not None and r:
            raise ValueError("give a mask (inpainting) or a region (outpainting), not both")
        if mask is not None and mask_white == "keep":
            mask = 1.0 - mask  # Set Latent Noise Mask's convention from here on: 1 = regenerate
        scale = None if reference_scale == REFERENCE_SCALES[0] else int(reference_scale)
        return io.NodeOutput(dict(reference_video=reference_video, reference_scale=scale,
                                  include_in_output=bool(include_in_output),
                                  source_video=source_video, mask=mask, region=r, audio=audio,
                                  reference_audio=reference_audio))


SAMPLE_NODES = [SampleWithLoRA, SampleConditioning]
