#!/usr/bin/env bash
# Re-measures every CPU figure of benchmarks/README.md, one benchmark after the other, into
# benchmarks/out/ (ignored by git), and writes how long each took to benchmarks/out/durations.md.
# The README's tables show what this script measures, with these exact options.
#
# Usage (from anywhere; PYTHON=... picks the interpreter, default .venv/bin/python):
#   bash benchmarks/run_all.sh                # the default steps
#   ALL=1 bash benchmarks/run_all.sh          # also the long ones: compiled (38 models), build_cnn
#   ONLY="layers gemm" bash benchmarks/run_all.sh   # some steps, by name
#
# Default steps: layers, no_faults, gemm, products, zoo_loading, inr_loading, builders, build_inr.
# Long steps: compiled (the torch.compile table), build_cnn (the default CNN zoo build).
# The reference nfn 0.1.2 is installed into benchmarks/.reference first if it is missing.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
python="${PYTHON:-$repo/.venv/bin/python}"
out="$repo/benchmarks/out"
mkdir -p "$out"
durations="$out/durations.md"
only="${ONLY:-layers no_faults gemm products zoo_loading inr_loading builders build_inr${ALL:+ compiled build_cnn}}"

if [ ! -d benchmarks/.reference/nfn ]; then
    PYTHON="$python" bash benchmarks/setup_reference.sh
fi

{
    echo "# benchmarks/run_all.sh, started $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "git revision: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo +uncommitted)"
    echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores"
    echo "torch: $("$python" -c 'import torch; print(torch.__version__)'), load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo "| step | seconds |"
    echo "|---|---:|"
} > "$durations"

# step NAME COMMAND...: runs COMMAND if NAME is selected and appends its wall time to durations.md.
step() {
    local name="$1"
    shift
    case " $only " in *" $name "*) ;; *) return 0 ;; esac
    echo "=== $name: $*" >&2
    local start=$SECONDS
    "$@"
    echo "| $name | $((SECONDS - start)) |" >> "$durations"
}

# build KIND: the default zoo build of KIND (cnn or inr), timed end to end (imports and writing included).
build() {
    local tmp
    tmp="$(mktemp -d)"
    "$python" -m nfn_lab zoo build "$1" "$tmp/zoo" --quiet
    rm -rf "$tmp"
}

# no_faults: the cases that miss their target, with glibc keeping freed memory (no page faults).
no_faults() {
    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 "$python" -m benchmarks.bench_layers --no-compile \
        --cases 'edit*' 'predict-gen NP cnn-zoo B=8' 'NPAttention*B=8' 'NPAttention siren B=32' --out "$out/no_faults"
}

start_all=$SECONDS
step layers "$python" -m benchmarks.bench_layers --no-compile --out "$out"
step no_faults no_faults
step gemm "$python" -m benchmarks.bench_gemm --out-dir "$out"
step products "$python" -m benchmarks.product_share --cases 'edit*' 'predict-gen*' 'NPAttention*' 'classify*' \
    --out "$out"
step zoo_loading "$python" -m benchmarks.bench_zoo_loading --networks 1000 --big-networks 10000 --rounds 5 \
    --out "$out"
step inr_loading "$python" -m benchmarks.bench_inr_loading --out "$out"
step builders "$python" -m benchmarks.bench_builders --rounds 2 --out "$out"
step build_inr build inr
step compiled "$python" -m benchmarks.bench_layers --compile --out "$out/compiled"
step build_cnn build cnn
echo "| total | $((SECONDS - start_all)) |" >> "$durations"
cat "$durations"
