#!/usr/bin/env bash
# The GPU check: one prepared script for a lent GPU machine, every step time-boxed so the whole
# fits one 10-minute command. It records each step's exit status and seconds, and the runs'
# results, under $OUT:
#   install    kr and what the machine's image lacks (diffusers, opacus, kymatio) from wheels
#              carried in .gpu/wheels (the machine reaches no package index)
#   tiny       `kr run --preset tiny` on CUDA: every stage runs on the GPU
#   cpu        BreastMNIST at the `cpu` preset on CUDA (the CPU machine's table has its times)
#   audit      its experiment-1 audit, 8 reference runs on local processes
#   paper      BreastMNIST at the `paper` preset, cut at its time box (stage times so far)
#
# Prepare on a machine with the package index, from the repository root:
#   pip download --no-deps -d .gpu/wheels diffusers opacus kymatio
#   mkdir -p .gpu/data && cp "$KR_DATA_DIR"/breastmnist*.npz .gpu/data/
#   echo /.gpu/ >> .git/info/exclude
# then run `bash benchmarks/gpu_check.sh` there, carrying .gpu.
# The same script checks itself on a CPU:
#   DEVICE=cpu PRESET=tiny REFERENCES=4 WORKERS=1 PAPER_S=15 bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
DEVICE=${DEVICE:-cuda}
PRESET=${PRESET:-cpu}            # the BreastMNIST run's preset (tiny: the CPU self-check)
REFERENCES=${REFERENCES:-8}
WORKERS=${WORKERS:-4}
PY=${PY:-python3}
RUNS=$(mktemp -d)
echo "device $DEVICE, preset $PRESET, out $OUT"

step() {  # step NAME SECONDS COMMAND…: run it time-boxed, log to $OUT/log.txt, one JSON line per step
    local name=$1 limit=$2 start rc
    shift 2
    start=$(date +%s%N)
    echo "== $name (at most ${limit} s): $*" >> "$OUT/log.txt"
    timeout "$limit" "$@" >> "$OUT/log.txt" 2>&1
    rc=$?
    printf '{"step": "%s", "rc": %d, "ms": %d, "limit_s": %d}\n' \
        "$name" "$rc" "$(( ($(date +%s%N) - start) / 1000000 ))" "$limit" | tee -a "$OUT/steps.jsonl"
    return $rc
}

keep() {  # keep NAME RUN: the run's results and stage times, for the record
    [ -f "$2/results.json" ] && cp "$2/results.json" "$OUT/$1-results.json"
    [ -f "$2/manifest.json" ] && cp "$2/manifest.json" "$OUT/$1-manifest.json"
}

if [ -d .gpu/wheels ]; then
    step install 90 bash -c "$PY -m pip install -q --no-index --find-links .gpu/wheels diffusers opacus kymatio \
        && $PY -m pip install -q --no-deps --no-build-isolation -e ."
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" | tee -a "$OUT/log.txt"
DATA=(--data-dir "${DATA_DIR:-.gpu/data}")
[ -d "${DATA_DIR:-.gpu/data}" ] || DATA=()

step tiny 90 "$PY" -m kr run --preset tiny --device "$DEVICE" --out "$RUNS/tiny"
keep tiny "$RUNS/tiny"
step cpu 180 "$PY" -m kr run --dataset breastmnist "${DATA[@]}" --preset "$PRESET" --device "$DEVICE" \
    --out "$RUNS/breast"
step audit 180 "$PY" -m kr audit "$RUNS/breast" "${DATA[@]}" --device "$DEVICE" \
    --set "audit.references=$REFERENCES" --executor processes --workers "$WORKERS"
keep breast "$RUNS/breast"   # audited or not: results.json holds what finished
step paper "${PAPER_S:-90}" "$PY" -m kr run --dataset breastmnist "${DATA[@]}" --preset paper --device "$DEVICE" \
    --out "$RUNS/paper"
[ -f "$RUNS/paper/manifest.json" ] && cp "$RUNS/paper/manifest.json" "$OUT/paper-manifest.json"
rm -rf "$RUNS"
echo "done: $OUT"
