#!/usr/bin/env bash
# Host a model repository (spaguard triton-repo --backend python) on the real tritonserver that
# PyTriton (nvidia-pytriton) bundles, in its own virtualenv (it pins numpy<2; make triton-venv).
#
#   deploy/triton-serve.sh REPO [GRPC_PORT] [HTTP_PORT] [METRICS_PORT]    (make triton-serve)
#
# Environment: TRITON_VENV (default .venv-triton), TRITON_WORK (default .cache/triton: where the
# server's backend folder is laid out), TRITON_ARGS (extra tritonserver flags).
# PyTriton's wheel ships tritonserver with the Python backend only (no onnxruntime backend), hence
# the python model; it keeps one Python-backend stub per Python version, which must sit in the
# backend folder as triton_python_backend_stub. The stub embeds libpython, so LD_LIBRARY_PATH gets
# Python's LIBDIR, and the virtualenv's bin leads PATH so the stub's interpreter is the venv's (its
# numpy and onnxruntime). Binds all of Triton's ports to 127.0.0.1. Runs in the foreground (exec).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPO="$(cd "${1:?usage: deploy/triton-serve.sh REPO [GRPC_PORT] [HTTP_PORT] [METRICS_PORT]}" && pwd)"
GRPC_PORT="${2:-8001}" HTTP_PORT="${3:-8000}" METRICS_PORT="${4:-8002}"
VENV="${TRITON_VENV:-$ROOT/.venv-triton}"
WORK="${TRITON_WORK:-$ROOT/.cache/triton}"
PY="$VENV/bin/python"
[[ -x "$PY" ]] || { echo "triton-serve.sh: no $PY (make triton-venv)" >&2; exit 2; }

read -r DIST LIBS PYVER LIBDIR < <("$PY" - <<'EOF'
import pathlib, sys, sysconfig
import pytriton
root = pathlib.Path(pytriton.__file__).parent
print(root / "tritonserver", root.parent / "nvidia_pytriton.libs", f"{sys.version_info[0]}.{sys.version_info[1]}",
      sysconfig.get_config_var("LIBDIR"))
EOF
)
backend="$WORK/backends/python"
mkdir -p "$backend"
for f in libtriton_python.so triton_python_backend_utils.py; do ln -sfn "$DIST/backends/python/$f" "$backend/$f"; done
cp -f "$DIST/python_backend_stubs/$PYVER/triton_python_backend_stub" "$backend/triton_python_backend_stub"

export LD_LIBRARY_PATH="$LIBS:$LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="$VENV/bin:$PATH"
# shellcheck disable=SC2086  # TRITON_ARGS is a list of flags
exec "$DIST/bin/tritonserver" --model-repository "$REPO" --backend-directory "$WORK/backends" \
  --cache-directory "$DIST/caches" \
  --grpc-address 127.0.0.1 --grpc-port "$GRPC_PORT" \
  --http-address 127.0.0.1 --http-port "$HTTP_PORT" \
  --metrics-address 127.0.0.1 --metrics-port "$METRICS_PORT" --allow-metrics true \
  --exit-on-error true --strict-readiness true ${TRITON_ARGS:-}
