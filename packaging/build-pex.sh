#!/usr/bin/env bash
# Build dist/appliance.pex from packaging/lock.json (reproducible: same lock, same bytes).
# Needs pex (pip install pex). The target machine needs CPython 3.11 on its PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
PEX=${PEX:-pex}
# pex builds the project with a pip that copies the whole source tree first: give it only
# what the wheel needs, not .venv and friends.
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
cp -r pyproject.toml README.md appliance "$src/"
find "$src" -name __pycache__ -prune -exec rm -rf {} +
mkdir -p dist
# -r adds what the lock holds only for older 3.11 targets (async-timeout for 3.11.2).
"$PEX" --project "$src" -r packaging/requirements.txt --lock packaging/lock.json \
    -c appliance --venv --sh-boot --include-tools -o dist/appliance.pex
echo "built dist/appliance.pex ($(stat -c %s dist/appliance.pex) bytes)"
