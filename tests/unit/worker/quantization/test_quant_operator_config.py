"""spec.precision.* reaches the worker: the operator renders it into worker.yaml, the worker config
accepts it, and `kubectl get fms` shows the quantization (the CRD's QUANT column)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fms_operator.api.resource import FMS
from fms_operator.render.worker_config import config_text
from fms_worker.config import WorkerConfig

REPO = Path(__file__).resolve().parents[4]


def _fms(precision: dict) -> FMS:
    return FMS.from_body({"metadata": {"name": "m", "namespace": "ns", "uid": "u-1", "generation": 1},
                          "spec": {"model": {"source": {"hf": {"repo": "org/model"}}}, "precision": precision}})


def _worker(fms: FMS) -> WorkerConfig:
    return WorkerConfig.model_validate(yaml.safe_load(config_text(fms)))


def test_int8_sample_renders_int8():
    body = yaml.safe_load((REPO / "crds" / "samples" / "classify-full.yaml").read_text())
    assert body["spec"]["precision"]["quantization"] == "int8"
    body["metadata"].update(namespace="ns", uid="u-1", generation=1)
    assert _worker(FMS.from_body(body)).precision.quantization == "int8"


@pytest.mark.parametrize("spec,expected", [
    ({}, ("bfloat16", "none", "auto", "none")),
    ({"quantization": "int8"}, ("bfloat16", "int8", "auto", "none")),
    ({"quantization": "int4", "dtype": "bfloat16"}, ("bfloat16", "int4", "auto", "none")),
    ({"quantization": "fp8", "kvCacheDtype": "fp8"}, ("bfloat16", "fp8", "fp8", "none")),
    ({"dtype": "float16", "sparsity": "2:4"}, ("float16", "none", "auto", "2:4")),
])
def test_precision_reaches_the_worker(spec, expected):
    p = _worker(_fms(spec)).precision
    assert (p.dtype, p.quantization, p.kv_cache_dtype, p.sparsity) == expected


def test_tp_invariant_reaches_the_worker():
    assert _worker(_fms({"tpInvariant": True})).precision.tp_invariant
    assert not _worker(_fms({})).precision.tp_invariant


def test_kubectl_get_shows_quant():
    crd = yaml.safe_load((REPO / "crds" / "serving.fms.dev_foundationmodelservices.yaml").read_text())
    cols = {c["name"]: c["jsonPath"] for v in crd["spec"]["versions"] for c in v["additionalPrinterColumns"]}
    assert cols["Quant"] == ".spec.precision.quantization"
