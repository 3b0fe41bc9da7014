#!/usr/bin/env bash
# The GPU benchmark of BENCHMARKS.md, run on the GPU machine (no .NET there): the PublishGpu bundle (its .tar.xz parts
# already concatenated and unpacked in $W), an OPT-125M-shaped model exported by torch.onnx, 256,000 generated token ids.
#   bash bench/gpu/run.sh WORK_DIR OUT_DIR
set -euo pipefail
W=$1; OUT=$2; HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/env.sh"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $OUT/machine.txt
lscpu | grep -E "Model name|^CPU\(s\)" | tee -a $OUT/machine.txt
[ -f $W/opt125m.onnx ] || python3 $HERE/opt125m.py export $W
run() { local name=$1; shift; echo "== $name: relu-sparsity analyze $*" | tee -a $OUT/analyze.log
  /usr/bin/time -f "wall %e s, peak RSS %M KB" $R analyze --model $W/opt125m.onnx --corpus $W/ids.txt --tokenizer ids --seq-len 256 "$@" --out $W/$name 2>&1 | grep -v "^ *[0-9,]* tokens " | tee -a $OUT/analyze.log
  mkdir -p $W/results && cp $W/$name/stats.json $W/results/$name.stats.json; }
run gpu-b16 --batch-size 16 --device cuda --timing
run gpu-b64 --batch-size 64 --device cuda --timing
run gpu-b16-64k --batch-size 16 --device cuda --max-tokens 65536
run cpu16-b16-64k --batch-size 16 --device cpu --threads 16 --max-tokens 65536 --timing
run gpu-dense-b16 --batch-size 16 --device cuda --dense-activations
python3 $HERE/opt125m.py torch $W/results 16 2>&1 | grep -v Warning | tee -a $OUT/pytorch.log
python3 $HERE/opt125m.py torch $W/results 64 2>&1 | grep -v Warning | tee -a $OUT/pytorch.log
tar czf $OUT/results.tgz -C $W results
