"""A prompt runs whole or not at all when the pack's training branch would be dropped.

ComfyUI validates every output node of a prompt separately and runs those that pass, so a
missing model file upstream of Train LTX-2 LoRA (or Sample with LoRA) drops that branch and
the dataset nodes run on to "Job completed". The handler registered here looks at each
queued prompt before ComfyUI validates it; when one of the pack's output nodes depends on a
value ComfyUI will refuse (trainer_core.prompt_check), it has ComfyUI validate just those
outputs, so the prompt is refused as a whole with ComfyUI's own error on the node at fault
(the red node and the error dialog a user knows). Prompts without the pack's nodes are never
touched."""
from __future__ import annotations

import logging

_registered = False


def _options_of(class_type: str) -> dict:
    """{input name: choices} of a node class's choice inputs (empty when unknown)."""
    import nodes

    cls = nodes.NODE_CLASS_MAPPINGS.get(class_type)
    if cls is None:
        return {}
    try:
        spec = cls.INPUT_TYPES()
    except Exception:  # a node whose inputs cannot be listed here: leave it to ComfyUI
        return {}
    out = {}
    for section in ("required", "optional"):
        for name, info in (spec.get(section) or {}).items():
            if not isinstance(info, (list, tuple)) or not info:
                continue
            kind = info[0]
            if isinstance(kind, (list, tuple)):
                out[name] = list(kind)
            elif kind == "COMBO" and len(info) > 1 and isinstance(info[1], dict) and "options" in info[1]:
                out[name] = list(info[1]["options"])
    return out


def _is_pack_output(class_type: str) -> bool:
    import nodes

    cls = nodes.NODE_CLASS_MAPPINGS.get(class_type)
    return bool(class_type.startswith("LTX2Train") and cls is not None and getattr(cls, "OUTPUT_NODE", False))


def guard(json_data):
    """ComfyUI's on-prompt hook: returns the request, with ``partial_execution_targets`` set to
    the pack's outputs that would be dropped (only when other outputs would still run)."""
    from ..trainer_core.prompt_check import combo_problem, dropped_pack_outputs

    prompt = json_data.get("prompt") if isinstance(json_data, dict) else None
    if not isinstance(prompt, dict):
        return json_data
    _upgrade_old_train_nodes(prompt)
    pack_outputs = [nid for nid, n in prompt.items()
                    if isinstance(n, dict) and _is_pack_output(str(n.get("class_type", "")))]
    if not pack_outputs:
        return json_data
    options: dict = {}

    def problem(nid, node):
        ct = str(node.get("class_type", ""))
        if ct not in options:
            options[ct] = _options_of(ct)
        return combo_problem(nid, node, lambda _: options[ct])

    dropped = dropped_pack_outputs(prompt, pack_outputs, problem)
    if not dropped:
        return json_data
    targets = json_data.get("partial_execution_targets")
    chosen = sorted(dropped) if targets is None else [t for t in targets if str(t) in dropped]
    if not chosen:
        return json_data  # the user queued other outputs only: theirs to run
    for nid in chosen:
        logging.warning("LTX-2 Trainer: not starting a partial run — %s (node %s) cannot run: %s",
                        prompt[nid].get("class_type"), nid, "; ".join(dropped[nid]))
    json_data["partial_execution_targets"] = chosen
    return json_data


def _upgrade_old_train_nodes(prompt: dict) -> None:
    """API prompts made for the old single Train node (every setting on it) run as before:
    their settings move to Training Options / Validation nodes (train_nodes.upgrade_old_prompt)."""
    if not any(isinstance(n, dict) and n.get("class_type") == "LTX2TrainLoRA" for n in prompt.values()):
        return
    from .train_nodes import recipe_fields, upgrade_old_prompt

    done = upgrade_old_prompt(prompt, recipe_fields())
    if done:
        logging.info("LTX-2 Trainer: moved the settings of old Train node(s) %s to LTX-2 Training Options / "
                     "Validation nodes (the Train node holds only its per-run values now)", ", ".join(done))


def register() -> None:
    """Add the hook to ComfyUI's server (once)."""
    global _registered
    if _registered:
        return
    from ._common import prompt_server

    inst = prompt_server()
    if inst is None:
        return
    inst.add_on_prompt_handler(guard)
    _registered = True
