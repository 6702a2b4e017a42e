#!/usr/bin/env bash
# The demo behind `make demo` (run after set-up): a fresh local control plane
# with the simulated GPU fleet, the FoundationModelService CRD, the operator
# and the sample services, then a real worker for the smollm2 sample's pod and
# one chat completion through its Service's endpoint (hack/chat_demo.py).
# Stop it all, workers included, with `make down`.
#   hack/demo.sh [STATE_DIR]   (default .cache/cluster)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
DIR="${1:-.cache/cluster}"
DIR="$(mkdir -p "$DIR" && cd "$DIR" && pwd)"
LC=("$PY" hack/localcluster --dir "$DIR")
failed=0

"${LC[@]}" down >/dev/null   # a demo always starts from a clean cluster
"${LC[@]}" up
export KUBECONFIG="$DIR/kubeconfig"
KUBECTL="$(PYTHONPATH=hack "$PY" -c 'from localcluster.binaries import locate; print(locate().kubectl)')"
k() { "$KUBECTL" "$@"; }

shopt -s nullglob
crds=(crds/*.yaml)
if [ ${#crds[@]} -eq 0 ]; then
  echo "demo: no crds/*.yaml yet; skipping the CRD, operator and samples"
else
  # Namespaces the manifests name (e.g. the operator's ServiceAccount home) must exist first.
  for ns in $(grep -ho '^ *namespace: *[a-z0-9-]*' "${crds[@]}" | awk '{print $2}' | sort -u); do
    k create namespace "$ns" --dry-run=client -o yaml | k apply -f -
  done
  for f in "${crds[@]}"; do k apply -f "$f" || { echo "demo: applying $f failed (above)"; failed=1; }; done
  k wait --for=condition=Established crd --all --timeout=60s || failed=1

  crd_ok() { k get crd foundationmodelservices.serving.fms.dev >/dev/null 2>&1; }
  if ! crd_ok; then
    echo "demo: the FoundationModelService CRD is not installed; not starting the operator"
  elif "$PY" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("fms_operator.__main__") is None)' 2>/dev/null; then
    # Free ports: the machine may be shared, and the defaults (8080/8081) are popular.
    port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
    "${LC[@]}" spawn operator -- "$PY" -m fms_operator --liveness "http://127.0.0.1:$(port)/healthz" \
      --metrics-port "$(port)"
  else
    echo "demo: fms_operator has no __main__ yet; not starting the operator"
  fi

  samples=(crds/samples/*.yaml)
  if [ ${#samples[@]} -gt 0 ] && crd_ok; then
    k apply -f crds/samples/ || { echo "demo: applying the samples failed (above)"; failed=1; }
  fi
fi

echo
k get nodes -L nvidia.com/gpu.product,nvidia.com/gpu.count
echo
if k get crd foundationmodelservices.serving.fms.dev >/dev/null 2>&1; then
  sleep 3   # let the operator take its first pass before showing status
  k get fms -A
  echo
fi
# The one sample that runs for real here: SmolLM2 fits a CPU (the fleet's GPUs are simulated).
if [ "$failed" = 0 ] && k get fms smollm2 >/dev/null 2>&1; then
  "$PY" hack/chat_demo.py --dir "$DIR" --name smollm2 --model-dir "$("$PY" hack/prepare_models.py smollm2-135m)" || failed=1
  echo
fi
[ "$failed" = 0 ] || echo "demo: some steps FAILED (see above); the cluster is still up for a look."
cat <<MSG
The demo cluster is running.
  export KUBECONFIG=$KUBECONFIG
  logs: $DIR/logs/   (operator.log, worker-<pod>.log, the control plane's)
Stop everything, workers included: make down
MSG
exit "$failed"
