#!/usr/bin/env bash
# analyze --device with one and several devices (BENCHMARKS.md "Several GPUs"): the OPT-125M-shaped graph of run.sh,
# CORPUS_COPIES copies of its 256,000 generated ids (default 80: 20.5M tokens), windows of 256, batch 16, fp32 and fp16;
# on 1, 2, 4 and 8 GPUs as far as the host has them (cuda:0,...,cuda:n-1), steady state from --timing.
#   bash bench/gpu/run_devices.sh WORK_DIR OUT_DIR [CORPUS_COPIES]
set -euo pipefail
W=$1; OUT=$2; COPIES=${3:-80}; HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/env.sh"
LOG=devices.log
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $OUT/machine.txt
lscpu | grep -E "Model name|^CPU\(s\)" | tee -a $OUT/machine.txt
[ -f $W/opt125m.onnx ] || python3 $HERE/opt125m.py export $W
mkdir -p $W/corpus-many && for i in $(seq $COPIES); do ln -sf $W/ids.txt $W/corpus-many/part$i.txt; done
gpus=$(nvidia-smi --list-gpus | wc -l)
for precision in fp32 fp16; do
  for n in 1 2 4 8; do
    [ $n -le $gpus ] || continue
    devices=$(seq -s, -f "cuda:%g" 0 $((n - 1)))
    echo "== $n GPU(s), $precision: --device $devices" | tee -a $OUT/$LOG
    /usr/bin/time -f "wall %e s, peak RSS %M KB" $R analyze --model $W/opt125m.onnx --corpus $W/corpus-many --tokenizer ids --seq-len 256 --batch-size 16 \
      --device $devices --precision $precision --timing --out $W/devices-$n-$precision 2>&1 | grep -E "Timing|devices:|wall|error|^ *(0|11) " | tee -a $OUT/$LOG
  done
done
# One GPU through cuda:all (one device: the single-device path) must equal cuda:0's counts.
$R analyze --model $W/opt125m.onnx --corpus $W/ids.txt --tokenizer ids --seq-len 256 --batch-size 16 --device cuda:all --out $W/devices-all 2>&1 | grep -E "cuda:all|error" | tee -a $OUT/$LOG
$R analyze --model $W/opt125m.onnx --corpus $W/ids.txt --tokenizer ids --seq-len 256 --batch-size 16 --device cuda:0 --out $W/devices-0 2>&1 | grep -E "error" | tee -a $OUT/$LOG || true
cmp $W/devices-all/counts.json $W/devices-0/counts.json && echo "cuda:all = cuda:0: counts.json identical" | tee -a $OUT/$LOG
