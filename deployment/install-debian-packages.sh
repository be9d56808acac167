#!/usr/bin/env bash
# Install Debian packages the tools need (wrk, mosquitto, chromium...) when running as root on Debian.
# Exits non-zero, without installing anything, anywhere else: callers decide whether that is fatal.
set -euo pipefail
[ "$#" -gt 0 ] || { echo "usage: $0 PACKAGE..." >&2; exit 2; }
command -v apt-get >/dev/null || { echo "apt-get not found: install $* yourself" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "not root: install $* yourself (apt-get install $*)" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 \
  || { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
