#!/usr/bin/env bash
# A small bitsandbytes wheel for the GPU machine (no internet there; Python 3.12, torch cu130),
# for bench/bench_caption.py's 8-bit / 4-bit variants.
#
# Downloads the manylinux x86_64 wheel for Python 3.12 (~43 MB: native libraries for many CUDA,
# ROCm and XPU versions) and repacks it with only libbitsandbytes_cuda<KEEP>.so and the CPU
# library, its RECORD rewritten (the dropped files' lines removed, every hash recomputed) so
# that pip installs it. Written, atomically, to <repo>/.bench_bnb/ (git-ignored); then
# installed into a temporary folder with pip as a check, and imported where torch is.
#
#   scripts/prepare_bnb_wheel.sh                    # newest bitsandbytes, keeps cuda130
#   scripts/prepare_bnb_wheel.sh bitsandbytes==0.50.2
#   BNB_KEEP_CUDA=128 scripts/prepare_bnb_wheel.sh  # another CUDA build (torch.version.cuda 12.8)
#   PYTHON=/path/to/python scripts/prepare_bnb_wheel.sh
#
# On the GPU machine:
#   python3 -m pip install -q --no-deps --target /tmp/bnb .bench_bnb/*.whl
#   PYTHONPATH=/tmp/bnb python3 bench/bench_caption.py --variants bf16:sdpa,8-bit ...
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
SPEC=${1:-bitsandbytes}
KEEP=${BNB_KEEP_CUDA:-130}
OUTDIR="$REPO/.bench_bnb"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$PY" -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_24_x86_64 \
    --python-version 3.12 "$SPEC" -d "$tmp/dl"
shopt -s nullglob
wheels=("$tmp"/dl/bitsandbytes-*.whl)
if [ "${#wheels[@]}" -ne 1 ]; then
    echo "expected one bitsandbytes wheel, got: ${wheels[*]:-none}" >&2
    exit 1
fi
mkdir -p "$OUTDIR"

"$PY" - "${wheels[0]}" "$OUTDIR" "$KEEP" <<'EOF'
import base64
import hashlib
import os
import re
import sys
import tempfile
import zipfile
from pathlib import Path

src, outdir, keep = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
wanted = {"cpu", f"cuda{keep}"}
native = re.compile(r"^bitsandbytes/libbitsandbytes_([A-Za-z0-9_]+)\.(so|dll|dylib)$")

with zipfile.ZipFile(src) as zin:
    infos = zin.infolist()
    libs = {m.group(1): i.filename for i in infos if (m := native.match(i.filename))}
    missing = wanted - set(libs)
    if missing:
        sys.exit(f"{src.name} has no {', '.join(sorted(missing))} library (it has: {', '.join(sorted(libs))})")
    dropped = {name for lib, name in libs.items() if lib not in wanted}
    records = [i.filename for i in infos if i.filename.endswith(".dist-info/RECORD")]
    if len(records) != 1:
        sys.exit(f"{src.name}: expected one dist-info/RECORD, found {records}")
    record = records[0]
    lines = []
    fd, part = tempfile.mkstemp(dir=outdir, suffix=".whl.part")
    os.close(fd)
    try:
        with zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED) as zout:
            for info in infos:
                if info.filename in dropped or info.filename == record:
                    continue
                data = zin.read(info)
                out = zipfile.ZipInfo(info.filename, info.date_time)
                out.external_attr, out.compress_type = info.external_attr, zipfile.ZIP_DEFLATED
                zout.writestr(out, data)
                if not info.filename.endswith("/"):
                    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                    lines.append(f"{info.filename},sha256={digest},{len(data)}")
            lines.append(f"{record},,")
            rec = zipfile.ZipInfo(record, infos[0].date_time)
            rec.external_attr, rec.compress_type = 0o644 << 16, zipfile.ZIP_DEFLATED
            zout.writestr(rec, "\n".join(lines) + "\n")
        dest = outdir / src.name
        for old in outdir.glob("bitsandbytes-*.whl"):
            if old != dest:
                old.unlink()
        os.chmod(part, 0o644)
        os.replace(part, dest)
    except BaseException:
        Path(part).unlink(missing_ok=True)
        raise
print(f"{dest}: {dest.stat().st_size / 2**20:.1f} MiB (from {src.stat().st_size / 2**20:.1f} MiB); "
      f"native libraries kept: {', '.join(sorted(libs[k] for k in wanted))}; dropped {len(dropped)}")
EOF

# the check: pip installs it (RECORD consistent), and it imports where torch is
whl=("$OUTDIR"/bitsandbytes-*.whl)
"$PY" -m pip install -q --no-deps --no-compile --target "$tmp/site" "${whl[0]}"
ls "$tmp/site/bitsandbytes/" | grep '^libbitsandbytes_' | sed 's/^/installed: /'
if "$PY" -c "import torch" 2>/dev/null; then
    "$PY" -c "import sys; sys.path.insert(0, sys.argv[1]); import bitsandbytes as b; \
print('imported', b.__version__, 'from', b.__file__)" "$tmp/site" 2>&1 | tail -5
else
    echo "no torch for $PY: import not checked"
fi
