"""Where the control-plane binaries are: built by hack/build-binaries.sh, versions from hack/versions.env."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

HACK = Path(__file__).resolve().parent.parent
VERSIONS_FILE = HACK / "versions.env"


class MissingBinary(FileNotFoundError):
    pass


def parse_versions(text: str) -> dict[str, str]:
    """KEY=value lines of versions.env (the shell file is the one source of truth)."""
    versions = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            versions[key.strip()] = value.strip().strip('"')
    return versions


def bin_dir() -> Path:
    return Path(os.environ.get("FMS_BIN_DIR", Path.home() / ".cache" / "fms" / "bin"))


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    apiserver: Path
    controller_manager: Path
    scheduler: Path
    kwok: Path
    kwok_stages: Path
    kubectl: Path


def _cached(root: Path, name: str, version: str) -> Path:
    return root / f"{name}-{version}" / name


def locate(root: Path | None = None, versions: dict[str, str] | None = None) -> Binaries:
    """Find every binary, or raise MissingBinary saying how to build it."""
    root = root or bin_dir()
    v = versions or parse_versions(VERSIONS_FILE.read_text())
    k8s = v["KUBERNETES_VERSION"]
    kwok = _cached(root, "kwok", v["KWOK_VERSION"])
    # A kubectl built beside the server wins; the OS one (1.32) is within the
    # skew that matters for everything the tests do (checked in the README).
    kubectl = _cached(root, "kubectl", k8s)
    if not kubectl.exists():
        found = shutil.which("kubectl")
        kubectl = Path(found) if found else kubectl
    bins = Binaries(
        etcd=_cached(root, "etcd", v["ETCD_VERSION"]),
        apiserver=_cached(root, "kube-apiserver", k8s),
        controller_manager=_cached(root, "kube-controller-manager", k8s),
        scheduler=_cached(root, "kube-scheduler", k8s),
        kwok=kwok,
        kwok_stages=kwok.parent / "stages",
        kubectl=kubectl,
    )
    missing = [str(p) for p in vars(bins).values() if not p.exists()]
    if missing:
        raise MissingBinary(
            "control-plane binaries missing: " + ", ".join(missing)
            + "\n  build them (cached afterwards): bash hack/build-binaries.sh   (or: make binaries)"
        )
    return bins


def stage_files(stages_dir: Path) -> list[Path]:
    """The kwok Stage documents (kind: Stage) in the stages folder, in a stable order."""
    return sorted(p for p in stages_dir.glob("*.yaml") if "kind: Stage" in p.read_text())
