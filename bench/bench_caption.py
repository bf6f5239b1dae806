"""Caption speed: Qwen2.5-Omni-7B's thinker through the pack's own captioner
(trainer_core.caption.Captioner: processor -> model.generate -> decode), one 5-second
768x512 clip with sound per call, as Caption Clips runs it.

No weights are downloaded: the model is the published Qwen2.5-Omni-7B thinker layout
(``omni_7b_config``: text, vision and audio settings written out from the published
config.json) with random bf16 weights made directly on the GPU, and the processor is the
real ``Qwen2_5OmniProcessor`` with the published preprocessor settings
(``preprocessor_config.json``: Whisper features at 16 kHz, 128 mel bins, audio padded to
300 s; Qwen2-VL image/video processing, patch 14, merge 2) and the published chat template,
over a tokenizer built here (the real special tokens at their real ids; the prompt's words
one token each, where Qwen's BPE gives ~1.2 per word). Random weights would stop at a
random length, so every caption is forced to ``--new-tokens`` tokens (min = max, default
120: a caption of ~90-100 words).

Per variant (``--variants``, precision:attention):

- ``bf16:sdpa`` — what Captioner.load gives on a GPU (bf16, transformers' default attention);
- ``bf16:eager`` — the same with eager attention;
- ``fp8:sdpa`` — the text model's linear layers as float8_e4m3fn weights with one scale per
  output row and per-token activation scales (torch._scaled_mm, trainer_core.ltx2.fp8's
  arithmetic), lm_head and both encoders bf16: the 8-bit path that runs without extra
  packages, and the closest to the official captioner's FP8 model. Caption Clips does not
  offer it (yet);
- ``bf16:sdpa:static`` (any precision:attention with ``:static``) — a static KV cache, with
  which transformers compiles the decoding step on a GPU (torch.compile, CUDA graphs): what
  generation could gain without another inference engine (Caption Clips does not do it yet);
- ``8-bit`` and ``4-bit`` — caption.py's own bitsandbytes paths (BitsAndBytesConfig: LLM.int8,
  NF4 with bf16 compute), which quantize while loading a checkpoint folder: the random
  weights are built once in bf16 and saved as a Hugging Face folder (``--model-dir``; the
  published layout by default, ``--model-layout``) with the real processor's files, then
  loaded exactly as Caption Clips loads a model: ``Captioner.load(folder, precision, "cuda")``
  (init_s = that load). Recorded as not run where bitsandbytes cannot be imported or there is
  no CUDA GPU;
- ``bf16:folder`` (any bf16/fp8 variant with ``:folder``) — the same folder loaded by
  Captioner.load at full precision (bf16 on a GPU, float32 on the CPU): the folder path
  checked where bitsandbytes cannot run (``--tiny --device cpu``).

Each record (a JSON list, ``bench/results/caption_<gpu>.json`` or ``--out``): s_per_clip
(median over ``--clips`` clips after ``--warmup``), s_min, s_max, s_clips, and its parts:
processor_s (CPU: frames + audio features + tokenizing), prefill_s (inputs to the device,
vision + audio encoders, the first forward, up to the first logits), vision_s and audio_s
(inside prefill), decode_tok_s and decode_s (the remaining new tokens), detok_s; the
token counts (video_tokens, audio_tokens, input_tokens, new_tokens), init_s (model made,
not counted), weights_gib, peak_vram_gib (allocator peak over the timed clips), params,
cache and compiled (``:static``), fp8_layers and fp8_mlp_rel_err (decoder layer 0's MLP,
fp8 against bf16 on one fixed input), source (built in memory, or loaded from the folder:
then model_dir, model_layout, folder_save_s, folder_gib, quantized_layers per part, and
mlp_rel_err_vs_saved: decoder layer 0's MLP as loaded against float32 from the saved bf16
tensors, on one fixed input), inputs
(the real processor, or the stand-in where transformers cannot build it: no torchvision),
and the official captioner's figure.

    python bench/bench_caption.py --out bench/results/caption_H200.json      # GPU
    python bench/bench_caption.py --tiny --clips 2 --new-tokens 8 --out /tmp/c.json   # CPU smoke
    python bench/bench_caption.py --variants bf16:sdpa,8-bit --clips 3 --out c8.json  # needs bitsandbytes
    python bench/bench_caption.py --tiny --device cpu --variants bf16,bf16:folder --out /tmp/c.json
"""
from __future__ import annotations

import argparse
import functools
import gc
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trainer_core.ltx2 import fp8 as F8

OFFICIAL = {"s_per_clip": [1.0, 3.0], "what": "the official captioner: Qwen2.5-Omni-7B, FP8 model under vLLM, "
            "1-3 s per clip on an H100 (issue #19)"}
# the published checkpoint (model.safetensors.index.json total_size 17,863,627,776 bytes of
# bf16 = thinker.* tensors only): what omni_7b_config must build
PUBLISHED_PARAMS = 17_863_627_776 // 2

# special tokens of Qwen2.5-Omni's tokenizer (added_tokens.json), at their real ids
SPECIAL_IDS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<|AUDIO|>": 151646,
               "<|audio_bos|>": 151647, "<|audio_eos|>": 151648, "<|vision_bos|>": 151652,
               "<|vision_eos|>": 151653, "<|vision_pad|>": 151654, "<|IMAGE|>": 151655, "<|VIDEO|>": 151656}
NAMED = {"image_token": "<|IMAGE|>", "audio_token": "<|AUDIO|>", "video_token": "<|VIDEO|>",
         "vision_bos_token": "<|vision_bos|>", "vision_eos_token": "<|vision_eos|>",
         "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>"}
VOCAB = 152064

# Qwen2.5-Omni's chat template, as published: a default system turn when none is given,
# then the user's media placeholders and text, then the assistant's turn
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_bos|><|IMAGE|><|vision_eos|>"
    "{% elif content['type'] == 'audio' %}<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif content['type'] == 'video' %}<|vision_bos|><|VIDEO|><|vision_eos|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

# preprocessor_config.json of Qwen/Qwen2.5-Omni-7B
PREPROCESSOR = dict(sampling_rate=16000, feature_size=128, n_fft=400, hop_length=160, chunk_length=300,
                    padding_value=0.0, dither=0.0, return_attention_mask=True,
                    image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711],
                    min_pixels=3136, max_pixels=12845056, patch_size=14, temporal_patch_size=2, merge_size=2)


def omni_7b_config(tiny: bool = False) -> dict:
    """The thinker_config of Qwen/Qwen2.5-Omni-7B's config.json (the keys these transformers
    versions read; ``tiny``: the same architecture at toy widths). Values as published:
    text 3584 wide, 28 layers, 28 heads / 4 KV heads (head 128), MLP 18944, vocab 152064,
    32768 positions, RoPE theta 1e6 with mrope_section [16, 24, 24], RMSNorm eps 1e-6, untied
    lm_head; vision 32 blocks, 1280 wide, 16 heads, MLP 3420, patch 14, temporal patch 2,
    merge 2, window 112, full attention in blocks 7/15/23/31, out 3584; audio (Whisper-style)
    32 layers, d_model 1280, 20 heads, FFN 5120, 128 mel bins, 1500 source positions,
    n_window 100, out 3584; position_id_per_seconds 25, seconds_per_chunk 2. Not confirmed
    from the file itself (a copy of it in a fine-tune's report, AVoCaDO, and transformers'
    own defaults agree): vision hidden_act silu and in_channels 3, audio activation gelu —
    the class defaults, which no field overrides."""
    ids = dict(audio_token_index=151646, image_token_index=151655, video_token_index=151656,
               audio_start_token_id=151647, audio_end_token_id=151648, vision_start_token_id=151652,
               vision_end_token_id=151653, user_token_id=872, position_id_per_seconds=25, seconds_per_chunk=2,
               tie_word_embeddings=False, initializer_range=0.02)
    if tiny:
        return dict(
            text_config=dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32768,
                             rms_norm_eps=1e-6, tie_word_embeddings=False, hidden_act="silu",
                             rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
                             eos_token_id=151645, pad_token_id=151643, bos_token_id=151643),
            vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
                               patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                               fullatt_block_indexes=[1], in_channels=3, hidden_act="silu"),
            audio_config=dict(num_mel_bins=128, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
                              d_model=32, output_dim=32, max_source_positions=1500, n_window=100),
            **ids)
    return dict(
        text_config=dict(vocab_size=VOCAB, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                         num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768,
                         rms_norm_eps=1e-6, tie_word_embeddings=False, hidden_act="silu",
                         use_sliding_window=False, sliding_window=32768, max_window_layers=28,
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
                         eos_token_id=151645, pad_token_id=151643, bos_token_id=151643),
        vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                           fullatt_block_indexes=[7, 15, 23, 31], in_channels=3, hidden_act="silu"),
        audio_config=dict(num_mel_bins=128, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120,
                          d_model=1280, output_dim=3584, max_source_positions=1500, n_window=100),
        **ids)


# ----------------------------------------------------------------------------- processor

@functools.lru_cache(maxsize=1)
def make_tokenizer():
    """A tokenizer with Qwen2.5-Omni's vocabulary size and special-token ids: every id
    decodes (``<tN>`` fillers), the prompt's words and punctuation are single tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from trainer_core.caption import DEFAULT_PROMPT, DEFAULT_PROMPT_VISION

    words = []
    for w in (DEFAULT_PROMPT + " " + DEFAULT_PROMPT_VISION + " system user assistant You are a helpful").split():
        for piece in pre_tokenizers.Whitespace().pre_tokenize_str(w):
            if piece[0] not in words:
                words.append(piece[0])
    by_id = {i: f"<t{i}>" for i in range(VOCAB)}
    for i, w in enumerate(words):
        by_id[i] = w
    for s, i in SPECIAL_IDS.items():
        by_id[i] = s
    by_id[VOCAB - 1] = "[UNK]"
    tk = Tokenizer(models.WordLevel({t: i for i, t in by_id.items()}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", additional_special_tokens=list(SPECIAL_IDS),
                                   extra_special_tokens=NAMED)


def make_processor(folder: Path):
    """Save the processor files (as the published folder has them) to ``folder`` and load
    them back with AutoProcessor, as Captioner.load does."""
    from transformers import AutoProcessor, Qwen2_5OmniProcessor, Qwen2VLImageProcessor, WhisperFeatureExtractor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    p = PREPROCESSOR
    px = {k: p[k] for k in ("image_mean", "image_std", "min_pixels", "max_pixels", "patch_size", "temporal_patch_size",
                            "merge_size")}
    fe = WhisperFeatureExtractor(**{k: p[k] for k in ("sampling_rate", "feature_size", "n_fft", "hop_length",
                                                      "chunk_length", "padding_value", "dither",
                                                      "return_attention_mask")})
    proc = Qwen2_5OmniProcessor(image_processor=Qwen2VLImageProcessor(**px), video_processor=Qwen2VLVideoProcessor(**px),
                                feature_extractor=fe, tokenizer=make_tokenizer(), chat_template=CHAT_TEMPLATE)
    proc.save_pretrained(folder)
    return AutoProcessor.from_pretrained(str(folder))


def _smart_resize(h: int, w: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's rule: both sides multiples of ``factor``, the area within the pixel bounds."""
    import math

    hb, wb = max(factor, round(h / factor) * factor), max(factor, round(w / factor) * factor)
    if hb * wb > max_pixels:
        beta = math.sqrt(h * w / max_pixels)
        hb, wb = max(factor, math.floor(h / beta / factor) * factor), max(factor, math.floor(w / beta / factor) * factor)
    elif hb * wb < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        hb, wb = math.ceil(h * beta / factor) * factor, math.ceil(w * beta / factor) * factor
    return hb, wb


class StandInProcessor:
    """What Qwen2_5OmniProcessor returns, made without it — for a machine whose transformers
    cannot build the real one (its Qwen2-VL video processor needs torchvision). The same
    chat template and tokenizer, the same Whisper features (padded to 300 s), the video
    resized to Qwen2-VL's grid (bicubic, torch), normalized and patchified in the real
    layout, and the placeholders expanded to the same token counts
    (tests/core/test_bench_caption.py compares it with the real processor)."""

    def __init__(self, tokenizer, feature_extractor):
        self.tokenizer, self.feature_extractor = tokenizer, feature_extractor
        self.p = PREPROCESSOR

    def apply_chat_template(self, conversation, add_generation_prompt=True, tokenize=False, **kw):
        return self.tokenizer.apply_chat_template(conversation, chat_template=CHAT_TEMPLATE, tokenize=tokenize,
                                                  add_generation_prompt=add_generation_prompt, **kw)

    def video(self, frames) -> tuple:
        p = self.p
        ps, ms, tp = p["patch_size"], p["merge_size"], p["temporal_patch_size"]
        v = torch.from_numpy(frames).permute(0, 3, 1, 2).float()  # [T, C, H, W]
        h, w = _smart_resize(v.shape[2], v.shape[3], ps * ms, p["min_pixels"], p["max_pixels"])
        if (h, w) != tuple(v.shape[2:]):
            v = torch.nn.functional.interpolate(v, size=(h, w), mode="bicubic", antialias=True, align_corners=False)
            v = v.clamp(0, 255).round()
        mean = torch.tensor(p["image_mean"]).view(1, 3, 1, 1)
        std = torch.tensor(p["image_std"]).view(1, 3, 1, 1)
        v = (v / 255.0 - mean) / std
        if pad := -v.shape[0] % tp:
            v = torch.cat([v, v[-1:].expand(pad, -1, -1, -1)])
        gt, gh, gw = v.shape[0] // tp, h // ps, w // ps
        x = v.view(gt, tp, 3, gh // ms, ms, ps, gw // ms, ms, ps).permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
        return x.reshape(gt * gh * gw, 3 * tp * ps * ps), (gt, gh, gw)

    def __call__(self, text, videos=None, audio=None, return_tensors="pt", fps=None, **kw):
        out: dict = {}
        t = text[0]
        if videos:
            pix, (gt, gh, gw) = self.video(videos[0])
            out["pixel_values_videos"] = pix
            out["video_grid_thw"] = torch.tensor([[gt, gh, gw]])
            out["video_second_per_grid"] = torch.tensor([self.p["temporal_patch_size"] / float(fps or 2.0)])  # processor default 2
            t = t.replace("<|VIDEO|>", "<|VIDEO|>" * (gt * gh * gw // self.p["merge_size"] ** 2), 1)
        if audio:
            f = self.feature_extractor(audio, sampling_rate=self.p["sampling_rate"], padding="max_length",
                                       return_attention_mask=True, return_tensors="pt")
            out["input_features"] = f["input_features"]
            out["feature_attention_mask"] = f["attention_mask"].to(torch.int32)
            n = int(out["feature_attention_mask"].sum())
            n = ((n - 1) // 2 + 1 - 2) // 2 + 1  # conv stride 2, then pooling by 2
            t = t.replace("<|AUDIO|>", "<|AUDIO|>" * n, 1)
        tok = self.tokenizer([t], return_tensors="pt")
        return {"input_ids": tok["input_ids"], "attention_mask": tok["attention_mask"], **out}

    def batch_decode(self, ids, **kw):
        return self.tokenizer.batch_decode(ids, **kw)


def make_stand_in_processor() -> StandInProcessor:
    from transformers import WhisperFeatureExtractor

    p = PREPROCESSOR
    fe = WhisperFeatureExtractor(**{k: p[k] for k in ("sampling_rate", "feature_size", "n_fft", "hop_length",
                                                      "chunk_length", "padding_value", "dither",
                                                      "return_attention_mask")})
    return StandInProcessor(make_tokenizer(), fe)


# ----------------------------------------------------------------------------- model

def build_model(cfgd: dict, device: str, dtype, attn: str):
    """The thinker with random weights, made where it runs (no host copy of 7B params)."""
    from transformers import Qwen2_5OmniThinkerConfig
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration as M

    cfg = Qwen2_5OmniThinkerConfig(**json.loads(json.dumps(cfgd)))
    torch.manual_seed(0)
    with torch.device(device):
        model = M._from_config(cfg, dtype=dtype, attn_implementation=attn)
    model.eval().requires_grad_(False)
    model.generation_config.eos_token_id = 151645
    model.generation_config.pad_token_id = 151643
    return model


def count_params(cfgd: dict) -> int:
    """Parameters of the thinker built from ``cfgd`` (on the meta device: no memory)."""

    m = build_model(cfgd, "meta", torch.bfloat16, "sdpa")
    return sum(p.numel() for p in m.parameters())


def dir_gib(folder: Path) -> float:
    return round(sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file()) / 2**30, 3)


def checkpoint_state_dict(model) -> dict:
    """The thinker's tensors under the names save_pretrained writes (the published
    checkpoint's): transformers versions whose modules are laid out differently (the text
    model under ``model.language_model``) map their names back on saving, and so does this,
    where the installed transformers has that step."""
    sd = model.state_dict()
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:
        return sd
    out = revert_weight_conversion(model, dict(sd))
    return out if len(out) == len(sd) else sd


def save_model_folder(model, proc, folder: Path, layout: str = "omni", max_shard_size: str = "5GB") -> None:
    """Write ``model`` (the thinker) and the processor ``proc`` to ``folder`` as a Hugging Face
    checkpoint that trainer_core.caption.check_model_dir accepts and Captioner.load reads:

    - ``omni``: the published Qwen/Qwen2.5-Omni-7B layout, config.json of model_type
      qwen2_5_omni with the thinker's settings under thinker_config, tensors named
      ``thinker.*`` (Captioner.load then reads thinker_config and maps ``thinker.`` away);
    - ``thinker``: the thinker's own save_pretrained (model_type qwen2_5_omni_thinker, no prefix).

    Safetensors in ``max_shard_size`` shards with model.safetensors.index.json (one
    model.safetensors when it all fits in one), generation_config.json, and
    the processor's files (tokenizer.json, its preprocessor/processor configs, chat template)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if layout == "thinker":
        model.save_pretrained(str(folder), max_shard_size=max_shard_size)
    elif layout == "omni":
        from huggingface_hub import save_torch_state_dict
        from transformers import Qwen2_5OmniConfig

        cfg = Qwen2_5OmniConfig(thinker_config=model.config.to_dict(), enable_audio_output=False, dtype="bfloat16")
        cfg.save_pretrained(str(folder))
        model.generation_config.save_pretrained(str(folder))
        save_torch_state_dict({f"thinker.{k}": v for k, v in checkpoint_state_dict(model).items()}, str(folder),
                              max_shard_size=max_shard_size)
    else:
        raise ValueError(f"model layout {layout!r}: omni or thinker")
    proc.save_pretrained(str(folder))


class ModelFolder:
    """The bench's random-weight thinker as a checkpoint folder, made on first use and once per
    run: built in bf16 where the bench runs (the same seed as build_model's in-memory
    variants), saved with save_model_folder, freed; removed at the end unless ``keep``."""

    def __init__(self, cfgd: dict, device: str, proc, path: Path | None, layout: str, keep: bool,
                 tmp: str | None = None):
        self.cfgd, self.device, self.proc, self.layout, self.keep = cfgd, device, proc, layout, keep
        self.tmp, self.path, self.info = tmp, Path(path) if path else None, None
        self._made, self.error = False, None

    def get(self) -> Path:
        if self.info is not None:
            return self.path
        if self.error is not None:
            raise RuntimeError(f"the model folder could not be made: {self.error}")
        try:
            return self._make()
        except Exception as e:
            self.error = f"{type(e).__name__}: {e}"[:300]
            raise

    def _make(self) -> Path:
        if self.path is None:
            self.path = Path(tempfile.mkdtemp(prefix="bench_caption_model_", dir=self.tmp))
        elif self.path.exists() and any(self.path.iterdir()):
            raise RuntimeError(f"--model-dir {self.path} is not empty (the bench writes a fresh folder there)")
        self._made = True
        t = time.perf_counter()
        model = build_model(self.cfgd, self.device, torch.bfloat16, "sdpa")
        proc = self.proc
        if isinstance(proc, StandInProcessor):  # no real processor here: its tokenizer and features only
            proc = _StandInFiles(proc)
        save_model_folder(model, proc, self.path, self.layout)
        del model
        gc.collect()
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()
        self.info = {"model_dir": str(self.path), "model_layout": self.layout,
                     "folder_save_s": round(time.perf_counter() - t, 2), "folder_gib": dir_gib(self.path)}
        print(f"saved the random-weight thinker to {self.path} ({self.info['folder_gib']} GiB, "
              f"{self.info['folder_save_s']} s)", flush=True)
        return self.path

    def cleanup(self):
        if self._made and not self.keep and self.path is not None and self.path.exists():
            shutil.rmtree(self.path, ignore_errors=True)


class _StandInFiles:
    """save_pretrained for the stand-in processor: the tokenizer and feature extractor's files
    (what check_model_dir asks for); the bench then hands Captioner.load the stand-in itself."""

    def __init__(self, proc: StandInProcessor):
        self.proc = proc

    def save_pretrained(self, folder: str):
        self.proc.tokenizer.save_pretrained(folder)
        self.proc.feature_extractor.save_pretrained(folder)


def load_folder(folder: Path, precision: str, device: str, proc):
    """Captioner.load(folder, precision, device), as Caption Clips calls it; with the stand-in
    processor (no real one on this machine) AutoProcessor is answered with the stand-in."""
    from unittest import mock

    import transformers

    from trainer_core.caption import Captioner

    if not isinstance(proc, StandInProcessor):
        return Captioner.load(folder, precision, device)

    class _Auto:
        @staticmethod
        def from_pretrained(*_a, **_k):
            return proc

    with mock.patch.object(transformers, "AutoProcessor", _Auto):
        return Captioner.load(folder, precision, device)


def saved_tensors(folder: Path, want) -> dict:
    """The folder's tensors whose names ``want(name)`` accepts (through its index when sharded)."""
    from safetensors import safe_open

    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    files = (sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file()
             else ["model.safetensors"])
    out = {}
    for fn in files:
        with safe_open(str(folder / fn), "pt") as f:
            out.update({n: f.get_tensor(n) for n in f.keys() if want(n)})
    return out


def mlp_rel_err_vs_saved(model, folder: Path, device: str) -> float:
    """Decoder layer 0's MLP of the loaded model (quantized or not) against the same MLP
    computed in float32 from the bf16 tensors in the folder, on one fixed input: what
    loading (and quantizing) did to it."""
    import torch.nn.functional as Fn

    text = parts(model)["text"]
    # the text model's layer 0 MLP (the vision blocks are "blocks.N", the audio layers have no "mlp")
    pat = re.compile(r"^(?:thinker\.)?(?:model\.)?(?:language_model\.)?layers\.0\.mlp\.(gate|up|down)_proj\.weight$")
    w = {pat.match(n).group(1): t for n, t in saved_tensors(folder, pat.match).items()}
    if sorted(w) != ["down", "gate", "up"]:
        raise RuntimeError(f"layer 0's MLP not found in {folder} (found {sorted(w)})")
    gate, up, down = (w[k].to(device, torch.float32) for k in ("gate", "up", "down"))
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(1, 64, gate.shape[1], generator=g, device=device)
    mlp = text.layers[0].mlp
    # the model's compute dtype (bitsandbytes' int8 / packed 4-bit weights are not floating point)
    dt = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.bfloat16)
    with torch.inference_mode():
        ref = Fn.linear(Fn.silu(Fn.linear(x, gate)) * Fn.linear(x, up), down)
        got = mlp(x.to(dt)).float()
    return round(float((got - ref).norm() / ref.norm()), 5)


def quantized_layers(model) -> dict:
    """bitsandbytes layers (Linear8bitLt / Linear4bit) per part of the thinker."""
    kinds = ("Linear8bitLt", "Linear4bit")
    out: dict = {}
    inside: set = set()
    for name, m in parts(model).items():
        mods = [x for x in m.modules() if type(x).__name__ in kinds]
        out[name] = len(mods)
        inside |= {id(x) for x in mods}
    out["other"] = sum(1 for x in model.modules() if type(x).__name__ in kinds and id(x) not in inside)
    return out


def param_count(model) -> int:
    """Parameters as the unquantized model has them (a 4-bit weight's packed storage counts
    as its original shape; fp8 layers' weights are buffers)."""
    n = 0
    for p in model.parameters():
        qs = getattr(p, "quant_state", None)
        n += qs.shape.numel() if qs is not None and getattr(qs, "shape", None) is not None else p.numel()
    return n + sum(m.wq.numel() for m in model.modules() if isinstance(m, FP8Linear))


def parts(model) -> dict:
    """The vision encoder, audio encoder and text model, found by class (their attribute
    paths differ between transformers versions)."""
    want = {"Qwen2_5OmniVisionEncoder": "vision", "Qwen2_5OmniAudioEncoder": "audio",
            "Qwen2_5OmniThinkerTextModel": "text"}
    out = {}
    for _, m in model.named_modules():
        k = want.get(type(m).__name__)
        if k and k not in out:
            out[k] = m
    missing = set(want.values()) - set(out)
    if missing:
        raise RuntimeError(f"thinker without {sorted(missing)}: this transformers version lays it out differently")
    return out


class FP8Linear(nn.Module):
    """An inference-only linear layer: a float8_e4m3fn weight with one scale per output row,
    activations quantized per token — trainer_core.ltx2.fp8's arithmetic (torch._scaled_mm on
    a GPU; the same quantized operands in float32 on the CPU) without the bf16 weight or the
    transposed copy that training keeps."""

    def __init__(self, lin: nn.Linear):
        super().__init__()
        wq, ws = F8._rowwise(lin.weight.detach())
        self.register_buffer("wq", wq)
        self.register_buffer("ws", ws)
        self.bias = None if lin.bias is None else nn.Parameter(lin.bias.detach(), requires_grad=False)
        self.in_features, self.out_features = lin.in_features, lin.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq, xs = F8._quant_rows(x.reshape(-1, x.shape[-1]))
        y = F8._mm(xq, xs, self.wq, self.ws, x.dtype)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.view(*x.shape[:-1], self.out_features)


def to_fp8(root: nn.Module) -> int:
    """Replace the eligible nn.Linear layers under ``root`` (both sides multiples of 16) with
    FP8Linear ones; returns how many."""
    todo = [(name, m) for name, m in root.named_modules() if type(m) is nn.Linear and F8.eligible(m, 16)]
    for name, m in todo:
        parent, _, leaf = name.rpartition(".")
        setattr(root.get_submodule(parent) if parent else root, leaf, FP8Linear(m))
    return len(todo)


# ----------------------------------------------------------------------------- timing

def _sync(device: str):

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


class _Timer:
    """Logits processor and encoder hooks: a timestamp at every generation step (the first
    one = prefill done) and the time inside each encoder."""

    def __init__(self, device: str):
        self.device, self.steps, self.enc = device, [], {}
        self._t0: dict = {}

    def __call__(self, input_ids, scores):
        _sync(self.device)
        self.steps.append(time.perf_counter())
        return scores

    def hook(self, module, name: str):
        def pre(*_a, **_k):
            _sync(self.device)
            self._t0[name] = time.perf_counter()

        def post(*_a, **_k):
            _sync(self.device)
            self.enc[name] = self.enc.get(name, 0.0) + time.perf_counter() - self._t0[name]
        return [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]

    def reset(self):
        self.steps, self.enc = [], {}


def clip_media(i: int, width: int = 768, height: int = 512, seconds: float = 5.0, n_frames: int = 8,
               max_side: int = 448, rate: int = 16000):
    """What segment_media hands the captioner for a ``width``x``height`` clip of ``seconds``
    with sound: ``n_frames`` frames at caption.frame_size, mono float32 audio at ``rate``
    (content random: it does not change the work)."""
    import numpy as np

    from trainer_core.caption import frame_size

    w, h = frame_size(width, height, max_side)
    g = np.random.default_rng(i)
    frames = g.integers(0, 256, (n_frames, h, w, 3), dtype=np.uint8)
    t = np.arange(int(seconds * rate)) / rate
    audio = (0.3 * np.sin(2 * np.pi * (220 + 40 * i) * t) + 0.05 * g.standard_normal(t.shape)).astype(np.float32)
    return frames, audio


def bnb_missing() -> str | None:
    """Why bitsandbytes cannot be used here, or None."""
    try:
        import bitsandbytes  # noqa: F401
    except ModuleNotFoundError:
        return "bitsandbytes is not installed here"
    except Exception as e:
        return f"bitsandbytes does not import here: {type(e).__name__}: {e}"[:300]
    return None


def bnb_native() -> str:
    """bitsandbytes' version and the native library it loaded (its CUDA build, or a stand-in
    that fails on use when that could not load)."""
    import bitsandbytes

    try:
        from bitsandbytes import cextension

        lib = cextension.lib
        path = getattr(getattr(lib, "_lib", None), "_name", None)
        return f"{bitsandbytes.__version__}: {type(lib).__name__} {Path(path).name if path else ''}".strip()
    except Exception as e:
        return f"{bitsandbytes.__version__}: native library unknown ({type(e).__name__})"


def run_variant(variant: str, a, proc, cfgd: dict, folder: ModelFolder | None = None) -> dict:
    from transformers import LogitsProcessorList

    from trainer_core.caption import DEFAULT_PROMPT, Captioner

    prec, attn, cache, source = parse_variant(variant)
    rec: dict = {"variant": variant, "precision": prec, "attn": attn, "cache": cache, "source": source}
    cuda = a.device.startswith("cuda")
    if prec in ("8-bit", "4-bit"):
        why = bnb_missing()
        if why:
            return {**rec, "status": "not run", "why": f"{why}: caption.py's {prec} loads through transformers' "
                    "BitsAndBytesConfig; fp8:sdpa is the 8-bit path that runs without it"}
        if not cuda:
            return {**rec, "status": "not run", "why": f"bitsandbytes' {prec} (Captioner.load) needs a CUDA GPU; "
                    f"this run is on {a.device} (bf16:folder checks the folder path here)"}
    if source == "folder" and folder is None:
        raise RuntimeError("a :folder variant without a model folder")
    # Captioner.load: bf16 on a GPU, fp32 on the CPU; bitsandbytes: the saved dtype (bf16) outside
    # the quantized layers
    dtype = torch.bfloat16 if cuda else torch.float32
    rec["dtype"] = str(dtype).replace("torch.", "")
    if source == "folder":
        path = folder.get()  # made once (not timed), before the peak-memory window
        rec.update(folder.info)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    loaded = None
    if source == "folder":
        # exactly Caption Clips' load: check_model_dir, the Omni/thinker config handling,
        # BitsAndBytesConfig for 8-bit / 4-bit, the processor from the folder
        loaded = load_folder(path, "bf16" if prec == "fp8" else prec, a.device, proc)
        model = loaded.model
        model.requires_grad_(False)
        rec["dtype"] = str(next(p.dtype for p in model.parameters() if p.is_floating_point())).replace("torch.", "")
        rec["config_model_type"] = model.config.model_type
    else:
        model = build_model(cfgd, a.device, dtype, attn)
    if prec == "fp8":
        text = parts(model)["text"]
        layer = text.layers[0]
        g = torch.Generator(device=a.device).manual_seed(0)
        x = torch.randn(1, 64, layer.mlp.gate_proj.in_features, generator=g, device=a.device, dtype=model.dtype)
        with torch.inference_mode():
            ref = layer.mlp(x).float()
            rec["fp8_layers"] = to_fp8(text)
            # the converted path against the plain one: decoder layer 0's MLP on a fixed input
            rec["fp8_mlp_rel_err"] = round(float((layer.mlp(x).float() - ref).norm() / ref.norm()), 4)
        rec["fp8_scope"] = "text model linears (attention q/k/v/o, MLP); lm_head, vision and audio encoders bf16"
    _sync(a.device)
    rec["init_s"] = round(time.perf_counter() - t, 2)
    rec["params"] = param_count(model)
    if prec in ("8-bit", "4-bit"):
        rec["quantized_layers"] = quantized_layers(model)
        rec["bitsandbytes"] = bnb_native()
    if source == "folder" and prec != "fp8":
        rec["mlp_rel_err_vs_saved"] = mlp_rel_err_vs_saved(model, path, a.device)
    if cuda:
        rec["weights_gib"] = round(torch.cuda.memory_allocated() / 2**30, 2)
    rec["attn_config"] = getattr(model.config, "_attn_implementation", None)  # Captioner.load: transformers' default
    cap = loaded or Captioner(model, proc, "omni", "Qwen2.5-Omni-7B (random weights)" if not a.tiny else "tiny", 16000)
    if loaded is not None:
        rec["processor"] = type(cap.processor).__name__  # what Captioner.load read from the folder
    timer = _Timer(a.device)
    hooks = []
    for name, m in parts(model).items():
        if name in ("vision", "audio"):
            hooks += timer.hook(m, name)
    lp = LogitsProcessorList([timer])
    n = a.new_tokens
    gen_kw: dict = {}
    if cache == "static":
        # a fixed-size KV cache: transformers then compiles the decoding step by itself on a
        # GPU (torch.compile, mode reduce-overhead = CUDA graphs); on the CPU it stays eager
        gen_kw["cache_implementation"] = "static"
        if not cuda:
            gen_kw["disable_compile"] = True
    rows = []
    try:
        for i in range(a.warmup + a.clips):
            if i == a.warmup and cuda:
                torch.cuda.reset_peak_memory_stats()
            frames, audio = clip_media(i, *a.clip_size, seconds=a.seconds, n_frames=a.frames, max_side=a.max_side)
            timer.reset()
            t0 = time.perf_counter()
            # Captioner.caption, step by step (caption = decode(generate(inputs(...))))
            inp = cap.inputs(frames, audio, DEFAULT_PROMPT, fps=a.frames / a.seconds)
            t1 = time.perf_counter()
            new = cap.generate(inp, n, min_new_tokens=n, logits_processor=lp, **gen_kw)
            _sync(a.device)
            t2 = time.perf_counter()
            text = cap.decode(new)
            t3 = time.perf_counter()
            if new.shape[1] != n or len(timer.steps) != n:
                raise RuntimeError(f"generated {new.shape[1]} tokens ({len(timer.steps)} steps), asked for {n}")
            ids = inp["input_ids"][0]
            rows.append({"s": t3 - t0, "processor_s": t1 - t0, "prefill_s": timer.steps[0] - t1,
                         "decode_s": t2 - timer.steps[0], "detok_s": t3 - t2,
                         "vision_s": timer.enc.get("vision", 0.0), "audio_s": timer.enc.get("audio", 0.0),
                         "video_tokens": int((ids == 151656).sum()), "audio_tokens": int((ids == 151646).sum()),
                         "input_tokens": int(ids.numel()), "caption_chars": len(text)})
            print(f"{variant} clip {i}{' (warm-up)' if i < a.warmup else ''}: {rows[-1]['s']:.3f} s "
                  f"(processor {rows[-1]['processor_s']:.3f}, prefill {rows[-1]['prefill_s']:.3f}, "
                  f"decode {rows[-1]['decode_s']:.3f})", flush=True)
    finally:
        for h in hooks:
            h.remove()
    timed = rows[a.warmup:]
    med = lambda k: round(statistics.median(r[k] for r in timed), 4)
    s = [round(r["s"], 4) for r in timed]
    decode_s = med("decode_s")
    rec.update({
        "status": "ok", "s_per_clip": med("s"), "s_min": min(s), "s_max": max(s), "s_clips": s,
        "processor_s": med("processor_s"), "prefill_s": med("prefill_s"), "vision_s": med("vision_s"),
        "audio_s": med("audio_s"), "decode_s": decode_s, "detok_s": med("detok_s"),
        "decode_tok_s": round((n - 1) / decode_s, 1) if decode_s > 0 else None,
        "new_tokens": n, "video_tokens": timed[0]["video_tokens"], "audio_tokens": timed[0]["audio_tokens"],
        "input_tokens": timed[0]["input_tokens"], "clips": len(timed), "warmup": a.warmup,
    })
    if cuda:
        rec["peak_vram_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        rec["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
    rec["compiled"] = getattr(model, "_compiled_call", None) is not None
    rec["meets_official"] = rec["s_per_clip"] <= OFFICIAL["s_per_clip"][1]
    del cap, model, loaded
    return rec


DEFAULT_VARIANTS = "bf16:sdpa,bf16:eager,fp8:sdpa,8-bit"
PRECISIONS = ("bf16", "fp8", "8-bit", "4-bit")


def parse_variant(v: str) -> tuple[str, str, str, str]:
    """``precision[:attention[:static]][:folder]`` -> (precision, attention, cache, source);
    ValueError if not one. 8-bit and 4-bit always load from the folder; a folder loads with
    Captioner.load's attention (transformers' default, sdpa)."""
    tokens = v.strip().split(":")
    source = "memory"
    if len(tokens) > 1 and tokens[-1] == "folder":
        tokens, source = tokens[:-1], "folder"
    if len(tokens) > 3:
        raise ValueError(f"variant {v!r}: precision[:attention[:static]][:folder]")
    prec, attn, cache = (tokens + ["", ""])[:3]
    attn, cache = attn or "sdpa", cache or "dynamic"
    if prec not in PRECISIONS or attn not in ("sdpa", "eager") or cache not in ("dynamic", "static"):
        raise ValueError(f"variant {v!r}: precision bf16, fp8, 8-bit or 4-bit; attention sdpa or eager; then "
                         f":static or nothing; then :folder or nothing")
    if prec in ("8-bit", "4-bit"):
        source = "folder"
    if source == "folder" and attn != "sdpa":
        raise ValueError(f"variant {v!r}: a folder loads through Captioner.load, with transformers' default "
                         f"attention (sdpa)")
    return prec, attn, cache, source


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="the same architecture at toy widths (CPU smoke test)")
    ap.add_argument("--device", default=None, help="cuda (default when there is one) or cpu")
    ap.add_argument("--variants", default=None,
                    help=f"comma list of precision:attention[:static] (default {DEFAULT_VARIANTS})")
    ap.add_argument("--clips", type=int, default=5, help="timed clips per variant (after --warmup)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--new-tokens", type=int, default=120, help="caption length, forced (min = max)")
    ap.add_argument("--clip", default="768x512", help="source clip WxH (frames are scaled as Caption Clips does)")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--frames", type=int, default=8, help="frames per clip (Caption Clips' default)")
    ap.add_argument("--max-side", type=int, default=448, help="longest frame side (Caption Clips' default)")
    ap.add_argument("--inputs", choices=("auto", "processor", "standin"), default="auto",
                    help="the real processor (auto: it, else the stand-in where it cannot be built)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--model-dir", default=None,
                    help="where the :folder / 8-bit / 4-bit variants' checkpoint folder is saved (must be empty or "
                         "new; default a temporary folder under --tmp), removed at the end unless --keep-model-dir")
    ap.add_argument("--keep-model-dir", action="store_true")
    ap.add_argument("--model-layout", choices=("omni", "thinker"), default="omni",
                    help="omni: the published folder's layout (model_type qwen2_5_omni, thinker.* tensors); "
                         "thinker: the thinker's own save_pretrained (qwen2_5_omni_thinker)")
    ap.add_argument("--tmp", default=None, help="parent of the temporary model folder (default the system's)")
    a = ap.parse_args(argv)
    try:
        a.clip_size = tuple(int(v) for v in a.clip.lower().split("x"))
        assert len(a.clip_size) == 2 and min(a.clip_size) > 0
    except (ValueError, AssertionError):
        ap.error(f"--clip {a.clip!r}: give WxH, e.g. 768x512")
    a.variant_list = [v.strip() for v in (a.variants or DEFAULT_VARIANTS).split(",") if v.strip()]
    for v in a.variant_list:
        try:
            parse_variant(v)
        except ValueError as e:
            ap.error(str(e))
    if a.clips < 1 or a.warmup < 0 or a.new_tokens < 2:
        ap.error("--clips ≥ 1, --warmup ≥ 0, --new-tokens ≥ 2")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    import transformers

    a.device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU here (use --tiny --device cpu for the smoke test)")
    variants = a.variant_list
    gpu = torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu"
    cfgd = omni_7b_config(a.tiny)
    base = {"bench": "caption", "stack": "ours: trainer_core.caption.Captioner (transformers generate)",
            "model": "Qwen2.5-Omni-7B thinker, random weights" if not a.tiny else "tiny Qwen2.5-Omni thinker",
            "config": "published" if not a.tiny else "tiny",
            "clip": f"{a.clip}, {a.seconds:g} s, {a.frames} frames at longest side {a.max_side}, 16 kHz mono audio",
            "official": OFFICIAL, "gpu": gpu, "device": a.device, "torch": torch.__version__,
            "transformers": transformers.__version__}
    if not a.tiny:
        base["published_params"] = PUBLISHED_PARAMS
    base["inputs"] = ("real Qwen2_5OmniProcessor (published preprocessor settings and chat template; tokenizer "
                      "built here: prompt words one token each)")
    out = Path(a.out) if a.out else REPO / "bench" / "results" / f"caption_{gpu.replace(' ', '_')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        proc = None
        if a.inputs in ("auto", "processor"):
            try:
                proc = make_processor(Path(tmp))
            except Exception as e:
                if a.inputs == "processor":
                    raise
                base["inputs"] = (f"stand-in processor (StandInProcessor: the same tokens, features and patch "
                                  f"layout), the real one failed here: {type(e).__name__}: {e}"[:400])
                print(base["inputs"], flush=True)
        if proc is None:
            proc = make_stand_in_processor()
            base.setdefault("inputs", "")
            if not base["inputs"].startswith("stand-in"):
                base["inputs"] = "stand-in processor (StandInProcessor, --inputs standin)"
        folder = ModelFolder(cfgd, a.device, proc, Path(a.model_dir) if a.model_dir else None, a.model_layout,
                             a.keep_model_dir, a.tmp)
        try:
            recs = run_all(a, variants, proc, cfgd, folder, base, out)
        finally:
            folder.cleanup()
    print(f"wrote {out}")
    return 0 if all(r.get("status") in ("ok", "not run") for r in recs) else 1


def run_all(a, variants, proc, cfgd, folder: ModelFolder, base: dict, out: Path) -> list:
    """Every variant in turn, the records written after each (a run cut short keeps what it measured)."""
    from trainer_core.fsutil import atomic_write_text

    recs = []
    for v in variants:
        try:
            rec = run_variant(v.strip(), a, proc, cfgd, folder)
        except SystemExit:
            raise
        except Exception as e:  # one variant's failure is recorded, the others still run
            import traceback

            traceback.print_exc()
            rec = {"variant": v, "status": "error", "error": f"{type(e).__name__}: {e}"[:500]}
        rec = {**base, **rec}
        recs.append(rec)
        print(json.dumps(rec), flush=True)
        # written after every variant: a run cut short keeps what it measured
        atomic_write_text(out, json.dumps(recs, indent=1) + "\n")
        gc.collect()
        if a.device.startswith("cuda"):
            torch._dynamo.reset()  # a compiled variant's graphs (and their CUDA-graph memory) go too
            torch.cuda.empty_cache()
    return recs


if __name__ == "__main__":
    sys.exit(main())
