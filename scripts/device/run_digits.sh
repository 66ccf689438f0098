#!/usr/bin/env bash
# Every digits result (experiments/digits/*.yaml) on one GPU machine, within BUDGET_S seconds.
#
#   bash scripts/device/run_digits.sh            # on the device: carry [".whl"]; writes to $OUT
#   bash scripts/device/run_digits.sh --smoke    # CPU rehearsal with the local .venv (a few minutes)
#
# On the device it installs the carried wheels (.whl/*.whl: jsonargparse, datasets,
# huggingface_hub and their dependencies, which that machine lacks) into /tmp/site, checks
# them (scripts/device/check_wheels.py), then runs scripts/device/run_digits.py: both zoo
# builds with --device cuda, then all 12 runs concurrently on the gpu.yaml preset (float32),
# --wandb disabled, each capped by --trainer.max_time so that everything ends within
# BUDGET_S seconds of this script's start (default 330). Results: $OUT/digits_results.json
# and $OUT/digits_log_tail.txt.
#
# The device call (run tool): command "bash scripts/device/run_digits.sh", carry [".whl"],
# timeout_s 450; it ends by itself after about BUDGET_S + 20 seconds.
# The wheels (8 MB; .whl/ is git-ignored through .git/info/exclude) were fetched with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl NAME==VERSION
# for datasets 5.2.0, jsonargparse 4.53.0, docstring-parser 0.18.0, typeshed-client 2.15.0,
# fsspec 2026.9.0, dill 0.4.1, multiprocess 0.70.19, xxhash 4.1.0, einops 0.8.2 and
# typing-extensions 4.16.0. Not huggingface_hub: the device's 1.33 satisfies datasets
# (>=1.31,<3), and a carried 2.x breaks its transformers, which torchmetrics imports. Not wandb:
# --wandb disabled never imports it. The installing is scripts/device/install_wheels.sh.
#
# Environment: OUT (default /tmp/digits_out), BUDGET_S (default 330; smoke: 3000),
# CONCURRENCY (default 12; smoke: 1), PYTHON (default python3; smoke: .venv/bin/python).
set -uo pipefail
T0=$(date +%s.%N)
cd "$(dirname "$0")/../.." || exit 1

SMOKE=0
EXTRA=()
for arg in "$@"; do
  case "$arg" in
    --smoke) SMOKE=1 ;;
    *) EXTRA+=("$arg") ;;
  esac
done
OUT=${OUT:-/tmp/digits_out}
mkdir -p "$OUT"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1

if [ "$SMOKE" = 1 ]; then
  PYTHON=${PYTHON:-.venv/bin/python}
  BUDGET_S=${BUDGET_S:-3000}
  ARGS=(--smoke --concurrency "${CONCURRENCY:-1}")
else
  PYTHON=${PYTHON:-python3}
  BUDGET_S=${BUDGET_S:-330}
  ARGS=(--concurrency "${CONCURRENCY:-12}")
  . scripts/device/install_wheels.sh || { echo "run_digits.sh: no wheels" > "$OUT/digits_log_tail.txt"; exit 2; }
fi

"$PYTHON" scripts/device/run_digits.py --out "$OUT" --t0 "$T0" --budget-s "$BUDGET_S" "${ARGS[@]}" "${EXTRA[@]}" \
  2>&1 | tee /tmp/run_digits_driver.log
STATUS=${PIPESTATUS[0]}
# The driver's own output goes back too (appended to the log tail, which run_digits.py wrote).
{ echo; echo "===== driver (exit $STATUS) ====="; tail -n 200 /tmp/run_digits_driver.log; } >> "$OUT/digits_log_tail.txt"
echo "run_digits.sh: exit $STATUS after $(awk "BEGIN {printf \"%.0f\", $(date +%s.%N) - $T0}")s; results in $OUT"
exit "$STATUS"
