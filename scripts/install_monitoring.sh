#!/usr/bin/env bash
# Prometheus, promtool, Alertmanager and amtool from Debian (prometheus 2.42, alertmanager 0.25 on bookworm):
# the local stack's monitoring and the rules' unit tests (`promtool test rules`) run these.
#
#   scripts/install_monitoring.sh
#
# Idempotent: does nothing when the binaries are present. Installs with apt-get when run as root; otherwise
# prints the command to run and fails, so `make setup` never half-succeeds.
set -euo pipefail

need=()
for bin in prometheus promtool prometheus-alertmanager amtool; do
  command -v "$bin" >/dev/null 2>&1 || need+=("$bin")
done
if [ ${#need[@]} -eq 0 ]; then
  echo "monitoring: prometheus, promtool, alertmanager and amtool already installed"
  exit 0
fi

. "$(dirname "$0")/apt_install.sh"
apt_install "${need[*]}" prometheus prometheus-alertmanager
# The packages start system services where systemd runs; modelfleet starts its own processes on free ports.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl disable --now prometheus prometheus-alertmanager prometheus-node-exporter 2>/dev/null || true
fi
for bin in prometheus promtool prometheus-alertmanager amtool; do
  command -v "$bin" >/dev/null 2>&1 || { echo "error: $bin still missing after apt-get" >&2; exit 1; }
done
