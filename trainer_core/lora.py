"""LoRA adapters on an LTX-2 transformer's linear layers, and the LoRA file format.

Adapters attach with forward hooks, so they work on any module tree with the checkpoint's
names — ComfyUI's own LTX-2 model (whose Linear layers cast and patch weights their own way)
or trainer_core's plain-torch tree — and leave the base weights untouched: the hook adds
``B(A(dropout(x))) · alpha / rank`` to the layer's output. Detaching removes the hooks.
The training forward computes the adapters of an attention's q/k/v layers (which read one
input) together instead (:class:`ProjectionGroup`); every other forward uses the hooks.

File format (what ComfyUI's stock LoRA loaders and Lightricks' tools read)::

    diffusion_model.<module>.lora_A.weight   [rank, in]   bf16
    diffusion_model.<module>.lora_B.weight   [out, rank]  bf16
    diffusion_model.<module>.alpha           []           bf16

plus string metadata (base model variant, rank, alpha, targets, steps, trigger word, the
run's settings as JSON). ComfyUI scales each module by ``alpha / rank``; Lightricks' loader
(ltx-core) ignores ``.alpha`` and applies ``B·A`` as it is — with alpha = rank (the default)
both apply the same LoRA. Files are read with safetensors only.

A run can start from an existing LoRA (``init_lora_from_file``): this pack's files, the
official ltx-trainer's (PEFT ``lora_A``/``lora_B`` under ``diffusion_model.``, no alpha) and
the other key layouts ComfyUI's loader maps for LTX-2 (``transformer.``, bare module names,
``lora_unet_`` with underscores; ``lora_up``/``lora_down`` or ``lora_A``/``lora_B``).
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


def _adapter_dtype(x: torch.Tensor) -> torch.dtype:
    """What an adapter computes in: autocast's dtype where autocast is on, else the input's."""
    return torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype


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
        dt = _adapter_dtype(x)
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


GROUP_ATTR = "_ltx2_lora_groups"  # on an attention module while a LoRASet is attached: {"qkv"/"kv": group}


def _plain_forward(m: nn.Module) -> bool:
    """The layer can be computed by its ``forward`` alone: nothing hooks it but one LoRA
    adapter (FSDP2's gathers, for one, are pre-hooks: such a layer is never grouped)."""
    return not m._forward_pre_hooks and len(m._forward_hooks) == 1


class ProjectionGroup:
    """LoRA adapters on layers that read one input — an attention's q, k and v, or the k and v
    of a cross-attention — computed as one down-projection (their A matrices stacked) and, when
    ranks and widths match, one batched up-projection: two products for the group instead of
    two per layer, and the input read once. Each layer's result is the same as its own adapter's (only the
    order of float sums inside the products can differ). Used by the training forward
    (``trainer_core.ltx2.forward.attention``), which computes the layers' frozen outputs through
    their ``forward`` (so the per-layer hooks don't add the adapters twice); any other forward
    of the model (ComfyUI's, when validation samples) goes through the hooks as before.
    Adapters with dropout are never grouped (each layer draws its own mask)."""

    def __init__(self, layers: list[nn.Module], adapters: list[LoRAAdapter]):
        self.layers, self.adapters = layers, adapters
        ranks = {ad.rank for ad in adapters}
        widths = {ad.lora_B.shape[0] for ad in adapters}
        scales = {ad.scale for ad in adapters}
        self.batched_up = len(ranks) == 1 and len(widths) == 1
        self.scale = scales.pop() if len(scales) == 1 else None
        self.splits = [ad.rank for ad in adapters]

    def usable(self) -> bool:
        return all(_plain_forward(m) for m in self.layers)

    def outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each layer's output with its adapter added (as the hooks would give it)."""
        dt = _adapter_dtype(x)
        ads = self.adapters
        h = torch.nn.functional.linear(x.to(dt), torch.cat([ad.lora_A for ad in ads]).to(dt))
        if self.batched_up:
            n, r = len(ads), ads[0].rank
            hs = h.unflatten(-1, (n, r)).movedim(-2, 0)  # [n, ..., r]
            bs = torch.stack([ad.lora_B for ad in ads]).to(dt)  # [n, out, r]
            ups = torch.matmul(hs.flatten(1, -2), bs.transpose(1, 2))  # [n, M, out]
            ups = ups.unflatten(1, x.shape[:-1]).unbind(0)
            if self.scale is not None:
                deltas = [u * self.scale for u in ups]
            else:
                deltas = [u * ad.scale for u, ad in zip(ups, ads)]
        else:
            deltas = [torch.nn.functional.linear(hi, ad.lora_B.to(dt)) * ad.scale
                      for hi, ad in zip(h.split(self.splits, dim=-1), ads)]
        outs = []
        for m, d in zip(self.layers, deltas):
            base = m.forward(x)
            outs.append(base + d.to(base.dtype))
        return outs


def projection_group(attn: nn.Module, key: str) -> Optional[ProjectionGroup]:
    """The attached LoRA's group ``key`` ("qkv": one input for q, k, v; "kv": the context for
    k, v) of attention module ``attn``, when it can be used now; else None (the layers' own
    hooks then apply each adapter)."""
    groups = attn.__dict__.get(GROUP_ATTR)
    g = groups.get(key) if groups else None
    return g if g is not None and g.usable() else None


class LoRASet(nn.Module):
    """All adapters of one LoRA, keyed by module name, attachable to a module tree."""

    def __init__(self, shapes: dict[str, tuple[int, int]], rank: int, alpha: float, dropout: float = 0.0,
                 ranks: Optional[dict[str, int]] = None, alphas: Optional[dict[str, float]] = None):
        super().__init__()
        if rank < 1:
            raise LoRAError("rank must be at least 1")
        self.names = sorted(shapes)
        self.rank, self.alpha, self.dropout_p = rank, float(alpha), dropout
        ranks, alphas = ranks or {}, alphas or {}
        self.adapters = nn.ModuleDict({_key(n): LoRAAdapter(shapes[n][1], shapes[n][0], ranks.get(n, rank),
                                                            alphas.get(n, alpha), dropout)
                                       for n in self.names})
        self._handles: list = []
        self._grouped: list = []

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

    def attach(self, root: nn.Module, group: bool = True) -> "LoRASet":
        """Hook every adapter onto its layer under ``root`` (detaching any earlier hooks).
        With ``group``, attention modules whose q/k/v (and k/v) layers all carry adapters also
        get their :class:`ProjectionGroup` s, which the training forward uses."""
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
        if group:
            self._attach_groups(mods)
        return self

    def _attach_groups(self, mods: dict[str, nn.Module]) -> None:
        have = set(self.names)
        for parent in sorted({n.rsplit(".", 1)[0] for n in self.names if n.endswith((".to_q", ".to_k", ".to_v"))}):
            groups = {}
            for key, projs in (("qkv", ("to_q", "to_k", "to_v")), ("kv", ("to_k", "to_v"))):
                names = [f"{parent}.{p}" for p in projs]
                if not all(n in have for n in names):
                    continue
                ads = [self.adapter(n) for n in names]
                layers = [mods[n] for n in names]
                if any(not isinstance(ad.dropout, nn.Identity) for ad in ads) or not all(map(_plain_forward, layers)):
                    continue
                groups[key] = ProjectionGroup(layers, ads)
            if groups:
                mods[parent].__dict__[GROUP_ATTR] = groups
                self._grouped.append(mods[parent])

    @property
    def grouped(self) -> int:
        """How many attention modules have projection groups now."""
        return len(self._grouped)

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        for m in getattr(self, "_grouped", []):
            m.__dict__.pop(GROUP_ATTR, None)
        self._grouped = []

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def comfy_state_dict(self, dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
        sd = {}
        for n in self.names:
            ad = self.adapter(n)
            sd[f"{PREFIX}{n}.lora_A.weight"] = ad.lora_A.detach().to("cpu", dtype, copy=True)
            sd[f"{PREFIX}{n}.lora_B.weight"] = ad.lora_B.detach().to("cpu", dtype, copy=True)
            sd[f"{PREFIX}{n}.alpha"] = torch.tensor(ad.alpha, dtype=dtype)
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
            "modules": str(len(lora.names)), "alpha_note": alpha_note(lora.rank, lora.alpha)}
    for k, v in (metadata or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    atomic_save_safetensors(lora.comfy_state_dict(), path, metadata=meta)


def load_lora(path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        sd = {k: f.get_tensor(k) for k in f.keys()}
    return sd, meta


def alpha_note(rank: int, alpha: float) -> str:
    if float(alpha) == float(rank):
        return ("ComfyUI scales by .alpha / rank; Lightricks' loader ignores .alpha (scale 1): alpha = rank here, "
                "so both apply the same LoRA")
    return (f"ComfyUI scales by .alpha / rank = {alpha:g}/{rank}; Lightricks' loader ignores .alpha (scale 1), so "
            f"there it acts {rank / float(alpha):g}x as strong: use strength {float(alpha) / rank:g} in Lightricks' tools")


# ----------------------------------------------------------------------------- other LoRA files

# (A suffix, B suffix) pairs ComfyUI's loader reads (comfy/weight_adapter/lora.py)
_PAIRS = ((".lora_A.weight", ".lora_B.weight"), (".lora_down.weight", ".lora_up.weight"),
          (".lora_A.default.weight", ".lora_B.default.weight"), (".lora.down.weight", ".lora.up.weight"),
          ("_lora.down.weight", "_lora.up.weight"), (".lora_A", ".lora_B"))
# key prefixes ComfyUI maps onto an LTX-2 model (comfy/lora.py: generic, diffusers-style, LTXV bare)
_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "base_model.model.", "transformer.")


def parse_lora_state_dict(sd: dict[str, torch.Tensor], module_names: Iterable[str] = ()) -> tuple[dict, list[str]]:
    """Any supported LoRA layout -> ({module name: {"A", "B", "alpha" (or None)}}, keys not
    understood). ``module_names`` (the model's) resolve ``lora_unet_`` names whose dots
    became underscores."""
    under = {n.replace(".", "_"): n for n in module_names}
    mods: dict[str, dict] = {}
    used: set[str] = set()

    def module_of(stem: str) -> str:
        if stem.startswith("lora_unet_"):
            s = stem[len("lora_unet_"):]
            return under.get(s, s)
        for p in _PREFIXES:
            if stem.startswith(p):
                return stem[len(p):]
        return stem

    for k in sd:
        for a_suf, b_suf in _PAIRS:
            if k.endswith(a_suf):
                stem = k[:-len(a_suf)]
                bk = stem + b_suf
                if bk in sd:
                    m = mods.setdefault(module_of(stem), {"A": None, "B": None, "alpha": None, "keys": []})
                    m["A"], m["B"] = sd[k], sd[bk]
                    m["keys"] += [k, bk]
                    used.update((k, bk))
                    for ak in (stem + ".alpha", stem.replace(".lora", "") + ".alpha"):
                        if ak in sd and sd[ak].numel() == 1:
                            m["alpha"] = float(sd[ak].float())
                            used.add(ak)
                            break
                break
    unknown = sorted(k for k in sd if k not in used)
    return mods, unknown


def file_digest_sha256(path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def init_lora_from_file(root: nn.Module, path, dropout: float = 0.0) -> tuple["LoRASet", str, list[str]]:
    """Adapters for ``root`` whose starting weights are the LoRA file's: its modules, each
    with its rank (from the tensors) and alpha (``.alpha`` when stored, else = rank, as
    Lightricks' loader assumes). Modules the model lacks or whose shapes differ are skipped
    and named in the notes; nothing usable is an error. Returns (lora, file sha256, notes)."""
    from pathlib import Path

    path = Path(path)
    name = path.name
    if not path.is_file():
        raise LoRAError(f"init LoRA {path} does not exist; choose a file from the loras folder")
    try:
        sd, meta = load_lora(path)
    except Exception as e:
        raise LoRAError(f"init LoRA {name} cannot be read as safetensors ({type(e).__name__}: {e})") from e
    mods_all = dict(root.named_modules())
    parsed, unknown = parse_lora_state_dict(sd, mods_all)
    if not parsed:
        raise LoRAError(f"init LoRA {name} has no LoRA pairs (lora_A/lora_B or lora_down/lora_up) in any layout "
                        f"this trainer reads; keys look like {list(sd)[:3]}")
    unknown = [k for k in unknown if not k.endswith(".alpha")]
    if unknown:
        raise LoRAError(f"init LoRA {name} has {len(unknown)} tensors that are not plain LoRA pairs (e.g. "
                        f"{unknown[:3]}: DoRA, LoCon or full-weight diffs?); only plain LoRA files can be a "
                        "starting point")
    shapes, ranks, alphas = {}, {}, {}
    missing, mismatched = [], []
    for m, t in sorted(parsed.items()):
        mod = mods_all.get(m)
        if mod is None or not is_linear(mod):
            missing.append(m)
            continue
        A, B = t["A"], t["B"]
        r = A.shape[0]
        if A.ndim != 2 or B.ndim != 2 or B.shape[1] != r or A.shape[1] != mod.in_features or B.shape[0] != mod.out_features:
            mismatched.append(f"{m} (file {list(B.shape)}·{list(A.shape)}, model [{mod.out_features}, {mod.in_features}])")
            continue
        shapes[m] = (mod.out_features, mod.in_features)
        ranks[m] = r
        alphas[m] = t["alpha"] if t["alpha"] is not None else float(r)
    skipped = missing + mismatched
    if not shapes:
        raise LoRAError(f"init LoRA {name} fits nothing in this model: {len(missing)} of its modules are not in it "
                        f"(e.g. {missing[:3]}) and {len(mismatched)} have other shapes (e.g. {mismatched[:2]}); "
                        "it was made for another model")
    rank_counts: dict[int, int] = {}
    for r in ranks.values():
        rank_counts[r] = rank_counts.get(r, 0) + 1
    rank = max(rank_counts, key=rank_counts.get)
    alpha = max(set(alphas.values()), key=list(alphas.values()).count)
    s = LoRASet(shapes, rank, alpha, dropout, ranks=ranks, alphas=alphas)
    with torch.no_grad():
        for n in s.names:
            s.adapter(n).lora_A.copy_(parsed[n]["A"].float())
            s.adapter(n).lora_B.copy_(parsed[n]["B"].float())
    stored_alpha = any(parsed[n]["alpha"] is not None for n in s.names)
    notes = [f"starting from {name}: {len(s.names)} modules, rank {rank}"
             + (" (mixed ranks)" if len(rank_counts) > 1 else "")
             + f", alpha {alpha:g}" + ("" if stored_alpha else " (no .alpha stored: alpha = rank, as Lightricks' loader)")]
    if skipped:
        notes.append(f"init LoRA {name}: skipped {len(skipped)} modules this model does not have or has in other "
                     f"shapes: {', '.join(skipped[:4])}{' …' if len(skipped) > 4 else ''}")
    return s, file_digest_sha256(path), notes
