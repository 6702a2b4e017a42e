"""The CRD, reference docs and RBAC YAML are generated; committed copies must be current."""

from __future__ import annotations

import json

import yaml

from fms_operator.api import crd as crdgen
from fms_operator.api.models import FoundationModelServiceSpec
from fms_operator.rbac import RULES, cluster_role_rules


def test_generated_files_are_current():
    stale = [str(p) for p, text in crdgen.outputs().items() if not p.exists() or p.read_text() != text]
    assert not stale, f"regenerate with `python -m fms_operator.api.crd`: {stale}"


def _walk(node, path="spec"):
    yield path, node
    for name, prop in node.get("properties", {}).items():
        yield from _walk(prop, f"{path}.{name}")
    if "items" in node:
        yield from _walk(node["items"], f"{path}[]")


def test_schema_is_structural():
    text = json.dumps(crdgen.crd())
    for forbidden in ('"$ref"', '"anyOf"', '"oneOf"', '"title"', '"additionalProperties": false', '"type": "null"'):
        assert forbidden not in text


def test_every_spec_field_documented_and_bounded():
    spec = crdgen.spec_schema()
    loose = []
    for path, node in _walk(spec):
        if path == "spec" or path.endswith("[]"):
            continue
        assert node.get("description"), f"{path} has no description"
        constrained = {"default", "enum", "maximum", "maxLength", "maxItems", "maxProperties", "pattern"} & node.keys()
        if not constrained and node.get("type") != "object":
            loose.append(path)
    assert not loose, f"fields without default, enum or bound: {loose}"


def test_names_subresources_and_columns():
    doc = crdgen.crd()
    names = doc["spec"]["names"]
    assert (names["plural"], names["shortNames"], doc["spec"]["scope"]) == ("foundationmodelservices", ["fms"], "Namespaced")
    assert {"all", "fms"} <= set(names["categories"])
    version = doc["spec"]["versions"][0]
    assert version["subresources"]["scale"] == {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
                                                 "labelSelectorPath": ".status.selector"}
    cols = {c["name"].upper(): c.get("priority", 0) for c in version["additionalPrinterColumns"]}
    assert [c for c in cols if cols[c] == 0] == ["MODEL", "QUANT", "TP", "GPUS", "READY", "DESIRED", "STATUS", "AGE"]
    assert [c for c in cols if cols[c] == 1] == ["METRIC", "TARGET", "ENDPOINT"]


def test_sections_default_to_the_models_defaults_so_cel_can_read_them():
    props = crdgen.spec_schema()["properties"]
    defaults = FoundationModelServiceSpec.model_validate({"model": {"source": {"local": {"path": "/m"}}}})
    for section in ("precision", "parallelism", "batching", "caching", "resources", "placement", "worker"):
        assert props[section]["default"] == getattr(defaults, section).model_dump(by_alias=True, exclude_none=True), section
    assert "default" not in props["autoscaling"]  # absent means: no autoscaling


def test_rbac_yaml_matches_rules():
    docs = list(yaml.safe_load_all(crdgen.RBAC_PATH.read_text()))
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    assert role["rules"] == cluster_role_rules()
    assert len(role["rules"]) == len(RULES)
    flat = {(r["apiGroups"][0], res, v) for r in role["rules"] for res in r["resources"] for v in r["verbs"]}
    assert ("apps", "deployments", "patch") in flat and ("", "events", "create") in flat
    assert ("", "pods", "delete") not in flat  # pods are read-only to the operator
