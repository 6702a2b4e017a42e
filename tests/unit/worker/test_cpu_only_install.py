"""A CPU-only install has no Triton: the worker and its kernel modules still import (the kernels stay unused)."""

from __future__ import annotations

import subprocess
import sys

_SCRIPT = r'''
import sys


class NoTriton:
    def find_spec(self, name, path=None, target=None):
        if name == "triton" or name.startswith("triton."):
            raise ImportError("no triton in this install")
        return None


sys.meta_path.insert(0, NoTriton())
import fms_worker.engine.llm_engine  # noqa: F401
from fms_worker.kernels import int4_gemv_packed, int8_matmul, paged_attention, tuning  # noqa: F401

assert "triton" not in sys.modules or sys.modules["triton"] is None
assert tuning.pdl_launch.__module__ == "fms_worker.kernels.tuning"
print("ok")
'''


def test_worker_imports_without_triton():
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok")
