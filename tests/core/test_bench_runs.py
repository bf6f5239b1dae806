"""The train-step benchmark's run syntax (the GPU command lines depend on it)."""
import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _bench():
    sys.path.insert(0, str(REPO / "bench"))
    spec = importlib.util.spec_from_file_location("bench_train_step", REPO / "bench" / "bench_train_step.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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


def test_gc_summary_splits_collections_by_place_and_generation():
    b = _bench()
    s = b.gc_summary([(0, 1.0, True, False), (1, 2.5, True, False), (2, 400.0, False, True), (0, 0.5, True, False)])
    assert s == {"tick_gen0": {"n": 2, "ms": 1.5}, "tick_gen1": {"n": 1, "ms": 2.5},
                 "in_step_gen2_auto": {"n": 1, "ms": 400.0}}


def test_model_names():
    b = _bench()
    assert [b.model_name(v) for v in ("ltx-2.0", "ltx-2.3", "ltx-2.5")] == ["ltx-2.0-19b", "ltx-2.3-22b", "ltx-2.5-22b"]
