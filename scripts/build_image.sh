#!/usr/bin/env bash
# Build the container image on a machine that reaches Debian's and PyPI's package
# registries but no image registry:
#   1. the base image is made from Debian packages with debootstrap (once; reused after);
#   2. every wheel the build installs is downloaded here into build/wheelhouse, so the
#      Docker build itself runs with --network none (reproducible, nothing fetched inside);
#   3. docker build (Dockerfile): export the model to ONNX, drop torch, slim runtime stage.
#
# Usage: scripts/build_image.sh [TAG]     (default agentopia-retrieval:latest)
# Needs: root (debootstrap), a running Docker daemon, python3 with pip.
# Environment: BASE_IMAGE (default agentopia-base:bookworm), DEBIAN_MIRROR, PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."

tag=${1:-agentopia-retrieval:latest}
base=${BASE_IMAGE:-agentopia-base:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
python=${PYTHON:-python3}
# torch is pinned (as in the Makefile): the CPU wheel, never the multi-GB CUDA build.
torch_req="torch==2.13.0"

if ! docker image inspect "$base" >/dev/null 2>&1; then
    command -v debootstrap >/dev/null || { echo "debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }
    rootfs=$(mktemp -d)
    trap 'rm -rf "$rootfs"' EXIT
    echo "building base image $base with debootstrap (bookworm, minbase + python3)"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" "$mirror" >/dev/null
    # Package caches and lists are not needed in an image that never runs apt.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import - "$base" >/dev/null
fi

echo "downloading wheels into build/wheelhouse"
mkdir -p build/wheelhouse
"$python" -m pip download -q --disable-pip-version-check --only-binary=:all: \
    -d build/wheelhouse "$torch_req" setuptools wheel
# The project itself, with its runtime dependencies (its build needs the setuptools above).
"$python" -m pip download -q --disable-pip-version-check -d build/wheelhouse .
rm -f build/wheelhouse/agentopia_retrieval-*

echo "docker build -t $tag (network: none)"
docker build --network none --build-arg "BASE_IMAGE=$base" -t "$tag" .
docker image inspect "$tag" --format '{{.Size}}' | awk '{printf "image size: %.0f MB\n", $1 / 1e6}'
