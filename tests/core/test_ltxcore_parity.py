"""Our training forward against Lightricks' own transformer (ltx-core), no ComfyUI involved.

The reference is ltx-core's ``LTXModel`` of Lightricks/LTX-2 at commit 203d484 or later (the
first with the audio-video cross-attention AdaLN fix; PyPI's ltx-core 1.0.0 predates it),
built by its own configurator from our tiny 2.0 / 2.3 configs and given the SAME weights as
our tree (both use the checkpoint's parameter names). ``scripts/setup.sh`` installs it from a
Lightricks/LTX-2 source copy outside this repository (``LTX2_SRC``, or the local snapshot);
without one these tests skip saying so — or fail, with ``LTX2_REQUIRE_OFFICIAL=1`` (CI).

Input boundary. Ours (``forward_av``) takes ComfyUI's text-encoder output: the Gemma feature
projection's output (``unprocessed_ltxav_embeds``), L tokens, and runs the connectors (and, for
2.0, the caption projection) itself. ltx-core's ``LTXModel`` takes the connectors' output:
ltx-trainer's ``_training_step`` runs ``EmbeddingsProcessor.create_embeddings`` (the two
``Embeddings1DConnector``s, padding replaced by the learnable registers) on the precomputed
features and mask, then the model applies the 2.0 caption projection itself. So the reference
side here is ltx-core's own ``EmbeddingsProcessor`` (same connector weights) on the same
features right-padded to 1024 tokens with mask 0 on the padding, then ``LTXModel`` — our
connectors and projections are checked too.

Modality inputs are built as ltx-trainer's training strategy builds them, with its own code
(``TextToVideoStrategy``'s patchifiers, ``_get_video_positions``, ``_get_audio_positions``,
``_create_per_token_timesteps``): latents [B, C, F, H, W] patchified by ltx-core, per-token
timesteps = σ with 0 on first-frame conditioning tokens, ``sigma`` per sample.

Measured (fp32, CPU): outputs within 1e-6..5e-6 relative in every mode — the whole residual is
the q/k RMS-norm eps (ComfyUI's 1e-5 vs ltx-core's 1e-6; 3e-7 once aligned); gradients of every
transformer weight within 5e-6. The A/V cross-attention AdaLN before the fix, ComfyUI 0.20.1's
(our forward before 8efb038), is 15–23 % off on A+V.
"""
from __future__ import annotations

import inspect
import os
import types

import pytest
import torch

from trainer_core import objective as ob
from trainer_core.engine import (
    ModalityInput,
    StepInputs,
    audio_to_tokens,
    video_to_tokens,
)
from trainer_core.ltx2 import LTX2Config, build_tree, make_predict
from trainer_core.ltx2.forward import forward_av, prepare_text
from trainer_core.tiny_checkpoint import text_context_width, tiny_config

FIX = "203d484"
TOL = 1e-5


def _why_unavailable():
    try:
        import ltx_core
        from ltx_core.model.transformer.transformer_args import (
            MultiModalTransformerArgsPreprocessor as M,
        )
    except Exception as e:  # pragma: no cover - depends on the environment
        return (f"ltx-core not importable ({e}): run scripts/setup.sh with LTX2_SRC=<a checkout of "
                f"github.com/Lightricks/LTX-2 at {FIX} or later>")
    if "modality_timesteps" not in inspect.signature(M._prepare_cross_attention_timestep).parameters:
        try:
            from importlib.metadata import version
            ver = version("ltx-core")
        except Exception:  # pragma: no cover
            ver = "?"
        return (f"ltx-core {ver} at {os.path.dirname(ltx_core.__file__)} predates Lightricks/LTX-2 {FIX} "
                "(it feeds the other stream's σ to the A/V cross-attention scale/shift): run scripts/setup.sh "
                f"with LTX2_SRC=<a checkout of github.com/Lightricks/LTX-2 at {FIX} or later>")
    try:  # the connectors live with the text encoder (imports transformers, as ComfyUI does)
        from ltx_core.text_encoders.gemma.embeddings_processor import (
            EmbeddingsProcessor,  # noqa: F401
        )
    except Exception as e:  # pragma: no cover
        return f"ltx-core's text connectors not importable ({e}): install the ComfyUI requirements"
    try:
        from ltx_trainer.training_strategies.text_to_video import TextToVideoStrategy  # noqa: F401
    except Exception as e:  # pragma: no cover
        return (f"ltx-trainer (from the same Lightricks/LTX-2 source) not importable ({e}): "
                "run scripts/setup.sh with LTX2_SRC set")
    return None


WHY = _why_unavailable()
if WHY and os.environ.get("LTX2_REQUIRE_OFFICIAL"):
    raise RuntimeError(f"LTX2_REQUIRE_OFFICIAL is set but the official stack is unavailable: {WHY}")
pytestmark = pytest.mark.skipif(WHY is not None, reason=f"official stack unavailable: {WHY}")

F_, H_, W_, T_, L_, FPS = 3, 2, 3, 20, 16, 24.0
_CACHE: dict = {}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm())


def models(variant: str):
    """(our tree, ltx-core LTXModel, ltx-core EmbeddingsProcessor, our config), same weights."""
    if variant in _CACHE:
        return _CACHE[variant]
    from ltx_core.model.transformer.model_configurator import LTXModelConfigurator
    from ltx_core.text_encoders.gemma.embeddings_connector import (
        AudioEmbeddings1DConnectorConfigurator,
        Embeddings1DConnectorConfigurator,
    )
    from ltx_core.text_encoders.gemma.embeddings_processor import EmbeddingsProcessor

    full = {"transformer": tiny_config(variant)["transformer"]}
    c = LTX2Config.from_transformer_config(full["transformer"])
    ours = build_tree(c, seed=11).eval()
    sd = ours.state_dict()
    off = LTXModelConfigurator.from_config(full)
    missing, unexpected = off.load_state_dict(sd, strict=False, assign=True)
    assert not missing, f"ltx-core parameters our tree lacks: {missing[:5]}"
    conn = ("video_embeddings_connector.", "audio_embeddings_connector.")
    assert unexpected and all(k.startswith(conn) for k in unexpected), unexpected[:5]

    def connector(configurator, prefix):
        m = configurator.from_config(full)
        sub = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        m.load_state_dict(sub, strict=True, assign=True)  # assign: its registers are bf16 by default
        return m

    proc = EmbeddingsProcessor(video_connector=connector(Embeddings1DConnectorConfigurator, conn[0]),
                               audio_connector=connector(AudioEmbeddings1DConnectorConfigurator, conn[1]))
    for m in (off, proc):
        m.eval().float()
    _CACHE[variant] = ours, off, proc, c
    return _CACHE[variant]


def strategy():
    from ltx_trainer.training_strategies.text_to_video import (
        TextToVideoConfig,
        TextToVideoStrategy,
    )

    return TextToVideoStrategy(TextToVideoConfig(with_audio=True, first_frame_conditioning_p=0.0))


def text(variant, proc, B, seed=3):
    """(our context [B, L, W], ltx-core's (video context, audio context, mask)) from the same
    features (cached: ltx-core's connectors run once per variant, batch and seed)."""
    from ltx_core.text_encoders.gemma.embeddings_processor import (
        convert_to_additive_mask,
    )

    if B < 2:  # a batch of one: the first sample of the batch of two
        feats, (venc, aenc, bmask) = text(variant, proc, 2, seed)
        return feats[:B], (venc[:B], aenc[:B], bmask[:B])
    key = ("text", variant, B, seed)
    if key in _CACHE:
        return _CACHE[key]
    g = torch.Generator().manual_seed(seed)
    w = text_context_width(variant, processed=False)
    feats = torch.randn(B, L_, w, generator=g)
    padded = torch.zeros(B, 1024, w)
    padded[:, :L_] = feats
    mask = torch.zeros(B, 1024, dtype=torch.int64)
    mask[:, :L_] = 1
    c = LTX2Config.from_transformer_config(tiny_config(variant)["transformer"])
    if c.caption_proj_before_connector:  # 2.3: the dual projection's video ‖ audio features
        vf, af = padded[..., :c.cross_attention_dim], padded[..., c.cross_attention_dim:]
    else:  # 2.0: one feature tensor feeds both connectors (FeatureExtractorV1, is_av)
        vf = af = padded
    with torch.no_grad():
        venc, aenc, bmask = proc.create_embeddings(vf, af, convert_to_additive_mask(mask, torch.float32))
    _CACHE[key] = feats, (venc, aenc, bmask)
    return _CACHE[key]


def our_text(variant, B, seed=3):
    """Our ``prepare_text`` on the same features (what the blocks' text cross-attention sees)."""
    if B < 2:
        v, a = our_text(variant, 2, seed)
        return v[:B], a[:B]
    key = ("ours", variant, B, seed)
    if key not in _CACHE:
        ours, _, proc, c = models(variant)
        feats, _ = text(variant, proc, B, seed)
        with torch.no_grad():
            _CACHE[key] = prepare_text(ours, c, feats, torch.float32)
    return _CACHE[key]


def case(variant, B, sig_v, sig_a, first_frame=(), seed=0):
    """Inputs of one step for both stacks. ``sig_v``/``sig_a``: per-sample σ (None: modality
    absent); ``first_frame``: samples whose first latent frame is conditioning (σ = 0)."""
    from ltx_core.model.transformer.modality import Modality

    proc = models(variant)[2]
    st = strategy()
    g = torch.Generator().manual_seed(100 + seed)
    feats, (venc, aenc, bmask) = text(variant, proc, B)
    mine_v = mine_a = theirs_v = theirs_a = None
    if sig_v is not None:
        lat = torch.randn(B, 128, F_, H_, W_, generator=g)
        tok = st._video_patchifier.patchify(lat)
        assert torch.equal(tok, video_to_tokens(lat)), "token order differs from ltx-core's patchifier"
        n = tok.shape[1]
        cond = torch.zeros(B, n, dtype=torch.bool)
        for i in first_frame:
            cond[i, :H_ * W_] = True
        sig = torch.tensor(sig_v, dtype=torch.float32)
        ts = st._create_per_token_timesteps(cond, sig)
        pos = st._get_video_positions(num_frames=F_, height=H_, width=W_, batch_size=B, fps=FPS,
                                      device=torch.device("cpu"), dtype=torch.float32)
        theirs_v = Modality(latent=tok, sigma=sig, timesteps=ts, positions=pos, context=venc, context_mask=bmask)
        mine_v = (tok, ts, (F_, H_, W_))
    if sig_a is not None:
        lat = torch.randn(B, 8, T_, 16, generator=g)
        tok = st._audio_patchifier.patchify(lat)
        assert torch.equal(tok, audio_to_tokens(lat)), "audio token layout differs from ltx-core's patchifier"
        sig = torch.tensor(sig_a, dtype=torch.float32)
        ts = sig.view(-1, 1).expand(B, T_).contiguous()
        pos = st._get_audio_positions(num_time_steps=T_, batch_size=B, device=torch.device("cpu"),
                                      dtype=torch.float32)
        theirs_a = Modality(latent=tok, sigma=sig, timesteps=ts, positions=pos, context=aenc, context_mask=bmask)
        mine_a = (tok, ts, (T_,))
    return feats, mine_v, mine_a, theirs_v, theirs_a


def run_both(variant, B, sig_v, sig_a, first_frame=(), off_model=None):
    """((our video, our audio), (ltx-core video, ltx-core audio)) of one case (cached per case
    for the unmodified ltx-core model)."""
    from ltx_core.guidance.perturbations import BatchedPerturbationConfig

    key = ("run", variant, B, str(sig_v), str(sig_a), tuple(first_frame))
    if off_model is None and key in _CACHE:
        return _CACHE[key]
    ours, off, _, c = models(variant)
    feats, mv, ma, tv, ta = case(variant, B, sig_v, sig_a, first_frame)
    with torch.no_grad():  # text prepared once per case batch (our text path: test_text_path_matches_ltx_core)
        v1, a1 = forward_av(ours, mv, ma, context=feats, text=our_text(variant, B), fps=FPS, dtype=torch.float32,
                            config=c)
        v2, a2 = (off_model or off)(tv, ta, BatchedPerturbationConfig.empty(B))
    if off_model is None:
        _CACHE[key] = (v1, a1), (v2, a2)
    return (v1, a1), (v2, a2)


@pytest.mark.parametrize("variant", ["2.0", "2.3"])
def test_text_path_matches_ltx_core(variant):
    """Our connectors (+ the 2.0 caption projection) on ComfyUI's text-encoder output against
    ltx-core's EmbeddingsProcessor on the same features padded to 1024 tokens (+ LTXModel's own
    caption projection for 2.0): the text each block's cross-attention sees, per stream."""
    _, off, proc, c = models(variant)
    v_ours, a_ours = our_text(variant, 2)
    _, (venc, aenc, _) = text(variant, proc, 2)
    with torch.no_grad():
        if not c.caption_proj_before_connector:
            venc, aenc = off.caption_projection(venc), off.audio_caption_projection(aenc)
    assert v_ours.shape == venc.shape and a_ours.shape == aenc.shape
    ev, ea = rel(v_ours, venc), rel(a_ours, aenc)
    print(f"text path vs ltx-core, {variant}: video {ev:.2e}, audio {ea:.2e}")
    assert ev < TOL and ea < TOL


CASES = {
    # name: (B, video σ per sample, audio σ per sample, samples with first-frame conditioning)
    "av_b1": (1, [0.62], [0.62], ()),
    "av_b1_own_sigmas": (1, [0.35], [0.81], ()),
    "av_b2_first_frame": (2, [0.3, 0.85], [0.7, 0.12], (0,)),
    "video_to_audio_b2": (2, [0.0, 0.0], [0.4, 0.9], ()),
    "video_b1": (1, [0.5], None, ()),
    "video_b2_first_frame": (2, [0.2, 0.9], None, (1,)),
    "audio_b1": (1, None, [0.45], ()),
    "audio_b2": (2, None, [0.15, 0.95], ()),
}


@pytest.mark.parametrize("variant", ["2.0", "2.3"])
@pytest.mark.parametrize("name", list(CASES))
def test_forward_matches_ltx_core(variant, name):
    B, sv, sa, ff = CASES[name]
    (v1, a1), (v2, a2) = run_both(variant, B, sv, sa, ff)
    assert (v1 is None) == (sv is None) and (v2 is None) == (sv is None)
    assert (a1 is None) == (sa is None) and (a2 is None) == (sa is None)
    errs = {}
    if sv is not None:
        errs["video"] = rel(v1, v2)
    if sa is not None:
        errs["audio"] = rel(a1, a2)
    print(f"ltx-core parity {variant} {name}: " + ", ".join(f"{k} {e:.2e}" for k, e in errs.items()))
    assert all(e < TOL for e in errs.values()), f"relative error vs ltx-core {FIX}: {errs}"


@pytest.mark.parametrize("variant", ["2.0", "2.3"])
def test_gradients_match_ltx_core(variant):
    """Training means gradients: the same loss through our forward (per-block checkpointing on,
    as the engine trains) and through ltx-core's, backward, and every transformer weight's
    gradient compared (the text connectors run frozen on both sides; our tree with ltx-core's
    q/k norm eps, so that what is left is float32 rounding — with eps 1e-5 the worst is ~7e-5)."""
    import copy

    from ltx_core.guidance.perturbations import BatchedPerturbationConfig

    ours, off, _, c = models(variant)
    ours, off = copy.deepcopy(ours), copy.deepcopy(off)  # own parameters, own .grad
    for n, m in ours.named_modules():  # ltx-core's q/k norm eps (see the test below): rounding only
        if n.endswith(("q_norm", "k_norm")):
            m.eps = 1e-6
    B, sv, sa, ff = CASES["av_b2_first_frame"]
    feats, mv, ma, tv, ta = case(variant, B, sv, sa, ff)
    g = torch.Generator().manual_seed(21)
    wv, wa = torch.randn(mv[0].shape, generator=g), torch.randn(ma[0].shape, generator=g)
    v1, a1 = forward_av(ours, mv, ma, context=feats, text=our_text(variant, B), fps=FPS, dtype=torch.float32,
                        config=c, checkpointing=True)
    ((v1 * wv).sum() + (a1 * wa).sum()).backward()
    v2, a2 = off(tv, ta, BatchedPerturbationConfig.empty(B))
    ((v2 * wv).sum() + (a2 * wa).sum()).backward()
    mine = {n: p.grad for n, p in ours.named_parameters() if p.grad is not None}
    # (the 2.0 caption projection is in ltx-core's model but in our prepared text, frozen here)
    theirs = {n: p.grad for n, p in off.named_parameters() if p.grad is not None and "caption_projection" not in n}
    assert set(theirs) <= set(mine), sorted(set(theirs) - set(mine))[:5]
    assert len(theirs) > 100
    errs = {n: rel(mine[n], theirs[n]) for n in theirs if theirs[n].norm() > 0}
    worst = max(errs, key=errs.get)
    print(f"gradients vs ltx-core, {variant}: {len(errs)} weights, worst {worst} {errs[worst]:.2e}, "
          f"median {sorted(errs.values())[len(errs) // 2]:.2e}")
    assert errs[worst] < 2e-5  # key biases: small gradients that mostly cancel, the worst relative error


@pytest.mark.parametrize("variant", ["2.0", "2.3"])
def test_remaining_difference_is_the_qk_norm_eps(variant):
    """The 1e-6-scale difference left above is one constant, not the forward: ComfyUI's (and
    our tree's) attention q/k RMS norms use eps 1e-5, ltx-core's 1e-6. With ltx-core's eps on
    our tree the two agree to float32 rounding."""
    import copy

    ours, off, _, c = models(variant)
    twin = copy.deepcopy(ours)
    norms = [m for n, m in twin.named_modules() if n.endswith(("q_norm", "k_norm"))]
    assert norms and all(m.eps == 1e-5 for m in norms)
    for m in norms:
        m.eps = 1e-6
    B, sv, sa, ff = CASES["av_b2_first_frame"]
    feats, mv, ma, tv, ta = case(variant, B, sv, sa, ff)
    from ltx_core.guidance.perturbations import BatchedPerturbationConfig
    with torch.no_grad():
        v1, a1 = forward_av(twin, mv, ma, context=feats, fps=FPS, dtype=torch.float32, config=c)
        v2, a2 = off(tv, ta, BatchedPerturbationConfig.empty(B))
    ev, ea = rel(v1, v2), rel(a1, a2)
    print(f"ltx-core parity {variant}, q/k norm eps aligned: video {ev:.2e}, audio {ea:.2e}")
    assert ev < 1e-6 and ea < 1e-6


def _old_cross_timestep(sigma_scale: bool):
    """The A/V cross-attention AdaLN inputs before the fix: the OTHER stream's per-sample σ for
    the scale/shift as well as for the gate (× av_ca / timestep multiplier). ``sigma_scale``:
    ×1000 first (ltx-core 1.0.0's ``_prepare_cross_attention_timestep``), or raw σ (ComfyUI
    0.20.1's formulation, which our forward reproduced before commit 8efb038)."""

    def prepare(self, modality_timesteps, cross_modality_sigma, timestep_scale_multiplier, batch_size, hidden_dtype):
        t = cross_modality_sigma.reshape(batch_size, 1) * (timestep_scale_multiplier if sigma_scale else 1)
        factor = self.av_ca_timestep_scale_multiplier / timestep_scale_multiplier
        ss, _ = self.cross_scale_shift_adaln(t.flatten(), hidden_dtype=hidden_dtype)
        gate, _ = self.cross_gate_adaln(t.flatten() * factor, hidden_dtype=hidden_dtype)
        return ss.view(batch_size, -1, ss.shape[-1]), gate.view(batch_size, -1, gate.shape[-1])

    return prepare


OLD = {"comfyui_0.20.1": False, "ltx_core_1.0.0": True}


@pytest.mark.parametrize("variant", ["2.0", "2.3"])
@pytest.mark.parametrize("formula", list(OLD))
def test_old_cross_attention_adaln_formula_is_far_off(variant, formula):
    """The formulas before the fix, on ltx-core's own model (its two preprocessors' cross-attention
    timestep swapped for the old one): far from the fixed ltx-core, while ours stays within
    float rounding of it. ComfyUI 0.20.1's raw σ is off in every A+V case; ltx-core 1.0.0's
    σ·1000 of the other stream only where the streams' σ differ (per-sample draws, first-frame
    conditioning tokens)."""
    import copy

    _, off, _, _ = models(variant)
    old = copy.copy(off)  # same modules and weights; only the two preprocessors are replaced
    old.video_args_preprocessor = copy.copy(off.video_args_preprocessor)
    old.audio_args_preprocessor = copy.copy(off.audio_args_preprocessor)
    for pre in (old.video_args_preprocessor, old.audio_args_preprocessor):
        pre._prepare_cross_attention_timestep = types.MethodType(_old_cross_timestep(OLD[formula]), pre)
    errs = {}
    for name in ("av_b1", "av_b1_own_sigmas", "av_b2_first_frame", "video_to_audio_b2"):
        B, sv, sa, ff = CASES[name]
        (v1, a1), (v2, a2) = run_both(variant, B, sv, sa, ff)
        _, (vo, ao) = run_both(variant, B, sv, sa, ff, off_model=old)
        errs[name] = {"video": round(rel(vo, v2), 4), "audio": round(rel(ao, a2), 4)}
        assert rel(v1, v2) < TOL and rel(a1, a2) < TOL
    print(f"old formula {formula} vs ltx-core {FIX}, {variant}: {errs}")
    far = [n for n in errs if formula == "comfyui_0.20.1" or n != "av_b1"]
    for n in far:
        assert max(errs[n].values()) > 1000 * TOL, (n, errs[n])
    if formula == "ltx_core_1.0.0":  # equal σ in both streams, no conditioning tokens: the same
        assert max(errs["av_b1"].values()) < TOL


@pytest.mark.parametrize("variant", ["2.0", "2.3"])
def test_engine_predict_on_ltx_trainer_inputs(variant):
    """End to end on ltx-trainer's own input preparation: ``TextToVideoStrategy.prepare_training_inputs``
    (noise, first-frame conditioning drawn per sample, σ from a sampler) -> ltx-core; the same
    noised latents and per-token σ through the engine's ``make_predict``."""
    from ltx_core.guidance.perturbations import BatchedPerturbationConfig
    from ltx_trainer.timestep_samplers import TimestepSampler
    from ltx_trainer.training_strategies.text_to_video import (
        TextToVideoConfig,
        TextToVideoStrategy,
    )

    class Fixed(TimestepSampler):
        def sample_for(self, batch):
            return torch.tensor([0.27, 0.74])

    ours, off, proc, _ = models(variant)
    st = TextToVideoStrategy(TextToVideoConfig(with_audio=True, first_frame_conditioning_p=0.5))
    B = 2
    feats, (venc, aenc, bmask) = text(variant, proc, B)
    g = torch.Generator().manual_seed(9)
    batch = {
        "latents": {"latents": torch.randn(B, 128, F_, H_, W_, generator=g), "num_frames": torch.tensor([F_] * B),
                    "height": torch.tensor([H_] * B), "width": torch.tensor([W_] * B),
                    "fps": torch.tensor([FPS] * B)},
        "audio_latents": {"latents": torch.randn(B, 8, T_, 16, generator=g)},
        "conditions": {"video_prompt_embeds": venc, "audio_prompt_embeds": aenc, "prompt_attention_mask": bmask},
    }
    torch.manual_seed(0)  # the strategy draws from the global RNG; this seed conditions one sample of two
    inp = st.prepare_training_inputs(batch, Fixed())
    cond = inp.video.timesteps == 0
    assert cond[:, :H_ * W_].any(dim=1).tolist().count(True) == 1, "want one conditioned sample, one not"
    with torch.no_grad():
        v2, a2 = off(inp.video, inp.audio, BatchedPerturbationConfig.empty(B))
    mv = ModalityInput(inp.video.latent, inp.video.timesteps, None, (F_, H_, W_))
    ma = ModalityInput(inp.audio.latent, inp.audio.timesteps, None, (T_,))
    step = StepInputs(mv, ma, {"context": feats}, FPS, ob.get_mode("text_to_audio_video"))
    with torch.no_grad():
        v1, a1 = make_predict(checkpointing=False)(ours, step)
    ev, ea = rel(v1, v2), rel(a1, a2)
    print(f"engine predict vs ltx-core on ltx-trainer inputs, {variant}: video {ev:.2e}, audio {ea:.2e}")
    assert ev < TOL and ea < TOL
