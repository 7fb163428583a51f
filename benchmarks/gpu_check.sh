#!/usr/bin/env bash
# The prepared GPU check: on one GPU, offline, with only the working tree's data, in under 8 minutes.
#
#   make gpu-check                                  # = bash benchmarks/gpu_check.sh
#   LOSSBENCH_COMMIT=<sha> make gpu-check           # where the tree has no .git (a copied checkout)
#   DEVICE=cpu CORES=2 TIMEOUT_SCALE=4 bash benchmarks/gpu_check.sh --tiny
#                                                   # the same steps at smoke size on a CPU (tests)
#
# Steps, each time-boxed (`timeout`) so one slow step cannot eat the others' time (worst case 475 s):
#   gpu_tests   pytest -m gpu                                                            75 s
#   dag         one seed of the full embedded classification and SynthPref protocols     180 s
#               (benchmarks/gpu_check.py config: a few methods covering every trainer path)
#   kernels     the kernels benchmark at the CCE claim's point (CCE, Liger if installed,  75 s
#               torch) and the out-of-cache softmax, with the copy-bandwidth/GEMM bound
#   report      the report of both (claims included)                                      30 s
#   together    seeds trained together vs separately (benchmarks/seeds_together.py,      25 s
#               3 seeds of the smoke MLP, erm and logit_adjust): the GPU's ratio
#   throughput  cost table cuda entries (measured: true) for the tiers' jobs             90 s
# Everything lands in $OUT (default results/gpu_check/): logs/<step>.log, steps.tsv, provenance.json
# (hardware via nvidia-smi and torch, commit, command, per-step wall time and exit code),
# throughput.yaml, and dag/results/gpu_check/ (tidy tables, kernels.csv, report) in the layout
# `lossbench publish` reads. Afterwards, on a machine with the repository:
#   lossbench publish results/gpu_check/dag/results/gpu_check gpu_check_<date> \
#       --config results/gpu_check/config/gpu_check.yaml --note "GPU check, see provenance.json"
#   cp results/gpu_check/provenance.json results/published/gpu_check_<date>/
#   cp results/gpu_check/throughput.yaml config/throughput.yaml   # the measured cuda figures
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-results/gpu_check}
DEVICE=${DEVICE:-cuda}
CORES=${CORES:-8}
SCALE=${TIMEOUT_SCALE:-1}  # multiplies every step's time box (a slow CPU running --tiny)
TINY=""
[ "${1:-}" = "--tiny" ] && TINY="--tiny"
export HF_HUB_OFFLINE=1 BENCH_OFFLINE=1 GPU_CHECK_COMMAND="bash benchmarks/gpu_check.sh $*"
rm -rf "$OUT" && mkdir -p "$OUT/logs"
: > "$OUT/steps.tsv"

step() {  # step NAME TIMEOUT_S CMD...: run CMD under timeout, log it, record wall time and exit code
    local name=$1 limit=$(($2 * SCALE)) t0 rc
    shift 2
    t0=$(date +%s%N)
    echo "== $name (at most ${limit} s)"
    timeout --kill-after=10 "$limit" "$@" > "$OUT/logs/$name.log" 2>&1
    rc=$?
    printf '%s\t%d.%03d\t%d\t%d\n' "$name" $(( ($(date +%s%N) - t0) / 1000000000 )) \
        $(( ($(date +%s%N) - t0) / 1000000 % 1000 )) "$rc" "$limit" >> "$OUT/steps.tsv"
    tail -n 3 "$OUT/logs/$name.log"
}

CFG=$($PY benchmarks/gpu_check.py config "$OUT" $TINY --device "$DEVICE") || exit 1
SNAKE=($PY -m snakemake --workflow-profile none --configfile "$CFG" --directory "$OUT/dag" --cores "$CORES"
       --resources gpu=4 --keep-going --rerun-incomplete)
# at smoke size the jobs are seconds long: run them as threads (one torch import per worker, not per job)
[ -n "$TINY" ] && SNAKE+=(--force-use-threads)
if [ "$DEVICE" = cpu ]; then
    step gpu_tests 75 $PY -m pytest -q -m gpu --collect-only tests  # CPU: that they collect (they skip)
else
    step gpu_tests 75 $PY -m pytest -q -m gpu -p no:cacheprovider tests
fi
step dag 180 "${SNAKE[@]}" results/gpu_check/summary.csv
step kernels 75 "${SNAKE[@]}" results/gpu_check/kernels.csv
step report 30 "${SNAKE[@]}"
step together 25 $PY benchmarks/seeds_together.py --device "$DEVICE" --resources "$OUT/dag/resources" --repeats 2 \
    --methods erm logit_adjust
if [ -n "$TINY" ]; then
    TIERS=("$CFG")
else
    TIERS=(config/tier_embedded_gpu.yaml config/tier_core_claims.yaml)
fi
step throughput 90 $PY benchmarks/cost_table.py --device "$DEVICE" --profiles "${TIERS[@]}" --time-limit $((40 * SCALE)) \
    --out "$OUT/throughput.yaml"
$PY benchmarks/gpu_check.py provenance "$OUT"
