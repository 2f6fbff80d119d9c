#!/usr/bin/env bash
# Smoke test of the container image, without Docker and without pulling any image:
#   1. a Debian bookworm root filesystem with python3.11 is made with debootstrap and imported as
#      localhost/bookworm-python:3.11 (cached between runs);
#   2. the Dockerfile's `cpu` target is built on it with buildah (--isolation chroot,
#      --build-arg PYTHON_IMAGE=localhost/bookworm-python:3.11); pip fetches the dependencies from PyPI;
#   3. the image runs with podman (--runtime runc, read-only root, /tmp as tmpfs, all capabilities
#      dropped) as `serve --role all` with its embedded Redis;
#   4. /readyz must answer 200, and a job of 8 images (POST /v1/jobs {"count": 8}) must end
#      "succeeded" with GET /v1/jobs/{id}/result returning a tar of 8 PNGs.
# Prints the image size at the end. Takes several minutes (debootstrap and pip); not run by the tests.
#
#   sudo bash scripts/image_smoke_test.sh
#
# Needs root and Debian's buildah, podman, runc and debootstrap (installed with apt-get when missing),
# and a model package in models/<SYNTHGEN_DEFAULT_MODEL> (default avatars-64), which the image bakes in.
# Env: WORK (scratch directory, default /var/tmp/synthgen-smoke: container storage and the rootfs),
#      IMAGE (tag of the built image, default localhost/synthgen:smoke), PORT (default 18000),
#      DEBIAN_MIRROR (default http://deb.debian.org/debian), REBUILD_BASE=1 (redo debootstrap),
#      KEEP=1 (leave the container running), TIMEOUT_S (per wait, default 180).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${WORK:-/var/tmp/synthgen-smoke}"
IMAGE="${IMAGE:-localhost/synthgen:smoke}"
BASE_IMAGE="localhost/bookworm-python:3.11"
PORT="${PORT:-18000}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
MODEL="${SYNTHGEN_DEFAULT_MODEL:-avatars-64}"
TIMEOUT_S="${TIMEOUT_S:-180}"
CONTAINER="synthgen-smoke-$$"

log() { printf '[image_smoke_test] %s\n' "$*"; }
die() { printf '[image_smoke_test] FAILED: %s\n' "$*" >&2; exit 1; }

[[ "$(id -u)" == 0 ]] || die "run as root (buildah and podman store images under $WORK)"
[[ -f "$ROOT/models/$MODEL/decoder.onnx" && -f "$ROOT/models/$MODEL/manifest.json" ]] \
  || die "no model package in models/$MODEL: export one first (synthgen export CHECKPOINT --out models/$MODEL)"

# --- tools ---------------------------------------------------------------------------------------
missing=()
for tool in buildah podman runc debootstrap; do command -v "$tool" > /dev/null || missing+=("$tool"); done
if ((${#missing[@]})); then
  log "installing ${missing[*]} from Debian"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends buildah podman runc debootstrap conmon > /dev/null
fi

# Private container storage (vfs works inside containers and on any filesystem).
mkdir -p "$WORK"
cat > "$WORK/storage.conf" <<EOF
[storage]
driver = "vfs"
graphroot = "$WORK/storage"
runroot = "$WORK/run"
EOF
export CONTAINERS_STORAGE_CONF="$WORK/storage.conf"
PODMAN=(podman --cgroup-manager cgroupfs --events-backend file)
# podman and buildah raise nofile/nproc by default, which a sandbox without CAP_SYS_RESOURCE refuses:
# keep this shell's open-files limit and ask for a modest process limit.
nproc="$(ulimit -Hu)"
[[ "$nproc" == unlimited || "$nproc" -gt 4096 ]] && nproc=4096
ULIMITS=(--ulimit "nofile=$(ulimit -Sn):$(ulimit -Hn)" --ulimit "nproc=$nproc:$nproc")

# --- base image: debootstrap'd bookworm with python3.11 ----------------------------------------------
if [[ "${REBUILD_BASE:-0}" == 1 ]] || ! buildah inspect --type image "$BASE_IMAGE" > /dev/null 2>&1; then
  rootfs="$WORK/rootfs"
  rm -rf "$rootfs"
  log "debootstrap bookworm (minbase + python3, python3-venv) from $MIRROR"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" "$MIRROR" > "$WORK/debootstrap.log" 2>&1 \
    || { tail -n 30 "$WORK/debootstrap.log" >&2; die "debootstrap"; }
  # The build's pip uses this host's CA bundle (TLS-inspecting proxies) and the system store.
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$rootfs/etc/pip.conf"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
  log "importing $rootfs as $BASE_IMAGE"
  tar -C "$rootfs" -c . | "${PODMAN[@]}" import --quiet --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" > /dev/null
  rm -rf "$rootfs"
fi
"${PODMAN[@]}" run --rm --runtime runc --network host "${ULIMITS[@]}" "$BASE_IMAGE" python3 -c 'import sys, venv; print("base python", sys.version.split()[0])'

# --- build ---------------------------------------------------------------------------------------
log "building target cpu as $IMAGE"
started=$(date +%s)
# Every FROM image name points at the local base: buildah may resolve the unused gpu stages too.
buildah bud --isolation chroot --format docker --network host --layers=false "${ULIMITS[@]}" \
  --target cpu \
  --build-arg PYTHON_IMAGE="$BASE_IMAGE" \
  --build-arg UV_IMAGE="$BASE_IMAGE" \
  --build-arg CUDA_IMAGE="$BASE_IMAGE" \
  -t "$IMAGE" -f "$ROOT/Dockerfile" "$ROOT" > "$WORK/build.log" 2>&1 \
  || { tail -n 40 "$WORK/build.log" >&2; die "buildah bud (log: $WORK/build.log)"; }
log "built in $(($(date +%s) - started)) s"

# --- run -----------------------------------------------------------------------------------------
cleanup() {
  if [[ "${KEEP:-0}" == 1 ]]; then
    log "container $CONTAINER left running (KEEP=1): ${PODMAN[*]} rm -f $CONTAINER"
  else
    "${PODMAN[@]}" rm -f "$CONTAINER" > /dev/null 2>&1 || true
  fi
}
trap cleanup EXIT
log "starting $CONTAINER on 127.0.0.1:$PORT"
"${PODMAN[@]}" run -d --runtime runc --name "$CONTAINER" --network host "${ULIMITS[@]}" \
  --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges --health-interval disable \
  -e SYNTHGEN_PORT="$PORT" "$IMAGE" serve --role all --host 127.0.0.1 > /dev/null 2>> "$WORK/podman.log"

# --- check ---------------------------------------------------------------------------------------
if ! python3 - "$PORT" "$TIMEOUT_S" <<'PY'
import io, json, sys, tarfile, time, urllib.error, urllib.request

port, timeout = int(sys.argv[1]), float(sys.argv[2])
base = f"http://127.0.0.1:{port}"


def call(method, path, body=None, wait=30):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=wait) as r:
        return r.status, r.read()


deadline, last = time.monotonic() + timeout, None
while True:
    try:
        status, body = call("GET", "/readyz", wait=5)
        if status == 200:
            print("[image_smoke_test] /readyz 200", body.decode()[:200])
            break
    except (urllib.error.URLError, ConnectionError, OSError) as exc:
        last = exc
    if time.monotonic() > deadline:
        sys.exit(f"/readyz did not answer 200 within {timeout:.0f} s: {last}")
    time.sleep(1)

status, body = call("POST", "/v1/jobs", {"count": 8})
job = json.loads(body)
assert status == 202, (status, job)
print(f"[image_smoke_test] job {job['id']} {job['status']}")
deadline = time.monotonic() + timeout
while True:
    job = json.loads(call("GET", f"/v1/jobs/{job['id']}")[1])
    if job["status"] == "succeeded":
        break
    if job["status"] in ("failed", "cancelled", "expired") or time.monotonic() > deadline:
        sys.exit(f"job ended {job['status']}: {job}")
    time.sleep(0.5)
status, body = call("GET", f"/v1/jobs/{job['id']}/result", wait=60)
with tarfile.open(fileobj=io.BytesIO(body)) as tar:
    names = tar.getnames()
    pngs = [n for n in names if n.endswith(".png")]
    assert all(tar.extractfile(n).read(8) == b"\x89PNG\r\n\x1a\n" for n in pngs), "not PNG data"
assert len(pngs) == 8, names
print(f"[image_smoke_test] result: {len(body)} bytes, {len(pngs)} PNGs ({pngs[0]} ...)")
PY
then
  "${PODMAN[@]}" logs --tail 40 "$CONTAINER" >&2 || true
  die "the running image did not pass"
fi

# the image's HEALTHCHECK command (run once by hand: no systemd timers here)
"${PODMAN[@]}" healthcheck run "$CONTAINER" || die "the image's HEALTHCHECK failed"
log "HEALTHCHECK healthy"
user="$("${PODMAN[@]}" exec "$CONTAINER" id -u)"
[[ "$user" == 10001 ]] || die "the image runs as uid $user, not 10001"

size="$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$IMAGE")"
base_size="$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$BASE_IMAGE")"
log "image $IMAGE: $((size / 1024 / 1024)) MiB (base $BASE_IMAGE: $((base_size / 1024 / 1024)) MiB)"
log "PASSED"
