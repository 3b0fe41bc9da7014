#!/usr/bin/env bash
# analyze --timing on 2 CPU threads across a package move, interleaved so that this machine's drift hits both sides:
# the quick model on Brown's held-out text (BPE, 16 × 128) and the external OPT fixture (torch.onnx TorchScript export,
# byte ids, 16 × 32), ROUNDS rounds of every build given. A build is a checkout whose Release tool is built
# (`dotnet build src/Cli/Cli.csproj -c Release`), e.g. a `git worktree` of the commit before the move.
# Prints one line per run: build, model, ms per batch, the floor, the ratio. Needs `dotnet cake --target=TrainExportAnalyze` here.
# Usage: bash bench/deps/analyze_cpu.sh ROUNDS CHECKOUT... > log
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
rounds=$1; shift
out=$(mktemp -d)
for i in $(seq "$rounds"); do
  for build in "$@"; do
    R="dotnet $build/src/Cli/bin/Release/net10.0/relu-sparsity.dll"
    for m in quick opt; do
      if [ $m = quick ]; then args=(--model "$here/models/quick/model.onnx" --corpus "$here/data/brown/heldout.txt"
        --tokenizer "bpe:$here/data/brown/tokenizer/vocab.json,$here/data/brown/tokenizer/merges.txt" --seq-len 128)
      else args=(--model "$here/tests/fixtures/external/opt.torchscript.onnx" --corpus "$here/data/brown/heldout.txt" --tokenizer bytes --seq-len 32); fi
      line=$($R analyze "${args[@]}" --batch-size 16 --threads 2 --timing --out "$out/$m" | grep '^Timing')
      echo "$build $m round $i: $(sed -E 's/.*: ([0-9.]+) ms per batch.*floor[^)]*\) ([0-9.]+) ms.*ratio ([0-9.]+).*/\1 ms, floor \2 ms, ratio \3/' <<<"$line")"
    done
  done
done
rm -rf "$out"
