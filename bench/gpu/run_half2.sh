#!/usr/bin/env bash
# Second half-precision run (BENCHMARKS.md "GPU half precision", run 15): after fp16 counts moved to fp16 products and
# bf16 kept Sin/Cos in float32. fp16 statistics and --top-examples 20 at batches of 64 and 16, with and without
# --cuda-graph; CUDA_LAUNCH_BLOCKING=1 profiles of both; the two forms of the peak's position (ArgMax, or the first
# position equal to a ReduceMax: RELU_SPARSITY_TOP_WINDOWS=min, an experiment build only); the fixtures in bf16.
#   bash bench/gpu/run_half2.sh WORK_DIR OUT_DIR
set -uo pipefail
W=$1; OUT=$2; HERE=$(cd "$(dirname "$0")" && pwd); FX=$HERE/../../tests/fixtures/external
source "$HERE/env.sh"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $OUT/machine.txt
[ -f $W/opt125m.onnx ] || python3 $HERE/opt125m.py export $W
mkdir -p $W/results
a() { local name=$1; shift; echo "== $name: analyze $*" | tee -a $OUT/analyze.log
  $R analyze --model $W/opt125m.onnx --corpus $W/ids.txt --tokenizer ids --seq-len 256 --device cuda --precision fp16 "$@" --out $W/$name 2>&1 \
    | grep -vE "^ *[0-9,]+ tokens |^ +[0-9]+ +3072|^layer|^Wrote|^Attention fused" | tee -a $OUT/analyze.log
  [ -f $W/$name/stats.json ] && cp $W/$name/stats.json $W/results/$name.stats.json
  [ -f $W/$name/top_examples_5.csv ] && cp $W/$name/top_examples_5.csv $W/results/$name.top5.csv; }
for b in 64 16; do
  a fp16-b$b --batch-size $b --timing
  a fp16-graph-b$b --batch-size $b --cuda-graph --timing
  a top20-b$b --batch-size $b --top-examples 20 --timing
  RELU_SPARSITY_TOP_WINDOWS=min a top20min-b$b --batch-size $b --top-examples 20 --timing
  a top20-graph-b$b --batch-size $b --top-examples 20 --cuda-graph --timing
done
CUDA_LAUNCH_BLOCKING=1 a profile-stats --batch-size 64 --max-tokens 65536 --profile
CUDA_LAUNCH_BLOCKING=1 a profile-top20 --batch-size 64 --max-tokens 65536 --top-examples 20 --profile
CUDA_LAUNCH_BLOCKING=1 RELU_SPARSITY_TOP_WINDOWS=min a profile-top20min --batch-size 64 --max-tokens 65536 --top-examples 20 --profile
for f in opt.dynamo llama.dynamo; do for p in fp32 bf16; do
  $R analyze --model $FX/$f.onnx --corpus $FX/heldout.txt --tokenizer bytes --seq-len 32 --batch-size 4 --device cuda --precision $p \
    --out $W/f-$f-$p > /dev/null 2>>$OUT/analyze.log && cp $W/f-$f-$p/stats.json $W/results/$f-$p.stats.json || echo "$f $p failed" | tee -a $OUT/analyze.log
done; done
tar czf $OUT/results.tgz -C $W results
