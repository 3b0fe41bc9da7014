#!/usr/bin/env bash
# analyze --top-examples 20 against statistics alone on the quick model, 2 threads, the settings interleaved
# (BENCHMARKS.md "Top examples"): ROUNDS rounds on Brown's held-out text, ROUNDS/2 on a folder of 8 links to it.
#   dotnet cake --target=TrainExportAnalyze && bash bench/top-examples/run_cpu.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-6}
R="dotnet src/Cli/bin/Release/net10.0/relu-sparsity.dll"
T="--tokenizer bpe:data/brown/tokenizer/vocab.json,data/brown/tokenizer/merges.txt"
W=$(mktemp -d)
mkdir -p $W/held8 && for i in $(seq 8); do ln -sf "$PWD/data/brown/heldout.txt" $W/held8/h$i.txt; done
run() { $R analyze --model models/quick/model.onnx --corpus "$1" $T --seq-len 128 --batch-size 16 --threads 2 --top-examples $2 --timing --out $W/out-$2 2>&1 \
  | grep -o '[0-9.]* ms per batch' | head -1; }
for i in $(seq $ROUNDS); do for k in 0 20; do echo "short $i k=$k $(run data/brown/heldout.txt $k)"; done; done
for i in $(seq $((ROUNDS / 2))); do for k in 0 20; do echo "long $i k=$k $(run $W/held8 $k)"; done; done
rm -rf $W
