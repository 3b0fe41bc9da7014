#!/usr/bin/env bash
# On the GPU host (no .NET, no libtorch): the PublishGpu bundle and a with-past export carried in parts, then
# bench/decode/run.sh with the bundle's relu-sparsity, timing decode-bench with the CUDA provider and on the host's CPU.
#   W=/tmp/w bash bench/decode/run_gpu.sh   (expects $W/part* = the bundle's .tar.xz, $W/model* = dense/model.onnx)
set -euo pipefail
cd "$(dirname "$0")/../.."
cat $W/part* > $W/bundle.tar.xz && tar xJf $W/bundle.tar.xz -C $W
mkdir -p $W/g/dense && cat $W/model* > $W/g/dense/model.onnx
source bench/gpu/env.sh
spec=bpe:data/brown/tokenizer/vocab.json,data/brown/tokenizer/merges.txt
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
RS=$R DEVICE=cuda bash bench/decode/run.sh - $W/g "$spec" data/brown/heldout.txt 128
cp $W/g/bench/decode.md $OUT/decode-cuda.md; cp $W/g/bench/decode.json $OUT/decode-cuda.json
$R decode-bench --corpus data/brown/heldout.txt --tokenizer "$spec" --threads 1,2,16 --runs 5 --out $W/g/bench-cpu --model \
  "dense=$W/g/dense/model.onnx" "sparse-decode=$W/g/sparse/model.onnx" "dead units pruned=$W/g/dead.onnx"
cp $W/g/bench-cpu/decode.md $OUT/decode-cpu.md; cp $W/g/bench-cpu/decode.json $OUT/decode-cpu.json
