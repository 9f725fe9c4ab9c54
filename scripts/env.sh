# Sourced by the set-up and test scripts: the build environment that links tch against the
# project venv's torch (LIBTORCH_USE_PYTORCH) and lets test binaries find libtorch.
root=${root:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
export PATH="$root/.venv/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
WEFT_TORCH_LIB=$("$root/.venv/bin/python" -c 'import os,torch;print(os.path.join(os.path.dirname(torch.__file__),"lib"))')
export WEFT_TORCH_LIB
export LD_LIBRARY_PATH="$WEFT_TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
