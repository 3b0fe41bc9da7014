#!/usr/bin/env bash
# `relu-sparsity bench --device cuda` on the GPU machine from the bundle (issue: bench takes --device like analyze): the
# OPT-125M-shaped torch.onnx graph of run.sh (exported here if missing) on the first DOCS documents of its generated ids,
# batches of 16 x 256, REPEATS repeats. bench.md / bench.json go to OUT/bench-gpu.
#   bash bench/gpu/run_bench.sh WORK_DIR OUT_DIR [DOCS] [REPEATS]
set -euo pipefail
W=$1; OUT=$2; DOCS=${3:-10}; REPEATS=${4:-3}; HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/env.sh"
[ -f $W/opt125m.onnx ] || python3 $HERE/opt125m.py export $W
head -n $DOCS $W/ids.txt > $W/ids-$DOCS.txt
rm -rf $W/bench-gpu
$R bench --model $W/opt125m.onnx --corpus $W/ids-$DOCS.txt --tokenizer ids --seq-len 256 --batch-size 16 --device cuda --repeats $REPEATS \
  --memory-factor 2 --out $W/bench-gpu 2>&1 | tail -n 60 | tee $OUT/bench-gpu.log
mkdir -p $OUT/bench-gpu && cp $W/bench-gpu/bench.md $W/bench-gpu/bench.json $OUT/bench-gpu/
