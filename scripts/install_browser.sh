#!/usr/bin/env bash
# Install what tests/test_web.py needs to drive the web page in a real browser:
#   /usr/bin/chromium   - Debian's chromium package (apt; needs root). No browser is ever downloaded
#                         by Playwright itself: the test launches this binary with executable_path.
#   playwright          - the Python package, into the project venv (.venv, or $VENV).
# Safe to re-run: whatever is already present is skipped. When something cannot be installed the
# script says so and still succeeds; the browser test then skips with the reason.
# Env: VENV (default .venv), FORCE=1 to reinstall the Python package.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
FORCE="${FORCE:-0}"

log() { printf '[install_browser] %s\n' "$*"; }

# --- chromium (Debian) ----------------------------------------------------------------------
if [[ -x /usr/bin/chromium ]]; then
  log "chromium already at /usr/bin/chromium: skipped"
elif [[ "$(id -u)" != 0 ]]; then
  log "chromium is missing and this is not root: run 'sudo bash $0' (the browser test will skip)"
elif ! command -v apt-get >/dev/null 2>&1; then
  log "chromium is missing and there is no apt-get here (the browser test will skip)"
else
  log "installing chromium from the Debian archive"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium >/dev/null
  log "installed $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
fi

# --- playwright (the Python package only; no 'playwright install') ---------------------------
PY="$VENV/bin/python"
if [[ ! -x "$PY" ]]; then
  log "no virtual environment at $VENV: run 'make install' first (the browser test will skip)"
elif [[ "$FORCE" != 1 ]] && "$PY" -c 'import playwright.sync_api' >/dev/null 2>&1; then
  log "playwright already in $VENV: skipped"
else
  log "installing the playwright Python package into $VENV"
  "$PY" -m pip install --quiet --disable-pip-version-check playwright
fi
