#!/usr/bin/env bash
# Stage, on a machine with PyPI, what the GPU benchmarks need on a GPU machine that has PyTorch, Triton and
# transformers but no network (as the lent machines in docs/benchmarks.md):
#   bash bench/gpu_prepare.sh [PYTHON_VERSION]   (after `make models`; default 3.12, the GPU image's Python)
# - .device/tokenizer: SmolLM2's tokenizer files, which bench/random_model.py copies into the random-weight models;
# - .whl/: wheels of the worker's pure-Python needs that such an image may lack (pydantic and its parts,
#   prometheus_client), at constraints.txt's versions. bench/gpu_env.sh installs them there when missing.
# Both folders are git-ignored; a run that carries them names them (the device tool's `carry`).
set -euo pipefail
py=${1:-3.12}
tok=.cache/models/smollm2-135m
[ -f "$tok/tokenizer.json" ] || { echo "no $tok/tokenizer.json: run make models first" >&2; exit 1; }
mkdir -p .device/tokenizer
for f in tokenizer.json tokenizer_config.json special_tokens_map.json chat_template.jinja; do
  [ -f "$tok/$f" ] && cp "$tok/$f" .device/tokenizer/
done
pins=()
for name in pydantic pydantic_core annotated-types typing-inspection prometheus_client; do
  pin=$(grep -i -E "^${name//[-_]/[-_]}==" constraints.txt) || { echo "$name is not pinned in constraints.txt" >&2; exit 1; }
  pins+=("$pin")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "${pins[@]}"
ls .device/tokenizer .whl
