"""Layer 2: a real ComfyUI checkout imported in-process on CPU.

The whole module is skipped, with the reason shown, when no ComfyUI is found. ComfyUI's
folders (input, output, temp, models) point into a per-session temporary directory so the
tests never touch the checkout's own folders, and the pack is loaded through ComfyUI's own
custom-node loader from a ``custom_nodes`` folder that links to this repository.
"""
from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from tests.conftest import COMFYUI, COMFYUI_WHY, REPO

PACK_DIR_NAME = "comfyui-ltx2-lora-trainer"




@pytest.fixture(scope="session")
def comfy_base(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("comfy_base")
    for sub in ("input", "output", "temp", "user", "models/checkpoints", "models/loras",
                "models/vae", "models/text_encoders", "models/diffusion_models", "custom_nodes"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK_DIR_NAME
    link.symlink_to(REPO, target_is_directory=True)
    return base


@pytest.fixture(scope="session")
def comfy(comfy_base):
    """Import ComfyUI in-process on CPU and load this pack through its custom-node loader.

    Returns a namespace with ``nodes`` (ComfyUI's module), ``folder_paths``, ``pack`` (our
    node classes by id) and ``base`` (the temporary ComfyUI base folder).
    """
    if COMFYUI is None:
        pytest.skip(f"ComfyUI layer skipped: {COMFYUI_WHY}")
    if str(COMFYUI) not in sys.path:
        sys.path.insert(0, str(COMFYUI))
    import comfy.options

    comfy.options.enable_args_parsing(False)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    comfy.cli_args.args.base_directory = str(comfy_base)
    import folder_paths

    folder_paths.set_input_directory(str(comfy_base / "input"))
    folder_paths.set_output_directory(str(comfy_base / "output"))
    folder_paths.set_temp_directory(str(comfy_base / "temp"))
    for kind, sub in (("checkpoints", "checkpoints"), ("loras", "loras"), ("vae", "vae"),
                      ("text_encoders", "text_encoders"), ("diffusion_models", "diffusion_models")):
        folder_paths.add_model_folder_path(kind, str(comfy_base / "models" / sub), is_default=True)

    import comfy.model_management  # noqa: F401  (after args.cpu is set)
    import nodes

    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    ok = asyncio.run(nodes.load_custom_node(str(comfy_base / "custom_nodes" / PACK_DIR_NAME)))
    assert ok, "ComfyUI failed to import the pack (see the log above)"

    from types import SimpleNamespace

    pack = {k: v for k, v in nodes.NODE_CLASS_MAPPINGS.items() if k.startswith("LTX2Train")}
    return SimpleNamespace(nodes=nodes, folder_paths=folder_paths, pack=pack, base=comfy_base)
