#!/usr/bin/env bash
# analyze --timing on 2 CPU threads, before and after a package move: the quick model on Brown's held-out text (BPE,
# 16 × 128) and the external OPT fixture (torch.onnx TorchScript export, byte ids, 16 × 32), ROUNDS interleaved rounds.
# Prints one line per run: model, ms per batch, the floor, the ratio. Needs `dotnet cake --target=TrainExportAnalyze`.
# Usage: bash bench/deps/analyze_cpu.sh [ROUNDS] > log
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-5}
R="dotnet src/Pipeline/bin/Release/net10.0/relu-sparsity.dll"
out=$(mktemp -d)
for i in $(seq "$rounds"); do
  for m in quick opt; do
    if [ $m = quick ]; then args=(--model models/quick/model.onnx --seq-len 128)
    else args=(--model tests/fixtures/external/opt.torchscript.onnx --tokenizer bytes --seq-len 32); fi
    line=$($R analyze "${args[@]}" --batch-size 16 --threads 2 --timing --out "$out/$m" | grep '^Timing')
    echo "$m round $i: $(sed -E 's/.*: ([0-9.]+) ms per batch.*floor[^)]*\) ([0-9.]+) ms.*ratio ([0-9.]+).*/\1 ms, floor \2 ms, ratio \3/' <<<"$line")"
  done
done
rm -rf "$out"
