"""The official stack for side-by-side figures: Lightricks' ltx-core transformer with a PEFT
LoRA on the attention projections, ltx-core's own per-block gradient checkpointing and AdamW —
the way ltx-trainer trains a LoRA — at the same full-size layout and shapes as our benchmark
(random bf16 weights).

ltx-core is imported from the environment — ``scripts/setup.sh`` installs it from a
Lightricks/LTX-2 source copy at commit 203d484 (ltx-core 1.1.4, with the audio-video
cross-attention AdaLN fix), else PyPI's 1.0.0 — or else from a pure-Python wheel in
``bench/wheels/`` (``pip wheel --no-deps ~/.cache/ltx2-src/203d484/packages/ltx-core -w
bench/wheels``, or PyPI's ``ltx_core-1.0.0``), so the GPU machine needs nothing installed but
PEFT. The two versions take the same calls here; :func:`describe` says which one ran (speed is
the same: the fix changes which timestep feeds two small AdaLN MLPs, not the work).
"""
from __future__ import annotations

import glob
import math
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

# ltx-trainer's default LoRA targets: every attention projection (video, audio, cross-modal)
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def _import_ltx_core():
    try:
        import ltx_core  # noqa: F401
    except ImportError:
        for whl in sorted(glob.glob(str(HERE / "wheels" / "ltx_core-*.whl"))):
            sys.path.insert(0, whl)
        import ltx_core  # noqa: F401
    from ltx_core.guidance.perturbations import BatchedPerturbationConfig
    from ltx_core.model.transformer.modality import Modality
    from ltx_core.model.transformer.model_configurator import LTXModelConfigurator

    return LTXModelConfigurator, Modality, BatchedPerturbationConfig


def describe() -> str:
    """"ltx-core <version> (<where>), with|without the 203d484 A/V cross-attention AdaLN fix"."""
    import inspect

    _import_ltx_core()
    import ltx_core
    from ltx_core.model.transformer.transformer_args import MultiModalTransformerArgsPreprocessor as M

    try:
        from importlib.metadata import version

        ver = version("ltx-core")
    except Exception:  # a source tree on PYTHONPATH (packages/ltx-core/src/ltx_core): its pyproject
        import re

        pp = Path(ltx_core.__file__).resolve().parents[2] / "pyproject.toml"
        m = re.search(r'^version\s*=\s*"([^"]+)"', pp.read_text(), re.M) if pp.is_file() else None
        ver = (m.group(1) + " source") if m else "?"
    fixed = "modality_timesteps" in inspect.signature(M._prepare_cross_attention_timestep).parameters
    return (f"ltx-core {ver} ({Path(ltx_core.__file__).parent}), "
            f"{'with' if fixed else 'without'} the 203d484 A/V cross-attention AdaLN fix")


def build_official(transformer_cfg: dict, device, dtype=torch.bfloat16, seed: int = 0, rank: int = 32):
    """ltx-core's LTXModel for this transformer config with random weights, a PEFT LoRA of
    ``rank`` on the attention projections, per-block gradient checkpointing on."""
    from peft import LoraConfig, get_peft_model

    Configurator, _, _ = _import_ltx_core()
    with torch.device("meta"):
        model = Configurator.from_config({"transformer": dict(transformer_cfg)})
    model = model.to(dtype=dtype).to_empty(device=device)
    g = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif p.ndim == 1:  # norm weights
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=g)
        for _, b in model.named_buffers():
            b.zero_()
    model.requires_grad_(False)
    model.set_gradient_checkpointing(True)
    model.train()
    peft_cfg = LoraConfig(r=rank, lora_alpha=rank, target_modules=LORA_TARGETS, lora_dropout=0.0, init_lora_weights=True)
    model = get_peft_model(model, peft_cfg)
    for n, p in model.named_parameters():  # LoRA weights in fp32, as ltx-trainer keeps them
        if p.requires_grad:
            p.data = p.data.float()
    return model


def official_inputs(transformer_cfg: dict, W: int, H: int, F: int, fps: float, device, seed: int = 0,
                    text_tokens: int = 1024):
    """ltx-core Modality inputs of one sample (noised latents, per-token σ, positions, the
    connectors' text output) + flow targets, with our LTX2Config's position rules."""
    from trainer_core.ltx2 import LTX2Config
    from trainer_core.ltx2.forward import audio_positions, video_positions

    _, Modality, _ = _import_ltx_core()
    c = LTX2Config.from_transformer_config(transformer_cfg)
    g = torch.Generator(device=device).manual_seed(seed)
    fl, hl, wl = 1 + (F - 1) // 8, H // 32, W // 32
    n = fl * hl * wl
    t = int(round(F / fps * 25))
    bf = torch.bfloat16

    def noised(tokens):
        x0 = torch.randn(1, tokens, 128, device=device, generator=g)
        eps = torch.randn(1, tokens, 128, device=device, generator=g)
        s = torch.rand(1, device=device, generator=g)
        xt = (1 - s.view(1, 1, 1)) * x0 + s.view(1, 1, 1) * eps
        return xt.to(bf), s, (eps - x0).to(bf)

    if transformer_cfg.get("caption_proj_before_connector", False):
        vctx_w, actx_w = c.cross_attention_dim, c.audio_cross_attention_dim
    else:
        vctx_w = actx_w = c.caption_channels
    vx, vs, vt = noised(n)
    ax, as_, at = noised(t)
    video = Modality(latent=vx, sigma=vs, timesteps=vs.view(1, 1).expand(1, n).contiguous(),
                     positions=video_positions((fl, hl, wl), c, fps, device),
                     context=torch.randn(1, text_tokens, vctx_w, device=device, generator=g).to(bf))
    audio = Modality(latent=ax, sigma=as_, timesteps=as_.view(1, 1).expand(1, t).contiguous(),
                     positions=audio_positions(t, device),
                     context=torch.randn(1, text_tokens, actx_w, device=device, generator=g).to(bf))
    return video, audio, vt, at


def official_step_fn(model, video, audio, vt, at, lr: float = 1e-4):
    """One training step (forward, flow-matching MSE, backward, clip 1.0, AdamW) as a callable."""
    _, _, Batched = _import_ltx_core()
    params = [p for p in model.parameters() if p.requires_grad]
    fused = params[0].is_cuda
    opt = torch.optim.AdamW(params, lr=lr, fused=fused)
    pert = Batched.empty(1)
    dev_type = params[0].device.type

    def step():
        with torch.autocast(dev_type, dtype=torch.bfloat16):
            v, a = model(video, audio, pert)
        loss = torch.nn.functional.mse_loss(v.float(), vt.float()) + torch.nn.functional.mse_loss(a.float(), at.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    step.params = params  # type: ignore[attr-defined]
    return step


def lora_param_count(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["describe", "build_official", "official_inputs", "official_step_fn", "LORA_TARGETS", "lora_param_count", "math"]
