#!/usr/bin/env bash
# The GPU benchmark suite, as run on the lent GPU machines (see docs/benchmarks.md).
#   bash bench/gpu_suite.sh tests|1b|8b OUTDIR
# Needs: python3 with torch + transformers (the GPU image), and what `bash bench/gpu_prepare.sh` stages on a
# machine with PyPI (tokenizer files in .device/tokenizer, wheels in .whl/); bench/gpu_env.sh (sourced here)
# puts the worker on PYTHONPATH and installs those wheels where the image lacks them.
set -euo pipefail
what=$1 out=$2
mkdir -p "$out"
source bench/gpu_env.sh
export TORCHINDUCTOR_CACHE_DIR=/tmp/inductor TRITON_CACHE_DIR=/tmp/triton
tok=.device/tokenizer
case "$what" in
  tests)
    python3 -m pytest -q -p no:cacheprovider -p no:asyncio -c /dev/null --rootdir . -o markers=gpu -W error tests/gpu 2>&1 | tee "$out/gpu-tests.log" ;;
  1b|8b)
    shape=$([ "$what" = 1b ] && echo llama-3.2-1b || echo llama-3.1-8b)
    [ -f "/tmp/$shape/config.json" ] || python3 bench/random_model.py "$shape" "/tmp/$shape" --tokenizer "$tok"
    python3 bench/gpu_engine.py "/tmp/$shape" --out "$out/engine-$what.json" "${@:3}" 2>&1 | grep -v "Loading weights" | tee "$out/engine-$what.log" ;;
  *) echo "usage: $0 tests|1b|8b OUTDIR [bench args]" >&2; exit 2 ;;
esac
