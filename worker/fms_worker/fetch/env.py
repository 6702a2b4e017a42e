"""The persistent compile cache: torch.compile (Inductor) and Triton kernels kept on the model cache volume.

Compiling the decode graph and autotuning kernels costs tens of seconds to
minutes on a cold pod. Both caches key their entries by the code, the GPU and
the library versions, so sharing one directory across the pods and restarts of
one model turns the second start's compile into a cache read. The operator
gives each model (and tensor-parallel degree) its own directory: kernels
compiled for dynamic shapes keep the tuning of the sizes first compiled, which
another model's entries would get wrong (fms_operator.render.worker_config.compile_dir).
"""

from __future__ import annotations

import os
from pathlib import Path

COMPILE_DIR = ".compile"


def compile_cache_dir(cache_root: str | Path) -> Path:
    return Path(cache_root) / COMPILE_DIR


def compile_cache_env(compile_dir: str | Path) -> dict[str, str]:
    """Environment for the worker process (the operator sets the same on the worker container)."""
    d = Path(compile_dir)
    return {"TORCHINDUCTOR_CACHE_DIR": str(d / "inductor"), "TRITON_CACHE_DIR": str(d / "triton")}


def apply_compile_cache(compile_dir: str | Path | None) -> dict[str, str]:
    """Point this process's compile caches at `compile_dir` (WorkerConfig.caching.compile_cache_dir).

    Must run before torch compiles anything. Variables already set (by the
    operator or the user) win. Returns what was set.
    """
    if not compile_dir:
        return {}
    applied = {}
    for key, value in compile_cache_env(compile_dir).items():
        if key not in os.environ:
            os.environ[key] = value
            applied[key] = value
        Path(os.environ[key]).mkdir(parents=True, exist_ok=True)
    return applied
