"""Safe paths and atomic writes.

Everything the pack writes lands under one of ComfyUI's folders; names typed into a node
must not escape them. Writes that matter go to a temporary file in the same folder, are
flushed to disk, then renamed over the target, so a crash leaves the old file or the new
one, never half of one.
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

_BAD_NAME = re.compile(r"[\x00-\x1f<>:\"|?*]")


class UnsafePathError(ValueError):
    pass


def safe_join(base: str | os.PathLike, name: str, *, allow_subdirs: bool = True) -> Path:
    """Join ``name`` under ``base`` and refuse anything that would land outside it.

    Refuses absolute names, drive letters, ``..`` components, control characters, and
    symlinks that resolve outside ``base``.
    """
    if name is None:
        raise UnsafePathError("empty name")
    name = str(name).strip().replace("\\", "/")
    if not name:
        raise UnsafePathError("empty name")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise UnsafePathError(f"{name!r} is an absolute path; give a name relative to the folder")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise UnsafePathError(f"{name!r} contains '..'; names may not leave their folder")
    if not allow_subdirs and len(parts) > 1:
        raise UnsafePathError(f"{name!r} contains a folder separator; give a plain name")
    for p in parts:
        if _BAD_NAME.search(p):
            raise UnsafePathError(f"{name!r} contains characters not allowed in file names")
    base_r = Path(base).resolve()
    target = base_r.joinpath(*parts)
    resolved = target.resolve()
    if resolved != base_r and base_r not in resolved.parents:
        raise UnsafePathError(f"{name!r} resolves outside {base_r}")
    return target


def is_within(path: str | os.PathLike, base: str | os.PathLike) -> bool:
    p = Path(path).resolve()
    b = Path(base).resolve()
    return p == b or b in p.parents


# ------------------------------------------------------------------ reading typed paths

LOOPBACK_NAMES = {"localhost", "::1", "ip6-localhost", "ip6-loopback"}


def is_loopback_only(listen: str | None) -> bool:
    """True when a server bound to ``listen`` (ComfyUI's ``--listen`` value: one address or a
    comma-separated list) can only be reached from this computer."""
    if not listen:
        return True
    for a in str(listen).split(","):
        a = a.strip().strip("[]").lower()
        if not a:
            continue
        if a in LOOPBACK_NAMES or a.startswith("127.") or a == "0:0:0:0:0:0:0:1":
            continue
        return False
    return True


def read_dataset_roots(settings_file: str | os.PathLike) -> list[Path]:
    """``dataset_roots`` of the pack's settings file (YAML), as resolved absolute folders.

    The file may be missing (no extra roots). An entry that is not an absolute path is
    ignored; a file that cannot be parsed raises ValueError naming it (so a typo never
    silently widens or narrows what is readable without the user knowing)."""
    import yaml

    p = Path(settings_file)
    if not p.is_file():
        return []
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except Exception as e:
        raise ValueError(f"the settings file {p} cannot be read ({e.__class__.__name__}: {e}); "
                         "fix its YAML (see the Load Clips help page)") from e
    if not isinstance(data, dict):
        raise ValueError(f"the settings file {p} must hold a mapping such as 'dataset_roots: [/data/clips]'")
    roots = data.get("dataset_roots") or []
    if isinstance(roots, str):
        roots = [roots]
    out = []
    for r in roots:
        r = os.path.expanduser(str(r).strip())
        if r and os.path.isabs(r):
            out.append(Path(r).resolve())
    return out


def readable_under(path: str | os.PathLike, roots: list[str | os.PathLike]) -> bool:
    """Whether ``path`` (symlinks resolved, existing or not) lies in one of ``roots``."""
    return any(is_within(path, r) for r in roots)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it over ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_p = Path(tmp)
    try:
        yield tmp_p
        with open(tmp_p, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_p, target)
    finally:
        if tmp_p.exists():
            tmp_p.unlink()


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def atomic_save_safetensors(tensors: dict, target: str | os.PathLike, metadata: dict | None = None) -> None:
    from safetensors.torch import save_file

    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def next_numbered(folder: str | os.PathLike, prefix: str, ext: str, digits: int = 5) -> Path:
    """``<prefix>_00001<ext>``, the first number not taken in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pat = re.compile(re.escape(Path(prefix).name) + r"_(\d+)" + re.escape(ext) + r"$")
    sub = folder / Path(prefix).parent
    taken = [int(m.group(1)) for f in (sub.iterdir() if sub.exists() else []) if (m := pat.match(f.name))]
    n = max(taken, default=0) + 1
    return folder / f"{prefix}_{n:0{digits}d}{ext}"


# Names Windows reserves for devices, with or without an extension ("nul.txt" opens the device).
_WIN_DEVICES = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$", *(f"COM{i}" for i in range(1, 10)),
                *(f"LPT{i}" for i in range(1, 10)), "COM¹", "COM²", "COM³", "LPT¹", "LPT²", "LPT³"}
MAX_NAME_CHARS = 120  # leaves room for "_00001.safetensors" and the folder within 255-byte file names


def check_name(name, what: str = "name", max_chars: int = MAX_NAME_CHARS) -> str:
    """A typed name that becomes one file or folder name, on every OS: returns it stripped,
    or raises UnsafePathError saying what is wrong. Refuses empty names, ``.``/``..``,
    folder separators, control and reserved characters, Windows device names (``CON``,
    ``nul.txt``), trailing dots or spaces, and names over ``max_chars`` characters."""
    if not isinstance(name, str):
        raise UnsafePathError(f"{what} must be text, not {type(name).__name__}")
    s = name.strip()
    if not s:
        raise UnsafePathError(f"{what} is empty; type a name such as my_ltx2_lora")
    if s in (".", "..") or set(s) == {"."}:
        raise UnsafePathError(f"{what} {s!r} is not a name; type a name such as my_ltx2_lora")
    if "/" in s or "\\" in s:
        raise UnsafePathError(f"{what} {s!r} contains a folder separator; give a plain name")
    bad = sorted(set(_BAD_NAME.findall(s)))
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise UnsafePathError(f"{what} {s!r} contains characters not allowed in file names ({shown}); remove them")
    if s.endswith((".", " ")):
        raise UnsafePathError(f"{what} {s!r} ends with a dot or a space, which Windows drops; remove it")
    if s.split(".")[0].strip().upper() in _WIN_DEVICES:
        raise UnsafePathError(f"{what} {s!r} is a Windows device name ({s.split('.')[0]}); choose another name")
    if len(s) > max_chars or len(s.encode("utf-8")) > 2 * max_chars:
        raise UnsafePathError(f"{what} is {len(s)} characters long; keep it to {max_chars} or fewer")
    return s


# what interrupted atomic writes leave: ours (".<name>.<random>.tmp"), safetensors' and
# tempfile's (".tmp<random>", "<name>.tmp<random>")
_TEMP_PATTERNS = (re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp$"), re.compile(r"^\.?tmp[A-Za-z0-9_]{4,}$"),
                  re.compile(r"^.+\.safetensors\.tmp[A-Za-z0-9_]*$"))


def clean_temp_files(folder: str | os.PathLike, prefix: str = "") -> list[Path]:
    """Delete what interrupted atomic writes left in ``folder`` (not below it): our
    ``.<name>.*.tmp`` files and safetensors'/tempfile's ``.tmpXXXX``. With ``prefix``, only
    temp files of targets whose name starts with it (a shared folder such as ``loras``).
    Returns the deleted paths."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    gone = []
    for f in folder.iterdir():
        n = f.name
        if not f.is_file() or not any(p.match(n) for p in _TEMP_PATTERNS):
            continue
        if prefix and not n.lstrip(".").startswith(prefix):
            continue
        try:
            f.unlink()
            gone.append(f)
        except OSError:
            pass
    return gone
