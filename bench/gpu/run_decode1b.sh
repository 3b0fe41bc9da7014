#!/usr/bin/env bash
# Issue 38's GPU decoding benchmark, on the GPU host, once `decode1b.py all $W` has built the models (it waits for them):
# this project's tool (the PublishGpu bundle, carried in parts to $W/p) analyses each model's activity on Brown,
# writes the fixed-shape sparse form (sparse-decode --device cuda) and times batch-1 greedy decoding of both with the
# cache on the device (decode-bench --device cuda), then profiles the decode steps with launches blocking.
#   W=/tmp/w bash bench/gpu/run_decode1b.sh OUT_DIR
set -uo pipefail
W=${W:-/tmp/w}; OUT=$1; HERE=$(cd "$(dirname "$0")" && pwd)
if [ ! -x $W/relu-sparsity-gpu-linux-x64/relu-sparsity ]; then
  cat $W/p/part* | tar x -C $W && xz -dc $W/cuda.xz > $W/libcuda_provider && tar xJf $W/rest.tar.xz -C $W \
    && mv $W/libcuda_provider $W/relu-sparsity-gpu-linux-x64/libonnxruntime_providers_cuda.so && rm -f $W/cuda.xz $W/rest.tar.xz
fi
source "$HERE/env.sh"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $OUT/machine.txt
$R doctor 2>&1 | tail -n 4
until grep -q "exports done" $W/log 2>/dev/null; do grep -q Traceback $W/log && { tail -n 30 $W/log; exit 1; }; sleep 5; done
until grep -q "all done" $W/log; do grep -q Traceback $W/log && break; sleep 5; done  # PyTorch's timings run alone
for f in ${FAMILIES:-llama1b opt125m}; do
  L=$OUT/$f.log; m=$W/$f.onnx
  echo "== $f ($(cat $m.exporter 2>/dev/null))" | tee -a $L
  # Activity on 256 windows of 512 training tokens: the capacities' statistics.
  /usr/bin/time -f "analyze: %e s, peak RSS %M KB" $R analyze --model $m --corpus $W/train_ids.txt --tokenizer ids --seq-len 512 \
    --batch-size 16 --device cuda --max-tokens 131072 --out $W/$f-analysis 2>&1 | grep -vE "^\s*[0-9.]+ *%|windows/s" | tail -n 40 | tee -a $L
  /usr/bin/time -f "sparse-decode: %e s, peak RSS %M KB" $R sparse-decode --model $m --stats $W/$f-analysis/stats.json --device cuda \
    --out $W/$f-sparse 2>&1 | tee -a $L
  models=("dense=$m")
  [ -f $W/$f-sparse/model.onnx ] && models+=("sparse-decode=$W/$f-sparse/model.onnx")
  /usr/bin/time -f "decode-bench: %e s" $R decode-bench --corpus $W/heldout_ids.txt --tokenizer ids --prompt-tokens 64 --new-tokens 128 \
    --threads 1 --runs 3 --device cuda --out $W/$f-bench --model "${models[@]}" 2>&1 | tail -n 30 | tee -a $L
  CUDA_LAUNCH_BLOCKING=1 $R decode-bench --corpus $W/heldout_ids.txt --tokenizer ids --prompt-tokens 64 --new-tokens 16 \
    --threads 1 --runs 1 --device cuda --profile --out $W/$f-profile --model "${models[@]}" 2>&1 | grep -v "^|" | tail -n 70 | tee -a $L
  mkdir -p $W/results/$f
  cp $W/$f-analysis/stats.json $W/$f-analysis/counts.json $W/$f-bench/decode.* $W/results/$f/ 2>/dev/null
  cp $W/$f-profile/decode.md $W/results/$f/profile.md; cp $W/$f-profile/profile-*.csv $W/results/$f/ 2>/dev/null
  cp $W/$f-sparse/MODEL_CARD.md $W/results/$f/ 2>/dev/null
  cp $W/$f/train.jsonl $W/$f-pytorch.json $W/results/$f/ 2>/dev/null
done
cp $W/log $W/results/pipeline.log
tar czf $OUT/results.tgz -C $W results
