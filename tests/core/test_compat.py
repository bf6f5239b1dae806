"""The ComfyUI version check the pack runs at load time."""
from trainer_core.compat import MIN_COMFYUI, comfyui_problem, parse_version


def test_parse_version():
    assert parse_version("0.33.0") == (0, 33, 0)
    assert parse_version("v0.4") == (0, 4, 0)
    assert parse_version("1.2.3-rc1") == (1, 2, 3)
    assert parse_version("unknown") is None


def test_supported_versions_pass():
    assert comfyui_problem("0.33.0") is None
    assert comfyui_problem("0.34.2") is None
    assert comfyui_problem("1.0.0") is None


def test_old_comfyui_is_told_what_it_needs_and_what_differs():
    msg = comfyui_problem("0.20.1")
    need = ".".join(map(str, MIN_COMFYUI))
    assert msg is not None and need in msg and "0.20.1" in msg
    assert "cross-attention" in msg and "LTX-2.5" in msg


def test_unknown_version_is_reported():
    assert comfyui_problem(None) is not None
    assert comfyui_problem("nightly") is not None
