"""The pack as ComfyUI loads it: registration through the V3 entry point, schema hygiene."""
from __future__ import annotations

EXPECTED = {"LTX2TrainLoadClips", "LTX2TrainSplitScenes", "LTX2TrainCaption", "LTX2TrainBucket", "LTX2TrainEncodeLatents",
            "LTX2TrainLoadLatentCache", "LTX2TrainLoRA", "LTX2TrainSample"}


def test_pack_registers_its_nodes(comfy):
    assert EXPECTED <= set(comfy.pack), f"missing: {EXPECTED - set(comfy.pack)}"
    # nothing registered outside the prefix by this pack
    for node_id, cls in comfy.nodes.NODE_CLASS_MAPPINGS.items():
        if cls.__module__.split(".")[0].startswith("custom_nodes") or "ltx2-lora-trainer" in cls.__module__:
            assert node_id.startswith("LTX2Train"), node_id


def test_every_input_and_output_has_a_tooltip(comfy):
    for node_id, cls in comfy.pack.items():
        schema = cls.GET_SCHEMA() if hasattr(cls, "GET_SCHEMA") else cls.define_schema()
        assert schema.description and len(schema.description) > 40, node_id
        assert schema.category.startswith("LTX-2 Trainer"), (node_id, schema.category)
        for inp in schema.inputs:
            assert inp.tooltip, f"{node_id}.{inp.id} has no tooltip"
        for out in schema.outputs:
            assert out.tooltip, f"{node_id} output {out.display_name} has no tooltip"


def test_object_info_shape(comfy):
    for node_id, cls in comfy.pack.items():
        info = cls.GET_NODE_INFO_V1()
        assert info["name"] == node_id
        # the frontend's badge names the pack: a short name without it, readable in the library
        name = info["display_name"]
        assert "LTX-2 Trainer" not in name and "(" not in name, name
        assert 3 <= len(name) <= 24, name
        assert info["input"]["required"], node_id


def test_reference_comfyui_passes_the_version_check(comfy):
    """The ComfyUI these layers run against is one the pack supports: no load-time warning."""
    from comfyui_version import __version__

    from trainer_core.compat import comfyui_problem

    assert comfyui_problem(__version__) is None, __version__
