"""Test-only ComfyUI node pack, loaded into the e2e server beside the real pack: stands in
for the LTX-2 text encoder (Gemma 3 12B for LTX-2.0/2.3, Gemma 4 12B with the bundled
projections for LTX-2.5; neither has a tiny form) at its own boundary and nowhere else. Its CLIP object answers the calls ComfyUI's CLIPTextEncode and our Encode
Latents make, and returns conditioning of the true layout: the LTX-AV text encoder's
unprocessed output, [1, tokens, width], flagged ``unprocessed_ltxav_embeds`` exactly as
ComfyUI's LTXAV encoder flags it (width: 2.0's single projection, or for 2.3 / 2.5 the dual
video ‖ audio projection's cross_attention_dim + audio_cross_attention_dim). Same text, same tensor (seeded by the text)."""
import hashlib

import torch


class _StandInClip:
    def __init__(self, width: int):
        self.width = int(width)
        # like a real CLIP, a module whose weights tell one encoder from another (Encode
        # Latents keys its text cache by them): here the one thing that differs, the width
        self.cond_stage_model = torch.nn.Module()
        self.cond_stage_model.register_buffer("output_width", torch.tensor([float(self.width)]))

    def tokenize(self, text, **kw):
        return {"standin_text": str(text)}

    def _cond(self, text: str) -> torch.Tensor:
        seed = int(hashlib.sha1(text.encode()).hexdigest()[:8], 16)
        n = 4 + len(text.split())
        return torch.randn(1, n, self.width, generator=torch.Generator().manual_seed(seed))

    def encode_from_tokens(self, tokens, return_pooled=False, return_dict=False, **kw):
        cond = self._cond(tokens["standin_text"])
        if return_dict:
            return {"cond": cond, "pooled_output": None, "unprocessed_ltxav_embeds": True}
        return (cond, None) if return_pooled else cond

    def encode_from_tokens_scheduled(self, tokens, unprojected=False, add_dict=None, show_pbar=True):
        d = self.encode_from_tokens(tokens, return_dict=True)
        cond = d.pop("cond")
        d.update(add_dict or {})
        return [[cond, d]]


class GemmaStandIn:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"width": ("INT", {"default": 64, "min": 8, "max": 8192})}}

    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load"
    CATEGORY = "testing"

    def load(self, width):
        return (_StandInClip(width),)


NODE_CLASS_MAPPINGS = {"LTX2TestGemmaStandIn": GemmaStandIn}
