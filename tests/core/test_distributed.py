"""Data parallel training over torch.distributed, on CPU with gloo: 2 spawned processes train
test_engine's toy transformer (dist_worker.py) and are compared with one process.

- the exact reduction: 2 ranks at global batch 4 give the one-process LoRA at batch 4 bit for
  bit (per-global-sample draws with caption dropout, LoRA dropout, a short last batch that
  leaves rank 1 with no sample);
- the all-reduce: the same within float tolerance;
- save on 2 ranks, resume on 1: bit for bit the unbroken run;
- a rank killed mid-run: the other stops, names it, and leaves the last finished step saved.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import socket
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO
from tests.core import dist_worker
from tests.core.test_engine import ToyRoot, ToySource, cfg, lora_tensors, toy_predict
from trainer_core import distributed as D
from trainer_core import engine as en

CFG = dict(steps=6, caption_dropout=0.4, dropout=0.1, learning_rate=3e-3)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(world: int, spec: dict, timeout: float = 120.0, target=None) -> list[int]:
    ctx = mp.get_context("spawn")
    port = _port()
    procs = [ctx.Process(target=target or dist_worker.run, args=(r, world, port, spec)) for r in range(world)]
    saved = list(sys.path)
    # the children import this repo's tests (a namespace package): ComfyUI's checkout, which the
    # ComfyUI layer puts on sys.path, has a regular package of that name that would win there
    sys.path[:] = [str(REPO)] + [q for q in saved if not (Path(q or ".") / "tests" / "__init__.py").is_file()]
    try:
        for p in procs:
            p.start()
    finally:
        sys.path[:] = saved
    end = time.time() + timeout
    for p in procs:
        p.join(max(1.0, end - time.time()))
    codes = []
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
            codes.append(None)
        else:
            codes.append(p.exitcode)
    return codes


@pytest.fixture(autouse=True)
def one_thread():
    """The ranks run one intra-op thread each; so does the one-process reference (a GEMM's
    summation order may depend on the thread count)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def one_process(tmp_path, name, batch, exact, resume=None, n=6, **kw):
    tr = en.Trainer(ToyRoot(), toy_predict, ToySource(n=n), cfg(**dict(CFG, **kw)), tmp_path / name,
                    batch_size=batch, dist=D.Dist(exact=exact))
    ck = None
    if resume:
        t, m = en.read_checkpoint(resume)
        ck = en.LoadedCheckpoint(Path(resume), t, m)
    return lora_tensors(tr.train(resume_from=ck))


def two_ranks(tmp_path, name, exact, **kw):
    out = tmp_path / f"{name}_out"
    out.mkdir()
    extra = kw.pop("_spec", {})
    spec = dict(out=str(out), run_dir=str(tmp_path / name), batch=4, exact=exact, cfg=dict(CFG, **kw), **extra)
    codes = spawn(2, spec)
    return out, codes


def test_two_ranks_exact_same_lora_bitwise_and_resume_on_one(tmp_path):
    """6 samples at global batch 4, 2 micro-batches a step: batches of 4 and 2 (rank 1 idles in
    the short one). Save on 2 ranks at step 3, finish on 2; resume that step-3 checkpoint on 1
    process: all equal."""
    out, codes = two_ranks(tmp_path, "r2", True, checkpoint_every=3, grad_accum=2)
    assert codes == [0, 0]
    a0, a1 = load_file(str(out / "rank0.safetensors")), load_file(str(out / "rank1.safetensors"))
    unbroken = one_process(tmp_path, "r1", 4, True, grad_accum=2)
    for k, v in unbroken.items():
        assert torch.equal(a0[k], v), k  # 2 ranks == 1 process, bit for bit
        assert torch.equal(a1[k], v), k  # and both ranks hold the same LoRA
    assert any(v.abs().sum() > 0 for k, v in unbroken.items() if "lora_B" in k)
    ck = tmp_path / "r2" / "checkpoints" / "step_000003.safetensors"
    assert ck.exists() and not list((tmp_path / "r2" / "checkpoints").glob(".*tmp"))
    resumed = one_process(tmp_path, "r1b", 4, True, resume=ck, grad_accum=2)
    for k, v in unbroken.items():
        assert torch.equal(resumed[k], v), k
    # the draws are per global sample: another batch split (batch 2) is another run
    other = one_process(tmp_path, "b2", 2, True, grad_accum=2)
    assert any(not torch.equal(other[k], v) for k, v in unbroken.items())


def test_two_ranks_all_reduce_matches_one_batched_process(tmp_path):
    """The default reduction: each rank's share in one batched forward, the gradients
    all-reduced; equal to one plain process at batch 4 within float tolerance. Video only with
    weight decay: the audio adapters get no gradient on any rank and stay untouched, as in one
    process."""
    kw = dict(dropout=0.0, mode="video_only", weight_decay=0.1)
    out, codes = two_ranks(tmp_path, "s2", False, **kw)
    assert codes == [0, 0]
    a0, a1 = load_file(str(out / "rank0.safetensors")), load_file(str(out / "rank1.safetensors"))
    ref = lora_tensors(en.Trainer(ToyRoot(), toy_predict, ToySource(n=6), cfg(**dict(CFG, **kw)),
                                  tmp_path / "s1", batch_size=4).train())
    c = cfg(**dict(CFG, **kw))
    init = en.LoRASet.for_model(ToyRoot(), c.lora_spec(), seed=c.seed).state_dict()
    assert any("audio_attn1" in k for k in init)
    for k, v in ref.items():
        assert torch.equal(a0[k], a1[k]), k
        torch.testing.assert_close(a0[k], v, rtol=1e-4, atol=1e-6)
        if "audio_attn1" in k:
            assert torch.equal(a0[k], init[k]), k
    # only rank 0 wrote: the run folder has the final checkpoint of step 6 once
    assert [p.name for p in (tmp_path / "s2" / "checkpoints").iterdir()] == ["step_000006.safetensors"]


def test_killed_rank_stops_the_other_with_a_checkpoint(tmp_path):
    """8 samples, 2 per rank per step: rank 1 is SIGKILLed in its 7th forward (step 4); rank
    0's collective fails, it names rank 1, saves step 3 — the unbroken run's step 3 — and stops."""
    t0 = time.time()
    out, codes = two_ranks(tmp_path, "k2", True, steps=12, _spec=dict(kill=[1, 7], n=8))
    assert codes[1] == -9 and codes[0] == 0, codes
    assert time.time() - t0 < 100
    rep = json.loads((out / "rank0.json").read_text())
    assert rep["reason"] == "rank_failed" and "rank 1" in rep["message"], rep
    assert rep["step"] == 3 and rep["checkpoint"].endswith("step_000003.safetensors")
    tensors, meta = en.read_checkpoint(Path(rep["checkpoint"]))
    assert meta["step"] == "3"
    # what rank 0 saved is the unbroken run's step 3
    one_process(tmp_path, "k1", 4, True, n=8, steps=4, checkpoint_every=3)
    t_ref, _ = en.read_checkpoint(tmp_path / "k1" / "checkpoints" / "step_000003.safetensors")
    for k in t_ref:
        if k.startswith("lora."):
            assert torch.equal(tensors[k], t_ref[k]), k


def test_ulysses_attention_matches_full_attention(tmp_path):
    """Sequence parallel: 12 tokens split over 2 processes, two all-to-alls around attention;
    each rank's output and q/k/v gradients equal full attention's for its tokens (float64)."""
    assert spawn(2, {"out": str(tmp_path)}, target=dist_worker.sp_check) == [0, 0]
    for r in range(2):
        rep = json.loads((tmp_path / f"sp{r}.json").read_text())
        assert rep["shape"] == [2, 6, 4, 8] and rep["err"] < 1e-12, rep


SP_CASES = [("2.3", "text_to_audio_video", True), ("2.5", "text_to_audio_video", False), ("2.0", "video_only", False)]


def test_sequence_parallel_forward_matches_one_process(tmp_path):
    """The LTX-2 forward with the video tokens split over 2 processes (Ulysses self-attention,
    gathered video keys for video→audio, replicated audio and text): outputs and the reduced
    LoRA gradients equal one process's (float64, relative error < 1e-10), with per-block
    checkpointing too; LTX-2.3 (gated attention, cross-attention AdaLN), 2.5 (keyframe
    embedding), 2.0 video only."""
    assert spawn(2, {"out": str(tmp_path), "cases": SP_CASES}, target=dist_worker.sp_forward_check) == [0, 0]
    for r in range(2):
        rep = json.loads((tmp_path / f"spf{r}.json").read_text())
        assert len(rep) == len(SP_CASES)
        for case, e in rep.items():
            assert e["same_names"] and e["adapters"] > 0, (case, e)
            assert e["out"] < 1e-10 and e["grad"] < 1e-10, (case, e)
            assert e["unreduced"] > 1e-3, (case, e)  # the reduction is needed: a rank alone has part of it


def test_sequence_parallel_needs_a_divisible_token_count():
    with pytest.raises(ValueError, match="multiple of it; this bucket has 13 tokens"):
        D.seq_slice(13, D.Dist(rank=1, world=2, sp=True))
    assert D.seq_slice(12, D.Dist(rank=1, world=2, sp=True)) == slice(6, 12)
    with pytest.raises(ValueError, match="--reduce sum"):
        D.Dist(rank=0, world=2, sp=True, exact=True).check_batch(1)
    D.Dist(rank=0, world=2, sp=True).check_batch(1)  # any batch: every rank takes all of it
    assert D.Dist(rank=1, world=2, sp=True).share(3, 3) == [0, 1, 2]


def test_batch_must_split_evenly():
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        D.Dist(rank=0, world=2).check_batch(3)
    with pytest.raises(ValueError, match="power-of-two"):
        D.Dist(rank=0, world=2, exact=True).check_batch(6)
    assert D.Dist(rank=1, world=2).share(3, 4) == [2]
    assert D.Dist(rank=1, world=2).share(2, 4) == []


def test_tree_sum_order_is_fixed():
    """Pairwise, level by level, an odd one carried: float32 sums that depend on the order."""
    xs = [torch.tensor([v]) for v in (1e8, 1.0, -1e8, 1.0, 3.0)]
    assert torch.equal(D.tree_sum(xs), ((xs[0] + xs[1]) + (xs[2] + xs[3])) + xs[4])
    assert not torch.equal(D.tree_sum(xs[:4]), ((xs[0] + xs[1]) + xs[2]) + xs[3])


def test_batch_with_captions_of_different_lengths_equals_its_samples_one_by_one(tmp_path):
    """The tiny LTX-2 model on the tiny cache at batch 2 with caption dropout: the empty
    caption (3 tokens) shares batches with 7-token captions. One batched forward per step
    gives the LoRA that running each sample on its own gives (the exact reduction), within
    float tolerance — the padded captions change nothing."""
    from trainer_core.cache import CachedLatents
    from trainer_core.ltx2 import load_tree_from_checkpoint, make_predict
    from trainer_core.tiny_checkpoint import make_tiny_cache, make_tiny_checkpoint

    ck = make_tiny_checkpoint(tmp_path / "tiny.safetensors", variant="ltx-2.0", seed=2)
    cache = make_tiny_cache(tmp_path / "cache", "ltx-2.0", n=4, seed=3)
    c = en.TrainConfig(steps=4, rank=2, mixed_precision="fp32", checkpoint_every=0, learning_rate=1e-3,
                       caption_dropout=0.5, sigma_sampler="uniform", seed=5)
    padded = []

    def run(name, exact):
        predict = make_predict(checkpointing=False)

        def watch(root, inputs):
            padded.append(en.TEXT_LENGTHS in inputs.text)
            return predict(root, inputs)

        root = load_tree_from_checkpoint(ck, dtype=torch.float32)
        tr = en.Trainer(root, watch, CachedLatents(cache), c, tmp_path / name, batch_size=2, dist=D.Dist(exact=exact))
        return lora_tensors(tr.train())

    batched = run("batched", False)
    assert any(padded), "no batch mixed a dropped caption with a kept one: the check ran nothing"
    padded.clear()
    alone = run("alone", True)
    assert not any(padded)
    for k, v in alone.items():
        torch.testing.assert_close(batched[k], v, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------- the CLI under torchrun

def _cli_setup(tmp_path, name, steps=3):
    from trainer_core.run import settings_document, write_yaml
    from trainer_core.tiny_checkpoint import make_tiny_cache, make_tiny_checkpoint

    ckpt = tmp_path / "tiny.safetensors"
    if not ckpt.exists():
        make_tiny_checkpoint(ckpt, variant="ltx-2.0", seed=0)
        make_tiny_cache(tmp_path / "cache", "ltx-2.0", n=4)
    c = en.TrainConfig(steps=steps, rank=2, mixed_precision="fp32", checkpoint_every=0, learning_rate=1e-3,
                       caption_dropout=0.3, sigma_sampler="uniform")
    doc = settings_document(c, str(tmp_path / "cache"), {}, str(tmp_path / f"{name}.safetensors"),
                            str(tmp_path / name), batch_size=2)
    write_yaml(tmp_path / f"{name}.yaml", doc)
    return ckpt, tmp_path / f"{name}.yaml"


def torchrun(args: list[str], nproc: int = 2, timeout: float = 240.0):
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(repo))
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                           str(nproc), "-m", "trainer_core.cli", *args], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=timeout)


# ddp under torchrun runs in tests/comfy/test_train_devices.py and the bench smoke test; bit
# for bit against one process in the toy tests above. Here: the real LTX-2 forward with FSDP2.
@pytest.mark.parametrize("strategy", ["fsdp2", "fsdp2+sp"])
def test_torchrun_cli_two_processes_same_lora_as_one(tmp_path, capsys, strategy):
    """The documented command: torchrun, 2 gloo processes, the tiny LTX-2 checkpoint and the
    settings file's global batch (2), the blocks sharded over both (fsdp2), and with the video
    tokens split over both too (fsdp2+sp: each process runs both samples, 4 of their 8 video
    tokens): one process's LoRA within float tolerance (ddp: bit for bit with --reduce exact);
    only rank 0 prints."""
    from trainer_core import cli

    ckpt, y2 = _cli_setup(tmp_path, "two")
    # sequence parallel has the all-reduce only; both processes run the whole batch of 2, whose
    # captions may differ in length (the tiny cache's empty caption is shorter than its captions)
    reduce, batch = ("sum", []) if "sp" in strategy else ("exact", [])
    p = torchrun(["train", str(y2), "--checkpoint", str(ckpt), "--device", "cpu", "--dtype", "fp32",
                  "--reduce", reduce, "--log-every", "1", "--strategy", strategy, *batch])
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert p.stdout.count("step 3/3") == 1, p.stdout  # rank 0 only
    assert "FSDP2" in p.stdout and ("sequence parallel" in p.stdout) == ("sp" in strategy)
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res["processes"] == 2 and res["batch_size"] == 2 and res["steps"] == 3
    _, y1 = _cli_setup(tmp_path, "one")
    assert cli.main(["train", str(y1), "--checkpoint", str(ckpt), "--device", "cpu", "--dtype", "fp32",
                     "--reduce", reduce, *batch]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["processes"] == 1
    t2, _ = en.read_checkpoint(tmp_path / "two" / "checkpoints" / "step_000003.safetensors")
    t1, _ = en.read_checkpoint(tmp_path / "one" / "checkpoints" / "step_000003.safetensors")
    lora = [k for k in t1 if k.startswith("lora.")]
    assert lora
    if strategy == "ddp":
        assert all(torch.equal(t1[k], t2[k]) for k in lora)
    else:  # the gathered weights compute within float tolerance (see distributed.shard_base)
        for k in lora:
            torch.testing.assert_close(t2[k], t1[k], rtol=1e-5, atol=1e-7)
    assert any(t1[k].abs().sum() > 0 for k in lora if "lora_B" in k)
