#!/usr/bin/env bash
# The PyTorch rows again without the vocabulary projection (the decoder stack alone), on the same windows: analyze's
# graph drops the logits, which the analysis does not need, so this is the like-for-like peer.
#   bash bench/peers/run_decoder.sh WORK_DIR OUT_DIR
set -euo pipefail
W=$1; OUT=$2; GPU=$(cd "$(dirname "$0")/../gpu" && pwd)
mkdir -p $W/results
python3 $GPU/opt125m.py torch-decoder $W/results 16 2>&1 | grep -v Warning | tee -a $OUT/pytorch-decoder.log
python3 $GPU/opt125m.py torch-decoder $W/results 64 2>&1 | grep -v Warning | tee -a $OUT/pytorch-decoder.log
for t in 2 8 16; do python3 $GPU/opt125m.py cpu-decoder $W/results 8 $t 128 2>&1 | grep -v Warning | tee -a $OUT/pytorch-decoder.log; done
tar czf $OUT/results-decoder.tgz -C $W results
