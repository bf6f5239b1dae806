"""LTX-2 LoRA Trainer — ComfyUI custom-node pack (V3 API).

ComfyUI calls ``comfy_entrypoint()`` and registers the nodes it lists. Nothing from ComfyUI
is imported at module level, so the package imports cleanly outside ComfyUI (tests, headless
runs through ``trainer_core``), and node modules load only when ComfyUI asks for them.
"""
from __future__ import annotations

WEB_DIRECTORY = "./web"


def _check_comfyui_version() -> None:
    """Say in ComfyUI's log, at load time, when this ComfyUI is older than the pack needs."""
    import logging

    try:
        from comfyui_version import __version__ as version
    except Exception:  # a ComfyUI without the generated version module
        version = None
    from .trainer_core.compat import comfyui_problem

    problem = comfyui_problem(version)
    if problem:
        logging.warning(problem)


async def comfy_entrypoint():
    from comfy_api.latest import ComfyExtension

    _check_comfyui_version()

    class LTX2TrainerExtension(ComfyExtension):
        async def get_node_list(self):
            from .nodes import all_nodes
            from .nodes.live import add_routes

            add_routes()
            from .nodes.folder_preview import add_routes as add_folder_preview_routes

            add_folder_preview_routes()  # Load Clips' preview of the picked folder
            from .nodes.prompt_guard import register as register_prompt_guard

            register_prompt_guard()  # a run whose training branch would be dropped is refused whole
            return all_nodes()

    return LTX2TrainerExtension()
