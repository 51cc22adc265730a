#!/usr/bin/env bash
# Wall time of one transfer case per protocol (finetune, linear, knn), this checkout against
# another, in separate processes interleaved over ROUNDS rounds (this VM's timings move 12-18%
# between processes: compare within a round).
#
#   scripts/bench_protocol_cost.sh OTHER_CHECKOUT WEIGHTS DATA [ROUNDS]
#
# OTHER_CHECKOUT  a checkout to compare with (e.g. `git worktree add /tmp/old 1996f52`)
# WEIGHTS         ARCH@FILE of pretrained weights (scripts/digits_transfer.py writes some)
# DATA            an image folder (scripts/digits_transfer.py: OUT/digits59)
#
# Variants per round: `other` (OTHER_CHECKOUT, $OTHER_ARGS, default the old study's recipe
# "--train-batch-sizes 128 --epochs 20"), `tuned` (this checkout's defaults at batch 32) and
# `untuned` (the same with --tune off). Subset $SUBSET (default 20pc), one seed. Prints each
# case's wall time (case_wall_s), its optimiser steps and top-1, read from the runs' JSON.
set -euo pipefail
other=$(cd "$1" && pwd); weights=$2; data=$3; rounds=${4:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
out=$(mktemp -d)
common=(benchmarks -q -p no:cacheprovider -m train "--backbones=$weights" --protocols=finetune,linear,knn
        "--dataset=imagefolder:$data" "--subsets=${SUBSET:-20pc}" --seeds=1 --img-sizes=32 --devices=cpu)
for round in $(seq "$rounds"); do
  for variant in other tuned untuned; do
    dir=$out/$variant-$round; mkdir -p "$dir"
    case $variant in
      other) tree=$other; read -r -a extra <<< "${OTHER_ARGS:---train-batch-sizes 128 --epochs 20}";;
      tuned) tree=$here; extra=(--train-batch-sizes 32);;
      untuned) tree=$here; extra=(--train-batch-sizes 32 --tune off);;
    esac
    (cd "$tree" && PYTHONPATH="$tree" python3 -m pytest "${common[@]}" "${extra[@]}" "--feature-cache=$dir/f" \
        "--checkpoint-dir=$dir/c" "--benchmark-storage=file://$dir/s" "--benchmark-json=$dir/run.json" > "$dir/log" 2>&1) \
      || { echo "$variant round $round failed: $dir/log" >&2; exit 1; }
  done
done
python3 - "$out" <<'PY'
import glob, json, sys
rows = {}
for path in sorted(glob.glob(f"{sys.argv[1]}/*-*/run.json")):
    variant, rnd = path.split("/")[-2].rsplit("-", 1)
    for bench in json.load(open(path))["benchmarks"]:
        e = bench["extra_info"]
        rows.setdefault((e["protocol"], variant), []).append((int(rnd), e["case_wall_s"], e.get("steps") or e.get("steps_run"), e["top1"]))
print("| protocol | code | case wall s per round | optimiser steps | top-1 |\n|---|---|---|---|---|")
for (protocol, variant), values in sorted(rows.items()):
    values.sort()
    print(f"| {protocol} | {variant} | {', '.join(f'{v[1]:.1f}' for v in values)} | {values[0][2] or '-'} | {values[0][3]:.1f} |")
PY
echo "runs: $out"
