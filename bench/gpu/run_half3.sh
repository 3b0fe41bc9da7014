#!/usr/bin/env bash
# Third half-precision run (run 16): the peak's position in a window three ways (an experiment build reading
# RELU_SPARSITY_TOP_WINDOWS, not in the committed code: ArgMax; min = the first position equal to a ReduceMax; topk1 =
# TopK with k = 1; ArgMax was kept), with
# --top-examples 20 at batches of 64 and 16, fp16; statistics alone for reference; the Llama fixture in bf16.
#   bash bench/gpu/run_half3.sh WORK_DIR OUT_DIR
set -uo pipefail
W=$1; OUT=$2; HERE=$(cd "$(dirname "$0")" && pwd); FX=$HERE/../../tests/fixtures/external
source "$HERE/env.sh"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $OUT/machine.txt
[ -f $W/opt125m.onnx ] || python3 $HERE/opt125m.py export $W
mkdir -p $W/results
a() { local name=$1; shift; echo "== $name: analyze $*" | tee -a $OUT/analyze.log
  $R analyze --model $W/opt125m.onnx --corpus $W/ids.txt --tokenizer ids --seq-len 256 --device cuda --precision fp16 "$@" --out $W/$name 2>&1 \
    | grep -E "Timing|error|Profile|^  [A-Z]" | tee -a $OUT/analyze.log
  [ -f $W/$name/top_examples_5.csv ] && cp $W/$name/top_examples_5.csv $W/results/$name.top5.csv; }
for b in 64 16; do
  a stats-b$b --batch-size $b --timing
  for v in argmax min topk1; do RELU_SPARSITY_TOP_WINDOWS=$v a top20-$v-b$b --batch-size $b --top-examples 20 --timing; done
done
RELU_SPARSITY_TOP_WINDOWS=min CUDA_LAUNCH_BLOCKING=1 a profile-top20-min --batch-size 64 --max-tokens 65536 --top-examples 20 --profile
for f in llama.dynamo gpt2.dynamo; do for p in fp32 bf16; do
  $R analyze --model $FX/$f.onnx --corpus $FX/heldout.txt --tokenizer bytes --seq-len 32 --batch-size 4 --device cuda --precision $p \
    --out $W/f-$f-$p > /dev/null 2>>$OUT/analyze.log && cp $W/f-$f-$p/stats.json $W/results/$f-$p.stats.json || echo "$f $p failed" | tee -a $OUT/analyze.log
done; done
tar czf $OUT/results.tgz -C $W results
