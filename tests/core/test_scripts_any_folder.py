"""The commands the README names work from any folder (here: an empty one outside the pack)."""
from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_tiny_checkpoint_wrapper_runs_from_another_folder(tmp_path):
    out = "models/checkpoints/ltx2-tiny-2.0.safetensors"
    (tmp_path / "models" / "checkpoints").mkdir(parents=True)
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "tiny_checkpoint.py"), "--out", out,
                        "--cache", "output/ltx2_cache/ltx2_install_check"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / out).stat().st_size > 10_000, r.stdout
    assert (tmp_path / "output" / "ltx2_cache" / "ltx2_install_check" / "manifest.json").exists(), r.stdout
