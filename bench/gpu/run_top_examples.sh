#!/usr/bin/env bash
# Overhead of analyze --top-examples 20 over statistics alone (BENCHMARKS.md "Top examples"), on the GPU machine:
#   GPU: the OPT-125M-shaped torch.onnx graph of run.sh, 256,000 generated ids, batches of 16 and 64 x 256, fp32;
#   CPU, 2 threads: the quick model on Brown's held-out text (carried: models/quick/model.onnx, data/brown/heldout.txt,
#   data/brown/tokenizer), batch 16 x 128, and on 8 copies of it.
# Settings interleaved, ROUNDS rounds; steady state from --timing.
#   bash bench/gpu/run_top_examples.sh WORK_DIR OUT_DIR [ROUNDS] [gpu]     (gpu: the GPU rows only)
set -euo pipefail
W=$1; OUT=$2; ROUNDS=${3:-3}; ONLY=${4:-}; HERE=$(cd "$(dirname "$0")" && pwd); REPO=$(cd "$HERE/../.." && pwd)
source "$HERE/env.sh"
LOG=top-examples.log
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $OUT/machine.txt
lscpu | grep -E "Model name|^CPU\(s\)" | tee -a $OUT/machine.txt
[ -f $W/opt125m.onnx ] || python3 $HERE/opt125m.py export $W
for round in $(seq $ROUNDS); do
  for b in 16 64; do for k in 0 20; do
    echo "== round $round gpu batch=$b k=$k" | tee -a $OUT/$LOG
    $R analyze --model $W/opt125m.onnx --corpus $W/ids.txt --tokenizer ids --seq-len 256 --batch-size $b --device cuda --top-examples $k --timing \
      --out $W/top-gpu-$b-$k 2>&1 | grep -E "Timing|error" | tee -a $OUT/$LOG
  done; done
  [ "$ONLY" = gpu ] && continue
  for k in 0 20; do
    echo "== round $round cpu2 k=$k" | tee -a $OUT/$LOG
    $R analyze --model $REPO/models/quick/model.onnx --corpus $REPO/data/brown/heldout.txt \
      --tokenizer bpe:$REPO/data/brown/tokenizer/vocab.json,$REPO/data/brown/tokenizer/merges.txt --seq-len 128 --batch-size 16 --device cpu --threads 2 \
      --top-examples $k --timing --out $W/top-cpu-$k 2>&1 | grep -E "Timing|error" | tee -a $OUT/$LOG
  done
done
[ "$ONLY" = gpu ] && exit 0
# CPU, 2 threads, a longer corpus (8 copies of the held-out text, 196 batches): the floors have more batches to rise.
mkdir -p $W/held8 && for i in $(seq 8); do ln -sf $REPO/data/brown/heldout.txt $W/held8/h$i.txt; done
for round in $(seq $ROUNDS); do
  for k in 0 20; do
    echo "== long round $round cpu2 k=$k" | tee -a $OUT/$LOG
    $R analyze --model $REPO/models/quick/model.onnx --corpus $W/held8 \
      --tokenizer bpe:$REPO/data/brown/tokenizer/vocab.json,$REPO/data/brown/tokenizer/merges.txt --seq-len 128 --batch-size 16 --device cpu --threads 2 \
      --top-examples $k --timing --out $W/top-long-$k 2>&1 | grep -E "Timing|error" | tee -a $OUT/$LOG
  done
done
# The examples of the GPU run equal the CPU's? (fp32 kernels differ, so values may differ in the last bits; the units and tokens should agree.)
cp $W/top-gpu-16-20/top_examples_0.csv $OUT/gpu-top_examples_0.csv
cp $W/top-cpu-20/top_examples_1.csv $OUT/cpu-quick-top_examples_1.csv
