#!/usr/bin/env bash
# Runs the edge stack on this machine in the foreground: model server (8501), orchestrator (8000) on the demo
# station, the line dashboard (8080), and a fleet hub (8100) this device reports to. Ctrl-C stops everything.
# Used by `make run`; settings come from EDGE_* and HUB_* environment variables (EDGE_DEMO_HUB=0: no hub).
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

# PLC, MES and SCADA integrations (docs/integration.md): OPC UA :4840, Modbus :5020 and MQTT :1883 on loopback.
# The OPC UA user's password is generated once into the data directory (mode 0600), never printed.
mkdir -p "$DATA_DIR"
if [[ -z "${EDGE_ORCHESTRATOR_INTEGRATIONS_FILE:-}" ]]; then
  if [[ ! -s "$DATA_DIR/opcua-plc-password" ]]; then
    (umask 077; "$PY" -c 'import secrets; print(secrets.token_urlsafe(18))' > "$DATA_DIR/opcua-plc-password")
  fi
  EDGE_DEMO_OPCUA_PASSWORD=$(cat "$DATA_DIR/opcua-plc-password"); export EDGE_DEMO_OPCUA_PASSWORD
  integrations=deployment/integrations/demo.yaml
  mqtt_note="MQTT           127.0.0.1:1883, topics edge/${EDGE_ORCHESTRATOR_DEVICE_ID:-$(hostname)}/#"
  if ! (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; then  # no broker yet: start Debian's, else go without
    if [[ -x /usr/sbin/mosquitto ]] || ./deployment/install-debian-packages.sh mosquitto >/dev/null 2>&1; then
      /usr/sbin/mosquitto -p 1883 >"$DATA_DIR/mosquitto.log" 2>&1 & pids+=($!)
    else
      integrations="$DATA_DIR/integrations-no-mqtt.yaml"
      "$PY" - deployment/integrations/demo.yaml "$integrations" <<'PYEOF'
import sys, yaml
config = yaml.safe_load(open(sys.argv[1]))
config.pop("mqtt")
open(sys.argv[2], "w").write(yaml.safe_dump(config, sort_keys=False))
PYEOF
      mqtt_note="MQTT           off (mosquitto is not installed)"
    fi
  fi
  export EDGE_ORCHESTRATOR_INTEGRATIONS_FILE=$integrations
fi

# The fleet hub (docs/hub.md), in data/hub, with this device registered once: its token in data/hub-token (0600).
export EDGE_ORCHESTRATOR_DEVICE_ID=${EDGE_ORCHESTRATOR_DEVICE_ID:-$(hostname)}
if [[ "${EDGE_DEMO_HUB:-1}" != 0 && -z "${EDGE_ORCHESTRATOR_HUB_URL:-}" ]]; then
  export HUB_DATA_DIR=${HUB_DATA_DIR:-$DATA_DIR/hub}
  if [[ ! -s "$DATA_DIR/hub-token" || ! -e "$HUB_DATA_DIR/hub.db" ]]; then
    "$PY" -m hub register "$EDGE_ORCHESTRATOR_DEVICE_ID" --site demo --line duck-line-1 \
      --description "make run on $(hostname)" --token-file "$DATA_DIR/hub-token"
  fi
  "$PY" -m hub --port 8100 & pids+=($!)
  wait_ready "hub" http://127.0.0.1:8100/health/ready
  export EDGE_ORCHESTRATOR_HUB_URL=http://127.0.0.1:8100 EDGE_ORCHESTRATOR_HUB_TOKEN_FILE=$DATA_DIR/hub-token
  hub_note="fleet hub      http://127.0.0.1:8100/   admin key in $HUB_DATA_DIR/admin-key (mode 0600)"
fi

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
    OPC UA (PLC)   opc.tcp://127.0.0.1:4840/edge/  user plc, password in $DATA_DIR/opcua-plc-password
    Modbus (PLC)   127.0.0.1:5020, register map in docs/plc-modbus.md
    ${mqtt_note:-integrations from $EDGE_ORCHESTRATOR_INTEGRATIONS_FILE}
    ${hub_note:-hub            ${EDGE_ORCHESTRATOR_HUB_URL:-off}}

  Inspect one duck and wait for the decision:
    curl -s -X POST 'http://127.0.0.1:8000/api/v1/inspections?wait=5' \\
         -H "Authorization: Bearer $key_expr" -H 'Content-Type: application/json' \\
         -d '{"part_id": "duck-0001"}'

MSG
wait -n "${pids[@]}"
