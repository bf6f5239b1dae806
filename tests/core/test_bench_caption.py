"""bench/bench_caption.py: the published Qwen2.5-Omni-7B thinker layout, and the --tiny CPU run
of the very code path the GPU run takes (real processor, Captioner.generate, fp8 layers)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_caption.py"


@pytest.fixture(scope="module")
def B():
    spec = importlib.util.spec_from_file_location("bench_caption", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_config_builds_the_published_checkpoint_size(B):
    # model.safetensors.index.json of Qwen/Qwen2.5-Omni-7B: 17,863,627,776 bytes of bf16
    # thinker tensors; the config written out in the bench must build exactly that many
    assert B.count_params(B.omni_7b_config()) == 17_863_627_776 // 2 == B.PUBLISHED_PARAMS
    tiny = B.count_params(B.omni_7b_config(tiny=True))
    assert tiny < 20_000_000


def test_fp8_linear_is_close_to_the_linear(B):
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 48).requires_grad_(False)
    seq = torch.nn.Sequential(lin)
    x = torch.randn(3, 5, 64)
    ref = seq(x)
    assert B.to_fp8(seq) == 1 and isinstance(seq[0], B.FP8Linear)
    y = seq(x)
    err = float((y - ref).norm() / ref.norm())
    assert y.shape == ref.shape and 0 < err < 0.08  # quantized (not the same numbers), within fp8 rounding
    assert not any(isinstance(b, torch.Tensor) and b.dtype == torch.float32 and b.shape == (48, 64)
                   for b in seq[0].buffers())  # no full-precision weight kept


def test_stand_in_processor_gives_what_the_processor_gives(B, tmp_path):
    # for a machine whose transformers cannot build the real processor (no torchvision)
    import numpy as np

    from trainer_core.caption import DEFAULT_PROMPT, Captioner

    real = Captioner(None, B.make_processor(tmp_path), "omni")
    stand_in = Captioner(None, B.make_stand_in_processor(), "omni")
    g = np.random.default_rng(0)
    audio = (0.1 * g.standard_normal(80000)).astype(np.float32)
    for size, atol in (((308, 448), 1e-5), ((298, 448), 0.05)):  # on Qwen2-VL's grid already / resized
        frames = g.integers(0, 256, (8, *size, 3), dtype=np.uint8)
        a, b = real.inputs(frames, audio, DEFAULT_PROMPT, 1.6), stand_in.inputs(frames, audio, DEFAULT_PROMPT, 1.6)
        assert sorted(a.keys()) == sorted(b.keys())
        for k in a:
            assert a[k].shape == b[k].shape and a[k].dtype == b[k].dtype, k
            if k == "pixel_values_videos":
                assert torch.allclose(a[k], b[k], atol=atol), (k, (a[k] - b[k]).abs().max())
            else:
                assert torch.equal(a[k], b[k]), k
    assert int((a["input_ids"] == 151656).sum()) == 704 and int((a["input_ids"] == 151646).sum()) == 125


def test_the_sampled_frame_rate_reaches_the_processor(B, tmp_path):
    # Qwen's processor times the video tokens from fps (2 fps when not told): 8 frames of a
    # 5-second segment are 1.6 fps, 1.25 s per temporal patch of 2 frames, as caption_clips says
    import numpy as np

    from trainer_core.caption import DEFAULT_PROMPT, Captioner, sampled_fps
    from trainer_core.dataset import ClipInfo, Segment

    real = Captioner(None, B.make_processor(tmp_path), "omni")
    frames = np.zeros((8, 308, 448, 3), dtype=np.uint8)
    told = real.inputs(frames, None, DEFAULT_PROMPT, fps=1.6)
    untold = real.inputs(frames, None, DEFAULT_PROMPT)
    assert float(told["video_second_per_grid"][0]) == pytest.approx(2 / 1.6)
    assert float(untold["video_second_per_grid"][0]) == pytest.approx(1.0)
    assert torch.equal(told["pixel_values_videos"], untold["pixel_values_videos"])  # no frames dropped or added
    clip = ClipInfo.__new__(ClipInfo)
    clip.kind = "video"
    seg = Segment(clip=0, start=2.0, end=7.0)
    assert sampled_fps(clip, seg, 8) == pytest.approx(1.6)
    clip.kind = "image"
    assert sampled_fps(clip, seg, 8) is None


def test_stand_in_inputs_run_end_to_end(B, tmp_path):
    out = tmp_path / "c.json"
    assert B.main(["--tiny", "--device", "cpu", "--inputs", "standin", "--variants", "bf16", "--clips", "1",
                   "--warmup", "0", "--new-tokens", "3", "--out", str(out)]) == 0
    (r,) = json.loads(out.read_text())
    assert r["status"] == "ok" and r["inputs"].startswith("stand-in") and r["video_tokens"] == 704
    assert r["new_tokens"] == 3 and r["s_per_clip"] > 0


def test_bad_arguments_are_refused(B):
    with pytest.raises(SystemExit):
        B.parse_args(["--clip", "768by512"])
    with pytest.raises(SystemExit):
        B.parse_args(["--new-tokens", "1"])
    for bad in ("bf16:flash", "int4", "fp8:sdpa:paged"):
        with pytest.raises(SystemExit):
            B.parse_args(["--variants", bad])
    a = B.parse_args(["--clip", "512x768", "--clips", "3", "--variants", "fp8, bf16:eager:static"])
    assert a.clip_size == (512, 768) and a.clips == 3 and a.new_tokens == 120
    assert a.variant_list == ["fp8", "bf16:eager:static"]
    assert [B.parse_variant(v) for v in a.variant_list] == [("fp8", "sdpa", "dynamic", "memory"),
                                                             ("bf16", "eager", "static", "memory")]
    assert B.parse_args([]).variant_list == ["bf16:sdpa", "bf16:eager", "fp8:sdpa", "8-bit"]
    # 8-bit / 4-bit always load from the folder; a folder loads with Captioner.load's attention
    assert B.parse_variant("8-bit") == ("8-bit", "sdpa", "dynamic", "folder")
    assert B.parse_variant("4-bit:sdpa:static") == ("4-bit", "sdpa", "static", "folder")
    assert B.parse_variant("bf16:folder") == ("bf16", "sdpa", "dynamic", "folder")
    assert B.parse_variant("fp8:sdpa:static:folder") == ("fp8", "sdpa", "static", "folder")
    for bad in ("8-bit:eager", "bf16:eager:folder", "bf16:folder:sdpa", "bf16:sdpa:static:x:folder"):
        with pytest.raises(SystemExit):
            B.parse_args(["--variants", bad])


def test_tiny_run_end_to_end(tmp_path):
    out = tmp_path / "caption.json"
    n = 6
    p = subprocess.run([sys.executable, str(BENCH), "--tiny", "--device", "cpu", "--clips", "1", "--warmup", "1",
                        "--new-tokens", str(n), "--variants", "bf16:sdpa,fp8:sdpa:static,8-bit", "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    recs = json.loads(out.read_text())
    assert [r["variant"] for r in recs] == ["bf16:sdpa", "fp8:sdpa:static", "8-bit"]
    bf16, fp8, int8 = recs
    for r in (bf16, fp8):
        assert r["status"] == "ok" and r["gpu"] == "cpu" and r["config"] == "tiny" and r["new_tokens"] == n
        # a 768x512 clip: 8 frames scaled to 448x298, resized by the processor to 448x308 = 16x11
        # merged patches per 2 frames, 4 temporal patches; 5 s of audio = 25 tokens per second
        assert r["video_tokens"] == 4 * 16 * 11 == 704 and r["audio_tokens"] == 125
        assert r["input_tokens"] > r["video_tokens"] + r["audio_tokens"] + 100  # chat turns + the prompt
        parts = r["processor_s"] + r["prefill_s"] + r["decode_s"] + r["detok_s"]
        assert r["s_per_clip"] > 0 and abs(parts - r["s_per_clip"]) < 0.05 * r["s_per_clip"] + 0.01
        assert 0 < r["vision_s"] < r["prefill_s"] and 0 < r["audio_s"] < r["prefill_s"]
        assert abs(r["decode_tok_s"] - (n - 1) / r["decode_s"]) < 0.1
        assert r["s_min"] <= r["s_per_clip"] <= r["s_max"] and len(r["s_clips"]) == r["clips"] == 1
        assert r["official"]["s_per_clip"] == [1.0, 3.0] and isinstance(r["meets_official"], bool)
    assert bf16["attn_config"] == "sdpa" and bf16["dtype"] == "float32" and bf16["cache"] == "dynamic"
    assert fp8["cache"] == "static" and fp8["compiled"] is False  # transformers compiles on a GPU only
    assert fp8["fp8_layers"] == 2 * 7  # q, k, v, o, gate, up, down in each of the 2 tiny layers
    assert 0 < fp8["fp8_mlp_rel_err"] < 0.08
    assert int8["status"] == "not run" and "bitsandbytes" in int8["why"]
    assert bf16["inputs"].startswith("real Qwen2_5OmniProcessor")


@pytest.mark.parametrize("layout", ["omni", "thinker"])
def test_saved_folder_loads_back_the_built_weights(B, tmp_path, layout):
    # the 8-bit / 4-bit variants quantize while Captioner.load reads this folder; at bf16 on the
    # CPU the same load must give back exactly the weights that were built (a tensor the
    # Omni layout's thinker.* mapping missed would be freshly initialized instead) and so the
    # same caption tokens as the in-memory model for the same inputs
    import numpy as np

    from trainer_core.caption import DEFAULT_PROMPT, Captioner, check_model_dir

    cfgd = B.omni_7b_config(tiny=True)
    proc = B.make_processor(tmp_path / "proc")
    built = B.build_model(cfgd, "cpu", torch.bfloat16, "sdpa")
    folder = tmp_path / "model"
    B.save_model_folder(built, proc, folder, layout, max_shard_size="6MB")  # sharded, as the full-size one is
    assert len(list(folder.glob("model-*-of-*.safetensors"))) > 1 and (folder / "model.safetensors.index.json").is_file()
    family, cfg = check_model_dir(folder)
    assert family == "omni" and cfg["model_type"] == {"omni": "qwen2_5_omni", "thinker": "qwen2_5_omni_thinker"}[layout]
    if layout == "omni":
        # the published layout: the names the thinker's own save_pretrained writes, under thinker.
        built.save_pretrained(str(tmp_path / "own"))
        names = {d: set(B.saved_tensors(d, lambda n: True)) for d in (folder, tmp_path / "own")}
        assert names[folder] == {"thinker." + k for k in names[tmp_path / "own"]}
    cap = Captioner.load(folder, "bf16", "cpu")  # Caption Clips' own load
    ref = built.float()
    got, want = cap.model.state_dict(), ref.state_dict()
    assert sorted(got) == sorted(want)
    assert next(cap.model.parameters()).dtype == torch.float32  # Captioner.load on the CPU
    for k in want:
        assert torch.equal(got[k], want[k]), k
    g = np.random.default_rng(3)
    frames = g.integers(0, 256, (4, 308, 448, 3), dtype=np.uint8)
    audio = (0.1 * g.standard_normal(32000)).astype(np.float32)
    mem = Captioner(ref, proc, "omni")
    inp = cap.inputs(frames, audio, DEFAULT_PROMPT, fps=2.0)
    assert torch.equal(inp["input_ids"], mem.inputs(frames, audio, DEFAULT_PROMPT, fps=2.0)["input_ids"])
    a, b = cap.generate(inp, 5, min_new_tokens=5), mem.generate(inp, 5, min_new_tokens=5)
    assert a.shape == (1, 5) and torch.equal(a, b)


def test_folder_variant_end_to_end(B, tmp_path):
    out = tmp_path / "c.json"
    kept = tmp_path / "kept"
    args = ["--tiny", "--device", "cpu", "--variants", "bf16,bf16:folder,8-bit", "--clips", "1", "--warmup", "0",
            "--new-tokens", "3", "--out", str(out)]
    assert B.main(args + ["--model-dir", str(kept), "--keep-model-dir", "--model-layout", "thinker"]) == 0
    mem, fol, int8 = json.loads(out.read_text())
    assert mem["source"] == "memory" and fol["source"] == "folder" and fol["status"] == "ok"
    assert fol["model_dir"] == str(kept) and fol["model_layout"] == "thinker" and fol["folder_gib"] > 0
    assert fol["config_model_type"] == "qwen2_5_omni_thinker" and fol["processor"] == "Qwen2_5OmniProcessor"
    assert fol["params"] == mem["params"] and fol["dtype"] == "float32"
    # float32 on the CPU from the saved bf16 tensors: the same arithmetic as the reference
    assert 0 <= fol["mlp_rel_err_vs_saved"] < 1e-5
    assert fol["video_tokens"] == mem["video_tokens"] == 704 and fol["new_tokens"] == 3
    assert int8["status"] == "not run" and "bitsandbytes" in int8["why"]  # no CUDA here (or no bitsandbytes)
    assert (kept / "config.json").is_file()  # --keep-model-dir
    # a non-empty --model-dir is refused (the bench never writes over a folder), the other variants still run
    assert B.main(args + ["--model-dir", str(kept)]) == 1
    assert json.loads(out.read_text())[1]["status"] == "error" and (kept / "config.json").is_file()
    # the default: a temporary folder under --tmp, gone at the end
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    assert B.main(args + ["--tmp", str(scratch)]) == 0
    fol = json.loads(out.read_text())[1]
    assert fol["status"] == "ok" and Path(fol["model_dir"]).parent == scratch and fol["model_layout"] == "omni"
    assert list(scratch.iterdir()) == []
