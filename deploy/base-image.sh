#!/usr/bin/env bash
# A Debian base image for deploy/Dockerfile, built without a registry: debootstrap + docker import.
#
#   deploy/base-image.sh [NAME]        (default spaguard-base:bookworm; root, docker and debootstrap)
#
# Used by deploy/build-image.sh (make image) when BASE_IMAGE cannot be pulled (no Docker Hub here).
# It holds what deploy/Dockerfile expects of a Python base: python3 (3.11 on bookworm) with venv, CA
# certificates, and the shared libraries OpenCV needs (libGL, GLib), so the build needs no apt step.
# Reuses NAME when it already exists; takes about a minute from Debian's mirror.
set -euo pipefail

NAME="${1:-spaguard-base:bookworm}"
SUITE="${DEBIAN_SUITE:-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PACKAGES=python3,python3-venv,ca-certificates,libgl1,libglib2.0-0

if docker image inspect "$NAME" >/dev/null 2>&1; then
  echo "base-image.sh: $NAME exists"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "base-image.sh: debootstrap missing (apt-get install debootstrap)" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "base-image.sh: debootstrap needs root" >&2; exit 2; }

root="$(mktemp -d /tmp/spaguard-base.XXXXXX)"
trap 'rm -rf "$root"' EXIT
echo "base-image.sh: debootstrap $SUITE ($PACKAGES) from $MIRROR"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR" >"$root.log" 2>&1 \
  || { tail -20 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
# Trim what a container never uses: apt lists, docs, man pages, locales.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/{doc,man,info}/* \
       "$root"/usr/share/locale/*
tar -C "$root" --numeric-owner -c . | docker import \
  --change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' \
  --message "debootstrap $SUITE minbase + $PACKAGES (deploy/base-image.sh)" - "$NAME"
echo "base-image.sh: built $NAME"
