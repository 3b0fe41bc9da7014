#!/usr/bin/env bash
# Encoder-decoder and converted graphs on the GPU (run 17): the T5 fixtures (one graph from each exporter, Optimum's
# folder, the folder `export --checkpoint` writes) in fp32, fp16 and bf16 and with CUDA graphs, compared afterwards with
# the CPU hooks (tests/fixtures/t5/t5.json); ONNX Runtime's float16 converter's graphs (tests/fixtures/fp16); and the
# OPT-125M shape converted by that converter (the issue's failing case), timed against --precision fp16 of its fp32 export.
#   bash bench/gpu/run_t5.sh WORK_DIR OUT_DIR
set -uo pipefail
W=$1; OUT=$2; HERE=$(cd "$(dirname "$0")" && pwd); FX=$HERE/../../tests/fixtures
source "$HERE/env.sh"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $OUT/machine.txt
mkdir -p $W/results
t5() { local name=$1 model=$2; shift 2; echo "== $name: $model $*" | tee -a $OUT/t5.log
  $R analyze --model $model --corpus $FX/t5/heldout.ids.tsv --tokenizer ids --seq-len 32 --batch-size 4 --device cuda "$@" --out $W/$name 2>&1 \
    | grep -vE "^\s*$" | tail -9 | tee -a $OUT/t5.log
  [ -f $W/$name/stats.json ] && cp $W/$name/stats.json $W/results/$name.stats.json; }
ids=(--decoder-start-id 0 --pad-id 0)
for p in fp32 fp16 bf16; do
  t5 t5-torchscript-$p $FX/t5/t5.torchscript.onnx "${ids[@]}" --precision $p
  t5 t5-dynamo-$p $FX/t5/t5.dynamo.onnx "${ids[@]}" --precision $p
  t5 t5-optimum-$p $FX/t5/optimum --precision $p
done
t5 t5-optimum-fp16-cudagraph $FX/t5/optimum --precision fp16 --cuda-graph
$R export --checkpoint $FX/t5/checkpoint --out $W/t5-export 2>&1 | tail -2 | tee -a $OUT/t5.log
t5 t5-export-fp32 $W/t5-export
for f in opt.torchscript opt.dynamo llama.torchscript llama.dynamo gpt2.torchscript bert.torchscript; do
  echo "== converter $f" | tee -a $OUT/fp16.log
  $R analyze --model $FX/fp16/$f.onnx --corpus $FX/external/heldout.txt --tokenizer bytes --seq-len 32 --batch-size 4 --device cuda --out $W/conv-$f 2>&1 \
    | tail -4 | tee -a $OUT/fp16.log
  [ -f $W/conv-$f/stats.json ] && cp $W/conv-$f/stats.json $W/results/conv-$f.stats.json
done
mkdir -p $W/t5-conv && cp $FX/fp16/t5_encoder_model.onnx $W/t5-conv/encoder_model.onnx && cp $FX/fp16/t5_decoder_model.onnx $W/t5-conv/decoder_model.onnx \
  && cp $FX/t5/optimum/config.json $W/t5-conv/
t5 t5-converter-folder $W/t5-conv
[ -f $W/opt125m.onnx ] || python3 $HERE/opt125m.py export $W
python3 - "$W" <<'PY' 2>&1 | tee -a $OUT/fp16.log
import sys, onnx
from onnxruntime.transformers.float16 import convert_float_to_float16
w = sys.argv[1]
onnx.save(convert_float_to_float16(onnx.load(f"{w}/opt125m.onnx"), keep_io_types=True), f"{w}/opt125m.fp16conv.onnx")
print("converted opt125m.onnx with convert_float_to_float16(keep_io_types=True)")
PY
for b in 64 16; do
  for m in "opt125m.fp16conv" "opt125m --precision fp16"; do set -- $m
    echo "== OPT-125M $m batch $b" | tee -a $OUT/fp16.log
    $R analyze --model $W/$1.onnx "${@:2}" --corpus $W/ids.txt --tokenizer ids --seq-len 256 --batch-size $b --device cuda --timing --out $W/o125-$1-$b 2>&1 \
      | grep -E "Timing|error|tokens/s|Attention|warning|^ +(0|11) " | tee -a $OUT/fp16.log
    [ -f $W/o125-$1-$b/stats.json ] && cp $W/o125-$1-$b/stats.json $W/results/o125-$1-$b.stats.json
  done
done
tar czf $OUT/results.tgz -C $W results
