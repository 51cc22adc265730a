#!/usr/bin/env bash
# Run scripts/gpu_proof.py from the source tree on a machine without network (torch installed).
#
#   scripts/gpu_proof.sh wheels [DIR]   on a machine that reaches PyPI: the suite's dependencies the
#                                       lent GPU machine lacks, as wheels for CPython 3.12 on x86-64
#                                       Linux, at the lock's versions, into DIR (default .whl)
#   scripts/gpu_proof.sh [ARGS...]      offline: install the wheels in $GPU_PROOF_WHEELS (default .whl),
#                                       if any, into a private folder ($GPU_PROOF_SITE, default
#                                       /tmp/gpu-proof-site; nothing else is touched), then run
#                                       python3 scripts/gpu_proof.py ARGS (default: --out /tmp/gpu-proof)
#
# The machine's Python lists no fvcore (nor iopath, yacs, termcolor, which fvcore needs); every
# other dependency in pyproject.toml is there. gpu_proof.py's summary names what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
wheels="${GPU_PROOF_WHEELS:-.whl}"

if [[ "${1:-}" == wheels ]]; then
  dir="${2:-$wheels}"
  mkdir -p "$dir"
  pin() { grep -i "^$1==" requirements/constraints.txt; }
  # Wheels only (nothing builds on the target), for its interpreter and platform; no dependencies:
  # pyyaml, tqdm, tabulate, pillow, portalocker and typing-extensions are on it already.
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 -d "$dir" "$(pin yacs)" "$(pin termcolor)"
  # fvcore and iopath 0.1.10 are on PyPI as source only: build them here. Both are pure Python,
  # so the wheels (py3-none-any) install on any CPython 3.
  python3 -m pip wheel --no-deps -w "$dir" "$(pin fvcore)" "$(pin iopath)"
  ls -l "$dir"
  exit 0
fi

if compgen -G "$wheels/*.whl" >/dev/null; then
  site="${GPU_PROOF_SITE:-/tmp/gpu-proof-site}"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$wheels"/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
[[ $# -gt 0 ]] || set -- --out /tmp/gpu-proof
exec python3 scripts/gpu_proof.py "$@"
