#!/usr/bin/env bash
# Make a docker daemon available on a CI or dev machine where none runs (root; Debian/Ubuntu).
#
#   deploy/docker-daemon.sh        (.ci/run calls it before the tests)
#
# Installs Debian's docker.io, docker-compose and debootstrap when missing (the image build's base
# fallback needs debootstrap; the compose check needs docker-compose), starts dockerd in the
# background when `docker info` fails (its log: /tmp/spaguard-dockerd.log), and waits for it.
# Exits 0 when a daemon answers; 1 (saying why) when none could be had, so callers can skip.
set -uo pipefail

need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [[ ${#need[@]} -gt 0 ]]; then
  if [[ $(id -u) != 0 ]]; then echo "docker-daemon.sh: need root to install ${need[*]}" >&2; exit 1; fi
  echo "docker-daemon.sh: apt-get install ${need[*]}"
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"; } >/tmp/spaguard-apt.log 2>&1 \
    || { tail -5 /tmp/spaguard-apt.log >&2; exit 1; }
fi
if docker info >/dev/null 2>&1; then
  echo "docker-daemon.sh: a docker daemon is running"
  exit 0
fi
echo "docker-daemon.sh: starting dockerd"
nohup dockerd >/tmp/spaguard-dockerd.log 2>&1 &
for _ in $(seq 60); do
  if docker info >/dev/null 2>&1; then echo "docker-daemon.sh: dockerd is up"; exit 0; fi
  sleep 1
done
echo "docker-daemon.sh: dockerd did not come up:" >&2
tail -5 /tmp/spaguard-dockerd.log >&2
exit 1
