#!/usr/bin/env bash
# The OPT-125M-shaped TorchScript graph of run.sh, rewritten by `relu-sparsity fuse-attention`, against itself unfused:
# analyze --timing on the CPU at 16 threads (first 128 windows, batches of 8) and 2 threads (first 64).
#   bash bench/peers/run_fused.sh WORK_DIR OUT_DIR     (the PublishGpu bundle unpacked in WORK_DIR)
set -euo pipefail
W=$1; OUT=$2; GPU=$(cd "$(dirname "$0")/../gpu" && pwd)
source "$GPU/env.sh"
[ -f $W/opt125m.onnx ] || python3 $GPU/opt125m.py export $W 2>/dev/null
$R fuse-attention --model $W/opt125m.onnx --out $W/opt125m.fused.onnx | tee -a $OUT/fused.log
MODELS=(opt125m opt125m.fused); RUNS=("cpu 8 16 32768" "cpu 8 2 16384"); CORPUS=$W/ids.txt; LOG=fused.log
timed_runs
