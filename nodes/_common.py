"""Glue shared by the pack's nodes: custom types, progress, interrupt, previews, folders.

Only light imports at module level; ComfyUI modules that pull in torch or the server are
imported inside the functions that need them.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Optional

from comfy_api.latest import io

from . import CATEGORY

# Typed values passed along the graph. The ids are permanent (workflows store them).
Clips = io.Custom("LTX2_CLIPS")
DatasetT = io.Custom("LTX2_DATASET")
LatentsT = io.Custom("LTX2_LATENTS")
LossT = io.Custom("LTX2_LOSS")

CAT_DATASET = f"{CATEGORY}/dataset"
CAT_TRAIN = f"{CATEGORY}/train"
CAT_SAMPLE = f"{CATEGORY}/sample"

TYPED_PATH_HINT = "(type a path below)"


class Progress:
    """ComfyUI progress bar + live text + interrupt check, as one callable.

    ``progress(i, n, text=None)`` moves the bar to i/n, sends ``text`` to the node's live
    text area when a server is running, and raises ComfyUI's interrupt exception when the
    user pressed cancel, so long loops stop between items.
    """

    def __init__(self, total: int, node_id: Optional[str] = None):
        import comfy.utils

        self.bar = comfy.utils.ProgressBar(max(1, total), node_id=node_id)
        self.node_id = node_id
        self._last_text = 0.0

    def __call__(self, i: int, n: Optional[int] = None, text: Optional[str] = None) -> None:
        import comfy.model_management

        comfy.model_management.throw_exception_if_processing_interrupted()
        self.bar.update_absolute(i, n)
        if text:
            self.text(text)

    def text(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_text < 0.2:
            return
        self._last_text = now
        send_text(text, self.node_id)


def send_text(text: str, node_id: Optional[str]) -> None:
    """Live text under the node (no-op when ComfyUI runs without its server, e.g. in tests)."""
    if node_id is None:
        return
    try:
        from server import PromptServer

        inst = getattr(PromptServer, "instance", None)
        if inst is not None:
            inst.send_progress_text(text, node_id)
    except Exception:  # the preview text is best-effort; never fail a run for it
        pass


def interrupted() -> bool:
    import comfy.model_management

    return comfy.model_management.processing_interrupted()


def input_dir() -> Path:
    import folder_paths

    return Path(folder_paths.get_input_directory())


def dataset_folder_options() -> list[str]:
    import folder_paths

    try:
        subs = folder_paths.get_input_subfolders()
    except Exception:
        subs = []
    return [TYPED_PATH_HINT] + subs


SETTINGS_SUBFOLDER = "ltx2_trainer"
SETTINGS_NAME = "settings.yaml"


def settings_file() -> Path:
    """The pack's settings file: ``<ComfyUI user folder>/ltx2_trainer/settings.yaml``
    (``ComfyUI/user/ltx2_trainer/settings.yaml`` in a default install)."""
    import folder_paths

    return Path(folder_paths.get_user_directory()) / SETTINGS_SUBFOLDER / SETTINGS_NAME


def server_listen() -> Optional[str]:
    """ComfyUI's ``--listen`` value (None when ComfyUI's arguments are not parsed)."""
    try:
        import comfy.cli_args

        return getattr(comfy.cli_args.args, "listen", None)
    except Exception:
        return None


def resolve_dataset_folder(folder: str, typed_path: str) -> Path:
    """The folder to read clips from.

    A typed path wins when given: relative ones are taken under ComfyUI's input folder; a
    ``..`` component is refused, as is a list entry that leaves the input folder. Absolute
    paths are read where they are (reading only — the pack never writes there) while
    ComfyUI listens on this computer only. When it listens beyond localhost (``--listen``),
    any client of the server could otherwise list the disk and get thumbnails of media
    anywhere, so a typed path must then lie (symlinks resolved) in the input folder or under
    a ``dataset_roots`` entry of :func:`settings_file`; the refusal reads the same whether
    the folder exists or not, and comes before any look at the disk.
    """
    from ..trainer_core.fsutil import UnsafePathError, read_dataset_roots, readable_under, safe_join
    from ..trainer_core.fsutil import is_loopback_only

    listen = server_listen()
    exposed = not is_loopback_only(listen)
    raw = (typed_path or "").strip().strip('"').strip("'")
    if raw:
        # no '~' expansion for remote clients: '~name' would tell which users exist
        p = Path(raw if exposed else os.path.expanduser(raw))
        if ".." in p.parts:
            raise UnsafePathError(f"dataset path {raw!r} contains '..'; give the folder itself")
        target = p if p.is_absolute() else safe_join(input_dir(), raw)
        if exposed:
            sfile = settings_file()
            roots = [input_dir(), *read_dataset_roots(sfile)]
            if not readable_under(target, roots):
                raise PermissionError(
                    f"dataset path {raw!r} is not readable: ComfyUI listens beyond this computer "
                    f"(--listen {listen}), so Load Clips reads typed paths only inside ComfyUI's input "
                    f"folder or under a dataset root listed in {sfile} (dataset_roots). Move the clips "
                    "into the input folder, or add their folder to dataset_roots and run again.")
    else:
        if not folder or folder == TYPED_PATH_HINT:
            raise ValueError("choose a dataset folder from the list (sub-folders of ComfyUI's input "
                             "folder) or type a path in 'path'")
        target = safe_join(input_dir(), folder)
    if not target.is_dir():
        raise FileNotFoundError(f"dataset folder {target} does not exist or is not a folder")
    return target


def image_batch(images) -> "torch.Tensor":  # noqa: F821
    """List of HxWx3 uint8 arrays (same size) or one array -> ComfyUI IMAGE [B,H,W,3] float."""
    import numpy as np
    import torch

    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = [images]
    arr = np.stack([np.asarray(im, dtype=np.uint8) for im in images])
    return torch.from_numpy(arr).float().div_(255.0)


def preview_ui(image_tensor, text: Optional[str], cls) -> dict:
    """UI payload: the preview image(s) and a text block under the node."""
    from comfy_api.latest import ui

    out = ui.PreviewImage(image_tensor, cls=cls).as_dict()
    if text:
        out["text"] = (text,)
    return out


def make_progress(total: int, cls) -> Progress:
    node_id = getattr(getattr(cls, "hidden", None), "unique_id", None)
    return Progress(total, node_id=node_id)


ProgressFn = Callable[..., None]


def prompt_server():
    """ComfyUI's running ``PromptServer`` instance, or None (no server: tests, headless)."""
    try:
        from server import PromptServer
    except Exception:
        return None
    return getattr(PromptServer, "instance", None)
