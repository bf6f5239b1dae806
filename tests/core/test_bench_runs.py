"""The train-step benchmark's run syntax (the GPU command lines depend on it)."""
import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _load(name: str):
    """A bench script as a module (bench/ on the path for its own imports)."""
    sys.path.insert(0, str(REPO / "bench"))
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _bench():
    return _load("bench_train_step")


def _engine_bench():
    return _load("bench_engine_step")


def _event(name, dev, a, b):
    """A profiler event as bench_engine_step reads it, its range given in ms (the profiler's are µs)."""
    from types import SimpleNamespace as NS

    return NS(name=name, device_type=dev, time_range=NS(start=a * 1000, end=b * 1000))


def test_run_options_parse():
    b = _bench()
    runs = b.parse_runs("768x512x121:none,768x512x121:none:cg,768x512x121:none:fp8c:cg,768x512x121:12:nocg,"
                        "768x512x121:24:fp8:offs,fp8toy,equality:512x512x33")
    whole, cg, fp8cg, small, fp8t, toy, eq = runs
    assert whole["budget"] is None and whole["cudagraphs"] is None and not whole["fp8_compute"]
    assert cg["cudagraphs"] is True and cg["compile"]
    assert fp8cg["cudagraphs"] is True and fp8cg["fp8_compute"] and fp8cg["transfer"] == "bf16"
    assert small["budget"] == 12.0 and small["cudagraphs"] is False
    assert fp8t["transfer"] == "fp8" and fp8t["offload_streamed"] and not fp8t["fp8_compute"]
    assert toy["fp8_check"] and toy["toy_only"]
    assert eq["equality"] and eq["shape"] == "512x512x33"
    assert whole["host_gib"] is None and whole["batch"] == 1
    host, batch = b.parse_runs("768x512x121:24:offs:host32:cpu,512x512x33:none:b2:cg")
    assert host["cpu_origin"] and not batch["cpu_origin"] and not whole["cpu_origin"]
    assert host["host_gib"] == 32.0 and host["offload_streamed"] and host["batch"] == 1
    assert batch["batch"] == 2 and batch["cudagraphs"] is True and batch["host_gib"] is None
    (plain,) = b.parse_runs("512x512x33:none:nogroup")
    assert not plain["lora_groups"] and whole["lora_groups"] and batch["lora_groups"]


def test_ratios_pair_runs_with_and_without_projection_groups_apart():
    b = _bench()
    rec = dict(stack="ours", model="m", shape="s", batch=1)
    recs = [dict(rec, budget_gib=None, s_per_step=1.0), dict(rec, budget_gib=None, s_per_step=2.0, lora_groups=False),
            dict(rec, budget_gib=24.0, s_per_step=3.0, lora_groups=False)]
    b.add_ratios(recs)
    assert [r["ratio_to_resident"] for r in recs] == [1.0, 1.0, 1.5]


def test_gc_summary_splits_collections_by_place_and_generation():
    b = _bench()
    s = b.gc_summary([(0, 1.0, True, False), (1, 2.5, True, False), (2, 400.0, False, True), (0, 0.5, True, False)])
    assert s == {"tick_gen0": {"n": 2, "ms": 1.5}, "tick_gen1": {"n": 1, "ms": 2.5},
                 "in_step_gen2_auto": {"n": 1, "ms": 400.0}}


def test_model_names():
    b = _bench()
    assert [b.model_name(v) for v in ("ltx-2.0", "ltx-2.3", "ltx-2.5")] == ["ltx-2.0-19b", "ltx-2.3-22b", "ltx-2.5-22b"]


def test_vram_peak_counts_cuda_graph_pools():
    """A graphed run's timed steps allocate nothing (the pools were taken at capture): its
    peak is the reserved one; other runs keep the allocated peak."""
    b = _bench()
    assert b.vram_peak(39.69, 109.28, True) == (109.28, "reserved (CUDA-graph pools)")
    assert b.vram_peak(46.78, 48.54, False) == (46.78, "allocated")


def test_profile_kernel_kinds():
    p = _load("profile_step")
    k = p.kernel_kind
    assert k("nvjet_sm90_tst_320x128_64x3_1x2_h_bz_coopB_NNT", 45.7) == "matmul_large"
    assert k("nvjet_sm90_tst_64x16_64x16_4x1_v_bz_NNT", 4.4) == "matmul_small"
    assert k("cudnn_generated_fort_native_sdpa_sm90_flash_bprop_wgmma_f16", 125.0) == "attention"
    assert k("triton_poi_fused_gelu_gelu_backward_view_4", 47.0) == "triton"
    assert k("Memcpy DtoD (Device -> Device)", 2.0) == "copy"
    assert k("void at::native::vectorized_elementwise_kernel<4>", 3.0) == "other"
    assert p.is_annotation("Optimizer.step#AdamW.step") and p.is_annotation("Torch-Compiled Region: 0/1")
    assert not p.is_annotation("nvjet_sm90_tst_64x16_64x16_4x1_v_bz_NNT")
    assert p.is_annotation("ltx2.forward")  # the engine's named ranges span kernels too


def test_bench_plans_as_the_train_node_plans(tmp_path):
    """The bench's plan and the Train node's (trainer_core.run.plan_for_training) come from
    one accounting: the same model, bucket, LoRA and budget give the same plan, at batch 1
    and at batch 2."""
    import torch

    from trainer_core import engine as en
    from trainer_core.lora import LoRASet
    from trainer_core.ltx2 import LTX2Config, build_tree
    from trainer_core.run import plan_for_training
    from trainer_core.tiny_checkpoint import make_tiny_cache, text_context_width, tiny_config

    b = _bench()
    cfg = tiny_config("ltx-2.0")
    root = build_tree(LTX2Config.from_metadata({"config": cfg}), seed=0)
    cache = make_tiny_cache(tmp_path / "cache", "ltx-2.0", n=2)
    tc = en.TrainConfig(rank=4, alpha=4.0)
    lora = LoRASet.for_model(root, tc.lora_spec())
    gen = torch.Generator().manual_seed(0)
    for batch in (1, 2):
        inp = b.step_inputs(text_context_width(cfg, processed=False), 64, 64, 9, 24.0, "cpu", gen, batch=batch)
        for budget in (0.0005, 1.0):
            node = plan_for_training(root, str(cache), tc, budget, batch_size=batch)
            mine = b.make_plan(root, inp, budget, False, lora)
            assert (mine.modes, mine.streamed) == (node.modes, node.streamed), (batch, budget)
            assert mine.expected_peak_gib == node.expected_peak_gib
    assert node.expected_peak_gib > plan_for_training(root, str(cache), tc, 1.0).expected_peak_gib


def test_engine_profile_splits_a_step_into_cpu_time_and_gpu_idle():
    """bench_engine_step's breakdown on events laid out by hand (ms; the profiler's are µs): two
    steps of 100 ms, each with a 10 ms data range and a 60 ms forward; kernels and a copy busy
    the GPU for 45 ms of each."""
    e = _engine_bench()
    import torch

    cpu, cuda = torch.autograd.DeviceType.CPU, torch.autograd.DeviceType.CUDA
    ev = _event
    events = []
    for t in (0, 100):
        events += [ev("ltx2.data", cpu, t, t + 10), ev("ltx2.forward", cpu, t + 10, t + 70),
                   ev("ltx2.forward", cuda, t + 10, t + 70),  # its GPU-side copy: not a kernel
                   ev("sm90_gemm", cuda, t + 20, t + 50), ev("triton_fused", cuda, t + 40, t + 60),  # overlap
                   ev("Memcpy HtoD", cuda, t + 95, t + 100)]  # between the ranges
    events.append(ev("ltx2.readback", cpu, 190, 200))
    out = e.phase_breakdown(events, 2)
    assert out["step_ms"] == 100 and out["gpu_busy_ms"] == 45
    assert out["phases"]["data"] == {"cpu_ms": 10, "gpu_idle_ms": 10}
    assert out["phases"]["forward"] == {"cpu_ms": 60, "gpu_idle_ms": 20}
    assert out["phases"]["readback"] == {"cpu_ms": 5, "gpu_idle_ms": 2.5}  # a copy busies half of it
    assert out["phases"]["between"] == {"cpu_ms": 25, "gpu_idle_ms": 22.5} and out["gpu_idle_ms"] == 55
    assert e.phase_breakdown([ev("sm90_gemm", cuda, 0, 1)], 1) == {}


def test_gpu_idle_is_charged_to_the_host_op_running_in_each_gap():
    """bench_engine_step's idle attribution on events laid out by hand (ms): one 100 ms
    forward; kernels at 0-20, 30-50 and 90-100; the host in a compiled region (5-60) that
    calls a guard check (22-29), then in the optimizer (60-95): the 10 ms gap goes to the
    guard check under its region, the 40 ms gap to the optimizer; ``phase`` narrows the window."""
    e = _engine_bench()
    import torch

    cpu, cuda = torch.autograd.DeviceType.CPU, torch.autograd.DeviceType.CUDA
    ev = _event
    events = [ev("ltx2.forward", cpu, 0, 60), ev("ltx2.optimizer", cpu, 60, 100),
              ev("Torch-Compiled Region: 0/0", cpu, 5, 60), ev("guards", cpu, 22, 29), ev("adamw", cpu, 60, 95),
              ev("gemm", cuda, 0, 20), ev("gemm", cuda, 30, 50), ev("gemm", cuda, 90, 100)]
    out = e.idle_by_host_op(events, 1)
    assert out["idle_ms_per_step"] == 50
    assert out["by_host_op"][0] == ("ltx2.optimizer > adamw", 40, 1)
    assert out["by_host_op"][1] == ("Torch-Compiled Region: 0/0 > guards", 10, 1)
    fwd = e.idle_by_host_op(events, 1, phase="forward")
    assert fwd["idle_ms_per_step"] == 20 and fwd["by_host_op"][0][1] == 10  # 20-30 in, 50-60 of the next gap
    assert e.idle_by_host_op([ev("gemm", cuda, 0, 1)], 1) == {}


def test_engine_run_times_the_steps_it_names(tmp_path):
    """bench_engine_step's engine run on the tiny tree (CPU, eager): pipelined and read at
    each step, the LoRA in one buffer and per tensor, alike: ``steps`` timed steps after ``warmup``, ``profile`` profiled ones and one
    untimed step at the end (the run's end stays out of the timed and profiled steps); the
    profile names each of the engine's ranges."""
    import torch

    from trainer_core.ltx2 import LTX2Config, build_tree
    from trainer_core.tiny_checkpoint import text_context_width, tiny_config

    e = _engine_bench()
    cfg = tiny_config("ltx-2.0")
    root = build_tree(LTX2Config.from_metadata({"config": cfg}), seed=0)
    cache = e.write_cache(tmp_path / "cache", "64x64x9", text_context_width(cfg, processed=False), 3)
    dev = torch.device("cpu")
    recs = []
    for pipelined, flat in ((False, True), (True, False), (True, True)):
        rec, predict = e.engine_run(root, cache, 1, 3, 2, dev, False, 1.0, tmp_path / f"run{pipelined}{flat}",
                                    profile=2 if pipelined and flat else 0, pipelined=pipelined, flat=flat)
        recs.append(rec)
        assert rec["pipelined"] is pipelined and len(rec["steps_s"]) == 3 and len(rec["first_steps_s"]) == 2
        assert rec["forwards"] == 2 + 3 + (2 if pipelined and flat else 0) + 1
        assert all(t > 0 for t in rec["steps_s"]) and rec["cudagraphs"] is False
        # the LoRA in one buffer, or its tensors each in their own allocation (--per-tensor)
        assert rec["flat_lora"] is flat and rec["lora_tensors"] > 2
        assert rec["lora_storages"] == (1 if flat else rec["lora_tensors"])
    # --step-graph on the CPU: the dry run of the whole-step graph (captions of 256, 200, 144 and
    # 16 tokens through the connectors first: one signature), and as a GPU run would ask for it
    # (a budget where every block keeps its activations: the graph's condition)
    rec, keep = e.engine_run(root, cache, 1, 3, 2, dev, False, 100.0, tmp_path / "graph", step_graph="cpu")
    assert rec["step_graph"] == {"captures": 1, "replays": 4, "eager_steps": 2, "off": None, "dropped_for_other_shapes": 0}
    assert any("one CUDA graph" in n for n in rec["notices"]) and len(rec["steps_s"]) == 3
    rec, _ = e.engine_run(root, cache, 1, 3, 2, dev, False, 100.0, tmp_path / "graph2", predict=keep, step_graph=True)
    assert rec["step_graph"] is None and any("it runs on the CPU" in n for n in rec["notices"])
    prof = recs[2]["profile"]
    assert prof["steps"] == 2 and prof["step_ms"] > 0
    assert {"data", "inputs", "forward", "backward", "optimizer", "readback"} <= set(prof["phases"])
    assert "profile" not in recs[0]


def test_inductor_options_are_set_recorded_and_checked():
    """``--inductor KEY=VALUE``: JSON values (or plain strings) set on torch._inductor.config,
    dotted keys into its sections, what was set returned for the record; unknown keys and
    pairs without a value are refused before anything runs."""
    import pytest
    import torch._inductor.config as icfg

    b = _bench()
    with icfg.patch({"combo_kernels": False, "triton.cudagraph_trees": True}):
        done = b.set_inductor_options(["combo_kernels=true", "triton.cudagraph_trees=false"])
        assert done == {"combo_kernels": True, "triton.cudagraph_trees": False}
        assert icfg.combo_kernels is True and icfg.triton.cudagraph_trees is False
    for bad in (["no_such_option=1"], ["triton.no_such=1"], ["combo_kernels"], ["=1"]):
        with pytest.raises(SystemExit):
            b.set_inductor_options(bad)


def test_timed_steps_times_the_steps_after_warmup_off_cuda():
    """``timed_steps(cuda=False)`` (the CPU dry runs): every step runs, the warm-up ones untimed."""
    b = _bench()
    calls = []
    times = b.timed_steps(lambda: calls.append(1), 3, 2, cuda=False)
    assert len(calls) == 5 and len(times) == 3 and all(t >= 0 for t in times)


def test_step_graph_bench_captures_the_bare_step_on_cpu():
    """bench_step_graph's CPU dry run: the function the whole-step CUDA graph records (sync-free
    clipping, AdamW fused and capturable with a tensor learning rate on a GPU) trains the LoRA
    that bench_train_step's bare step trains, update for update from the same start; a different
    learning rate in it would show."""
    from types import SimpleNamespace as NS

    g = _load("bench_step_graph")
    args = NS(cpu=True, tiny=True, variant="ltx-2.0", shape="64x64x9", layers=0, steps=2, warmup=1)
    blocks, graph = g.run(args)
    assert blocks["variant"] == "blocks" and graph["variant"] == "step_graph" and graph["captured"] is False
    assert blocks["updates"] == graph["updates"] == 3
    assert blocks["lora_moved"] > 0 and graph["lora_moved"] > 0
    assert graph["lora_max_rel_diff"] == 0.0 and graph["lora_delta_rel"] == 0.0
    assert graph["losses"] == blocks["losses"] and len(graph["losses"]) == 3 and graph["loss_max_rel_diff"] == 0.0
    g.LR = 2e-4  # the graph's optimizer only: the comparison sees it
    moved = g.run(args)[1]
    assert moved["lora_max_rel_diff"] > 1e-3 and moved["lora_delta_rel"] > 0.5  # twice the step: ≈ 1
    assert moved["losses"][0] == blocks["losses"][0] and moved["loss_max_rel_diff"] > 0
