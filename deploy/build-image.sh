#!/usr/bin/env bash
# Build the CPU server image (deploy/Dockerfile) on a machine that may reach no container registry.
#
#   deploy/build-image.sh IMAGE            (make image IMAGE=spaguard:0.1.0)
#
# Environment: BASE_IMAGE (default python:3.11.13-slim-bookworm), FALLBACK_BASE (default
# spaguard-base:bookworm), PIP (default .venv/bin/pip), BUILD_NETWORK (docker build --network, default
# "default"), DOCKER (default docker).
#
# 1. Downloads the wheels pinned in deploy/requirements{,-export}.lock into .cache/image/wheels (PyPI or this
#    machine's local wheels; the CPU torch wheel among them), so the build itself installs offline.
# 2. Uses BASE_IMAGE when it is present or can be pulled; otherwise bootstraps FALLBACK_BASE with
#    deploy/base-image.sh (debootstrap + docker import) and builds on that.
# 3. docker build -f deploy/Dockerfile, labelled with the git commit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGE="${1:?usage: deploy/build-image.sh IMAGE}"
BASE_IMAGE="${BASE_IMAGE:-python:3.11.13-slim-bookworm}"
FALLBACK_BASE="${FALLBACK_BASE:-spaguard-base:bookworm}"
PIP="${PIP:-$ROOT/.venv/bin/pip}"
DOCKER="${DOCKER:-docker}"
WHEELS="$ROOT/.cache/image/wheels"
cd "$ROOT"

"$DOCKER" info >/dev/null 2>&1 || { echo "build-image.sh: no docker daemon reachable (start dockerd)" >&2; exit 2; }

echo "build-image.sh: wheels of deploy/requirements{,-export}.lock -> $WHEELS"
mkdir -p "$WHEELS"
"$PIP" download -q --no-deps --only-binary=:all: -r deploy/requirements.lock -r deploy/requirements-export.lock \
  -d "$WHEELS" 2> >(grep -v "is ignored: it is neither" >&2)

if "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1 || "$DOCKER" pull -q "$BASE_IMAGE" >/dev/null 2>&1; then
  base="$BASE_IMAGE"
else
  echo "build-image.sh: cannot pull $BASE_IMAGE; bootstrapping $FALLBACK_BASE instead"
  "$ROOT/deploy/base-image.sh" "$FALLBACK_BASE"
  base="$FALLBACK_BASE"
fi

revision="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
echo "build-image.sh: docker build $IMAGE on $base"
"$DOCKER" build -f deploy/Dockerfile --network "${BUILD_NETWORK:-default}" \
  --build-arg "BASE_IMAGE=$base" \
  --label "org.opencontainers.image.revision=$revision" \
  --label "org.opencontainers.image.base.name=$base" \
  -t "$IMAGE" .
echo "build-image.sh: built $IMAGE ($("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.2f GB", $1/1e9}'))"
