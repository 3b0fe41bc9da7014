#!/usr/bin/env bash
# The peer comparison of BENCHMARKS.md, run on the GPU machine (no .NET there) from the PublishGpu bundle unpacked in
# $W: an OPT-125M-shaped Hugging Face model exported by torch.onnx (TorchScript), the same generated windows for every
# contender. GPU: analyze against PyTorch 2.11 (bare forward and forward hooks, fp32 and bf16). CPU: analyze against
# PyTorch at 2, 8 and 16 threads (fp32), on the first 128 windows (32,768 tokens) in batches of 8.
#   bash bench/peers/run.sh WORK_DIR OUT_DIR
set -euo pipefail
W=$1; OUT=$2; GPU=$(cd "$(dirname "$0")/../gpu" && pwd)
source "$GPU/env.sh"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; lscpu | grep -E "Model name|^CPU\(s\)|Thread\(s\) per core|Core\(s\) per socket|Socket\(s\)";
  python3 -c "import torch, transformers, onnxruntime; print('torch', torch.__version__, 'transformers', transformers.__version__, 'onnxruntime (python)', onnxruntime.__version__)"; } | tee $OUT/machine.txt
[ -f $W/opt125m.onnx ] || python3 $GPU/opt125m.py export $W
mkdir -p $W/results
run() { local name=$1; shift; echo "== $name: relu-sparsity analyze $*" | tee -a $OUT/analyze.log
  /usr/bin/time -f "wall %e s, peak RSS %M KB" $R analyze --model $W/opt125m.onnx --corpus $W/ids.txt --tokenizer ids --seq-len 256 "$@" --out $W/$name 2>&1 \
    | grep -v "^ *[0-9,]* tokens " | tee -a $OUT/analyze.log
  cp $W/$name/stats.json $W/results/$name.stats.json; }
run gpu-b16 --batch-size 16 --device cuda --timing
run gpu-b64 --batch-size 64 --device cuda --timing
for t in 2 8 16; do run cpu-t$t-b8 --batch-size 8 --device cpu --threads $t --max-tokens 32768 --timing; done
python3 $GPU/opt125m.py torch $W/results 16 2>&1 | grep -v Warning | tee -a $OUT/pytorch.log
for t in 2 8 16; do python3 $GPU/opt125m.py cpu $W/results 8 $t 128 2>&1 | grep -v Warning | tee -a $OUT/pytorch.log; done
tar czf $OUT/results.tgz -C $W results
