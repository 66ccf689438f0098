#!/usr/bin/env bash
# GPU checks for a lent CUDA machine, run from the repository root:
#   1. the CUDA-only tests (every NF-layer on CUDA against the CPU; Lightning's device transfer);
#   2. the layer benchmark against the reference nfn 0.1.2, eager (benchmarks/README.md, "GPU");
#   3. the same under torch.compile for the cases in COMPILE_CASES (default: the paper's networks
#      at their smaller batch; compiling all 38 models does not fit a 15-minute lease);
#   4. the zoo builders' benchmark on the GPU (networks/s, many at once vs one at a time);
#      BUILDERS=0 skips it.
# Needs torch with CUDA, pytest, einops and lightning there, and benchmarks/.reference and .whl
# carried along (bash benchmarks/setup_reference.sh makes the first; see run_digits.sh for .whl).
# The builders' one-at-a-time side is slow on a GPU (kernel launches): BUILDERS_ONLY (e.g.
# "SIRENs (nfn)") and BUILDERS_ROUNDS (default 1) keep that step inside its limit. Results go to $OUT (default /tmp/gpu_checks):
# log.txt, layers_*.{md,json}, builders_*.md. Each step has its own time limit, so one hang
# cannot eat the others' time.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/gpu_checks}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 WANDB_MODE=offline HF_HUB_OFFLINE=1
PY=${PY:-python3}
exec > >(tee -a "$OUT/log.txt") 2>&1

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(), 'CPU threads', torch.get_num_threads())"

# The project's dependencies that the machine lacks (einops for the reference, datasets for the builders).
. scripts/device/install_wheels.sh

echo "== CUDA tests"
timeout "${TEST_LIMIT:-120}" $PY -m pytest -q -p no:cacheprovider tests/layers/test_cuda.py 2>&1 | tail -15
timeout 60 $PY -m pytest -q -p no:cacheprovider tests/test_weightspace.py -k "cuda or pin_memory" 2>&1 | tail -5

echo "== layer benchmark (eager)"
timeout "${LAYERS_LIMIT:-200}" $PY benchmarks/bench_layers.py --device cuda --no-compile --out "$OUT/layers" 2>&1 | grep -v "^timing"

echo "== layer benchmark (compiled subset)"
COMPILE_CASES=${COMPILE_CASES:-"predict-gen*B=8 edit* classify*"}
# shellcheck disable=SC2086  # one glob per word
timeout "${COMPILE_LIMIT:-240}" $PY benchmarks/bench_layers.py --device cuda --compile --cases $COMPILE_CASES \
  --out "$OUT/compiled" 2>&1 | grep -v "^timing"

[ "${BUILDERS:-1}" = 0 ] && echo "== builders benchmark skipped (BUILDERS=0)" || {
echo "== builders benchmark"
timeout "${BUILDERS_LIMIT:-150}" $PY -m benchmarks.bench_builders --device cuda --rounds "${BUILDERS_ROUNDS:-1}" \
  --only "${BUILDERS_ONLY:-}" --out "$OUT/builders" 2>&1
}

# At most 8 files come back, no deeper than $OUT/a/b/file: keep the markdown and JSON.
find "$OUT" -name "*.csv" -delete
find "$OUT" -mindepth 2 -type f | while read -r f; do mv "$f" "$OUT/$(basename "$(dirname "$f")")_$(basename "$f")"; done
find "$OUT" -mindepth 1 -type d -empty -delete
ls -la "$OUT"
