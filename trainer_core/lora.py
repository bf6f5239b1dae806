"""LoRA adapters on an LTX-2 transformer's linear layers, and the LoRA file format.

Adapters attach with forward hooks, so they work on any module tree with the checkpoint's
names — ComfyUI's own LTX-2 model (whose Linear layers cast and patch weights their own way)
or trainer_core's plain-torch tree — and leave the base weights untouched: the hook adds
``B(A(dropout(x))) · alpha / rank`` to the layer's output. Detaching removes the hooks.

File format (what ComfyUI's stock LoRA loaders and Lightricks' tools read)::

    diffusion_model.<module>.lora_A.weight   [rank, in]   bf16
    diffusion_model.<module>.lora_B.weight   [out, rank]  bf16
    diffusion_model.<module>.alpha           []           bf16

plus string metadata (base model variant, rank, alpha, targets, steps, trigger word, the
run's settings as JSON). Files are read with safetensors only.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Iterable, Optional

import torch
from torch import nn

PREFIX = "diffusion_model."
_PROJ = r"(to_q|to_k|to_v|to_out\.0)"
_BLOCK = r"transformer_blocks\.\d+\."

# target presets: regexes over module names relative to the transformer root
TARGET_PRESETS: dict[str, list[str]] = {
    "video attention": [_BLOCK + r"attn[12]\." + _PROJ],
    "audio attention": [_BLOCK + r"audio_attn[12]\." + _PROJ],
    "cross-modal attention": [_BLOCK + r"(audio_to_video_attn|video_to_audio_attn)\." + _PROJ],
    "all attention": [_BLOCK + r"(attn[12]|audio_attn[12]|audio_to_video_attn|video_to_audio_attn)\." + _PROJ],
    "all attention + feed-forward": [
        _BLOCK + r"(attn[12]|audio_attn[12]|audio_to_video_attn|video_to_audio_attn)\." + _PROJ,
        _BLOCK + r"(ff|audio_ff)\.net\.(0\.proj|2)",
    ],
}


class LoRAError(ValueError):
    pass


def _compile(patterns: Iterable[str]) -> list[re.Pattern]:
    out = []
    for p in patterns:
        p = p.strip()
        if not p:
            continue
        if not any(ch in p for ch in "\\^$()[]+|") and ("*" in p or "?" in p):
            p = re.escape(p).replace(r"\*", ".*").replace(r"\?", ".")  # a glob
        try:
            out.append(re.compile(p))
        except re.error as e:
            raise LoRAError(f"target pattern {p!r} is not a valid regular expression: {e}") from e
    return out


def split_patterns(text: str) -> list[str]:
    return [p for p in re.split(r"[,;\n]+", text or "") if p.strip()]


def is_linear(m: nn.Module) -> bool:
    """nn.Linear, or a layer that computes like one without subclassing it — ComfyUI's
    mixed-precision ops (fp8 checkpoints) are plain modules with ``in_features``,
    ``out_features`` and a (quantized) ``weight``."""
    if isinstance(m, nn.Linear):
        return True
    return (isinstance(getattr(m, "in_features", None), int) and isinstance(getattr(m, "out_features", None), int)
            and getattr(m, "weight", None) is not None and not list(m.children()))


def resolve_targets(root: nn.Module, preset: Optional[str] = None, patterns: Iterable[str] = ()) -> list[str]:
    """Names of the nn.Linear modules under ``root`` matched by the preset and/or patterns
    (regexes, or globs such as ``*.attn1.to_q``, matched against the whole name)."""
    pats: list[str] = []
    if preset:
        if preset not in TARGET_PRESETS:
            raise LoRAError(f"unknown target preset {preset!r}; choose one of {', '.join(TARGET_PRESETS)}")
        pats += TARGET_PRESETS[preset]
    pats += list(patterns)
    regs = _compile(pats)
    if not regs:
        raise LoRAError("no LoRA targets: choose a preset or give patterns")
    names = [n for n, m in root.named_modules() if is_linear(m) and any(r.fullmatch(n) for r in regs)]
    if not names:
        raise LoRAError(f"the target patterns {pats} match no linear layer of this model")
    return names


class LoRAAdapter(nn.Module):
    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.rank, self.alpha = rank, float(alpha)
        self.lora_A = nn.Parameter(torch.empty(rank, in_features, dtype=torch.float32))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank, dtype=torch.float32))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def reset(self, generator: torch.Generator) -> None:
        # PEFT's default: A ~ kaiming-uniform(a=√5), B = 0, so the adapter starts as a no-op.
        bound = 1.0 / math.sqrt(self.lora_A.shape[1])
        with torch.no_grad():
            self.lora_A.copy_(torch.rand(self.lora_A.shape, generator=generator) * 2 * bound - bound)
            self.lora_B.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(x)
        dt = x.dtype if not torch.is_autocast_enabled(x.device.type) else torch.get_autocast_dtype(x.device.type)
        h = torch.nn.functional.linear(h.to(dt), self.lora_A.to(dt))
        return torch.nn.functional.linear(h, self.lora_B.to(dt)) * self.scale

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scale


def _key(name: str) -> str:
    return name.replace(".", "__")


@dataclass
class LoRASpec:
    rank: int = 32
    alpha: float = 32.0
    dropout: float = 0.0
    preset: Optional[str] = "all attention"
    patterns: tuple[str, ...] = ()


class LoRASet(nn.Module):
    """All adapters of one LoRA, keyed by module name, attachable to a module tree."""

    def __init__(self, shapes: dict[str, tuple[int, int]], rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if rank < 1:
            raise LoRAError("rank must be at least 1")
        self.names = sorted(shapes)
        self.rank, self.alpha, self.dropout_p = rank, float(alpha), dropout
        self.adapters = nn.ModuleDict({_key(n): LoRAAdapter(shapes[n][1], shapes[n][0], rank, alpha, dropout)
                                       for n in self.names})
        self._handles: list = []

    @classmethod
    def for_model(cls, root: nn.Module, spec: LoRASpec, seed: int = 0) -> "LoRASet":
        names = resolve_targets(root, spec.preset, spec.patterns)
        mods = dict(root.named_modules())
        shapes = {n: (mods[n].out_features, mods[n].in_features) for n in names}
        s = cls(shapes, spec.rank, spec.alpha, spec.dropout)
        g = torch.Generator().manual_seed(seed)
        for n in s.names:
            s.adapter(n).reset(g)
        return s

    def adapter(self, name: str) -> LoRAAdapter:
        return self.adapters[_key(name)]

    def attach(self, root: nn.Module) -> "LoRASet":
        """Hook every adapter onto its layer under ``root`` (detaching any earlier hooks)."""
        self.detach()
        mods = dict(root.named_modules())
        missing = [n for n in self.names if n not in mods]
        if missing:
            raise LoRAError(f"{len(missing)} LoRA targets are not in this model, e.g. {missing[:3]}")
        for n in self.names:
            ad = self.adapter(n)

            def hook(mod, args, out, ad=ad):
                return out + ad(args[0]).to(out.dtype)

            self._handles.append(mods[n].register_forward_hook(hook))
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def comfy_state_dict(self, dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
        sd = {}
        for n in self.names:
            ad = self.adapter(n)
            sd[f"{PREFIX}{n}.lora_A.weight"] = ad.lora_A.detach().to("cpu", dtype).contiguous()
            sd[f"{PREFIX}{n}.lora_B.weight"] = ad.lora_B.detach().to("cpu", dtype).contiguous()
            sd[f"{PREFIX}{n}.alpha"] = torch.tensor(self.alpha, dtype=dtype)
        return sd

    def load_comfy_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for n in self.names:
                ad = self.adapter(n)
                ad.lora_A.copy_(sd[f"{PREFIX}{n}.lora_A.weight"].float())
                ad.lora_B.copy_(sd[f"{PREFIX}{n}.lora_B.weight"].float())

    @classmethod
    def from_comfy_state_dict(cls, sd: dict[str, torch.Tensor], dropout: float = 0.0) -> "LoRASet":
        names = sorted(k[len(PREFIX):-len(".lora_A.weight")] for k in sd if k.endswith(".lora_A.weight"))
        if not names:
            raise LoRAError("no diffusion_model.*.lora_A.weight keys: not an LTX-2 LoRA in this format")
        shapes = {n: (sd[f"{PREFIX}{n}.lora_B.weight"].shape[0], sd[f"{PREFIX}{n}.lora_A.weight"].shape[1]) for n in names}
        rank = sd[f"{PREFIX}{names[0]}.lora_A.weight"].shape[0]
        alpha_t = sd.get(f"{PREFIX}{names[0]}.alpha")
        alpha = float(alpha_t) if alpha_t is not None else float(rank)
        s = cls(shapes, rank, alpha, dropout)
        s.load_comfy_state_dict(sd)
        return s


def save_lora(path, lora: LoRASet, metadata: Optional[dict] = None) -> None:
    """Write the LoRA atomically, bf16, with string metadata (non-strings JSON-encoded)."""
    from .fsutil import atomic_save_safetensors

    meta = {"format": "ltx2-lora", "rank": str(lora.rank), "alpha": str(lora.alpha),
            "modules": str(len(lora.names))}
    for k, v in (metadata or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    atomic_save_safetensors(lora.comfy_state_dict(), path, metadata=meta)


def load_lora(path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        sd = {k: f.get_tensor(k) for k in f.keys()}
    return sd, meta
