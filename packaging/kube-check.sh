#!/usr/bin/env bash
# Kubernetes check (packaging/check.sh runs it after the image check, as root): build a Redis
# image the way the appliance image is built (packaging/redis/Containerfile, on the locally
# made Debian base), then play deploy/kubernetes under `podman kube play` (what podman 4.3
# can play of it: tests/deploy/manifests.py's for_podman) and check it end to end through
# the published loopback ports: tests/deploy/kube_play.py (two appliance pods share one rpm
# limit through the Redis pod, a ConfigMap edit is reloaded, a pod stopped under load
# drains with no failed request). Everything started is removed, also on failure.
#
# Usage: packaging/kube-check.sh [IMAGE]   (default localhost/appliance:check, which
# check.sh builds). Environment: PYTHON (default .venv/bin/python), BASE_IMAGE (default
# localhost/appliance-base:bookworm-minbase, which check.sh makes).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
BIN=$(dirname "$PYTHON")
IMAGE=${1:-localhost/appliance:check}
BASE_IMAGE=${BASE_IMAGE:-localhost/appliance-base:bookworm-minbase}
REDIS_IMAGE=localhost/appliance-redis:check
export STORAGE_DRIVER=${STORAGE_DRIVER:-vfs}
started=$(date +%s)

work=$(mktemp -d)
cleanup() {
    if [ -s "$work/play.yaml" ]; then
        podman kube down "$work/play.yaml" >/dev/null 2>&1 || true
    fi
    if [ -s "$work/volumes" ]; then
        xargs -r podman volume rm --force <"$work/volumes" >/dev/null 2>&1 || true
    fi
    if [ -s "$work/network" ]; then
        podman network rm --force "$(cat "$work/network")" >/dev/null 2>&1 || true
    fi
    buildah rmi "$REDIS_IMAGE" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# podman's settings for this machine (no systemd, file events, runc, ulimits that fit
# inside the container this may itself run in), for `kube play`, which has no flags for them.
cat >"$work/containers.conf" <<'CONF'
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
CONF
export CONTAINERS_CONF=$work/containers.conf

"$BIN/hadolint" --ignore DL3008 packaging/redis/Containerfile
buildah bud --quiet --isolation chroot --format docker --build-arg BASE_IMAGE="$BASE_IMAGE" \
    -f packaging/redis/Containerfile -t "$REDIS_IMAGE" packaging/redis >/dev/null
echo "Redis image built in $(( $(date +%s) - started )) s"

# Plays, checks, and removes what it played (this trap is for a kill).
PYTHONPATH=$PWD "$PYTHON" -m tests.deploy.kube_play --work "$work" --image "$IMAGE" \
    --redis-image "$REDIS_IMAGE"
echo "Kubernetes check took $(( $(date +%s) - started )) s"
