#!/usr/bin/env bash
# One-call GPU check: on a CUDA machine, in under 8 minutes, into one results folder:
#   1. environment: nvidia-smi, python, onnxruntime and its providers, torch and CUDA;
#   2. onnxruntime-gpu installed into the venv (in place of onnxruntime; from PyPI, or from the wheels in
#      $WHEELS when the machine has no network);
#   3. the serving path end to end on CUDA: the fp16 graph with IO binding in a worker process, a job
#      through Redis, single images over the interactive channel, bytes checked (bench/gpu_check.py);
#   4. the serving benchmark (npy bulk and interactive against in-process onnxruntime, bench/bench_serving.py)
#      and the engine benchmark (bench/bench_engine.py);
#   5. the training throughput (bench/bench_train.py).
# Without a GPU (or with --cpu) it runs the same steps at small sizes on the CPU provider: CI runs that
# fallback, so the script cannot rot. Each step has its own time limit; one failing step does not stop
# the others, and the exit status is 1 when any failed. summary.json and summary.md list every step.
# The model is the settings' default (SYNTHGEN_MODELS_DIR, SYNTHGEN_DEFAULT_MODEL), conditional or not.
#   bash bench/gpu_check.sh [--cpu] [--out DIR]
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
OUT="$ROOT/bench/results/gpu-check-$(date -u +%Y%m%dT%H%M%SZ)"
FORCE_CPU=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cpu) FORCE_CPU=1; shift ;;
    --out) OUT="$2"; shift 2 ;;
    *) echo "usage: bash bench/gpu_check.sh [--cpu] [--out DIR]" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"
cd "$ROOT"
STEPS="$OUT/steps.tsv"
: > "$STEPS"
START=$(date +%s)

log() { printf '[gpu_check] %s\n' "$*" | tee -a "$OUT/gpu_check.log"; }

# step NAME SECONDS COMMAND...: run it with a time limit, its output in NAME.txt, a line in steps.tsv
step() {
  local name="$1" limit="$2"; shift 2
  local t0=$(date +%s) rc
  log "$name (at most ${limit} s): $*"
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.txt" 2>&1
  rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" >> "$STEPS"
  log "$name: exit $rc in $(( $(date +%s) - t0 )) s"
}

if [[ "$FORCE_CPU" == 0 ]] && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  MODE=cuda
else
  MODE=cpu
fi
log "mode: $MODE (results in $OUT)"

step environment 60 bash -c "nvidia-smi 2>&1 || echo 'no nvidia-smi'; '$PY' -c '
import sys, onnxruntime as ort
print(\"python\", sys.version.split()[0]); print(\"onnxruntime\", ort.__version__, ort.get_available_providers())
try:
    import torch; print(\"torch\", torch.__version__, \"cuda\", torch.cuda.is_available())
except ImportError:
    print(\"torch not installed\")'"

PROVIDER=cpu
if [[ "$MODE" == cuda ]]; then
  # onnxruntime and onnxruntime-gpu are the same module: one replaces the other
  step install-onnxruntime-gpu 150 bash -c "'$PY' -m pip install --quiet --disable-pip-version-check ${WHEELS:+--no-index --find-links '$WHEELS'} onnxruntime-gpu \
    && '$PY' -m pip uninstall --quiet --yes onnxruntime; '$PY' -m pip install --quiet --force-reinstall --no-deps ${WHEELS:+--no-index --find-links '$WHEELS'} onnxruntime-gpu \
    && '$PY' -c 'import onnxruntime as o, sys; p=o.get_available_providers(); print(p); sys.exit(0 if \"CUDAExecutionProvider\" in p else 1)'"
  if [[ "$(tail -n1 "$STEPS" | cut -f2)" == 0 ]]; then PROVIDER=cuda; else log "no CUDAExecutionProvider: the rest runs on the CPU provider"; fi
fi

if [[ "$PROVIDER" == cuda ]]; then
  step serving-path 90 "$PY" bench/gpu_check.py --provider cuda --count 8192 --out "$OUT"
  step bench-serving 150 "$PY" bench/bench_serving.py --provider cuda --rounds 2 --images 8192 --job-size 256 --clients 32 --per-client 16 --ort-threads 2
  step bench-engine 120 env SYNTHGEN_EXECUTION_PROVIDER=cuda "$PY" bench/bench_engine.py --count 8000 --memory-count 8000
  step bench-train 60 "$PY" bench/bench_train.py --sizes 64 --steps 20
else
  step serving-path 120 "$PY" bench/gpu_check.py --provider cpu --count 256 --out "$OUT"
  step bench-serving 150 "$PY" bench/bench_serving.py --provider cpu --rounds 1 --images 512 --job-size 128 --clients 4 --per-client 4 --ort-threads 1
  step bench-engine 200 env SYNTHGEN_EXECUTION_PROVIDER=cpu "$PY" bench/bench_engine.py --count 400 --memory-count 400
  step bench-train 90 "$PY" bench/bench_train.py --sizes 32 --steps 2 --batch-size 16 --device cpu
fi

"$PY" - "$OUT" "$MODE" "$PROVIDER" "$(( $(date +%s) - START ))" <<'PYEOF'
import json, sys
from pathlib import Path
out, mode, provider, seconds = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
steps = [dict(zip(("name", "exit", "seconds"), line.split("\t"))) for line in (out / "steps.tsv").read_text().splitlines()]
for s in steps:
    s["exit"], s["seconds"] = int(s["exit"]), int(s["seconds"])
serving = json.loads((out / "serving.json").read_text()) if (out / "serving.json").exists() else None
summary = {"mode": mode, "provider": provider, "seconds": seconds, "ok": all(s["exit"] == 0 for s in steps),
           "steps": steps, "serving": serving}
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
lines = [f"# GPU check: mode {mode}, provider {provider}, {seconds} s, {'ok' if summary['ok'] else 'FAILED'}", "",
         "| step | exit | seconds |", "|---|---|---|"] + [f"| {s['name']} | {s['exit']} | {s['seconds']} |" for s in steps]
(out / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PYEOF
grep -q $'\t[1-9][0-9]*\t' "$STEPS" && exit 1
exit 0
