"""Shared test setup: where ComfyUI is, and the repo on sys.path.

ComfyUI is looked for at ``$COMFYUI_PATH``, else at ``/opt/ComfyUI`` (the documented fixed
path). The ComfyUI layers (tests/comfy, tests/e2e) are skipped with a visible reason when
neither holds a ComfyUI checkout; they are never run against a stand-in.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT_COMFYUI = "/opt/ComfyUI"

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def find_comfyui() -> tuple[Path | None, str]:
    """(path, why) — path is None when no usable checkout was found; why says where we looked."""
    env = os.environ.get("COMFYUI_PATH")
    candidates = [Path(env)] if env else [Path(DEFAULT_COMFYUI)]
    for c in candidates:
        if (c / "comfy" / "model_management.py").is_file() and (c / "main.py").is_file():
            return c.resolve(), f"ComfyUI found at {c}"
    where = f"$COMFYUI_PATH={env}" if env else f"$COMFYUI_PATH unset and {DEFAULT_COMFYUI}"
    return None, f"no ComfyUI checkout found ({where} has no comfy/model_management.py)"


COMFYUI, COMFYUI_WHY = find_comfyui()


def pytest_collection_modifyitems(config, items):
    """Without ComfyUI, mark every test of the ComfyUI layers as skipped, with the reason."""
    if COMFYUI is not None:
        return
    skip = pytest.mark.skip(reason=f"ComfyUI layer skipped: {COMFYUI_WHY}")
    for item in items:
        where = str(item.fspath).replace(os.sep, "/")
        if "/tests/comfy/" in where or "/tests/e2e/" in where:
            item.add_marker(skip)


def pytest_report_header(config):
    return [f"ComfyUI layers: {'will run — ' if COMFYUI else 'SKIPPED — '}{COMFYUI_WHY}"]


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    d = REPO / "tests" / "_artifacts"
    d.mkdir(parents=True, exist_ok=True)
    return d
