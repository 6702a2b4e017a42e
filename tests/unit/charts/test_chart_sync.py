"""The chart's derived files (CRD copy, RBAC rules, README) must match their sources."""

from __future__ import annotations

import chart_readme
import chart_sync
import yaml

from conftest import CHART, REPO


def test_chart_crd_is_a_byte_copy_of_the_generated_crd():
    name = "serving.fms.dev_foundationmodelservices.yaml"
    assert (CHART / "crds" / name).read_bytes() == (REPO / "crds" / name).read_bytes(), (
        "charts/fms-operator/crds is stale: run python hack/chart_sync.py"
    )


def test_chart_rbac_rules_file_is_current():
    assert chart_sync.RULES_FILE.read_text() == chart_sync.rules_yaml(chart_sync.operator_rules()), (
        "charts/fms-operator/files/rbac-rules.yaml is stale: run python hack/chart_sync.py"
    )


def test_readme_is_generated_from_values():
    assert (CHART / "README.md").read_text() == chart_readme.build(), "README.md is stale: run python hack/chart_readme.py"


def test_sync_check_reports_nothing_stale():
    assert chart_sync.stale_files() == []


def test_every_value_has_a_doc_comment():
    text = (CHART / "values.yaml").read_text()
    docs = chart_readme.parse_comments(text)
    assert chart_readme.undocumented(yaml.safe_load(text), docs) == []


def test_undocumented_value_is_caught():
    text = "a:\n  # -- documented\n  b: 1\n  c: 2\n# -- whole map\nd:\n  e: 1\n"
    assert chart_readme.undocumented(yaml.safe_load(text), chart_readme.parse_comments(text)) == ["a.c"]


def test_multiline_comment_joins_lines():
    text = "# -- first line\n# second line\nkey: 1\n"
    assert chart_readme.parse_comments(text) == {"key": "first line second line"}


def test_readme_lists_every_documented_key_with_its_default():
    readme = (CHART / "README.md").read_text()
    assert "| `operator.healthPort` | int | `8080` |" in readme
    assert '| `dashboards.labels` | object | `{"grafana_dashboard": "1"}` |' in readme


# Kubernetes objects passed through to the pod spec as they are; the API server validates their insides.
PASS_THROUGH = {
    "global", "affinity.nodeAffinity", "affinity.podAffinity", "affinity.podAntiAffinity",
    "podSecurityContext.seLinuxOptions", "podSecurityContext.appArmorProfile", "podSecurityContext.windowsOptions",
    "podSecurityContext.sysctls[]", "securityContext.seLinuxOptions", "securityContext.appArmorProfile",
    "securityContext.windowsOptions", "resources.claims[]", "operator.extraEnv[].valueFrom",
}


def _object_schemas(node: dict, path: str = ""):
    if node.get("type") == "object":
        yield path, node
    for key, child in (node.get("properties") or {}).items():
        yield from _object_schemas(child, f"{path}.{key}".lstrip("."))
    if isinstance(node.get("items"), dict):
        yield from _object_schemas(node["items"], f"{path}[]")


def test_schema_closes_every_object():
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())
    open_objects = []
    for path, node in _object_schemas(schema):
        extra = node.get("additionalProperties", True)
        typed_map = isinstance(extra, dict)  # e.g. labels: every value must be a string
        if extra is not False and not typed_map and path not in PASS_THROUGH:
            open_objects.append(path or "<root>")
    assert open_objects == []


def test_schema_covers_every_default_value():
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = [p for p in chart_readme.leaf_paths(values) if not _schema_has(schema, p.split("."))]
    assert missing == []


def _schema_has(node: dict, parts: list[str]) -> bool:
    for part in parts:
        props = node.get("properties") or {}
        if part in props:
            node = props[part]
        elif isinstance(node.get("additionalProperties"), dict) or node.get("patternProperties"):
            return True
        else:
            return False
    return True
