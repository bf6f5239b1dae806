"""A whole run or none: find the pack's output nodes that ComfyUI would silently drop.

ComfyUI validates each output node of a prompt on its own and runs the ones that pass: a
missing model file in a loader upstream of Train drops the Train and Sample branch while the
dataset nodes run on to "Job completed", which looks like a finished run. The pack's prompt
handler (nodes/prompt_guard.py) asks this module which of the pack's output nodes depend on
an input ComfyUI will refuse, and then has ComfyUI validate exactly those, so the prompt
fails as a whole with ComfyUI's own error on the node at fault.

Pure data: a prompt is ComfyUI's API format, ``{node_id: {"class_type": str, "inputs":
{name: value | [source_id, slot]}}}``; what counts as a refused input is the caller's
``problem(node_id, node) -> str | None``.
"""
from __future__ import annotations

from typing import Callable, Iterable, Mapping, Optional


def _links(node: Mapping) -> Iterable[str]:
    for v in (node.get("inputs") or {}).values():
        if isinstance(v, (list, tuple)) and len(v) == 2 and isinstance(v[1], int):
            yield str(v[0])


def ancestors(prompt: Mapping[str, Mapping], node_id: str) -> set[str]:
    """Every node that ``node_id`` reads from, directly or through others (itself excluded)."""
    seen: set[str] = set()
    todo = [str(node_id)]
    while todo:
        n = prompt.get(todo.pop())
        if n is None:
            continue
        for src in _links(n):
            if src not in seen and src in prompt:
                seen.add(src)
                todo.append(src)
    return seen


def dropped_pack_outputs(prompt: Mapping[str, Mapping], pack_outputs: Iterable[str],
                         problem: Callable[[str, Mapping], Optional[str]]) -> dict[str, list[str]]:
    """{pack output node id: [what is wrong upstream, one line per node]} for the pack's
    output nodes that ComfyUI would drop because a node they depend on (or they themselves)
    has a refused input."""
    cache: dict[str, Optional[str]] = {}

    def why(nid: str) -> Optional[str]:
        if nid not in cache:
            cache[nid] = problem(nid, prompt[nid])
        return cache[nid]

    out: dict[str, list[str]] = {}
    for o in pack_outputs:
        o = str(o)
        if o not in prompt:
            continue
        reasons = [r for r in (why(n) for n in sorted(ancestors(prompt, o) | {o})) if r]
        if reasons:
            out[o] = reasons
    return out


def combo_problem(node_id: str, node: Mapping, options_of: Callable[[str], Mapping[str, list]]) -> Optional[str]:
    """A widget value that is not among its input's choices (a model file that is not in its
    folder, for a loader): what ComfyUI reports as "Value not in list"."""
    opts = options_of(node.get("class_type", ""))
    for name, value in (node.get("inputs") or {}).items():
        choices = opts.get(name)
        if choices is None or isinstance(value, (list, tuple)):
            continue  # not a choice input, or fed by a link
        if value not in choices:
            title = (node.get("_meta") or {}).get("title") or node.get("class_type")
            return f"{title} (node {node_id}): {name} = {value!r} is not available"
    return None


__all__ = ["ancestors", "dropped_pack_outputs", "combo_problem"]
