# Sourced by the GPU-host scripts: the bundle's command line ($R, from the bundle unpacked in $W) and the CUDA 13 and
# cuDNN 9 libraries of the host's PyTorch wheels on LD_LIBRARY_PATH.
R=$W/relu-sparsity-gpu-linux-x64/relu-sparsity
CUDNN=$(python3 -c "import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], 'cudnn', 'lib'))")
export LD_LIBRARY_PATH=/usr/local/cuda-13/targets/x86_64-linux/lib:$CUDNN:${LD_LIBRARY_PATH:-}

# analyze --timing of each graph in MODELS (WORK_DIR/NAME.onnx) on CORPUS (token ids, windows of 256), for each
# "device batch threads max_tokens" in RUNS, appended to OUT/LOG.
timed_runs() {
  local run m
  for run in "${RUNS[@]}"; do set -- $run
    for m in "${MODELS[@]}"; do
      echo "== $m --device $1 --batch-size $2 --threads $3 --max-tokens $4" | tee -a $OUT/$LOG
      $R analyze --model $W/$m.onnx --corpus $CORPUS --tokenizer ids --seq-len 256 --batch-size $2 --device $1 --threads $3 --max-tokens $4 --timing \
        --out $W/timed-$m-$1-$3 2>&1 | grep -E "Timing|error|^ *(0|7|11) " | tee -a $OUT/$LOG
    done
  done
}
