"""Names, labels and metadata shared by every rendered object."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fms_operator.api.resource import FMS

MANAGED_BY = "fms-operator"
NAME_LABEL = "serving.fms.dev/name"
CONFIG_HASH = "serving.fms.dev/config-hash"
APPLIED_HASH = "serving.fms.dev/applied-hash"


def selector_labels(fms: FMS) -> dict[str, str]:
    return {NAME_LABEL: fms.name}


def labels(fms: FMS) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "fms-worker",
        "app.kubernetes.io/instance": fms.name,
        "app.kubernetes.io/component": "worker",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        **selector_labels(fms),
    }


def selector_string(fms: FMS) -> str:
    return ",".join(f"{k}={v}" for k, v in selector_labels(fms).items())


def config_map_name(fms: FMS) -> str:
    return f"{fms.name}-worker-config"


def metadata(fms: FMS, name: str | None = None) -> dict[str, Any]:
    return {"name": name or fms.name, "namespace": fms.namespace, "labels": labels(fms), "ownerReferences": [fms.owner_reference()]}


def digest(value: Any) -> str:
    """Stable short hash of a JSON-able value (sorted keys)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
