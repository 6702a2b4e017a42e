"""`helm template` as a fixture: render the chart with --set overrides into a list of objects."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from localcluster.binaries import VERSIONS_FILE, bin_dir, parse_versions

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "fms-operator"
# helm built from source defaults to Kubernetes v1.20 offline; the chart needs newer.
KUBE_VERSION = parse_versions(VERSIONS_FILE.read_text())["KUBERNETES_VERSION"]


def helm_path() -> Path:
    version = parse_versions(VERSIONS_FILE.read_text())["HELM_VERSION"]
    return bin_dir() / f"helm-{version}" / "helm"


@dataclass(frozen=True)
class Rendered:
    objects: list[dict]

    def kinds(self) -> list[str]:
        return [o["kind"] for o in self.objects]

    def one(self, kind: str) -> dict:
        found = [o for o in self.objects if o["kind"] == kind]
        assert len(found) == 1, f"expected one {kind}, got {len(found)}: {self.kinds()}"
        return found[0]

    def workload(self) -> dict:
        """The operator's Deployment, or its StatefulSet when peering is on; never both."""
        found = [o for o in self.objects if o["kind"] in ("Deployment", "StatefulSet")]
        assert len(found) == 1, f"expected one operator workload, got {self.kinds()}"
        return found[0]

    def container(self) -> dict:
        return self.workload()["spec"]["template"]["spec"]["containers"][0]


class Helm:
    def __init__(self, binary: Path):
        self.binary = binary

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.binary), *args], capture_output=True, text=True, timeout=60)

    def template_raw(self, *sets: str, namespace: str = "fms-system", extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        args = ["template", "fms", str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION, *extra]
        for s in sets:
            args += ["--set", s]
        return self.run(*args)

    def template(self, *sets: str, **kw) -> Rendered:
        proc = self.template_raw(*sets, **kw)
        assert proc.returncode == 0, proc.stderr
        return Rendered([o for o in yaml.safe_load_all(proc.stdout) if o])

    def fails(self, *sets: str) -> str:
        """Render expecting failure; return helm's error text."""
        proc = self.template_raw(*sets)
        assert proc.returncode != 0, f"helm template accepted {sets}"
        return proc.stderr


@pytest.fixture(scope="session")
def helm() -> Helm:
    path = helm_path()
    if not path.exists():
        pytest.fail(f"helm not found at {path}; build it: bash hack/build-binaries.sh")
    return Helm(path)


@pytest.fixture(scope="session")
def sample_worker_pod() -> dict:
    """The worker pod template the operator renders for crds/samples/generate-minimal.yaml."""
    from fms_operator.api.resource import FMS
    from fms_operator.render import render_all

    body = yaml.safe_load((REPO / "crds" / "samples" / "generate-minimal.yaml").read_text())
    body["metadata"].setdefault("namespace", "default")
    deployment = next(o for o in render_all(FMS.from_body(body)) if o["kind"] == "Deployment")
    return deployment["spec"]["template"]
