#!/usr/bin/env bash
# Builds what the Ansible `process` runtime ships to devices that have no Internet access (factory networks):
#   OUT/dist/vio_edge-<version>-py3-none-any.whl   the release itself (built from SOURCE, default: this repository)
#   OUT/wheelhouse.tar                             every locked dependency (deployment/requirements/edge.txt) plus
#                                                  the device tools (deployment/fleet/device-tools.txt: uv, supervisor)
#                                                  as binary wheels for the devices' platform
#   OUT/wheelhouse.sha256                          its checksum (names the wheelhouse on the device)
#   OUT/requirements.txt                           the lock file the wheelhouse was built from
# Devices install with `uv pip install --no-index --find-links <wheelhouse>`: nothing is fetched on the device.
#
# Usage: deployment/fleet/build-wheelhouse.sh [--platform host|arm64|amd64] [--out DIR] [--source DIR] [--no-wheel]
#   --platform host    wheels for this machine (default; what the simulated fleet in tests/fleet uses)
#   --platform arm64   wheels for Raspberry Pi 4/5 and other aarch64 boards (Python 3.11, glibc 2.36: bookworm)
#   --platform amd64   wheels for x86-64 boxes (Python 3.11, glibc 2.36: bookworm)
# For example, for a fleet of Raspberry Pis:
#   deployment/fleet/build-wheelhouse.sh --platform arm64 --out build/fleet/arm64
# then point the inventory's `edge_artifacts_dir` at build/fleet/arm64.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
platform=host
out=
source_dir=$repo
build_wheel=1
while [ "$#" -gt 0 ]; do
  case "$1" in
    --platform) platform=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --source) source_dir=$(cd "$2" && pwd); shift 2 ;;
    --no-wheel) build_wheel=0; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
out=${out:-$repo/build/fleet/$platform}
mkdir -p "$out/wheels" "$out/dist"
out=$(cd "$out" && pwd)

case "$platform" in
  host) platform_args=() ;;
  arm64|amd64)
    arch=$([ "$platform" = arm64 ] && echo aarch64 || echo x86_64)
    platform_args=(--python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none)
    # pip matches --platform tags exactly: name every glibc from Debian 12's (2.36, Raspberry Pi OS bookworm) down.
    for minor in $(seq 36 -1 17); do platform_args+=(--platform "manylinux_2_${minor}_$arch"); done
    platform_args+=(--platform "manylinux2014_$arch" --platform "linux_$arch")
    ;;
  *) echo "unknown platform: $platform (host, arm64 or amd64)" >&2; exit 2 ;;
esac

# pip download is the one tool that fetches wheels for another platform; take the controller's pip, else uv's.
if python3 -m pip --version >/dev/null 2>&1; then pip=(python3 -m pip); else pip=(uv tool run pip); fi

# Rebuilt only when the lock file, the tools or the platform changed.
stamp="$platform $(cat "$repo/deployment/requirements/edge.txt" "$repo/deployment/fleet/device-tools.txt" | sha256sum)"
if [ -s "$out/wheelhouse.tar" ] && [ -s "$out/wheelhouse.sha256" ] && [ "$(cat "$out/.stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "wheelhouse up to date in $out"
else
  rm -f "$out/.stamp" "$out"/wheels/*.whl
  # Only binary wheels: a device never compiles anything (and an sdist here would be a surprise on arm64).
  # --ignore-requires-python: the lock pins exact versions already, and pip would judge Requires-Python against the
  # controller's Python rather than the devices' (3.11) when --platform is given.
  "${pip[@]}" download --quiet --disable-pip-version-check --only-binary=:all: --ignore-requires-python \
    "${platform_args[@]}" \
    --dest "$out/wheels" -r "$repo/deployment/requirements/edge.txt" -r "$repo/deployment/fleet/device-tools.txt"
  cp "$repo/deployment/requirements/edge.txt" "$out/requirements.txt"

  # A stable archive: sorted names, fixed owner and time, so the same wheels give the same checksum.
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$out/wheels" -cf "$out/wheelhouse.tar.tmp" .
  mv "$out/wheelhouse.tar.tmp" "$out/wheelhouse.tar"
  # The playbooks name the wheelhouse on the device by this checksum: shipped once per content, never twice.
  sha256sum "$out/wheelhouse.tar" | cut -d' ' -f1 > "$out/wheelhouse.sha256"
  echo "$stamp" > "$out/.stamp"
fi

if [ "$build_wheel" = 1 ]; then
  # The project wheel is pure Python: the same file for every platform.
  rm -f "$out"/dist/vio_edge-*.whl
  if command -v uv >/dev/null; then
    uv build --quiet --wheel --out-dir "$out/dist" "$source_dir"
  else
    "${pip[@]}" wheel --quiet --no-deps --wheel-dir "$out/dist" "$source_dir"
  fi
fi
echo "wheelhouse for $platform in $out: $(find "$out/wheels" -name '*.whl' | wc -l) wheels," \
  "$(du -sh "$out/wheelhouse.tar" | cut -f1); release: $(cd "$out/dist" && ls vio_edge-*.whl 2>/dev/null || echo none)"
