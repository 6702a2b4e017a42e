#!/usr/bin/env bash
# End-to-end demo on a laptop with Docker: kind cluster, both images, the Helm
# chart, SmolLM2-135M-Instruct on CPU, and one chat completion.
#
#   MODEL_DIR=/path/to/SmolLM2-135M-Instruct hack/kind-demo.sh
#   hack/kind-demo.sh down          # delete the kind cluster
#
# MODEL_DIR is a local safetensors directory (config.json, model.safetensors,
# tokenizer files). From a checkout with the test models prepared:
#   MODEL_DIR=$(.venv/bin/python hack/prepare_models.py | grep -i smollm2 | awk '{print $NF}')
# The weights are baked into a thin image on top of fms-worker, so nothing is
# downloaded inside the cluster.
#
# kind has no GPUs. The CRD always asks for >= 1 nvidia.com/gpu per replica,
# so the demo advertises a fake nvidia.com/gpu capacity on the kind node (the
# documented way to add an extended resource); the worker finds no CUDA and
# runs on CPU.
#
# Needs: docker, kind, kubectl, helm on PATH. Not run in this repository's CI
# (no Docker engine there).
set -euo pipefail

CLUSTER=${CLUSTER:-fms-demo}
NAMESPACE=${NAMESPACE:-fms-demo}
TAG=${TAG:-0.1.0}
LOCAL_PORT=${LOCAL_PORT:-8000}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

log() { printf '[kind-demo %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { printf 'kind-demo: %s\n' "$*" >&2; exit 1; }

if [[ ${1:-} == down ]]; then
    kind delete cluster --name "$CLUSTER"
    exit 0
fi

for tool in docker kind kubectl helm; do
    command -v "$tool" >/dev/null || die "$tool not found on PATH"
done
[[ -n ${MODEL_DIR:-} ]] || die "set MODEL_DIR to a SmolLM2-135M-Instruct safetensors directory (see the header)"
[[ -f $MODEL_DIR/config.json ]] || die "$MODEL_DIR has no config.json"

if ! kind get clusters | grep -qx "$CLUSTER"; then
    log "creating kind cluster $CLUSTER"
    kind create cluster --name "$CLUSTER" --wait 120s
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

log "building images (the worker base image is several GB on first pull)"
docker build -f "$REPO/Dockerfile.operator" -t "fms-operator:$TAG" "$REPO"
docker build -f "$REPO/Dockerfile.worker" -t "fms-worker:$TAG" "$REPO"
docker build -t "fms-worker-smollm2:$TAG" -f - "$MODEL_DIR" <<EOF
FROM fms-worker:$TAG
COPY --chown=1000:1000 . /opt/models/smollm2
EOF

log "loading images into kind"
kind load docker-image --name "$CLUSTER" "fms-operator:$TAG" "fms-worker-smollm2:$TAG"

log "advertising nvidia.com/gpu on the kind node (CPU stand-in)"
node=$(kubectl get nodes -o jsonpath='{.items[0].metadata.name}')
kubectl patch node "$node" --subresource=status --type=json \
    -p '[{"op": "add", "path": "/status/capacity/nvidia.com~1gpu", "value": "1"}]'

log "installing the chart"
helm upgrade --install fms-operator "$REPO/charts/fms-operator" --namespace fms-system --create-namespace \
    --set image.tag="$TAG" --set image.pullPolicy=Never --wait --timeout 5m

log "deploying SmolLM2 in namespace $NAMESPACE"
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -f - <<EOF
apiVersion: serving.fms.dev/v1alpha1
kind: FoundationModelService
metadata:
  name: smollm2
  namespace: $NAMESPACE
spec:
  model:
    source:
      local:
        path: /opt/models/smollm2
    servedName: smollm2
  precision:
    dtype: float32
  resources:
    cpu: "1"
    memory: 3Gi
  caching:
    modelCache:
      sizeLimit: 1Gi
  worker:
    image: fms-worker-smollm2:$TAG
    imagePullPolicy: Never
EOF
kubectl get fms -n "$NAMESPACE"

log "waiting for the worker to become ready"
kubectl -n "$NAMESPACE" wait --for=create deployment/smollm2 --timeout=120s
kubectl -n "$NAMESPACE" rollout status deployment/smollm2 --timeout=10m
kubectl get fms -n "$NAMESPACE"

log "port-forward service/smollm2 to 127.0.0.1:$LOCAL_PORT"
kubectl -n "$NAMESPACE" port-forward service/smollm2 "$LOCAL_PORT:8000" >/dev/null &
forward=$!
trap 'kill $forward 2>/dev/null || true' EXIT
for _ in $(seq 30); do
    curl -fsS "http://127.0.0.1:$LOCAL_PORT/ready" >/dev/null 2>&1 && break
    sleep 1
done

log "chat completion"
curl -fsS "http://127.0.0.1:$LOCAL_PORT/v1/chat/completions" \
    -H 'Content-Type: application/json' \
    -d '{"model": "smollm2", "messages": [{"role": "user", "content": "Name three colours."}], "max_tokens": 32}'
echo
log "done; delete everything with: hack/kind-demo.sh down"
