#!/usr/bin/env bash
# Installs the Prometheus server used by tests/integration/autoscale (Debian's
# `prometheus` package). Idempotent: does nothing when a prometheus binary that
# answers --version is already on PATH.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1 && prometheus --version >/dev/null 2>&1; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# --no-install-recommends keeps node-exporter and friends out; the package's
# postinst may try to start a service, which is harmless without systemd.
$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
# The package enables a system service where systemd runs; the tests start
# their own server on a free port, so stop a running one to free 9090.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
  $SUDO systemctl stop prometheus || true
fi
prometheus --version | head -1
