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


def unavailable() -> "str | None":
    """Why the official stack cannot run here (ltx-core or PEFT missing), or None."""
    try:
        import peft  # noqa: F401

        _import_ltx_core()
    except Exception as e:  # depends on the environment
        return f"official stack unavailable: ltx-core / PEFT not importable: {e}"
    return None


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


# The bench's --official modes as ltx-trainer's example configs (400fd31 packages/ltx-trainer/configs)
# set the flexible strategy up: t2v (t2v_lora.yaml: video + audio generated); ic / ic2
# (v2v_ic_lora.yaml: video only, a reference — full size, or downscale factor 2 — in front of the
# target, first_frame at probability 0.2); ext (video_extend_lora.yaml: a prefix of 8 latent
# frames clean, audio generated).
OFFICIAL_MODES = {
    "t2v": {"audio": True, "reference_scale": 0, "prefix": 0, "first_frame": 0.0},
    "ic": {"audio": False, "reference_scale": 1, "prefix": 0, "first_frame": 0.2},
    "ic2": {"audio": False, "reference_scale": 2, "prefix": 0, "first_frame": 0.2},
    "ext": {"audio": True, "reference_scale": 0, "prefix": 8, "first_frame": 0.0},
}


class OfficialInputs:
    """What ltx-trainer's ``FlexibleTrainingStrategy.prepare_training_inputs`` returns
    (its ``ModelInputs``): the two Modality inputs (audio None for a video-only mode), the
    flow targets of the target tokens, the loss masks over the whole sequence (reference
    tokens first, False), and the counts the benchmark records."""

    def __init__(self, video, audio, video_targets, audio_targets, video_loss_mask, audio_loss_mask,
                 reference_tokens: int, conditioning_tokens: int):
        self.video, self.audio = video, audio
        self.video_targets, self.audio_targets = video_targets, audio_targets
        self.video_loss_mask, self.audio_loss_mask = video_loss_mask, audio_loss_mask
        self.reference_tokens, self.conditioning_tokens = reference_tokens, conditioning_tokens


def official_mode_inputs(transformer_cfg: dict, W: int, H: int, F: int, fps: float, device, mode: str = "t2v",
                         seed: int = 0, text_tokens: int = 1024) -> OfficialInputs:
    """ltx-core Modality inputs of one sample for ``mode`` (:data:`OFFICIAL_MODES`), built the
    way ltx-trainer's flexible strategy builds them (training_strategies/flexible.py):
    noise and per-token timesteps σ; intrinsic conditions (prefix, first frame drawn per
    sample) put the clean latents back with timestep 0 and no loss; a reference's clean
    latents go in front of the target with timesteps 0, no loss and their own positions
    (a downscaled reference's spatial positions multiplied by the factor)."""
    from trainer_core.ltx2 import LTX2Config
    from trainer_core.ltx2.forward import audio_positions, video_positions

    if mode not in OFFICIAL_MODES:
        raise ValueError(f"official mode {mode!r}: choose one of {', '.join(OFFICIAL_MODES)}")
    spec = OFFICIAL_MODES[mode]
    _, Modality, _ = _import_ltx_core()
    c = LTX2Config.from_transformer_config(transformer_cfg)
    g = torch.Generator(device=device).manual_seed(seed)
    fl, hl, wl = 1 + (F - 1) // 8, H // 32, W // 32
    n = fl * hl * wl
    t = int(round(F / fps * 25))
    bf = torch.bfloat16
    if transformer_cfg.get("caption_proj_before_connector", False):
        vctx_w, actx_w = c.cross_attention_dim, c.audio_cross_attention_dim
    else:
        vctx_w = actx_w = c.caption_channels

    def noised(tokens):  # flexible.py _initialize_noisy_target
        x0 = torch.randn(1, tokens, 128, device=device, generator=g)
        eps = torch.randn(1, tokens, 128, device=device, generator=g)
        s = torch.rand(1, device=device, generator=g)
        xt = (1 - s.view(1, 1, 1)) * x0 + s.view(1, 1, 1) * eps
        return x0, xt, s, s.view(1, 1).expand(1, tokens).clone(), eps - x0

    x0, xt, vs, ts, vt = noised(n)
    cond = torch.zeros(1, n, device=device)  # flexible.py _apply_intrinsic_condition (binary mask)
    if spec["prefix"]:
        cond[:, :spec["prefix"] * hl * wl] = 1.0
    if spec["first_frame"] and bool(torch.rand(1, device=device, generator=g) < spec["first_frame"]):
        cond[:, :hl * wl] = 1.0
    xt = cond[..., None] * x0 + (1 - cond[..., None]) * xt
    ts = (1 - cond) * ts
    vmask = cond == 0
    pos = video_positions((fl, hl, wl), c, fps, device)
    r = 0
    if spec["reference_scale"]:  # flexible.py _apply_reference_condition
        sf = spec["reference_scale"]
        rh, rw = hl // sf, wl // sf
        r = fl * rh * rw
        ref = torch.randn(1, r, 128, device=device, generator=g)
        rpos = video_positions((fl, rh, rw), c, fps, device).clone()
        if sf != 1:
            rpos[:, 1] *= sf
            rpos[:, 2] *= sf
        xt = torch.cat([ref, xt], 1)
        pos = torch.cat([rpos, pos], 2)
        ts = torch.cat([torch.zeros(1, r, device=device), ts], 1)
        vmask = torch.cat([torch.zeros(1, r, dtype=torch.bool, device=device), vmask], 1)
    video = Modality(latent=xt.to(bf), sigma=vs, timesteps=ts, positions=pos,
                     context=torch.randn(1, text_tokens, vctx_w, device=device, generator=g).to(bf))
    audio = at = amask = None
    if spec["audio"]:
        _, ax, as_, ats, at = noised(t)
        audio = Modality(latent=ax.to(bf), sigma=as_, timesteps=ats, positions=audio_positions(t, device),
                         context=torch.randn(1, text_tokens, actx_w, device=device, generator=g).to(bf))
        at, amask = at.to(bf), torch.ones(1, t, dtype=torch.bool, device=device)
    return OfficialInputs(video, audio, vt.to(bf), at, vmask, amask, r, int(cond.sum()))


def official_inputs(transformer_cfg: dict, W: int, H: int, F: int, fps: float, device, seed: int = 0,
                    text_tokens: int = 1024):
    """(video, audio, video targets, audio targets) of text → audio + video
    (:func:`official_mode_inputs` with mode t2v: every token noised, no masks)."""
    oi = official_mode_inputs(transformer_cfg, W, H, F, fps, device, "t2v", seed, text_tokens)
    return oi.video, oi.audio, oi.video_targets, oi.audio_targets


def masked_loss(pred, targets, loss_mask):
    """flexible.py ``_compute_modality_loss``: [B] masked MSE over the target tokens (the
    prediction's leading reference tokens sliced off)."""
    n = targets.shape[1]
    m = loss_mask[:, -n:].unsqueeze(-1).float()
    se = (pred[:, -n:, :].float() - targets.float()).pow(2) * m
    return se.mean(dim=[-2, -1]) / m.mean(dim=[-2, -1]).clamp(min=1e-8)


def official_mode_step_fn(model, inp: OfficialInputs, lr: float = 1e-4):
    """:func:`official_step_fn` on :func:`official_mode_inputs` (the masked loss of the
    flexible strategy, audio left out where the mode has none)."""
    return official_step_fn(model, inp.video, inp.audio, inp.video_targets, inp.audio_targets, lr=lr,
                            video_mask=inp.video_loss_mask, audio_mask=inp.audio_loss_mask)


def official_step_fn(model, video, audio, vt, at, lr: float = 1e-4, video_mask=None, audio_mask=None):
    """One training step (forward, flow-matching MSE, backward, clip 1.0, AdamW) as a callable.
    With loss masks (:func:`official_mode_inputs`): the flexible strategy's masked MSE, and
    ``audio`` may be None (a video-only mode)."""
    _, _, Batched = _import_ltx_core()
    params = [p for p in model.parameters() if p.requires_grad]
    fused = params[0].is_cuda
    opt = torch.optim.AdamW(params, lr=lr, fused=fused)
    pert = Batched.empty(1)
    dev_type = params[0].device.type

    def step():
        with torch.autocast(dev_type, dtype=torch.bfloat16):
            v, a = model(video, audio, pert)
        if video_mask is None and audio_mask is None:
            loss = torch.nn.functional.mse_loss(v.float(), vt.float()) + torch.nn.functional.mse_loss(a.float(), at.float())
        else:
            loss = masked_loss(v, vt, video_mask).mean()
            if audio is not None:
                loss = loss + masked_loss(a, at, audio_mask).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    step.params = params  # type: ignore[attr-defined]
    return step


def lora_param_count(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = ["describe", "build_official", "official_inputs", "official_step_fn", "OFFICIAL_MODES", "OfficialInputs",
           "official_mode_inputs", "official_mode_step_fn", "masked_loss", "LORA_TARGETS", "lora_param_count", "math"]
