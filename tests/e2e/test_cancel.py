"""Cancel through the real server: the install-check workflow is queued over HTTP with many
steps and no periodic checkpoints, ``POST /interrupt`` lands mid-run, the history shows
ComfyUI's interrupt, the cancel saved a checkpoint at the last finished step, and the same
workflow queued again with resume = latest continues from it to the end."""
from __future__ import annotations

import json
import sys
import time

from tests.conftest import REPO
from tests.e2e.conftest import install_check_files, set_train_inputs

sys.path.insert(0, str(REPO / "scripts"))
import make_workflows as mw  # noqa: E402


def _prompt(server, **train_inputs) -> dict:
    info = server.get("/object_info")
    ui = json.loads((REPO / "example_workflows" / f"{mw.file_name(mw.INSTALL)}.json").read_text())
    return set_train_inputs(mw.to_api(ui, info), **train_inputs)


def _old_form(prompt: dict) -> dict:
    """The prompt as the old single Train node took it: Training Options' settings on the
    Train node (alpha 0 = "the recipe's", i.e. rank), no options node."""
    opt = next(k for k, v in prompt.items() if v["class_type"] == "LTX2TrainOptions")
    train = next(v for v in prompt.values() if v["class_type"] == "LTX2TrainLoRA")
    ins = dict(prompt.pop(opt)["inputs"])
    assert ins.pop("alpha_ratio") == 1.0
    train["inputs"].pop("options")
    train["inputs"].update(ins, alpha=0.0)
    return prompt


def _history(server, pid: str, timeout: float = 300) -> dict:
    t0 = time.time()
    while time.time() - t0 < timeout:
        h = server.get(f"/history/{pid}")
        if h and pid in h and h[pid].get("status", {}).get("completed") is not None:
            return h[pid]
        assert server.proc.poll() is None, server.log_text()[-4000:]
        time.sleep(0.3)
    raise AssertionError(f"prompt {pid} did not finish in {timeout}s:\n{server.log_text()[-3000:]}")


def test_interrupt_over_http_saves_a_checkpoint_and_requeue_resumes(server):
    from trainer_core.engine import list_checkpoints, read_checkpoint
    from trainer_core.lora import load_lora

    base = server.base
    install_check_files(base)
    for _ in range(120):  # other tests' prompts first
        q = server.get("/queue")
        if not q["queue_running"] and not q["queue_pending"]:
            break
        time.sleep(1)

    name = "e2e_cancel"
    prompt = _prompt(server, lora_name=name, steps=5000, checkpoint_every=0, resume="none")
    node = next(k for k, v in prompt.items() if v["class_type"] == "LTX2TrainLoRA")
    r = server.post("/prompt", {"prompt": prompt, "client_id": "e2e-cancel"})
    pid = r["prompt_id"]
    t0 = time.time()
    while True:  # wait for a few steps to be done (the live route of the Train node)
        live = server.get(f"/ltx2_trainer/live/{node}")
        if live.get("running") and len(live.get("points", [])) >= 3:
            break
        assert time.time() - t0 < 300, server.log_text()[-3000:]
        time.sleep(0.2)
    server.post("/interrupt", {})
    entry = _history(server, pid)
    msgs = [m[0] for m in entry["status"].get("messages", [])]
    assert "execution_interrupted" in msgs, entry["status"]
    assert entry["status"]["status_str"] == "error" and not entry["status"]["completed"]
    run = base / "output" / "ltx2_lora_runs" / name
    cks = list_checkpoints(run)
    assert len(cks) == 1, cks
    stopped = int(read_checkpoint(cks[0])[1]["step"])
    assert 3 <= stopped < 5000
    assert "cancelled at step" in server.log_text()

    # queued again with resume = latest: continues from the cancel's checkpoint to the end
    more = stopped + 3
    # (queued as a prompt made for the old single Train node: the server upgrades it)
    r = server.post("/prompt", {"prompt": _old_form(_prompt(server, lora_name=name, steps=more, checkpoint_every=0,
                                                            resume="latest")), "client_id": "e2e-cancel"})
    entry = _history(server, r["prompt_id"])
    assert entry["status"]["status_str"] == "success", entry["status"]
    hist = json.loads((run / "history.json").read_text())
    assert [h["step"] for h in hist] == list(range(1, more + 1))
    loras = sorted((base / "models" / "loras" / "ltx2").glob(f"{name}_*.safetensors"))
    sd, meta = load_lora(loras[-1])
    assert sd and meta["steps"] == str(more)
