#!/usr/bin/env bash
# Re-resolve packaging/lock.json from packaging/requirements.txt (needs the registry).
set -euo pipefail
cd "$(dirname "$0")/.."
PEX3=${PEX3:-pex3}
"$PEX3" lock create -r packaging/requirements.txt --style strict \
    --interpreter-constraint "CPython==3.11.*" -o packaging/lock.json
