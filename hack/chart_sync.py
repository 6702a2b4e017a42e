"""Copy the generated operator artefacts into the Helm chart, and regenerate its README.

    python hack/chart_sync.py          # write
    python hack/chart_sync.py --check  # exit 1 naming every stale file

The chart must not drift from the operator: its CRD is a byte copy of
crds/serving.fms.dev_foundationmodelservices.yaml (generated from the
pydantic spec models), and its ClusterRole rules are the rule list in
operator/fms_operator/rbac.py. Unit tests run the same comparison.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "fms-operator"
CRD_NAME = "serving.fms.dev_foundationmodelservices.yaml"
RULES_FILE = CHART / "files" / "rbac-rules.yaml"
_RULES_HEADER = "# Generated from operator/fms_operator/rbac.py by hack/chart_sync.py; do not edit.\n"


def operator_rules() -> list[dict]:
    """The operator's own RBAC rules, as plain dicts in the ClusterRole shape."""
    sys.path.insert(0, str(REPO / "operator"))
    from fms_operator import rbac

    return rbac.cluster_role_rules()


def rules_yaml(rules: list[dict]) -> str:
    return _RULES_HEADER + yaml.safe_dump(rules, sort_keys=False, default_flow_style=None)


def expected_files() -> dict[Path, bytes]:
    """Every chart file derived from another source, with the content it must have."""
    sys.path.insert(0, str(REPO / "hack"))
    import chart_readme

    return {
        CHART / "crds" / CRD_NAME: (REPO / "crds" / CRD_NAME).read_bytes(),
        RULES_FILE: rules_yaml(operator_rules()).encode(),
        CHART / "README.md": chart_readme.build().encode(),
    }


def stale_files() -> list[Path]:
    return [path for path, data in expected_files().items() if not path.exists() or path.read_bytes() != data]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when a chart file is stale instead of writing it")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        for path in stale:
            print(f"stale: {path.relative_to(REPO)} (run: python hack/chart_sync.py)", file=sys.stderr)
        return 1 if stale else 0
    for path, data in expected_files().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
