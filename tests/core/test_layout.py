"""Project rules that can be checked mechanically."""
from __future__ import annotations

import re

def test_trainer_core_is_free_of_comfy():
    import ast
    from pathlib import Path

    from tests.conftest import REPO

    banned = {"comfy", "comfy_api", "comfy_extras", "folder_paths", "server", "nodes"}
    for f in (REPO / "trainer_core").rglob("*.py"):
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module.split(".")[0]]
            else:
                continue
            assert not (set(names) & banned), f"{f.relative_to(REPO)} imports {names}"


def test_requirements_leave_torch_to_comfyui():
    from tests.conftest import REPO

    for line in (REPO / "requirements.txt").read_text().splitlines():
        name = re.split(r"[<>=!~;\[ ]", line.strip(), maxsplit=1)[0].lower()
        assert name not in {"torch", "torchvision", "torchaudio"}, line


def test_package_imports_without_comfyui():
    """The pack's __init__ must import outside ComfyUI (headless runs, tools)."""
    import importlib.util

    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location("ltx2_pack_probe", REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert callable(mod.comfy_entrypoint) and mod.WEB_DIRECTORY == "./web"
