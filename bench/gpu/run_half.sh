#!/usr/bin/env bash
# Half precision on the GPU (BENCHMARKS.md "GPU half precision"): the OPT-125M-shaped torch.onnx graph of run.sh on
# 256,000 generated ids, windows of 256, batches of 16 and 64: fp16 and bf16 with attention fused in memory (the
# default on a GPU), --no-fuse, --cuda-graph, fp32, --top-examples 20; each with --timing (its floor, and the forward
# alone: the same graph without vocabulary projection or statistics). Then ONNX Runtime's profile of fp16 at 64,
# fused and unfused, with CUDA_LAUNCH_BLOCKING=1 (this build times kernels by their launch otherwise) and without;
# PyTorch's decoder stack with and without hooks in fp32, bf16 and fp16; and the counts of fp16 and bf16 against fp32
# on the trained fixtures.
#   bash bench/gpu/run_half.sh WORK_DIR OUT_DIR
set -uo pipefail
W=$1; OUT=$2; HERE=$(cd "$(dirname "$0")" && pwd); FX=$HERE/../../tests/fixtures/external
source "$HERE/env.sh"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $OUT/machine.txt
lscpu | grep -E "Model name|^CPU\(s\)" | tee -a $OUT/machine.txt
[ -f $W/opt125m.onnx ] || python3 $HERE/opt125m.py export $W
mkdir -p $W/results
a() { local name=$1; shift; echo "== $name: analyze $*" | tee -a $OUT/analyze.log
  $R analyze --model $W/opt125m.onnx --corpus $W/ids.txt --tokenizer ids --seq-len 256 --device cuda "$@" --out $W/$name 2>&1 \
    | grep -vE "^ *[0-9,]+ tokens |^ +[0-9]+ +3072|^layer|^Wrote" | tee -a $OUT/analyze.log
  [ -f $W/$name/stats.json ] && cp $W/$name/stats.json $W/results/$name.stats.json; }
for b in 64 16; do
  a fp16-b$b --batch-size $b --precision fp16 --timing
  a bf16-b$b --batch-size $b --precision bf16 --timing
  a fp16-graph-b$b --batch-size $b --precision fp16 --cuda-graph --timing
  a fp16-nofuse-b$b --batch-size $b --precision fp16 --no-fuse --timing
  a fp32-b$b --batch-size $b --timing
  a fp16-top20-b$b --batch-size $b --precision fp16 --top-examples 20 --timing
done
a profile-fused --batch-size 64 --precision fp16 --max-tokens 65536 --profile
CUDA_LAUNCH_BLOCKING=1 a profile-fused-blocking --batch-size 64 --precision fp16 --max-tokens 65536 --profile
CUDA_LAUNCH_BLOCKING=1 a profile-nofuse-blocking --batch-size 64 --precision fp16 --no-fuse --max-tokens 65536 --profile
for b in 16 64; do python3 $HERE/opt125m.py torch-decoder $W/results $b 2>&1 | grep -v Warning | tee -a $OUT/pytorch.log; done
for f in opt.dynamo opt.torchscript gpt2.dynamo llama.dynamo; do for p in fp32 fp16 bf16; do
  $R analyze --model $FX/$f.onnx --corpus $FX/heldout.txt --tokenizer bytes --seq-len 32 --batch-size 4 --device cuda --precision $p \
    --out $W/f-$f-$p > /dev/null 2>>$OUT/analyze.log && cp $W/f-$f-$p/stats.json $W/results/$f-$p.stats.json || echo "$f $p failed" | tee -a $OUT/analyze.log
done; done
python3 - "$W/results" <<'PY' | tee $OUT/half-vs-fp32.txt
import json, sys
d = sys.argv[1]
def nz(path): return [l["nonzero_fraction"] for l in json.load(open(path))["layers"]]
for f in ["opt.dynamo", "opt.torchscript", "gpt2.dynamo", "llama.dynamo"]:
    for p in ["fp16", "bf16"]:
        try:
            a, b = nz(f"{d}/{f}-fp32.stats.json"), nz(f"{d}/{f}-{p}.stats.json")
            print(f, p, "max |diff| from fp32", max(abs(x - y) for x, y in zip(a, b)))
        except Exception as e:
            print(f, p, "missing:", e)
for b in [16, 64]:
    for p in ["fp16", "bf16"]:
        try:
            a, h = nz(f"{d}/fp32-b{b}.stats.json"), nz(f"{d}/{p}-b{b}.stats.json")
            print("opt125m", b, p, "max |diff| from fp32", max(abs(x - y) for x, y in zip(a, h)))
        except Exception as e:
            print("opt125m", b, p, "missing:", e)
PY
tar czf $OUT/results.tgz -C $W results
