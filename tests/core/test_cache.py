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


# ----------------------------------------------------------------------------- checked before step 1

@pytest.fixture(scope="module")
def tiny20(tmp_path_factory):
    from trainer_core.ltx2 import load_tree_from_checkpoint
    from trainer_core.tiny_checkpoint import make_tiny_checkpoint

    d = tmp_path_factory.mktemp("cache_check")
    ck = make_tiny_checkpoint(d / "tiny20.safetensors", variant="ltx-2.0", seed=1)
    return load_tree_from_checkpoint(ck, dtype=torch.float32)


def _train_on(root, cache_dir, tmp_path, steps=3):
    from trainer_core import engine as en
    from trainer_core.ltx2 import make_predict

    seen = []
    cfg = en.TrainConfig(steps=steps, rank=2, mixed_precision="fp32", checkpoint_every=0)
    en.Trainer(root, make_predict(checkpointing=False), CachedLatents(cache_dir), cfg, tmp_path / "run",
               callbacks=en.Callbacks(on_step=lambda r: seen.append(r["step"]))).train()
    return seen


def test_a_damaged_latent_file_is_named_before_the_first_step(tiny20, tmp_path):
    from trainer_core.cache import CacheError
    from trainer_core.tiny_checkpoint import make_tiny_cache

    cache = make_tiny_cache(tmp_path / "cache", "ltx-2.0", n=4, seed=1)
    f = cache / "audio" / "a3.safetensors"
    f.write_bytes(f.read_bytes()[:-40])  # truncated: drawn only steps later, if at all
    with pytest.raises(CacheError) as e:
        _train_on(tiny20, cache, tmp_path)
    assert "a3.safetensors (audio)" in str(e.value) and "Encode Latents again" in str(e.value)
    # a damaged header (same size): the file is named too, never a raw SafetensorError
    data = bytearray(f.read_bytes() + b"\0" * 40)
    data[8:16] = b"\xff" * 8
    f.write_bytes(bytes(data))
    with pytest.raises(CacheError, match=r"a3\.safetensors \(audio\) cannot be read"):
        _train_on(tiny20, cache, tmp_path)


def test_latents_not_of_ltx2_vaes_are_refused_up_front(tiny20, tmp_path):
    from trainer_core.cache import CacheError
    from trainer_core.tiny_checkpoint import make_tiny_cache

    cache = make_tiny_cache(tmp_path / "cache", "ltx-2.0", n=2, seed=1)
    c = LatentCache(cache)
    c.put("video", "v1", {"latents": torch.randn(64, 2, 2, 2)})  # 64 channels (another model's VAE)
    c.save_manifest()
    with pytest.raises(CacheError, match=r"v1\.safetensors: video latents \[64, 2, 2, 2\], LTX-2 takes"):
        _train_on(tiny20, cache, tmp_path)


def test_a_cache_of_another_variant_is_refused_before_training(tiny20, tmp_path):
    """A 2.3 cache (dual text projection: another conditioning width) on a 2.0 model."""
    from trainer_core.cache import CacheError
    from trainer_core.tiny_checkpoint import make_tiny_cache

    cache = make_tiny_cache(tmp_path / "cache23", "ltx-2.3", n=2, seed=1)
    with pytest.raises(CacheError) as e:
        _train_on(tiny20, cache, tmp_path)
    msg = str(e.value)
    assert "does not fit this model (LTX-2 2.0)" in msg and "another LTX-2 variant" in msg, msg
    assert not (tmp_path / "run" / "checkpoints").exists()
    # and the right cache trains
    assert _train_on(tiny20, make_tiny_cache(tmp_path / "cache20", "ltx-2.0", n=2, seed=1), tmp_path) == [1, 2, 3]


def test_batches_never_mix_clips_that_cannot_share_a_forward(tiny20, tmp_path):
    """Batch 2 on a bucket holding 24 and 30 fps clips (a dataset kept at its own frame
    rates): the bucket is split by frame rate, so no batch mixes them, and training runs;
    at batch 1 the bucket keeps its name."""
    from trainer_core import engine as en
    from trainer_core.ltx2 import make_predict
    from trainer_core.tiny_checkpoint import make_tiny_cache

    cache = make_tiny_cache(tmp_path / "cache", "ltx-2.0", n=4, seed=2)
    lc = LatentCache(cache)
    lc.manifest.samples[3]["fps"] = 30.0
    lc.save_manifest()
    cfg = en.TrainConfig(steps=3, rank=2, mixed_precision="fp32", checkpoint_every=0)
    seen = []

    def watch(root, inputs):
        seen.append(inputs.fps)
        return predict(root, inputs)

    predict = make_predict(checkpointing=False)
    tr = en.Trainer(tiny20, watch, CachedLatents(cache), cfg, tmp_path / "run", batch_size=2)
    assert tr.buckets == {"64x64x9 (24 fps)": [0, 1, 2], "64x64x9 (30 fps)": [3]}
    tr.train()
    assert len(seen) == 3 and set(seen) <= {24.0, 30.0}
    one = en.Trainer(tiny20, predict, CachedLatents(cache), cfg, tmp_path / "run1", batch_size=1)
    assert list(one.buckets) == ["64x64x9"]
