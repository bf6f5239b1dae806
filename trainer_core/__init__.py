"""trainer_core: the LTX-2 LoRA training engine and its dataset pipeline.

Never imports ComfyUI (``comfy``, ``folder_paths``, ``server``, ``nodes``): ComfyUI things
reach it as arguments. Heavy dependencies (torch, av, scenedetect, transformers) are
imported inside the modules that need them, not here.
"""

__version__ = "0.1.0"
