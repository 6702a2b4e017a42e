"""Builders for operator unit tests: FMS objects from compact spec dicts."""

from __future__ import annotations

from pathlib import Path

import yaml

from fms_operator.api.resource import FMS

SAMPLES = sorted((Path(__file__).resolve().parents[3] / "crds" / "samples").glob("*.yaml"))


def make_fms(spec: dict | None = None, name: str = "m", generation: int = 1) -> FMS:
    body = {"metadata": {"name": name, "namespace": "ns", "uid": "u-1", "generation": generation},
            "spec": {"model": {"source": {"hf": {"repo": "org/model"}}}, **(spec or {})}}
    return FMS.from_body(body)


def sample_fms(path: Path) -> FMS:
    body = yaml.safe_load(path.read_text())
    body["metadata"].update(namespace="ns", uid="u-1", generation=1)
    return FMS.from_body(body)


