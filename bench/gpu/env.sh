# Sourced by the GPU-host scripts: the bundle's command line ($R, from the bundle unpacked in $W) and the CUDA 13 and
# cuDNN 9 libraries of the host's PyTorch wheels on LD_LIBRARY_PATH.
R=$W/relu-sparsity-gpu-linux-x64/relu-sparsity
CUDNN=$(python3 -c "import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], 'cudnn', 'lib'))")
export LD_LIBRARY_PATH=/usr/local/cuda-13/targets/x86_64-linux/lib:$CUDNN:${LD_LIBRARY_PATH:-}
