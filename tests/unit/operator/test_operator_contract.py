"""Contract: what the operator renders into worker.yaml validates as fms_worker.config.WorkerConfig."""

from __future__ import annotations

import yaml
from fms_worker.config import WorkerConfig

from fms_operator.render import render_all
from fms_operator.render.worker_config import config_text


def test_sample_renders_a_valid_worker_config(sample):
    cm = render_all(sample)[0]
    assert cm["kind"] == "ConfigMap"
    cfg = WorkerConfig.model_validate(yaml.safe_load(cm["data"]["worker.yaml"]))
    spec = sample.spec
    assert (cfg.server.port, cfg.server.metrics_port) == (8000, 9090)
    assert cfg.model.task == spec.model.task
    assert cfg.parallel.world_size == spec.gpus_per_replica
    assert cfg.precision.quantization == spec.precision.quantization
    assert cfg.model.source == spec.model.source.uri()
    assert cfg.server.drain_seconds == spec.worker.drain_seconds
    if spec.batching.max_batch_size is not None:
        assert cfg.batching.max_batch_size == spec.batching.max_batch_size


def test_config_is_deterministic(sample):
    assert config_text(sample) == config_text(sample)
