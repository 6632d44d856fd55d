#!/usr/bin/env bash
# Build the Python base image from Debian's own packages, for machines that reach no container
# registry (this project's CI, air-gapped sites): debootstrap of Debian 12 (bookworm, minbase)
# with python3 (3.11) and python3-venv, imported as an image. Users with a registry use the
# official python:3.11-slim-bookworm image instead (the Dockerfiles' default BASE_IMAGE).
#
#   scripts/base-image.sh TAG        build TAG unless the engine already has it
#
# Needs root (debootstrap) and the engine (scripts/engine.sh start; DOCKER_HOST set).
set -euo pipefail
TAG=${1:?usage: base-image.sh TAG}
DOCKER=${DOCKER:-/usr/bin/docker}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if "$DOCKER" image inspect "$TAG" >/dev/null 2>&1; then
  echo "base image: $TAG already built" >&2; exit 0
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
echo "base image: debootstrap bookworm (minbase + python3, python3-venv) from $MIRROR" >&2
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$root" "$MIRROR" >"$root.log" 2>&1 || { tail -n 30 "$root.log" >&2; exit 1; }
rm -f "$root.log"
# What an image does not need: package caches, documentation, locales but C.UTF-8.
rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
       "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*
find "$root"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'C.*' -exec rm -rf {} +
tar -C "$root" --numeric-owner -c . | "$DOCKER" import \
  --change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python3"]' \
  --message "debootstrap bookworm minbase + python3, python3-venv, ca-certificates" \
  - "$TAG" >/dev/null
echo "base image: $TAG ($("$DOCKER" image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}'))" >&2
