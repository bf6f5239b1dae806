"""ComfyUI as a server imports the pack and lists every node in /object_info."""
from __future__ import annotations

from tests.comfy.test_pack import EXPECTED


def test_object_info_lists_every_node(server):
    info = server.get("/object_info")
    missing = EXPECTED - set(info)
    assert not missing, f"not in /object_info: {missing}"
    for node_id in EXPECTED:
        assert info[node_id]["category"].startswith("LTX-2 Trainer")
        assert info[node_id]["python_module"].startswith("custom_nodes.")


def test_pack_imported_without_failure(server):
    log = server.log_text()
    assert "IMPORT FAILED" not in log, log[-3000:]
    assert "comfyui-ltx2-lora-trainer" in log  # listed in the custom node import times
