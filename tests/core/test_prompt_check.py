"""Which of the pack's output nodes ComfyUI would drop from a prompt (trainer_core.prompt_check)."""
from trainer_core.prompt_check import ancestors, combo_problem, dropped_pack_outputs

CHOICES = {"CheckpointLoaderSimple": {"ckpt_name": ["ltx-2-19b-dev.safetensors"]},
           "LTX2TrainLoRA": {"recipe": ["Character", "Style"]}}


def _prompt(ckpt="ltx-2-19b-dev.safetensors"):
    return {
        "1": {"class_type": "LTX2TrainLoadClips", "inputs": {"folder": "my_dataset"}},
        "2": {"class_type": "LTX2TrainBucket", "inputs": {"clips": ["1", 0], "preset": "Character"}},
        "3": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "4": {"class_type": "LTX2TrainEncodeLatents", "inputs": {"dataset": ["2", 0], "vae": ["3", 2]}},
        "5": {"class_type": "LTX2TrainLoRA", "inputs": {"model": ["3", 0], "latents": ["4", 0], "recipe": "Character"}},
    }


def _problem(nid, node):
    return combo_problem(nid, node, lambda ct: CHOICES.get(ct, {}))


def test_ancestors_follow_links_only():
    p = _prompt()
    assert ancestors(p, "5") == {"1", "2", "3", "4"}
    assert ancestors(p, "2") == {"1"}
    assert ancestors(p, "3") == set()


def test_a_missing_model_file_upstream_of_train_is_found_and_named():
    p = _prompt(ckpt="missing.safetensors")
    out = dropped_pack_outputs(p, ["2", "5"], _problem)
    assert list(out) == ["5"]  # Bucket does not depend on the checkpoint: it would have run
    assert "missing.safetensors" in out["5"][0] and "node 3" in out["5"][0]


def test_nothing_is_reported_for_a_valid_prompt_or_a_linked_input():
    assert dropped_pack_outputs(_prompt(), ["2", "5"], _problem) == {}
    p = _prompt()
    p["5"]["inputs"]["recipe"] = ["9", 0]  # fed by a link: not a widget value to check
    assert dropped_pack_outputs(p, ["5"], _problem) == {}


def test_the_output_node_itself_counts():
    p = _prompt()
    p["5"]["inputs"]["recipe"] = "Nonexistent"
    assert list(dropped_pack_outputs(p, ["5"], _problem)) == ["5"]
