"""The pack's nodes, one module per family. Node ids are permanent: never rename them."""
from __future__ import annotations

import importlib
import logging

CATEGORY = "LTX-2 Trainer"

# (module, list name) in graph order; a family whose module is missing is skipped with a log line
_FAMILIES = [
    ("dataset_nodes", "DATASET_NODES"),
    ("caption_nodes", "CAPTION_NODES"),
    ("encode_nodes", "ENCODE_NODES"),
    ("train_nodes", "TRAIN_NODES"),
    ("sample_nodes", "SAMPLE_NODES"),
]


def all_nodes() -> list:
    out = []
    for mod, attr in _FAMILIES:
        try:
            m = importlib.import_module(f".{mod}", __name__)
        except ModuleNotFoundError as e:
            if e.name and e.name.endswith(mod):
                continue  # family not built yet
            raise
        nodes = getattr(m, attr, None)
        if nodes is None:
            logging.warning("LTX-2 Trainer: %s has no %s", mod, attr)
            continue
        out.extend(nodes)
    return out
