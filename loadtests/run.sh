#!/usr/bin/env bash
# Headless Locust run against an already running SPA-Guard server (this script starts nothing).
#
#   loadtests/run.sh [-u USERS] [-r SPAWN_RATE] [-t DURATION] [--p95-ms MS] [--max-429-rate X]
#                    [--model NAME] [--name RUN] [--mix full|benign] [--expect-guard on|off]
#                    [-- EXTRA LOCUST ARGS]
#
# Target: $HOST (default http://127.0.0.1:8000); loopback only unless ALLOW_REMOTE_HOST=1.
# Writes $LOCUST_OUT_DIR/<RUN>_{stats,stats_history,failures,exceptions}.csv and <RUN>.json (default
# runs/locust/) and prints one "SLO {...}" JSON line; exits 1 when p95 latency or the 429 share
# is over its limit, or any other request failed (a harmful prompt served is a "miss", a benign one
# refused a "false_positive": --expect-guard off for a server run with --guard-mode off), 0 otherwise.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOST="${HOST:-http://127.0.0.1:8000}"
USERS=16 RATE=8 DURATION=60s P95_MS=5000 MAX_429=0.05 MODEL="" NAME="run-$(date -u +%Y%m%dT%H%M%SZ)"
MIX=full EXPECT_GUARD=on
EXTRA=()

usage() { sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    -u|--users|-r|--spawn-rate|-t|--run-time|--p95-ms|--max-429-rate|--model|--name|--mix|--expect-guard)
      [[ $# -ge 2 ]] || { echo "run.sh: $1 needs a value" >&2; exit 2; } ;;&
    -u|--users) USERS="$2"; shift 2 ;;
    -r|--spawn-rate) RATE="$2"; shift 2 ;;
    -t|--run-time) DURATION="$2"; shift 2 ;;
    --p95-ms) P95_MS="$2"; shift 2 ;;
    --max-429-rate) MAX_429="$2"; shift 2 ;;
    --model) MODEL="$2"; shift 2 ;;
    --name) NAME="$2"; shift 2 ;;
    --mix) MIX="$2"; shift 2 ;;
    --expect-guard) EXPECT_GUARD="$2"; shift 2 ;;
    -h|--help) usage 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "run.sh: unknown argument: $1" >&2; usage 2 ;;
  esac
done

host_only="${HOST#*://}"; host_only="${host_only%%[:/]*}"
case "$host_only" in
  127.0.0.1|localhost|\[::1\]) ;;
  *) if [[ "${ALLOW_REMOTE_HOST:-0}" != 1 ]]; then
       echo "run.sh: refusing non-loopback HOST=$HOST (set ALLOW_REMOTE_HOST=1 for your own server)" >&2
       exit 2
     fi ;;
esac

LOCUST="${LOCUST:-$ROOT/.venv/bin/locust}"
[[ -x "$LOCUST" ]] || LOCUST="$(command -v locust)" || { echo "run.sh: locust not found" >&2; exit 2; }
OUT_DIR="${LOCUST_OUT_DIR:-$ROOT/runs/locust}"
mkdir -p "$OUT_DIR"

exec "$LOCUST" -f "$ROOT/loadtests/locustfile.py" --headless --only-summary -H "$HOST" \
  -u "$USERS" -r "$RATE" -t "$DURATION" --stop-timeout 10 \
  --csv "$OUT_DIR/$NAME" \
  --p95-ms "$P95_MS" --max-429-rate "$MAX_429" --model "$MODEL" --mix "$MIX" --expect-guard "$EXPECT_GUARD" \
  --summary-json "$OUT_DIR/$NAME.json" "${EXTRA[@]}"
