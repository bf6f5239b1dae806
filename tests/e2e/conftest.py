"""Layer 3: ComfyUI started as a server (``main.py --cpu``) with this pack in a custom_nodes path.

One server per test session, on a free loopback port, with its own base directory (models,
input, output, temp, user, custom_nodes -> this repo). Skipped with the reason when no
ComfyUI is found.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import COMFYUI, COMFYUI_WHY, REPO

PACK_DIR_NAME = "comfyui-ltx2-lora-trainer"




def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, base: Path, port: int, proc: subprocess.Popen, log: Path):
        self.base, self.port, self.proc, self.log = base, port, proc, log
        self.url = f"http://127.0.0.1:{port}"

    def get(self, path: str, timeout: float = 30):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            data = r.read()
        return json.loads(data) if data else None

    def post(self, path: str, payload: dict, timeout: float = 30):
        req = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            raise AssertionError(f"POST {path} -> {e.code}: {e.read().decode(errors='replace')}") from e

    def run_prompt(self, prompt: dict, timeout: float = 600) -> dict:
        """Queue an API-format prompt and wait for its history entry."""
        r = self.post("/prompt", {"prompt": prompt, "client_id": "e2e"})
        pid = r["prompt_id"]
        t0 = time.time()
        while time.time() - t0 < timeout:
            h = self.get(f"/history/{pid}")
            if h and pid in h and h[pid].get("status", {}).get("completed") is not None:
                entry = h[pid]
                if entry["status"].get("status_str") == "error" or not entry["status"]["completed"]:
                    raise AssertionError(f"prompt failed: {json.dumps(entry['status'], indent=1)[:4000]}")
                return entry
            if self.proc.poll() is not None:
                raise AssertionError("server died:\n" + self.log.read_text()[-4000:])
            time.sleep(0.5)
        raise AssertionError(f"prompt {pid} did not finish in {timeout}s")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    if COMFYUI is None:
        pytest.skip(f"ComfyUI e2e layer skipped: {COMFYUI_WHY}")
    base = tmp_path_factory.mktemp("comfy_server")
    for sub in ("input", "output", "temp", "user", "models/checkpoints", "models/loras",
                "models/text_encoders", "custom_nodes"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    (base / "custom_nodes" / PACK_DIR_NAME).symlink_to(REPO, target_is_directory=True)
    # test-only: the Gemma 3 12B stand-in (the text encoder has no tiny form), see its docstring
    (base / "custom_nodes" / "ltx2_test_standin_text_encoder").symlink_to(
        REPO / "tests" / "e2e" / "standin_text_encoder", target_is_directory=True)
    port = _free_port()
    log = base / "server.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, str(COMFYUI / "main.py"), "--cpu", "--base-directory", str(base),
           "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch",
           "--database-url", f"sqlite:///{base / 'user' / 'comfyui.db'}"]
    proc = subprocess.Popen(cmd, cwd=str(COMFYUI), stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env)
    srv = Server(base, port, proc, log)
    t0 = time.time()
    while True:
        try:
            srv.get("/system_stats", timeout=2)
            break
        except Exception:
            if proc.poll() is not None or time.time() - t0 > 180:
                proc.kill()
                raise AssertionError("ComfyUI server did not start:\n" + log.read_text()[-4000:])
            time.sleep(0.5)
    yield srv
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def install_check_files(base: Path) -> None:
    """The install check's tiny LTX-2.0 checkpoint and latent cache in the server's folders
    (written once per server)."""
    sys.path.insert(0, str(REPO / "scripts"))
    import make_workflows as mw

    from trainer_core.tiny_checkpoint import make_tiny_cache, make_tiny_checkpoint

    ck = base / "models" / "checkpoints" / mw.TINY_CKPT
    if not ck.exists():
        make_tiny_checkpoint(ck, "ltx-2.0", seed=1)
    cache = base / "output" / "ltx2_cache" / mw.INSTALL_CACHE
    if not (cache / "manifest.json").exists():
        make_tiny_cache(cache, "ltx-2.0")


def set_train_inputs(prompt: dict, **values) -> dict:
    """Set inputs of an API prompt's Train node by the names of the old single Train node:
    the Train node's own (lora_name, steps, ...), LTX-2 Training Options' (checkpoint_every,
    precision, ...) and ``validation_<name>`` for LTX-2 Validation's. A name no node of the
    prompt takes is an error."""
    by_class = {v["class_type"]: v for v in prompt.values()}
    train, opts, val = (by_class.get(c) for c in ("LTX2TrainLoRA", "LTX2TrainOptions", "LTX2TrainValidation"))
    option_names = {"optimizer", "scheduler", "warmup_steps", "grad_accum", "max_grad_norm", "checkpoint_every",
                    "keep_checkpoints", "precision", "gradient_checkpointing", "vram_budget_gb", "stream_weights_as",
                    "alpha_ratio", "dropout", "targets", "target_patterns", "audio_weight", "first_frame_prob",
                    "caption_dropout", "init_lora", "batch_size"}
    for k, v in values.items():
        if k.startswith("validation_"):
            assert val is not None, f"the prompt has no LTX-2 Validation node for {k}"
            val["inputs"][k[len("validation_"):]] = v
        elif k in option_names:
            assert opts is not None, f"the prompt has no LTX-2 Training Options node for {k}"
            opts["inputs"][k] = v
        else:
            train["inputs"][k] = v
    return prompt
