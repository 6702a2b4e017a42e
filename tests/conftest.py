"""Shared fixtures: real model directories and the GPU marker."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "hack"))


def _has_cuda() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if _has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run on the GPU machines: see docs/benchmarks.md)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


_INTERPRETER_PRELUDE = r'''
import numpy
import triton.runtime.interpreter as interp

# Triton 3.6's interpreter calls int() on 1-element arrays, an error since numpy 2.4 (triton-lang/triton#9171).
_patch = interp._patch_lang_tensor
def _patch_lang_tensor(tensor, scope):
    _patch(tensor, scope)
    scope.set_attr(tensor, "__index__", lambda self: int(numpy.asarray(self.handle.data).reshape(-1)[0]))
interp._patch_lang_tensor = _patch_lang_tensor
'''


@pytest.fixture(scope="session")
def triton_interpret():
    """Runs a script's Triton kernels on CPU through Triton's interpreter and returns the JSON its last line
    prints. TRITON_INTERPRET must be set before triton is imported, hence a subprocess."""
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed (CPU-only install): no Triton kernels to interpret")

    def run(script: str):
        import json
        import subprocess

        env = {**os.environ, "TRITON_INTERPRET": "1"}
        proc = subprocess.run([sys.executable, "-c", _INTERPRETER_PRELUDE + script], env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-4000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    return run


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a safetensors directory (converted once from the PyPI GGUF)."""
    import prepare_models

    return prepare_models.prepare("smollm2-135m")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 (BERT encoder) as shipped on PyPI, safetensors."""
    import prepare_models

    return prepare_models.prepare("all-minilm-l6-v2")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """A local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok fleet of
    hack/fleet.yaml), started once per session on first use and stopped at the end.

    Attributes: .kubeconfig (Path), .server (URL), .env (os.environ + KUBECONFIG),
    .kubectl(*args, check=True, input=None) -> CompletedProcess with text output.
    """
    import localcluster

    state = tmp_path_factory.mktemp("cluster")
    # bind_to_parent: the control plane dies with this pytest process, even on a crash.
    c = localcluster.up(state, bind_to_parent=True)
    try:
        yield c
    finally:
        localcluster.down(state)


@pytest.fixture
def namespace(cluster, request) -> str:
    """A fresh namespace per test (deleted afterwards), ready for Pods: its `default` ServiceAccount exists."""
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{base or 'test'}-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl("-n", name, "wait", "--for=create", "serviceaccount/default", "--timeout=60s")
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
