#!/usr/bin/env bash
# Gate RUN (a run file) against the committed smoke baseline of its machine class: the one gate
# of both workflows (bench.yml per pull request, bench-sharded.yml on the merged shards). The
# noise policy behind these values is in bench.yml's header. Exit: compare's code (0 ok,
# 1 regressions, 2 not comparable).
set -euo pipefail
run=$1
# Saved as baselines/<baseline_key>/NNNN_smoke.json by `pytest benchmarks -m smoke
# --benchmark-save=smoke` (the README's main job); the newest save of that name is used.
: "${BASELINE_NAME:=smoke}"
# Used when this runner's CPU has no smoke baseline: deterministic metrics only (--force);
# the committed baseline of the development machine class.
: "${FALLBACK_BASELINE:=Linux-CPython-3.11-64bit-cpu-amd-epyc/smoke}"
: "${CI_LATENCY_TOLERANCE:=latency_p50_ms:25%}"
key=$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["machine_info"]["baseline_key"])' "$run")
if ls "baselines/$key"/[0-9][0-9][0-9][0-9]_"$BASELINE_NAME".json >/dev/null 2>&1; then
  args=("$key/$BASELINE_NAME" "$run" --fail-on "$CI_LATENCY_TOLERANCE")
else
  echo "::warning::no $BASELINE_NAME baseline for $key; gating params/gmacs/accuracy only against $FALLBACK_BASELINE"
  # Instructions depend on the kernels the CPU's capability picks (AVX2 vs AVX-512): off like latency.
  args=("$FALLBACK_BASELINE" "$run" --force --fail-on "latency_p50_ms:off,instructions:off,peak_mem_bytes:off,peak_train_mem_bytes:off")
fi
python -m harness compare "${args[@]}" --fail-on-missing --markdown | tee -a "${GITHUB_STEP_SUMMARY:-/dev/null}"
