#!/usr/bin/env bash
# Installs the reference implementation nfn==0.1.2 (MIT, https://github.com/AllanYangZhou/nfn)
# into benchmarks/.reference, where bench_layers.py imports it from. It is never a dependency
# of nfn-lab: --no-deps leaves the environment alone (nfn needs only torch, einops and numpy,
# which nfn-lab already brings). Rerunning replaces the folder.
#
# Usage: bash benchmarks/setup_reference.sh   (PYTHON=... to pick the interpreter; default .venv)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-$here/../.venv/bin/python}"
if [ ! -x "$python" ]; then
    python=python3
fi
target="$here/.reference"

rm -rf "$target"
"$python" -m pip install --no-deps --target "$target" "nfn==0.1.2"
echo "nfn 0.1.2 installed in $target"
