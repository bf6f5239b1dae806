"""GPU smoke test of the Train node inside a real ComfyUI: a tiny LTX-2 checkpoint loaded by
the stock loader, trained by ``LTX2TrainLoRA`` three ways — eager, compiled (the CUDA
default), and compiled with a VRAM budget so small that every block streams — and the
LoRAs compared. Writes ``gpu_smoke_train.json`` to ``--out``.

    python bench/gpu_smoke_train.py --comfyui .bench_comfy/ComfyUI --out /tmp/smoke
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH", "/opt/ComfyUI"))
    ap.add_argument("--out", default="/tmp/ltx2_smoke")
    ap.add_argument("--steps", type=int, default=12)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="comfy_base_"))
    for sub in ("input", "output", "temp", "user", "models/checkpoints", "models/loras", "custom_nodes"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    (base / "custom_nodes" / "ltx2_trainer").symlink_to(REPO, target_is_directory=True)
    sys.path.insert(0, a.comfyui)
    import comfy.options

    comfy.options.enable_args_parsing(False)
    import comfy.cli_args

    comfy.cli_args.args.base_directory = str(base)
    if not torch.cuda.is_available():
        comfy.cli_args.args.cpu = True
    import folder_paths

    folder_paths.set_output_directory(str(base / "output"))
    folder_paths.set_temp_directory(str(base / "temp"))
    folder_paths.add_model_folder_path("checkpoints", str(base / "models/checkpoints"), is_default=True)
    folder_paths.add_model_folder_path("loras", str(base / "models/loras"), is_default=True)
    import nodes

    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    assert asyncio.run(nodes.load_custom_node(str(base / "custom_nodes" / "ltx2_trainer")))
    from trainer_core.cache import LatentCache
    from trainer_core.lora import load_lora
    from trainer_core.tiny_checkpoint import make_tiny_checkpoint, text_context_width

    records = []
    for variant in ("ltx-2.0", "ltx-2.3"):
        name = f"tiny_{variant}.safetensors"
        make_tiny_checkpoint(base / "models/checkpoints" / name, variant=variant, seed=1)
        with torch.inference_mode():
            model, _, vae = nodes.NODE_CLASS_MAPPINGS["CheckpointLoaderSimple"]().load_checkpoint(name)[:3]
            audio_vae = nodes.NODE_CLASS_MAPPINGS["LTXVAudioVAELoader"].execute(ckpt_name=name).result[0]
        cache = base / f"cache_{variant}"
        g = torch.Generator().manual_seed(0)
        c = LatentCache(cache)
        w = text_context_width(variant, processed=False)
        for i in range(2):
            c.put("video", f"v{i}", {"latents": torch.randn(128, 3, 4, 6, generator=g)})
            c.put("audio", f"a{i}", {"latents": torch.randn(8, 21, 16, generator=g)})
            c.put("text", f"t{i}", {"context": torch.randn(7, w, generator=g)})
        c.put("text", "empty", {"context": torch.zeros(3, w)})
        c.manifest.samples = [dict(key=f"clip{i}#0", video=f"v{i}", audio=f"a{i}", text=f"t{i}",
                                   bucket="192x128x17", fps=24.0, has_audio=True) for i in range(2)]
        c.manifest.empty_text = "empty"
        c.save_manifest()
        node = nodes.NODE_CLASS_MAPPINGS["LTX2TrainLoRA"]
        loras = {}
        gv = torch.Generator().manual_seed(9)
        validation = dict(validation_every=max(1, a.steps // 2),
                          validation_positive=[[torch.randn(1, 5, w, generator=gv), {"unprocessed_ltxav_embeds": True}]],
                          validation_negative=[[torch.randn(1, 3, w, generator=gv), {"unprocessed_ltxav_embeds": True}]],
                          validation_vae=vae, validation_audio_vae=audio_vae, validation_width=64,
                          validation_height=64, validation_frames=9, validation_steps=2)
        for how, env, budget in (("eager", "off", 0.0), ("compiled", "auto", 0.0), ("compiled+streamed", "auto", 0.001),
                                 ("compiled+streamed+validation", "auto", 0.001)):
            os.environ["LTX2_TRAINER_COMPILE"] = env
            t0 = time.time()
            extra = validation if how.endswith("validation") else {}
            with torch.inference_mode():
                # (the old single-node names; flat_inputs splits them into the options / validation inputs)
                flat = sys.modules[node.__module__].flat_inputs(
                    model=model, latents={"path": str(cache)}, recipe="Character",
                    lora_name=f"{variant}_{how.replace('+', '_')}", steps=a.steps, learning_rate=1e-3,
                    rank=4, mode="text_to_audio_video", seed=7, resume="none", caption_dropout=0.0,
                    precision="bf16", checkpoint_every=0, targets="all attention", vram_budget_gb=budget, **extra)
                res = node.execute(**flat)
            if extra:
                run = base / "output" / "ltx2_lora_runs" / f"{variant}_{how.replace('+', '_')}" / "samples"
                records.append({"variant": variant, "how": how, "validation_files": sorted(p.name for p in run.glob("*.mp4"))})
            sd, _ = load_lora(Path(folder_paths.get_full_path("loras", res.result[1])))
            loras[how] = {k: v.float() for k, v in sd.items()}
            hist = res.result[2]
            records.append({"variant": variant, "how": how, "seconds": round(time.time() - t0, 1),
                            "final_loss": hist[-1]["loss"], "text": res.ui["text"][0][-400:]})
        ref = loras["eager"]
        for how in ("compiled", "compiled+streamed"):
            num = sum(float((loras[how][k] - ref[k]).norm() ** 2) for k in ref) ** 0.5
            den = sum(float(ref[k].norm() ** 2) for k in ref) ** 0.5
            records.append({"variant": variant, "compare": f"{how} vs eager", "lora_rel_diff": num / den})
        num = sum(float((loras["compiled+streamed"][k] - loras["compiled"][k]).norm() ** 2) for k in ref) ** 0.5
        records.append({"variant": variant, "compare": "streamed vs resident (both compiled)",
                        "lora_rel_diff": num / max(1e-30, sum(float(v.norm() ** 2) for v in ref.values()) ** 0.5)})
        num = sum(float((loras["compiled+streamed+validation"][k] - loras["compiled+streamed"][k]).norm() ** 2)
                  for k in ref) ** 0.5
        records.append({"variant": variant, "compare": "streamed with validation vs streamed without",
                        "lora_rel_diff": num / max(1e-30, sum(float(v.norm() ** 2) for v in ref.values()) ** 0.5)})
        print(json.dumps(records[-9:], indent=1), flush=True)
    (out / "gpu_smoke_train.json").write_text(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
