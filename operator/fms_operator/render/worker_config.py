"""The worker's config document (fms_worker.config.WorkerConfig, as YAML) and its ConfigMap."""

from __future__ import annotations

from typing import Any

import yaml

from fms_operator.api.resource import FMS
from fms_operator.render.fetch import cache_dir_name, cached_model_path, fetch_uri
from fms_operator.render.meta import config_map_name, metadata

CONFIG_KEY = "worker.yaml"
CONFIG_DIR = "/etc/fms"
CACHE_DIR = "/var/cache/fms"
SOURCE_MOUNT = "/models/source"
COMPILE_ROOT = f"{CACHE_DIR}/compile"


def compile_dir(fms: FMS) -> str:
    """The torch.compile / Triton caches of this model at this tensor-parallel degree, on the cache volume.

    One directory per model and degree, not one per volume: the worker compiles its fused kernels with dynamic
    shapes, and Inductor tunes such a kernel for the sizes it first saw, so a cache shared across models hands
    one model kernels tuned for another's widths. Measured on H200 (docs/benchmarks.md): a cache filled by a
    tiny model's fp8 engine made the 8B model's per-token fp8 quantization 4.8x slower (3,554 against 742 us a
    256-sequence step). Same model and degree: same kernels, so restarts and replicas still share."""
    return f"{COMPILE_ROOT}/{cache_dir_name(fetch_uri(fms))}-tp{fms.spec.parallelism.tensor}"


def model_path(fms: FMS) -> str:
    """Where the worker finds the weights: the mounted claim, the image path, or the cache volume (hf, s3)."""
    src = fms.spec.model.source
    if src.pvc:
        return f"{SOURCE_MOUNT}/{src.pvc.path}".rstrip("/")
    if src.local:
        return src.local.path
    return cached_model_path(fms, CACHE_DIR)  # hf, s3: where the fetch init container puts it


def worker_config(fms: FMS) -> dict[str, Any]:
    spec = fms.spec
    batching: dict[str, Any] = {
        "max_num_seqs": spec.batching.max_num_seqs,
        "max_num_batched_tokens": spec.batching.max_num_batched_tokens,
        "chunked_prefill": spec.batching.chunked_prefill,
    }
    # Encoder knobs only when given: the worker's own defaults are the single source otherwise.
    if spec.batching.max_batch_size is not None:
        batching["max_batch_size"] = spec.batching.max_batch_size
    if spec.batching.max_queue_delay_microseconds is not None:
        batching["max_queue_delay_us"] = spec.batching.max_queue_delay_microseconds
    model: dict[str, Any] = {
        "path": model_path(fms),
        "source": spec.model.source.uri(),
        "served_name": spec.model.served_name or fms.name,
        "task": spec.model.task,
    }
    if spec.model.revision:
        model["revision"] = spec.model.revision
    if spec.model.max_model_len:
        model["max_model_len"] = spec.model.max_model_len
    return {
        "model": model,
        "precision": {
            "dtype": spec.precision.dtype,
            "quantization": spec.precision.quantization,
            "kv_cache_dtype": spec.precision.kv_cache_dtype,
            "sparsity": spec.precision.sparsity,
            "tp_invariant": spec.precision.tp_invariant,
        },
        "parallel": {"tensor": spec.parallelism.tensor, "pipeline": spec.parallelism.pipeline,
                     "interconnect": spec.placement.interconnect},
        "batching": batching,
        "caching": {
            "prefix_caching": spec.caching.prefix_caching,
            "gpu_memory_utilization": spec.caching.gpu_memory_utilization,
            "compile_cache_dir": compile_dir(fms),
        },
        "server": {"host": "0.0.0.0", "port": spec.worker.port, "metrics_port": spec.worker.metrics_port,
                   "drain_seconds": spec.worker.drain_seconds},
    }


def config_text(fms: FMS) -> str:
    return yaml.safe_dump(worker_config(fms), sort_keys=False)


def config_map(fms: FMS) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(fms, config_map_name(fms)),
            "data": {CONFIG_KEY: config_text(fms)}}
