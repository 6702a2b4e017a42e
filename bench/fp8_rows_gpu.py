"""How far the fused fp8 rows of the gated activation are from the projection's own quantization pass (GPU).

The fused kernel (`layers/fused.silu_and_mul_into`) quantizes silu(gate) * up in float32; the projection's
own pass quantizes the bf16-rounded product. For 1, 7 and 256 rows, eager and compiled, this prints the
relative differences between the two, and of each from the exact float32 product, for the fp8 rows and
after a 1024 x 4096 fp8 projection, with the first row scales. It is what set the comparison in
tests/gpu/test_gpu_quant_ops.py::test_fp8_rows_from_the_norm.

    python3 bench/fp8_rows_gpu.py      (repository root; worker/ and tests/gpu on the path by itself)
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "worker"), str(ROOT / "tests" / "gpu")]

from test_gpu_quant_ops import _layer, _rel  # noqa: E402

from fms_worker.layers import fused  # noqa: E402
from fms_worker.quantization.fp8 import ROWS, Fp8LinearMethod, quantize_fp8_rows  # noqa: E402


def main() -> None:
    w = torch.randn(1024, 4096, device="cuda") * 4096**-0.5
    layer = _layer(Fp8LinearMethod(fused_input=True), w)

    def deq(parts):
        return parts[0].float() * parts[1]

    for compiled in (False, True):
        fused.enable(compiled)
        for m in (1, 7, 256):
            torch.manual_seed(m)
            g = torch.randn(m, 8192, device="cuda", dtype=torch.bfloat16)
            exact = torch.nn.functional.silu(g[:, :4096].float()) * g[:, 4096:].float()
            own = fused.silu_and_mul(g)
            rows = fused.silu_and_mul_into(ROWS, g)
            ref_rows, got_rows = deq(quantize_fp8_rows(own)), deq(rows.parts)
            ref, got, target = layer(own), layer(rows), exact @ w.T
            print(f"compiled={compiled} m={m} rows: fused-own {_rel(got_rows, ref_rows):.4f}, own-exact "
                  f"{_rel(ref_rows, exact):.4f}, fused-exact {_rel(got_rows, exact):.4f} | projected: fused-own "
                  f"{_rel(got, ref):.4f}, own-exact {_rel(ref, target):.4f}, fused-exact {_rel(got, target):.4f} "
                  f"| first scales fused {rows.parts[1].flatten()[:3].tolist()} own "
                  f"{quantize_fp8_rows(own)[1].flatten()[:3].tolist()}")
    fused.enable(False)


if __name__ == "__main__":
    main()
