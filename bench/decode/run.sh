#!/usr/bin/env bash
# Batch-1 decoding of deployment variants (BENCHMARKS.md, "Decoding"): for a checkpoint, export it with a key/value
# cache, measure its activity on the held-out Brown text, write sparse-decode and pruned variants, and time them all.
#   bench/decode/run.sh CHECKPOINT OUT [TOKENIZER_SPEC] [CORPUS] [SEQ_LEN]
# Defaults: the Brown tokenizer and held-out text, windows of 128; PROMPT_TOKENS=64 NEW_TOKENS=128 in the environment.
# Needs a built relu-sparsity (dotnet build -c Release), or RS=path/to/relu-sparsity (e.g. the GPU bundle's);
# DEVICE=cuda times decode-bench on the GPU.
set -euo pipefail
ck=$1; out=$2
spec=${3:-bpe:data/brown/tokenizer/vocab.json,data/brown/tokenizer/merges.txt}
corpus=${4:-data/brown/heldout.txt}
seq=${5:-128}
rs() { if [ -n "${RS:-}" ]; then "$RS" "$@"; else dotnet src/Cli/bin/Release/net10.0/relu-sparsity.dll "$@"; fi; }
mkdir -p "$out"
[ -f "$out/dense/model.onnx" ] || rs export --checkpoint "$ck" --with-past --out "$out/dense"   # a GPU host without libtorch gets the export carried over
rs analyze --model "$out/dense/model.onnx" --corpus "$corpus" --tokenizer "$spec" --seq-len "$seq" --out "$out/analysis"
stats=$out/analysis/stats.json
rs sparse-decode --model "$out/dense/model.onnx" --stats "$stats" --out "$out/sparse"
rs prune --model "$out/dense/model.onnx" --stats "$stats" --dead-only --out "$out/dead.onnx"
rs prune --model "$out/dense/model.onnx" --stats "$stats" --keep-fraction 0.5 --out "$out/half.onnx"
rs analyze --model "$out/half.onnx" --corpus "$corpus" --tokenizer "$spec" --seq-len "$seq" --out "$out/analysis-half"
models=("dense=$out/dense/model.onnx" "dense, no cache=$out/dense/model.onnx" "sparse-decode=$out/sparse/model.onnx"
        "dead units pruned=$out/dead.onnx" "keep 0.5 pruned=$out/half.onnx")
# After keep-0.5 the kept units are the busiest: a layer may no longer be below the break-even (then it is left out).
if rs sparse-decode --model "$out/half.onnx" --stats "$out/analysis-half/stats.json" --out "$out/half-sparse.onnx"; then
  models+=("keep 0.5 + sparse-decode=$out/half-sparse.onnx")
fi
rs decode-bench --corpus "$corpus" --tokenizer "$spec" --prompt-tokens "${PROMPT_TOKENS:-64}" --new-tokens "${NEW_TOKENS:-128}" \
  --threads 1,2 --runs 5 --device "${DEVICE:-cpu}" --out "$out/bench" --model "${models[@]}"
