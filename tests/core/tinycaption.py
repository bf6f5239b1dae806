"""Tiny, randomly initialised captioning models of the supported families (Qwen2.5-VL,
Qwen2.5-Omni thinker) with a tokenizer and processor built here, saved as Hugging Face
folders — what the Caption node loads, without any download."""
from __future__ import annotations

from pathlib import Path

import torch

NAMED = {"image_token": "<|IMAGE|>", "audio_token": "<|AUDIO|>", "video_token": "<|VIDEO|>",
         "vision_bos_token": "<|vision_bos|>", "vision_eos_token": "<|vision_eos|>",
         "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>"}
VL_SPECIALS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
WORDS = ("the a video shows in this clip man woman dog walks runs camera pans light warm sound music speech "
         "red blue street room").split()


def _tokenizer(omni: bool):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"<t{i}>": i for i in range(160)}
    for w in WORDS:
        vocab[w] = len(vocab)
    specials = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"] + (list(NAMED.values()) if omni else VL_SPECIALS)
    for s in specials:
        vocab[s] = len(vocab)
    vocab["[UNK]"] = len(vocab)
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    kw = {"extra_special_tokens": NAMED} if omni else {}
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>", additional_special_tokens=specials, **kw)
    video = "<|vision_bos|><|VIDEO|><|vision_eos|>" if omni else "<|vision_start|><|video_pad|><|vision_end|>"
    tmpl = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
            "{% if c['type']=='text' %}{{ c['text'] }}{% elif c['type']=='video' %}" + video +
            "{% elif c['type']=='audio' %}<|audio_bos|><|AUDIO|><|audio_eos|>{% endif %}{% endfor %}<|im_end|>\n"
            "{% endfor %}<|im_start|>assistant\n")
    return tok, tmpl


def _vision_processors():
    from transformers import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    px = dict(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)
    return Qwen2VLImageProcessor(**px), Qwen2VLVideoProcessor(**px)


def make_tiny_vl(path: Path, seed: int = 0) -> Path:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    tok, tmpl = _tokenizer(omni=False)
    ip, vp = _vision_processors()
    proc = Qwen2_5_VLProcessor(image_processor=ip, tokenizer=tok, video_processor=vp, chat_template=tmpl)
    ids = {s: tok.convert_tokens_to_ids(s) for s in VL_SPECIALS + ["<|im_end|>", "<|endoftext|>"]}
    cfg = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                         eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"], bos_token_id=None),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                           fullatt_block_indexes=[0]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"], bos_token_id=None)
    torch.manual_seed(seed)
    Qwen2_5_VLForConditionalGeneration(cfg).save_pretrained(path, safe_serialization=True)
    proc.save_pretrained(path)
    return Path(path)


def make_tiny_omni(path: Path, seed: int = 0) -> Path:
    from transformers import (Qwen2_5OmniProcessor, Qwen2_5OmniThinkerConfig,
                              Qwen2_5OmniThinkerForConditionalGeneration, WhisperFeatureExtractor)

    tok, tmpl = _tokenizer(omni=True)
    ip, vp = _vision_processors()
    fe = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000)
    proc = Qwen2_5OmniProcessor(image_processor=ip, video_processor=vp, feature_extractor=fe, tokenizer=tok,
                                chat_template=tmpl)
    ids = {k: tok.convert_tokens_to_ids(v) for k, v in NAMED.items()}
    cfg = Qwen2_5OmniThinkerConfig(
        audio_config=dict(num_mel_bins=128, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64,
                          d_model=32, output_dim=32, n_window=50),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
                           fullatt_block_indexes=[0]),
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}),
        audio_token_index=ids["audio_token"], image_token_index=ids["image_token"],
        video_token_index=ids["video_token"], audio_start_token_id=ids["audio_bos_token"],
        audio_end_token_id=ids["audio_eos_token"], vision_start_token_id=ids["vision_bos_token"],
        vision_end_token_id=ids["vision_eos_token"])
    torch.manual_seed(seed)
    Qwen2_5OmniThinkerForConditionalGeneration(cfg).save_pretrained(path, safe_serialization=True)
    proc.save_pretrained(path)
    return Path(path)


def make_tiny_omni_full(path: Path, seed: int = 0) -> tuple[Path, dict]:
    """A full Qwen2.5-Omni folder (model_type qwen2_5_omni, weights under ``thinker.``), as the
    published Qwen2.5-Omni checkpoints are laid out (without talker weights). Returns the path
    and the thinker's state dict for comparison."""
    import shutil
    import tempfile

    from transformers import Qwen2_5OmniConfig, Qwen2_5OmniForConditionalGeneration, Qwen2_5OmniThinkerConfig

    src = Path(tempfile.mkdtemp()) / "thinker"
    make_tiny_omni(src, seed)
    tc = Qwen2_5OmniThinkerConfig.from_pretrained(src)
    torch.manual_seed(seed + 1)
    m = Qwen2_5OmniForConditionalGeneration(Qwen2_5OmniConfig(thinker_config=tc.to_dict(), enable_audio_output=False))
    m.save_pretrained(path, safe_serialization=True)
    for f in src.iterdir():
        if f.name not in ("config.json", "model.safetensors", "generation_config.json"):
            shutil.copy(f, Path(path) / f.name)
    return Path(path), {k: v.clone() for k, v in m.thinker.state_dict().items()}
