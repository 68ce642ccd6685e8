#!/usr/bin/env bash
# Debian packages some tests drive for real, installed where missing (root only; best effort):
#   chromium    the operator page in a headless browser (tests/integration/test_operator_page.py)
#   postgresql  the audit log's PostgreSQL durability test (tests/e2e/test_tenancy_durability.py)
# Without them those tests skip, saying why. .ci/run calls this before the tests.
set -uo pipefail
need=()
command -v chromium >/dev/null || need+=(chromium)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
if [[ ${#need[@]} -eq 0 ]]; then echo "ci-packages.sh: nothing to install"; exit 0; fi
if [[ $(id -u) != 0 ]]; then echo "ci-packages.sh: not root, not installing ${need[*]}"; exit 0; fi
echo "ci-packages.sh: apt-get install ${need[*]}"
{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"; } \
  >/tmp/spaguard-ci-apt.log 2>&1 || { echo "ci-packages.sh: apt-get failed:"; tail -5 /tmp/spaguard-ci-apt.log; }
exit 0
