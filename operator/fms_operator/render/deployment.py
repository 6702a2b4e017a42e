"""The worker Deployment: GPUs, probes, drain, security, volumes, placement."""

from __future__ import annotations

import math
from typing import Any

from fms_operator import placement
from fms_operator.api.resource import FMS
from fms_operator.render import dra
from fms_operator.render.cache import VOLUME as CACHE_VOLUME
from fms_operator.render.cache import cache_volume
from fms_operator.render.meta import CONFIG_HASH, config_map_name, digest, labels, metadata, selector_labels
from fms_operator.render.fetch import add_fetch_step
from fms_operator.render.worker_config import (CACHE_DIR, CONFIG_DIR, CONFIG_KEY, SOURCE_MOUNT, compile_dir,
                                                  worker_config)

PRESTOP_SLEEP_S = 5  # let endpoints drop the pod before SIGTERM starts the drain
PROBE_PERIOD_S = 10


def _env(fms: FMS) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    src = fms.spec.model.source
    env: list[dict[str, Any]] = [{"name": "HF_HOME", "value": f"{CACHE_DIR}/hf"}]
    env_from: list[dict[str, Any]] = []
    if src.hf and src.hf.token_secret:
        ref = src.hf.token_secret
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
    if src.s3:
        env_from.append({"secretRef": {"name": src.s3.credentials_secret}})
        if src.s3.endpoint:
            env.append({"name": "AWS_ENDPOINT_URL", "value": src.s3.endpoint})
    env += [{"name": e.name, "value": e.value} for e in fms.spec.worker.env]
    return env, env_from


def _volumes(fms: FMS) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    spec = fms.spec
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": config_map_name(fms)}},
        {"name": "tmp", "emptyDir": {}},
        # NCCL and torch worker processes share memory through /dev/shm.
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}},
        cache_volume(fms),
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": CACHE_VOLUME, "mountPath": CACHE_DIR},
    ]
    if spec.model.source.pvc:
        volumes.append({"name": "model-source",
                        "persistentVolumeClaim": {"claimName": spec.model.source.pvc.claim_name, "readOnly": True}})
        mounts.append({"name": "model-source", "mountPath": SOURCE_MOUNT, "readOnly": True})
    return volumes, mounts


def _container(fms: FMS) -> dict[str, Any]:
    spec = fms.spec
    worker = spec.worker
    gpus = str(placement.gpus_per_pod(spec))
    env, env_from = _env(fms)
    _, mounts = _volumes(fms)
    container: dict[str, Any] = {
        "name": "worker",
        "image": worker.image,
        "imagePullPolicy": worker.image_pull_policy,
        "command": ["fms-worker", "serve", "--config", f"{CONFIG_DIR}/{CONFIG_KEY}"],
        "ports": [{"name": "http", "containerPort": worker.port, "protocol": "TCP"},
                  {"name": "metrics", "containerPort": worker.metrics_port, "protocol": "TCP"}],
        "env": env,
        "resources": {
            "requests": {"cpu": spec.resources.cpu, "memory": spec.resources.memory, placement.GPU_RESOURCE: gpus},
            "limits": {"memory": spec.resources.memory, placement.GPU_RESOURCE: gpus},
        },
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": PROBE_PERIOD_S, "failureThreshold": 3},
        # Loading weights can take many minutes; liveness only starts after this passes.
        "startupProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": PROBE_PERIOD_S,
                         "failureThreshold": math.ceil(worker.startup_timeout_seconds / PROBE_PERIOD_S)},
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_S}}},
        # A worker that exits (e.g. the model does not fit) leaves its last log lines here for status.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": mounts,
    }
    if env_from:
        container["envFrom"] = env_from
    return container


def deployment(fms: FMS) -> dict[str, Any]:
    spec = fms.spec
    volumes, _ = _volumes(fms)
    pod_spec: dict[str, Any] = {
        "containers": [_container(fms)],
        "volumes": volumes,
        "terminationGracePeriodSeconds": spec.worker.drain_seconds + PRESTOP_SLEEP_S + 10,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "enableServiceLinks": False,
        "tolerations": placement.tolerations(spec),
    }
    add_fetch_step(pod_spec, fms, CACHE_DIR, compile_dir(fms))
    if selector := placement.node_selector(spec):
        pod_spec["nodeSelector"] = selector
    if affinity := placement.affinity(spec):
        pod_spec["affinity"] = affinity
    if spec.placement.priority_class_name:
        pod_spec["priorityClassName"] = spec.placement.priority_class_name
    if dra.uses_dra(fms):
        dra.use_claims(pod_spec, fms, placement.GPU_RESOURCE)
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata(fms),
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": selector_labels(fms)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {
                "maxSurge": spec.worker.rollout.max_surge, "maxUnavailable": spec.worker.rollout.max_unavailable}},
            "template": {
                # The config hash rolls the pods when only the ConfigMap changes.
                "metadata": {"labels": labels(fms), "annotations": {CONFIG_HASH: digest(worker_config(fms))}},
                "spec": pod_spec,
            },
        },
    }
