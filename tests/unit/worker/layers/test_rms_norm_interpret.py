"""The decode-rows RMSNorm kernel (kernels/rms_norm.py, FMS_DECODE_NORM=triton) on CPU, through Triton's
interpreter, against the functions it replaces (layers/fused.py): float16 rows, with and without a residual;
the new residual bit for bit, the normed rows within one float16 step (the mean of squares is summed in
another order); hidden sizes that are not powers of two."""

from __future__ import annotations

import pytest
import torch

from fms_worker.kernels import rms_norm

_SCRIPT = r'''
import json

import torch

from fms_worker.kernels.rms_norm import rms_norm_rows
from fms_worker.layers.fused import _add_rms_norm, _rms_norm

gen = torch.Generator().manual_seed(0)
out = {}
for rows, hidden in ((1, 96), (3, 64), (16, 200)):
    x, residual = (torch.randn(rows, hidden, generator=gen).to(torch.float16) for _ in range(2))
    weight = (1 + 0.1 * torch.randn(hidden, generator=gen)).to(torch.float16)
    normed, res = rms_norm_rows(x, weight, 1e-5, residual)
    ref_normed, ref_res = _add_rms_norm(x, residual, weight, 1e-5)
    plain = rms_norm_rows(x, weight, 1e-5)
    ref_plain = _rms_norm(x, weight, 1e-5)
    step = ref_normed.float().abs().clamp_min(6e-5) / 1024  # a float16 step at the reference's magnitude
    step_plain = ref_plain.float().abs().clamp_min(6e-5) / 1024
    out[f"{rows} x {hidden}"] = {
        "residual": torch.equal(res, ref_res),
        "normed": ((normed.float() - ref_normed.float()).abs() <= step).all().item(),
        "plain": ((plain.float() - ref_plain.float()).abs() <= step_plain).all().item(),
        "dtypes": normed.dtype == res.dtype == plain.dtype == torch.float16}
print(json.dumps(out))
'''


def test_rows_match_the_compiled_functions(triton_interpret):
    for case, checks in triton_interpret(_SCRIPT).items():
        assert all(checks.values()), (case, checks)


def test_only_few_contiguous_cuda_rows_of_one_dtype_are_taken():
    x, w = torch.zeros(2, 64, dtype=torch.bfloat16), torch.ones(64, dtype=torch.bfloat16)
    assert not rms_norm.supported(x, w)  # CPU rows: the compiled (or eager) function
    assert not rms_norm.supported(x.float(), w.float())


def test_switch(monkeypatch):
    monkeypatch.delenv(rms_norm.ENV_SWITCH, raising=False)
    assert not rms_norm.enabled()
    monkeypatch.setenv(rms_norm.ENV_SWITCH, "triton")
    assert rms_norm.enabled()
    monkeypatch.setenv(rms_norm.ENV_SWITCH, "yes")
    with pytest.raises(ValueError, match="use compiled or triton"):
        rms_norm.enabled()
