#!/usr/bin/env bash
# Build dist/appliance: one ELF file holding the Python runtime, the appliance, llama.cpp,
# ONNX Runtime, tokenizers and the models of configs/cluster.yaml (built in as the default
# config). The target needs a Linux kernel and glibc (2.36 or newer, as the build machine's
# Debian bookworm), nothing else.
#
# How: PyInstaller makes a one-folder build (packaging/binary/appliance.spec); pack.py
# appends it to a small C launcher (packaging/binary/launcher.c) that unpacks it once into
# a cache folder keyed by its content hash and then runs it from there.
#
# Environment: PYTHON (default .venv/bin/python: the environment whose packages are
# bundled, e.g. `make` made with the `local` extra and the model packages), CC (default cc;
# zlib's static library and header are needed: Debian's zlib1g-dev).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
CC=${CC:-cc}
if [ ! -x "$PYTHON" ]; then
    echo "build-binary: no $PYTHON with the appliance and its local models; run 'make binary'" \
        "(it makes .venv first), or set PYTHON to such an interpreter" >&2
    exit 2
fi
PYINSTALLER_VERSION=6.22.3
work=build/binary
mkdir -p "$work" dist

if ! "$PYTHON" -c "import PyInstaller, sys; sys.exit(PyInstaller.__version__ != '$PYINSTALLER_VERSION')" 2>/dev/null; then
    "$PYTHON" -m pip install --quiet --disable-pip-version-check "pyinstaller==$PYINSTALLER_VERSION"
fi

# The launcher: position-independent, symbols stripped, zlib linked in statically.
"$CC" -O2 -s -Wall -Wextra -o "$work/launcher" packaging/binary/launcher.c \
    -Wl,-Bstatic -lz -Wl,-Bdynamic

# A fixed hash seed and source date make PyInstaller's output the same from run to run.
PYTHONHASHSEED=0 SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000} \
    "$PYTHON" -m PyInstaller --noconfirm --clean --log-level WARN \
    --distpath "$work/dist" --workpath "$work/pyinstaller" packaging/binary/appliance.spec

"$PYTHON" packaging/binary/pack.py "$work/launcher" "$work/dist/appliance" dist/appliance
