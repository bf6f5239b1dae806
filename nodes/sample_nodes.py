"""Sample with LoRA: an audio-video preview through ComfyUI's own LTX-2 sampling path.

The node runs exactly the stock LTX-2 text/image-to-video graph's first stage — LoRAs via
LoraLoaderModelOnly, LTXVConditioning, EmptyLTXVLatentVideo (+ LTXVImgToVideoInplace for a
first frame), LTXVEmptyLatentAudio, LTXVConcatAVLatent, CFGGuider, LTXVScheduler,
KSamplerSelect, RandomNoise, SamplerCustomAdvanced, LTXVSeparateAVLatent, VAEDecode,
LTXVAudioVAEDecode, CreateVideo — by calling those nodes in-process, so its result equals
what the stock workflow gives with the same LoRA, settings and seed.
"""
from __future__ import annotations

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


def sample_av(model, positive, negative, vae, audio_vae, *, width: int, height: int, frames: int, fps: int,
              seed: int, steps: int, cfg: float, sampler_name: str = SAMPLERS_DEFAULT, max_shift: float = 2.05,
              base_shift: float = 0.95, first_frame=None, first_frame_strength: float = 1.0):
    """The stock LTX-2 first-stage sampling. Returns (images [F, H, W, 3], audio dict, fps)."""
    import nodes as comfy_nodes
    from comfy_extras import nodes_custom_sampler as cs
    from comfy_extras import nodes_lt as lt
    from comfy_extras import nodes_lt_audio as lta

    pos, neg = _result(lt.LTXVConditioning.execute(positive, negative, float(fps)))
    (vlat,) = _result(lt.EmptyLTXVLatentVideo.execute(width, height, frames, 1))
    if first_frame is not None:
        (vlat,) = _result(lt.LTXVImgToVideoInplace.execute(vae, first_frame, vlat, first_frame_strength))
    (alat,) = _result(lta.LTXVEmptyLatentAudio.execute(frames, int(fps), 1, audio_vae))
    (av,) = _result(lt.LTXVConcatAVLatent.execute(vlat, alat))
    (guider,) = _result(cs.CFGGuider.execute(model, pos, neg, cfg))
    (sigmas,) = _result(lt.LTXVScheduler.execute(steps, max_shift, base_shift, True, 0.1, latent=av))
    (sampler,) = _result(cs.KSamplerSelect.execute(sampler_name))
    (noise,) = _result(cs.RandomNoise.execute(seed))
    out = _result(cs.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas, av))[0]
    v, a = _result(lt.LTXVSeparateAVLatent.execute(out))
    (images,) = comfy_nodes.VAEDecode().decode(vae, v)
    (audio,) = _result(lta.LTXVAudioVAEDecode.execute(a, audio_vae))
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
                first_frame=None, lora_1=NONE, strength_1=0.8, lora_2=NONE, strength_2=0.8, width=768, height=512,
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
                                     sampler_name=sampler_name, first_frame=first_frame)
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


SAMPLE_NODES = [SampleWithLoRA]
