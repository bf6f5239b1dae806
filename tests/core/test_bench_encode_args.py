"""bench/bench_encode.py imports without ComfyUI and checks its arguments before any work."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_encode.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_encode_under_test", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_defaults_and_paths():
    b = _bench()
    a = b.parse_args([])
    assert a.paths == ("comfy", "planned") and a.shape == "768x512x121" and a.card is None and not a.grad
    a = b.parse_args(["--card", "24", "--path", "planned", "--budget-gib", "2", "--reps", "5"])
    assert a.paths == ("planned",) and a.card == 24.0 and a.budget_gib == 2.0 and a.reps == 5


@pytest.mark.parametrize("argv", [["--path", "fast"], ["--path", ","], ["--shape", "768x512"],
                                  ["--shape", "0x512x121"], ["--reps", "0"], ["--card", "x"]])
def test_bad_arguments_exit(argv, capsys):
    with pytest.raises(SystemExit) as e:
        _bench().parse_args(argv)
    assert e.value.code == 2
