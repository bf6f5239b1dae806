"""The pack's nodes, one module per family. Node ids are permanent: never rename them."""
from __future__ import annotations

CATEGORY = "LTX-2 Trainer"


def all_nodes() -> list:
    from .dataset_nodes import DATASET_NODES

    return [*DATASET_NODES]
