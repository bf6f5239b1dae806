"""trainer_core.fsutil: which --listen values are local, and the dataset roots of the settings file."""
from __future__ import annotations

import pytest

from trainer_core import fsutil


@pytest.mark.parametrize("listen,local", [
    (None, True), ("127.0.0.1", True), ("127.2.2.2,127.3.3.3", True), ("localhost", True), ("::1", True),
    ("[::1]", True), ("0.0.0.0,::", False), ("0.0.0.0", False), ("::", False), ("192.168.1.4", False),
    ("127.0.0.1,10.0.0.2", False),
])
def test_loopback_only(listen, local):
    assert fsutil.is_loopback_only(listen) is local


def test_dataset_roots_from_settings_file(tmp_path):
    f = tmp_path / "settings.yaml"
    assert fsutil.read_dataset_roots(f) == []  # no file: no extra roots
    (tmp_path / "data").mkdir()
    f.write_text(f"dataset_roots:\n  - {tmp_path / 'data'}\n  - relative/ignored\n")
    roots = fsutil.read_dataset_roots(f)
    assert roots == [(tmp_path / "data").resolve()]
    assert fsutil.readable_under(tmp_path / "data" / "clips", roots)
    assert not fsutil.readable_under(tmp_path / "other", roots)
    link = tmp_path / "data" / "out"
    link.symlink_to(tmp_path, target_is_directory=True)
    assert not fsutil.readable_under(link / "other", roots)  # a link out of a root is judged by its target
    f.write_text("dataset_roots: [unclosed\n")
    with pytest.raises(ValueError, match="settings.yaml"):
        fsutil.read_dataset_roots(f)
