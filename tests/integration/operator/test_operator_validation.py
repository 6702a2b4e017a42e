"""Invalid specs are refused by `kubectl apply` with a message saying what to change (CRD schema + CEL)."""

from __future__ import annotations

import pytest
from operator_harness import SAMPLES, apply, install_crd

pytestmark = pytest.mark.integration

HF = {"hf": {"repo": "org/model"}}
GEN = {"model": {"source": HF}}


def spec(**sections):
    return {**GEN, **sections}


BAD = {
    "min-above-max": (spec(autoscaling={"minReplicas": 5, "maxReplicas": 2}), "autoscaling.minReplicas must not exceed autoscaling.maxReplicas"),
    "tensor-3": (spec(parallelism={"tensor": 3}), "parallelism.tensor must be a power of two no larger than 8: use 1, 2, 4 or 8"),
    "tensor-16": (spec(parallelism={"tensor": 16}), "should be less than or equal to 8"),
    "fp8-no-gpu": (spec(precision={"quantization": "fp8"}), "fp8 (precision.quantization or precision.kvCacheDtype) needs resources.gpuProduct"),
    "fp8-a100": (spec(precision={"quantization": "fp8"}, resources={"gpuProduct": "NVIDIA-A100-SXM4-80GB"}),
                 "resources.gpuProduct NVIDIA-A100-SXM4-80GB has no fp8 support"),
    "fp8-kv-a100": (spec(precision={"kvCacheDtype": "fp8"}, resources={"gpuProduct": "NVIDIA-A100-SXM4-80GB"}), "has no fp8 support"),
    "two-sources": ({"model": {"source": {**HF, "local": {"path": "/m"}}}}, "model.source needs exactly one of pvc, hf, s3 or local"),
    "no-source": ({"model": {"source": {}}}, "model.source needs exactly one of pvc, hf, s3 or local"),
    "hf-private-no-token": ({"model": {"source": {"hf": {"repo": "o/m", "private": True}}}}, "set model.source.hf.tokenSecret"),
    "s3-no-credentials": ({"model": {"source": {"s3": {"bucket": "models"}}}}, "model.source.s3 needs credentialsSecret"),
    "encoder-fields-on-decoder": (spec(batching={"maxBatchSize": 8}), "are for encoders (model.task embed or classify)"),
    "kv-metric-on-encoder": ({"model": {"source": HF, "task": "embed"}, "autoscaling": {"metric": "kvCacheUsage"}}, "have no KV cache"),
    "rollout-stuck": (spec(worker={"rollout": {"maxSurge": 0, "maxUnavailable": 0}}), "cannot both be 0"),
    "ratio-target": (spec(autoscaling={"metric": "gpuUtilization", "target": 5}), "gpuUtilization is a ratio: autoscaling.target must be between 0 and 1"),
    "sparse-and-quantized": (spec(precision={"sparsity": "2:4", "quantization": "int8"}),
                             "precision.sparsity 2:4 runs unquantized weights"),
    "tp-invariant-quantized": (spec(precision={"tpInvariant": True, "quantization": "int4"}),
                               "precision.tpInvariant runs unquantized dense weights"),
    "bad-quantization": (spec(precision={"quantization": "int3"}), 'Unsupported value: "int3"'),
    "no-chunked-small-budget": (spec(model={"source": HF, "maxModelLen": 4096}, batching={"chunkedPrefill": False, "maxNumBatchedTokens": 2048}),
                                "without chunkedPrefill, batching.maxNumBatchedTokens must be at least model.maxModelLen"),
    "same-ports": (spec(worker={"port": 9090}), "worker.port and worker.metricsPort must differ"),
    "two-cache-forms": (spec(caching={"modelCache": {"claimName": "models", "hostPath": "/var/cache/fms"}}),
                        "caching.modelCache takes at most one of claimName"),
}


@pytest.fixture(scope="module")
def crd(cluster):
    install_crd(cluster)


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_spec_refused(cluster, crd, namespace, case):
    body, message = BAD[case]
    doc = {"apiVersion": "serving.fms.dev/v1alpha1", "kind": "FoundationModelService", "metadata": {"name": "bad"}, "spec": body}
    res = apply(cluster, namespace, doc, check=False)
    assert res.returncode != 0, f"{case} was accepted"
    assert message in res.stderr, res.stderr


def test_samples_accepted(cluster, crd, namespace):
    for path in sorted(SAMPLES.glob("*.yaml")):
        cluster.kubectl("-n", namespace, "apply", "--dry-run=server", "-f", str(path))
