# shellcheck shell=bash
# Sourced on the GPU machine, from the repository root, before the benchmarks (bench/gpu_prepare.sh staged what
# it uses): the worker on PYTHONPATH, the staged wheels installed to /tmp/site where the image lacks them, and
# NVLink multicast off (the lent machines' rule).
export PYTHONPATH="$PWD/worker:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
if ! python3 -c "import pydantic, prometheus_client" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
