#!/usr/bin/env bash
# `make images`: build the operator and workload images and write them as archives under dist/,
# the form air-gapped clusters import (`kind load image-archive`, `ctr images import`,
# `k3s ctr images import`). Needs a Docker engine (scripts/engine.sh; DOCKER_HOST set).
#
# Settings (environment):
#   REGISTRY      image name prefix (default ghcr.io/kubeflower); tags are the project's version
#   BASE_IMAGE    the Python base of both images. Default: the official python:3.11-slim-bookworm
#                 pinned by digest (Dockerfile.*) when the engine has it or can pull it, else a
#                 Debian 12 base built here from Debian's packages (scripts/base-image.sh)
#   TORCH         cpu | cuda (default: cpu when PyTorch's CPU index answers, else cuda from PyPI).
#                 TORCH=cuda, asked for, builds the GPU variant, tagged workload:<version>-cuda; the
#                 default keeps the plain tag whichever torch it found (tests, deploy/ use that one)
#   SAVE          1 (default) writes dist/*.tar; 0 only builds
set -euo pipefail
cd "$(dirname "$0")/.."
DOCKER=${DOCKER:-/usr/bin/docker}
export DOCKER_BUILDKIT=1
VERSION=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
REGISTRY=${REGISTRY:-ghcr.io/kubeflower}
OPERATOR="$REGISTRY/operator:$VERSION"
WORKLOAD="$REGISTRY/workload:$VERSION"
LOCAL_BASE="kubeflower/python:3.11-bookworm"
OFFICIAL_BASE=$(sed -n 's/^ARG BASE_IMAGE=//p' Dockerfile.operator)
CPU_INDEX=https://download.pytorch.org/whl/cpu

if ! "$DOCKER" version >/dev/null 2>&1; then
  echo "images: no Docker engine answers at ${DOCKER_HOST:-the default socket} (scripts/engine.sh start)" >&2
  exit 1
fi

if [ -z "${BASE_IMAGE:-}" ]; then
  if "$DOCKER" image inspect "$OFFICIAL_BASE" >/dev/null 2>&1 \
     || timeout 60 "$DOCKER" pull -q "$OFFICIAL_BASE" >/dev/null 2>&1; then
    BASE_IMAGE=$OFFICIAL_BASE
  else
    echo "images: the official base cannot be pulled; building one from Debian's packages" >&2
    scripts/base-image.sh "$LOCAL_BASE"
    BASE_IMAGE=$LOCAL_BASE
  fi
fi

if [ "${TORCH:-}" = cuda ]; then WORKLOAD="$WORKLOAD-cuda"; fi
if [ -z "${TORCH:-}" ]; then
  if curl -fs -o /dev/null --max-time 15 "$CPU_INDEX/torch/"; then TORCH=cpu; else
    echo "images: PyTorch's CPU index does not answer: the workload image gets PyPI's CUDA build of torch" >&2
    TORCH=cuda
  fi
fi
case "$TORCH" in
  cpu) TORCH_INDEX_URL=${TORCH_INDEX_URL:-$CPU_INDEX} ;;
  cuda) TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://pypi.org/simple} ;;
  *) echo "images: TORCH must be cpu or cuda, not '$TORCH'" >&2; exit 2 ;;
esac

# A TLS-inspecting proxy's CA (pip's own setting), passed as a build secret: used by pip during
# the build, never written into a layer.
ca=${PIP_CERT:-$(pip3 config get global.cert 2>/dev/null || true)}
secret=()
if [ -n "$ca" ] && [ -s "$ca" ]; then secret=(--secret "id=ca,src=$ca"); fi

build() {  # build DOCKERFILE TAG [build args...]
  local file=$1 tag=$2; shift 2
  local start=$SECONDS
  "$DOCKER" build --network host "${secret[@]}" -f "$file" \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" "$@" \
    --label "org.opencontainers.image.version=$VERSION" \
    --label "org.opencontainers.image.source=https://github.com/kubeflower/kubeflower" \
    --label "io.kubeflower.base-image=$BASE_IMAGE" \
    -t "$tag" . >"dist/.build-$(basename "$file").log" 2>&1 \
    || { echo "images: $file failed; the end of its log:" >&2; tail -n 40 "dist/.build-$(basename "$file").log" >&2; return 1; }
  echo "images: $tag built in $((SECONDS - start)) s" >&2
}

mkdir -p dist
build Dockerfile.operator "$OPERATOR"
build Dockerfile.workload "$WORKLOAD" --build-arg "TORCH=$TORCH" --build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL" \
  --label "io.kubeflower.torch=$TORCH"

for tag in "$OPERATOR" "$WORKLOAD"; do
  size=$("$DOCKER" image inspect -f '{{.Size}}' "$tag")
  line=$(printf '%-42s %6d MB' "$tag" $((size / 1000000)))
  if [ "${SAVE:-1}" = 1 ]; then
    archive="dist/$(echo "${tag##*/}" | tr ':' '-').tar"
    "$DOCKER" save -o "$archive" "$tag"
    line="$line  $archive ($(( $(stat -c %s "$archive") / 1000000 )) MB)"
  fi
  echo "$line"
done
echo "base: $BASE_IMAGE; torch: $TORCH ($TORCH_INDEX_URL)"
