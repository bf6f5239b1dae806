"""Latent cache: keys, validity checks, damage detection, the engine's view of it."""
from __future__ import annotations

import json

import pytest
import torch

from trainer_core.cache import CachedLatents, LatentCache, file_digest, key_for


def test_keys_are_stable_and_sensitive():
    a = key_for(src="x", start=0.0, bucket="768x512x121")
    assert a == key_for(bucket="768x512x121", start=0.0, src="x")
    assert a != key_for(src="x", start=0.5, bucket="768x512x121")


def test_file_digest_memo(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"abc" * 1000)
    memo = {}
    d = file_digest(p, memo)
    assert memo and file_digest(p, memo) == d
    p.write_bytes(b"abd" * 1000)
    assert file_digest(p, memo) != d


def test_put_valid_and_truncation_detected(tmp_path):
    c = LatentCache(tmp_path)
    c.put("video", "k1", {"latents": torch.randn(128, 2, 3, 4)})
    c.save_manifest()
    c2 = LatentCache(tmp_path)
    assert c2.valid("video", "k1")
    assert c2.get("video", "k1")["latents"].shape == (128, 2, 3, 4)
    p = c2.path("video", "k1")
    p.write_bytes(p.read_bytes()[:-100])  # truncate
    assert not c2.valid("video", "k1")
    assert not c2.valid("video", "missing")


def test_damaged_manifest_means_nothing_is_trusted(tmp_path):
    c = LatentCache(tmp_path)
    c.put("audio", "a", {"latents": torch.zeros(8, 5, 16)})
    c.save_manifest()
    (tmp_path / "manifest.json").write_text("{not json")
    assert not LatentCache(tmp_path).valid("audio", "a")


def test_prune(tmp_path):
    c = LatentCache(tmp_path)
    for k in "abc":
        c.put("text", k, {"context": torch.zeros(3, 4)})
    assert c.prune({"text/a"}) == 2
    assert c.valid("text", "a") and not c.path("text", "b").exists()


def test_cached_latents_source(tmp_path):
    c = LatentCache(tmp_path)
    c.put("video", "v", {"latents": torch.ones(128, 2, 1, 1), "first_frame": torch.ones(128, 1, 1, 1)})
    c.put("text", "t", {"context": torch.ones(4, 8)})
    c.put("text", "e", {"context": torch.zeros(1, 8)})
    c.manifest.samples = [dict(key="clip#0", video="v", audio=None, text="t", bucket="32x32x9", fps=24.0)]
    c.manifest.empty_text = "e"
    c.save_manifest()
    src = CachedLatents(tmp_path)
    it = src.get(0)
    assert it.video.shape == (128, 2, 1, 1) and it.audio is None and it.text["context"].shape == (4, 8)
    assert src.bucket_of(0) == "32x32x9" and src.empty_text()["context"].abs().sum() == 0
    assert src.first_frame(0).shape == (128, 1, 1, 1)
    with pytest.raises(ValueError, match="no audio"):
        CachedLatents(tmp_path, require_audio=True)
    (tmp_path / "manifest.json").write_text(json.dumps({"version": 1, "samples": []}))
    with pytest.raises(ValueError, match="Encode Latents"):
        CachedLatents(tmp_path)
