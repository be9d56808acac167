#!/usr/bin/env bash
# Runs the edge stack on this machine in the foreground: model server (8501), orchestrator (8000) on the demo
# station, and the line dashboard (8080). Ctrl-C stops everything. Used by `make run`; settings come from EDGE_*
# environment variables.
set -euo pipefail

PY=${PY:-.venv/bin/python}
MODELS_DIR=${MODELS_DIR:-models}
DATA_DIR=${EDGE_ORCHESTRATOR_DATA_DIR:-data}
export EDGE_ORCHESTRATOR_DATA_DIR=$DATA_DIR
export EDGE_ORCHESTRATOR_STATIONS_DIR=${EDGE_ORCHESTRATOR_STATIONS_DIR:-deployment/stations}
export EDGE_ORCHESTRATOR_DEFAULT_STATION=${EDGE_ORCHESTRATOR_DEFAULT_STATION:-duck-line}

pids=()
stop() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait || true
}
trap stop INT TERM EXIT

wait_ready() {  # name url
  for _ in $(seq 1 300); do
    if "$PY" - "$2" <<'PYEOF' 2>/dev/null; then return 0; fi
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=1)
PYEOF
    sleep 0.2
  done
  echo "$1 did not become ready at $2" >&2
  return 1
}

"$PY" -m edge_model_serving --models-dir "$MODELS_DIR" --port 8501 & pids+=($!)
wait_ready "model server" http://127.0.0.1:8501/health/ready
"$PY" -m edge_orchestrator --port 8000 & pids+=($!)
wait_ready "orchestrator" http://127.0.0.1:8000/health/live

# The dashboard uses the orchestrator's key: EDGE_API_KEY or EDGE_API_KEY_FILE when set (both services read
# them), else the file the orchestrator generated in its data directory. The key never leaves the server.
if [[ -z "${EDGE_API_KEY:-}" && -z "${EDGE_API_KEY_FILE:-}" ]]; then
  EDGE_API_KEY_FILE="$DATA_DIR/api-key" "$PY" -m edge_interface --port 8080 & pids+=($!)
else
  "$PY" -m edge_interface --port 8080 & pids+=($!)
fi
wait_ready "dashboard" http://127.0.0.1:8080/health/live

if [[ -n "${EDGE_API_KEY:-}" ]]; then
  key_source="the EDGE_API_KEY environment variable"; key_expr='$EDGE_API_KEY'
else
  key_file=${EDGE_API_KEY_FILE:-$DATA_DIR/api-key}
  key_source="$key_file (mode 0600)"; key_expr="\$(cat $key_file)"
fi
cat <<MSG

  The edge stack is running (Ctrl-C stops it):
    dashboard      http://127.0.0.1:8080/
    model server   http://127.0.0.1:8501/docs
    orchestrator   http://127.0.0.1:8000/docs   (station: $EDGE_ORCHESTRATOR_DEFAULT_STATION)
    API key        in $key_source

  Inspect one duck and wait for the decision:
    curl -s -X POST 'http://127.0.0.1:8000/api/v1/inspections?wait=5' \\
         -H "Authorization: Bearer $key_expr" -H 'Content-Type: application/json' \\
         -d '{"part_id": "duck-0001"}'

MSG
wait -n "${pids[@]}"
