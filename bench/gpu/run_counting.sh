#!/usr/bin/env bash
# GPU rows of bench/peers/run.sh again, after counting moved to a thread of its own (bundle unpacked in $W).
#   bash bench/gpu/run_counting.sh WORK_DIR OUT_DIR
set -euo pipefail
W=$1; OUT=$2; HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/env.sh"
[ -f $W/opt125m.onnx ] || python3 $HERE/opt125m.py export $W
for b in 16 64; do for p in fp32 fp16; do
  echo "== gpu-b$b-$p: relu-sparsity analyze --batch-size $b --device cuda --precision $p --timing" | tee -a $OUT/analyze.log
  $R analyze --model $W/opt125m.onnx --corpus $W/ids.txt --tokenizer ids --seq-len 256 --batch-size $b --device cuda --precision $p --timing --out $W/gpu-b$b-$p 2>&1 \
    | grep -E "Timing|^ *(0|11) " | tee -a $OUT/analyze.log
done; done
