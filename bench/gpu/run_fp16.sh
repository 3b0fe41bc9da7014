#!/usr/bin/env bash
# --precision fp16 on the GPU machine: speed on the OPT-125M-shaped model (as run.sh), and the per-layer nonzero
# fractions of fp16 against fp32 on the trained fixtures of tests/fixtures/external.
#   bash bench/gpu/run_fp16.sh WORK_DIR OUT_DIR
set -euo pipefail
W=$1; OUT=$2; HERE=$(cd "$(dirname "$0")" && pwd); FX=$HERE/../../tests/fixtures/external
source "$HERE/env.sh"
[ -f $W/opt125m.onnx ] || python3 $HERE/opt125m.py export $W
mkdir -p $W/results
for b in 16 64; do for p in fp32 fp16; do
  echo "== opt125m b$b $p" | tee -a $OUT/analyze.log
  $R analyze --model $W/opt125m.onnx --corpus $W/ids.txt --tokenizer ids --seq-len 256 --batch-size $b --device cuda --precision $p --timing \
    --out $W/o-$b-$p 2>&1 | grep -E "Timing|error" | tee -a $OUT/analyze.log
  cp $W/o-$b-$p/stats.json $W/results/opt125m-b$b-$p.stats.json
done; done
for f in opt.dynamo opt.torchscript gpt2.dynamo llama.dynamo llama.torchscript gpt_cache.dynamo bert.dynamo; do for p in fp32 fp16; do
  $R analyze --model $FX/$f.onnx --corpus $FX/heldout.txt --tokenizer bytes --seq-len 32 --batch-size 4 --device cuda --precision $p \
    --out $W/f-$f-$p > /dev/null 2>>$OUT/analyze.log && cp $W/f-$f-$p/stats.json $W/results/$f-$p.stats.json || echo "$f $p failed" | tee -a $OUT/analyze.log
done; done
python3 - "$W/results" <<'PY' | tee $OUT/fp16-vs-fp32.txt
import json, sys, os
d = sys.argv[1]
for f in ["opt.dynamo", "opt.torchscript", "gpt2.dynamo", "llama.dynamo", "llama.torchscript", "gpt_cache.dynamo", "bert.dynamo"]:
    try:
        a = json.load(open(f"{d}/{f}-fp32.stats.json")); b = json.load(open(f"{d}/{f}-fp16.stats.json"))
        diff = [abs(x["nonzero_fraction"] - y["nonzero_fraction"]) for x, y in zip(a["layers"], b["layers"])]
        print(f, "fp32", [round(x["nonzero_fraction"], 6) for x in a["layers"]], "fp16", [round(y["nonzero_fraction"], 6) for y in b["layers"]], "max diff", max(diff))
    except Exception as e:
        print(f, "missing:", e)
for b in [16, 64]:
    a = json.load(open(f"{d}/opt125m-b{b}-fp32.stats.json")); h = json.load(open(f"{d}/opt125m-b{b}-fp16.stats.json"))
    print("opt125m", b, "max diff", max(abs(x["nonzero_fraction"] - y["nonzero_fraction"]) for x, y in zip(a["layers"], h["layers"])), "precision", h.get("precision"))
PY
