"""LTX-2 transformer dimensions and switches, read from a checkpoint or from a module tree.

Three sources give the same :class:`LTX2Config`:

- a checkpoint's safetensors metadata (``config`` JSON with a ``transformer`` section, and
  ``model_version`` when the checkpoint has one), completed from the state dict's shapes
  the way ComfyUI's model detection does (``num_layers`` from the block count,
  ``attention_head_dim`` and ``cross_attention_dim`` from ``attn2.to_k``);
- a state dict alone (every dimension from shapes, every switch that shapes can show from
  key presence; the RoPE switches, which no shape shows, must then come from a config);
- a live module tree: ComfyUI's ``LTXAVModel`` (its attributes are the constructor's
  arguments) or our own plain tree (which carries its config).

Defaults are those of ComfyUI's ``LTXAVModel`` constructor, because the model we train is
the one ComfyUI built from the same config: a key missing from a checkpoint's config takes
the value ComfyUI gives it. (Lightricks' ltx-core uses other defaults for a few keys, e.g.
``use_middle_indices_grid``; real checkpoints spell these keys out.)

The variant ("2.0" for the 19B LTX-2, "2.3" for the 22B LTX-2.3, "2.5" for the 22B
LTX-2.5) is what the checkpoint declares: its ``model_version`` when present (Lightricks'
files carry it from 2.3 on; ltx-core requires it, with ``gemma_source_checkpoint``, from
2.4 on); else a ``gemma_source_checkpoint`` entry (only the Gemma 4 generation declares
one: 2.5); else its transformer config's features — 2.5's (``ff_bias`` false or the
keyframe embedding), 2.3's (gated attention, caption projection before the connectors).
It is never inferred from tensor sizes.

LTX-2.5 switches (ComfyUI's constructor names and defaults, which ltx-core shares):
``ff_bias`` / ``audio_ff_bias`` (biases of the blocks' video / audio feed-forward),
``use_prompt_adaln_single`` (the prompt-side AdaLN MLP of the text cross-attention; without
it the K/V modulation is the per-block table alone) and ``use_keyframes_abs_pos_embedding``
(a learned [1, D] vector added after ``patchify_proj`` to the tokens of single-pixel-frame
latents). ComfyUI reads the first three from the config and the last from the key's
presence (``model_detection``: it overrides the config), ltx-core reads all four from the
config; a checkpoint's state dict decides here as in ComfyUI.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping, Optional

PREFIX = "model.diffusion_model."


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class LTX2Config:
    # streams
    num_layers: int = 48
    in_channels: int = 128
    audio_in_channels: int = 128
    num_attention_heads: int = 32
    attention_head_dim: int = 128
    audio_num_attention_heads: int = 32
    audio_attention_head_dim: int = 64
    cross_attention_dim: int = 4096  # video text-context width seen by attn2
    audio_cross_attention_dim: int = 2048  # audio text-context width seen by audio_attn2
    caption_channels: int = 3840  # width of the text encoder's output (LTX-2.0)
    # caption projection placement
    caption_proj_before_connector: bool = False  # 2.3: projection precedes the connectors
    caption_projection_first_linear: bool = True  # with the above: a norm+linear in the model (else none)
    # block switches
    apply_gated_attention: bool = False  # 2.3: per-head gates (to_gate_logits)
    cross_attention_adaln: bool = False  # AdaLN on text cross-attention (9-row tables)
    use_prompt_adaln_single: bool = True  # with the above: prompt_adaln_single MLPs (2.5 may drop them)
    ff_bias: bool = True  # 2.5: false (video feed-forward without biases)
    audio_ff_bias: bool = True
    use_keyframes_abs_pos_embedding: bool = False  # 2.5: keyframes_abs_pos_embedding [1, D]
    # positions and timesteps
    positional_embedding_max_pos: tuple = (20, 2048, 2048)
    audio_positional_embedding_max_pos: tuple = (20,)
    causal_temporal_positioning: bool = False
    vae_scale_factors: tuple = (8, 32, 32)
    use_middle_indices_grid: bool = False
    timestep_scale_multiplier: float = 1000.0
    av_ca_timestep_scale_multiplier: float = 1.0
    rope_type: str = "interleaved"  # transformer blocks: "interleaved" | "split"
    frequencies_precision: str = "float32"  # "float32" | "float64" (freq grid computed in float64)
    # text embedding connectors
    connector_rope_type: str = "split"
    connector_num_layers: int = 2
    connector_num_attention_heads: int = 30
    connector_attention_head_dim: int = 128
    audio_connector_num_attention_heads: int = 30
    audio_connector_attention_head_dim: int = 128
    connector_apply_gated_attention: bool = False
    connector_num_learnable_registers: int = 128
    # bookkeeping
    variant: str = "2.0"
    model_version: str = ""

    # ---------------------------------------------------------------- derived
    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def audio_inner_dim(self) -> int:
        return self.audio_num_attention_heads * self.audio_attention_head_dim

    @property
    def video_connector_dim(self) -> int:
        return self.connector_num_attention_heads * self.connector_attention_head_dim

    @property
    def audio_connector_dim(self) -> int:
        return self.audio_connector_num_attention_heads * self.audio_connector_attention_head_dim

    @property
    def adaln_params(self) -> int:
        return 9 if self.cross_attention_adaln else 6

    @property
    def has_prompt_adaln(self) -> bool:
        """Whether the model has ``prompt_adaln_single`` / ``audio_prompt_adaln_single``."""
        return self.cross_attention_adaln and self.use_prompt_adaln_single

    @property
    def has_caption_projection(self) -> bool:
        return (not self.caption_proj_before_connector) or self.caption_projection_first_linear

    def to_dict(self) -> dict:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    def transformer_config(self) -> dict:
        """The ``config["transformer"]`` section that makes ComfyUI (and this module) build
        this model: ComfyUI's constructor argument names."""
        d = self.to_dict()
        for k in ("variant", "model_version", "connector_rope_type", "connector_num_learnable_registers"):
            d.pop(k)
        # ComfyUI derives the connectors' RoPE layout from rope_type (split when it is absent)
        if self.rope_type == "interleaved" and self.connector_rope_type == "split":
            d.pop("rope_type")
        elif self.connector_rope_type != self.rope_type:
            raise ConfigError(f"rope_type={self.rope_type!r} with connector_rope_type={self.connector_rope_type!r} "
                              "is not a layout ComfyUI can build")
        return d

    # ---------------------------------------------------------------- parsing
    @classmethod
    def from_transformer_config(cls, tcfg: Mapping[str, Any], model_version: str = "",
                                base: Optional["LTX2Config"] = None, gemma_source: bool = False) -> "LTX2Config":
        """Apply a checkpoint's ``config["transformer"]`` over ``base`` (ComfyUI's defaults)."""
        c = base or cls()
        names = {f.name for f in fields(cls)}
        upd: dict[str, Any] = {}
        for k, v in tcfg.items():
            if k in names and k not in ("variant", "model_version", "connector_rope_type"):
                upd[k] = tuple(v) if isinstance(v, list) else v
        # ComfyUI: main RoPE layout defaults to interleaved; connectors default to split and
        # follow rope_type when it is given.
        rt = tcfg.get("rope_type")
        if rt is not None:
            rt = getattr(rt, "value", rt)
            upd["rope_type"] = str(rt)
            upd["connector_rope_type"] = "split" if str(rt) == "split" else str(rt)
        fp = tcfg.get("frequencies_precision")
        if fp is not None:
            upd["frequencies_precision"] = str(getattr(fp, "value", fp))
        # audio connector heads default to the video connector's
        if "connector_num_attention_heads" in tcfg and "audio_connector_num_attention_heads" not in tcfg:
            upd["audio_connector_num_attention_heads"] = tcfg["connector_num_attention_heads"]
        if "connector_attention_head_dim" in tcfg and "audio_connector_attention_head_dim" not in tcfg:
            upd["audio_connector_attention_head_dim"] = tcfg["connector_attention_head_dim"]
        c = replace(c, **upd)
        for k in ("timestep_scale_multiplier", "av_ca_timestep_scale_multiplier"):
            object.__setattr__(c, k, float(getattr(c, k)))
        if c.rope_type not in ("interleaved", "split"):
            raise ConfigError(f"unknown rope_type {c.rope_type!r} in the checkpoint config")
        if c.frequencies_precision not in ("float32", "float64"):
            raise ConfigError(f"unknown frequencies_precision {c.frequencies_precision!r}")
        for k in ("ff_bias", "audio_ff_bias", "use_prompt_adaln_single", "use_keyframes_abs_pos_embedding"):
            object.__setattr__(c, k, bool(getattr(c, k)))
        return replace(c, variant=variant_of(tcfg, model_version, gemma_source), model_version=model_version or "")

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], shapes: Optional[Mapping[str, tuple]] = None) -> "LTX2Config":
        """From safetensors metadata (``config`` as a JSON string or dict), completed from
        ``shapes`` (state-dict key -> shape, keys with or without ``model.diffusion_model.``)
        the way ComfyUI's detection does before it applies the config."""
        raw = metadata.get("config")
        if raw is None:
            raise ConfigError("the checkpoint has no 'config' metadata: cannot tell which LTX-2 model it is")
        cfg = json.loads(raw) if isinstance(raw, (str, bytes)) else dict(raw)
        tcfg = cfg.get("transformer")
        if not isinstance(tcfg, Mapping):
            raise ConfigError("the checkpoint's config has no 'transformer' section: not an LTX-2 transformer")
        base = cls()
        if shapes:
            s = _strip(shapes)
            upd = {}
            n = _count_blocks(s)
            if n:
                upd["num_layers"] = n
            k = s.get("transformer_blocks.0.attn2.to_k.weight")
            if k is not None:  # ComfyUI's detection assumes 32 heads here; the config may override
                upd["attention_head_dim"] = k[0] // 32
                upd["cross_attention_dim"] = k[1]
            base = replace(base, **upd)
        c = cls.from_transformer_config(tcfg, str(metadata.get("model_version") or ""), base,
                                        gemma_source=bool(metadata.get("gemma_source_checkpoint")))
        if shapes:  # ComfyUI: the key's presence, over whatever the config says
            c = replace(c, use_keyframes_abs_pos_embedding="keyframes_abs_pos_embedding" in s)
            c = replace(c, variant=variant_of({**tcfg, "use_keyframes_abs_pos_embedding":
                                               c.use_keyframes_abs_pos_embedding},
                                              c.model_version, bool(metadata.get("gemma_source_checkpoint"))))
        return c

    @classmethod
    def from_state_dict_shapes(cls, shapes: Mapping[str, tuple], transformer_config: Optional[Mapping] = None,
                               model_version: str = "") -> "LTX2Config":
        """Dimensions from shapes and switches from key presence; ``transformer_config`` (if
        given) then overrides, as it would in ComfyUI. Without it the RoPE switches take
        ComfyUI's defaults, which real checkpoints do not rely on: pass their config."""
        s = _strip(shapes)
        need = ["patchify_proj.weight", "audio_patchify_proj.weight", "transformer_blocks.0.attn1.to_gate_logits.weight"]
        if need[0] not in s or need[1] not in s:
            raise ConfigError("not an LTX-2 audio-video transformer state dict (no patchify_proj/audio_patchify_proj)")
        inner, in_ch = s["patchify_proj.weight"]
        a_inner, a_in = s["audio_patchify_proj.weight"]
        gated = need[2] in s
        if gated:
            heads = s[need[2]][0]
            a_heads = s["transformer_blocks.0.audio_attn1.to_gate_logits.weight"][0]
        else:
            heads = (transformer_config or {}).get("num_attention_heads", 32)
            a_heads = (transformer_config or {}).get("audio_num_attention_heads", 32)
        adaln9 = s["transformer_blocks.0.scale_shift_table"][0] == 9
        before = "caption_projection.linear_2.weight" not in s
        first_linear = "caption_projection.linear_1.weight" in s
        cap = s["caption_projection.linear_1.weight"][1] if first_linear else None
        v_conn = s.get("video_embeddings_connector.transformer_1d_blocks.0.attn1.to_q.weight")
        a_conn = s.get("audio_embeddings_connector.transformer_1d_blocks.0.attn1.to_q.weight")
        conn_gated = "video_embeddings_connector.transformer_1d_blocks.0.attn1.to_gate_logits.weight" in s
        upd: dict[str, Any] = dict(
            num_layers=_count_blocks(s), in_channels=in_ch, audio_in_channels=a_in,
            num_attention_heads=heads, attention_head_dim=inner // heads,
            audio_num_attention_heads=a_heads, audio_attention_head_dim=a_inner // a_heads,
            cross_attention_dim=s["transformer_blocks.0.attn2.to_k.weight"][1],
            audio_cross_attention_dim=s["transformer_blocks.0.audio_attn2.to_k.weight"][1],
            apply_gated_attention=gated, cross_attention_adaln=adaln9,
            caption_proj_before_connector=before, caption_projection_first_linear=first_linear if before else True,
            connector_apply_gated_attention=conn_gated,
            connector_num_layers=_count_blocks(s, "video_embeddings_connector.transformer_1d_blocks."),
            ff_bias="transformer_blocks.0.ff.net.0.proj.bias" in s,
            audio_ff_bias="transformer_blocks.0.audio_ff.net.0.proj.bias" in s,
            use_prompt_adaln_single=(not adaln9) or "prompt_adaln_single.linear.weight" in s,
            use_keyframes_abs_pos_embedding="keyframes_abs_pos_embedding" in s,
        )
        if cap is not None:
            upd["caption_channels"] = cap
        if conn_gated and v_conn is not None:
            h = s["video_embeddings_connector.transformer_1d_blocks.0.attn1.to_gate_logits.weight"][0]
            ah = s["audio_embeddings_connector.transformer_1d_blocks.0.attn1.to_gate_logits.weight"][0]
            upd.update(connector_num_attention_heads=h, connector_attention_head_dim=v_conn[0] // h,
                       audio_connector_num_attention_heads=ah, audio_connector_attention_head_dim=a_conn[0] // ah)
        elif v_conn is not None:
            tc = transformer_config or {}
            h = tc.get("connector_num_attention_heads", 30)
            ah = tc.get("audio_connector_num_attention_heads", h)
            upd.update(connector_num_attention_heads=h, connector_attention_head_dim=v_conn[0] // h,
                       audio_connector_num_attention_heads=ah, audio_connector_attention_head_dim=a_conn[0] // ah)
        reg = s.get("video_embeddings_connector.learnable_registers")
        upd["connector_num_learnable_registers"] = reg[0] if reg is not None else 0
        base = replace(cls(), **upd)
        shown = {k: upd[k] for k in ("ff_bias", "audio_ff_bias", "use_prompt_adaln_single",
                                     "use_keyframes_abs_pos_embedding")}
        if transformer_config:
            c = cls.from_transformer_config(transformer_config, model_version, base)
            # what the keys show wins, as in ComfyUI (a config cannot add or drop tensors)
            c = replace(c, **shown)
        else:
            c = replace(base, model_version=model_version)
        return replace(c, variant=variant_of({"apply_gated_attention": c.apply_gated_attention,
                                              "caption_proj_before_connector": c.caption_proj_before_connector,
                                              **shown}, model_version))

    @classmethod
    def from_module(cls, root) -> "LTX2Config":
        """From a live module tree: ours carries ``ltx2_config``; ComfyUI's ``LTXAVModel``
        exposes its constructor arguments as attributes (read by name, no import of comfy)."""
        c = getattr(root, "ltx2_config", None)
        if isinstance(c, LTX2Config):
            return c
        if not hasattr(root, "audio_adaln_single") or not hasattr(root, "transformer_blocks"):
            raise ConfigError(f"{type(root).__name__} is not an LTX-2 audio-video transformer "
                              "(no audio_adaln_single / transformer_blocks)")
        g = lambda k, d=None: getattr(root, k, d)  # noqa: E731
        rope = g("split_positional_embedding", "interleaved")
        rope = str(getattr(rope, "value", rope))
        fgen = getattr(g("freq_grid_generator"), "__name__", "")
        vconn, aconn = g("video_embeddings_connector"), g("audio_embeddings_connector")
        blk = root.transformer_blocks[0]
        conn_blk = vconn.transformer_1d_blocks[0]
        c = cls(
            num_layers=len(root.transformer_blocks), in_channels=g("in_channels"),
            audio_in_channels=g("audio_in_channels"),
            num_attention_heads=g("num_attention_heads"), attention_head_dim=g("attention_head_dim"),
            audio_num_attention_heads=g("audio_num_attention_heads"),
            audio_attention_head_dim=g("audio_attention_head_dim"),
            cross_attention_dim=g("cross_attention_dim"), audio_cross_attention_dim=g("audio_cross_attention_dim"),
            caption_channels=g("caption_channels"),
            caption_proj_before_connector=bool(g("caption_proj_before_connector", False)),
            caption_projection_first_linear=bool(g("caption_projection_first_linear", True)),
            apply_gated_attention=getattr(blk.attn1, "to_gate_logits", None) is not None,
            cross_attention_adaln=bool(g("cross_attention_adaln", False)),
            use_prompt_adaln_single=bool(g("use_prompt_adaln_single", True)),
            ff_bias=getattr(blk.ff.net[0].proj, "bias", None) is not None,
            audio_ff_bias=getattr(blk.audio_ff.net[0].proj, "bias", None) is not None,
            use_keyframes_abs_pos_embedding=getattr(root, "keyframes_abs_pos_embedding", None) is not None,
            positional_embedding_max_pos=tuple(g("positional_embedding_max_pos")),
            audio_positional_embedding_max_pos=tuple(g("audio_positional_embedding_max_pos")),
            causal_temporal_positioning=bool(g("causal_temporal_positioning", False)),
            vae_scale_factors=tuple(g("vae_scale_factors")),
            use_middle_indices_grid=bool(g("use_middle_indices_grid", False)),
            timestep_scale_multiplier=float(g("timestep_scale_multiplier")),
            av_ca_timestep_scale_multiplier=float(g("av_ca_timestep_scale_multiplier")),
            rope_type=rope,
            frequencies_precision="float64" if fgen.endswith("_np") else "float32",
            connector_rope_type="split" if getattr(vconn, "split_rope", True) else "interleaved",
            connector_num_layers=len(vconn.transformer_1d_blocks),
            connector_num_attention_heads=vconn.num_attention_heads,
            connector_attention_head_dim=vconn.inner_dim // vconn.num_attention_heads,
            audio_connector_num_attention_heads=aconn.num_attention_heads,
            audio_connector_attention_head_dim=aconn.inner_dim // aconn.num_attention_heads,
            connector_apply_gated_attention=getattr(conn_blk.attn1, "to_gate_logits", None) is not None,
            connector_num_learnable_registers=int(getattr(vconn, "num_learnable_registers", 0) or 0),
        )
        if not getattr(vconn, "double_precision_rope", True):
            raise ConfigError("connectors without double-precision RoPE are not supported")
        mv = str(getattr(root, "ltx2_model_version", "") or "")
        return replace(c, model_version=mv, variant=variant_of(
            {"apply_gated_attention": c.apply_gated_attention,
             "caption_proj_before_connector": c.caption_proj_before_connector,
             "ff_bias": c.ff_bias, "use_keyframes_abs_pos_embedding": c.use_keyframes_abs_pos_embedding}, mv))


def variant_of(tcfg: Mapping[str, Any], model_version: str = "", gemma_source: bool = False) -> str:
    """"2.0", "2.3" or "2.5" (or whatever ``model_version`` declares, e.g. "2.4"): the declared
    ``model_version`` when present (major.minor; pre-release tags "2.5-rc1" / "2.5.rc1" count
    as their generation, as in ltx-pipelines); else "2.5" when the file declares a
    ``gemma_source_checkpoint`` (the Gemma 4 generation); else the config's features: 2.5's
    (``ff_bias`` false, or ``use_keyframes_abs_pos_embedding``), then 2.3's (gated attention,
    caption projection before the connectors)."""
    if model_version:
        m = re.match(r"\s*v?(\d+)[.\-_](\d+)", str(model_version))
        if m:
            return f"{int(m.group(1))}.{int(m.group(2))}"
    if gemma_source:
        return "2.5"
    if tcfg.get("ff_bias", True) is False or tcfg.get("use_keyframes_abs_pos_embedding"):
        return "2.5"
    if tcfg.get("apply_gated_attention") or tcfg.get("caption_proj_before_connector"):
        return "2.3"
    return "2.0"


def _strip(shapes: Mapping[str, Any]) -> dict[str, tuple]:
    out = {}
    for k, v in shapes.items():
        if k.startswith(PREFIX):
            k = k[len(PREFIX):]
        elif k.startswith("diffusion_model."):
            k = k[len("diffusion_model."):]
        out[k] = tuple(v.shape) if hasattr(v, "shape") else tuple(v)
    return out


def _count_blocks(s: Mapping[str, Any], prefix: str = "transformer_blocks.") -> int:
    idx = set()
    for k in s:
        if k.startswith(prefix):
            head = k[len(prefix):].split(".", 1)[0]
            if head.isdigit():
                idx.add(int(head))
    return (max(idx) + 1) if idx else 0


def read_checkpoint_config(path) -> LTX2Config:
    """The config of an LTX-2 checkpoint file (metadata + shapes; no tensor is read)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys() if k.startswith(PREFIX)}
    return LTX2Config.from_metadata(meta, shapes)


__all__ = ["LTX2Config", "ConfigError", "variant_of", "read_checkpoint_config", "PREFIX"]
