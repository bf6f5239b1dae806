"""LTX-2 LoRA Trainer — ComfyUI custom-node pack (V3 API).

ComfyUI calls ``comfy_entrypoint()`` and registers the nodes it lists. Node modules import
only light things at import time; heavy libraries load inside ``execute``.
"""
from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

WEB_DIRECTORY = "./web"


class LTX2TrainerExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        from .nodes import all_nodes

        return all_nodes()


async def comfy_entrypoint() -> LTX2TrainerExtension:
    return LTX2TrainerExtension()
