"""Generate the CustomResourceDefinition from the typed models.

`python -m fms_operator.api.crd` writes crds/serving.fms.dev_foundationmodelservices.yaml,
docs/crd-reference.md and crds/rbac.yaml; `--check` exits 1 when any is stale.
The API server wants a *structural* schema: no $ref, no anyOf-with-null, no
`additionalProperties: false`, and OpenAPI v3.0's boolean exclusiveMinimum;
`structural()` turns pydantic's JSON Schema into that.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from fms_operator.api.models import (
    GROUP, KIND, PLURAL, SHORT_NAME, SINGULAR, VERSION, FoundationModelServiceSpec, FoundationModelServiceStatus,
)

REPO = Path(__file__).resolve().parents[3]
CRD_PATH = REPO / "crds" / f"{GROUP}_{PLURAL}.yaml"
DOCS_PATH = REPO / "docs" / "crd-reference.md"
RBAC_PATH = REPO / "crds" / "rbac.yaml"

PRINTER_COLUMNS = [
    {"name": "Model", "type": "string", "jsonPath": ".status.model", "description": "Model source"},
    {"name": "Quant", "type": "string", "jsonPath": ".spec.precision.quantization", "description": "Weight quantization"},
    {"name": "TP", "type": "integer", "jsonPath": ".spec.parallelism.tensor", "description": "Tensor-parallel degree"},
    {"name": "GPUs", "type": "integer", "jsonPath": ".status.gpusPerReplica", "description": "GPUs per replica"},
    {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas", "description": "Ready replicas"},
    {"name": "Desired", "type": "integer", "jsonPath": ".status.desiredReplicas", "description": "Desired replicas"},
    {"name": "Status", "type": "string", "jsonPath": ".status.phase", "description": "Ready, Progressing, Pending, Degraded"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Metric", "type": "string", "jsonPath": ".spec.autoscaling.metric", "priority": 1, "description": "Autoscaling metric"},
    {"name": "Target", "type": "number", "jsonPath": ".spec.autoscaling.target", "priority": 1, "description": "Autoscaling target"},
    {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint.url", "priority": 1, "description": "API base URL"},
]

_DROP = {"title", "$defs"}


def structural(schema: dict[str, Any]) -> dict[str, Any]:
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(n) for n in node]
        if not isinstance(node, dict):
            return node
        node = dict(node)
        nullable = False
        while "$ref" in node or "anyOf" in node:
            if "$ref" in node:
                target = defs[node.pop("$ref").split("/")[-1]]
                node = {**target, **node}  # field-level description wins over the model's docstring
            else:
                options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
                if len(options) != 1:
                    raise ValueError(f"unions are not structural: {options}")
                nullable = True
                node = {**options[0], **node}
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _DROP or (key == "default" and value is None):
                continue
            if key == "additionalProperties" and value is False:
                continue
            if key == "exclusiveMinimum" and not isinstance(value, bool):
                out["minimum"], out["exclusiveMinimum"] = value, True
                continue
            if key == "properties":
                out[key] = {name: walk(prop) for name, prop in value.items()}
                required = set(node.get("required", []))
                for name, prop in out[key].items():
                    # default_factory sections: a default lets the API server fill their
                    # own defaults, so CEL rules can read e.g. self.precision.quantization.
                    if name not in required and "default" not in prop and not prop.pop("x-nullable", False):
                        if prop.get("type") == "object" and "properties" in prop:
                            prop["default"] = _defaults(prop)
                        elif prop.get("type") == "object":
                            prop["default"] = {}
                        elif prop.get("type") == "array":
                            prop["default"] = []
                    prop.pop("x-nullable", None)
                continue
            out[key] = walk(value)
        if "enum" in out and "type" not in out:
            out["type"] = "string"
        if nullable:
            out["x-nullable"] = True
        return out

    result = walk(schema)
    result.pop("x-nullable", None)
    return result


def _defaults(node: dict[str, Any]) -> dict[str, Any]:
    """The object a section defaults to, spelled out: CEL rules on a default are checked as written."""
    return {name: prop["default"] for name, prop in node["properties"].items() if "default" in prop}


def spec_schema() -> dict[str, Any]:
    return structural(FoundationModelServiceSpec.model_json_schema(by_alias=True))


def status_schema() -> dict[str, Any]:
    return structural(FoundationModelServiceStatus.model_json_schema(by_alias=True))


def crd() -> dict[str, Any]:
    spec = spec_schema()
    spec["description"] = "Desired state of a served foundation model."
    status = status_schema()
    status["description"] = "Observed state, written by the operator."
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND, "listKind": f"{KIND}List", "plural": PLURAL, "singular": SINGULAR,
                "shortNames": [SHORT_NAME], "categories": ["all", "fms"],
            },
            "scope": "Namespaced",
            "versions": [{
                "name": VERSION, "served": True, "storage": True,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": "A foundation model served by GPU workers behind one Service.",
                    "properties": {
                        "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
                        "spec": spec, "status": status,
                    },
                    "required": ["spec"],
                }},
                "subresources": {
                    "status": {},
                    "scale": {
                        "specReplicasPath": ".spec.replicas",
                        "statusReplicasPath": ".status.replicas",
                        "labelSelectorPath": ".status.selector",
                    },
                },
                "additionalPrinterColumns": PRINTER_COLUMNS,
            }],
        },
    }


def dump(doc: Any) -> str:
    header = "# GENERATED by `python -m fms_operator.api.crd` from fms_operator/api/models.py; do not edit.\n"
    return header + yaml.safe_dump(doc, sort_keys=False, width=120)


def outputs() -> dict[Path, str]:
    from fms_operator.api.reference import reference
    from fms_operator.rbac import manifests

    return {
        CRD_PATH: dump(crd()),
        DOCS_PATH: reference(crd()),
        RBAC_PATH: "---\n".join(dump(m) for m in manifests()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a generated file is stale; write nothing")
    args = parser.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for path in stale:
        print(f"{'stale' if args.check else 'wrote'}: {path.relative_to(REPO)}")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
