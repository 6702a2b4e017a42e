"""Pre-quantized checkpoints (GPTQ, AWQ, compressed-tensors, fp8, bitsandbytes ...).

fms quantizes dense checkpoints at load time. Of the packed third-party
layouts it reads 4-bit GPTQ and AWQ and compressed-tensors (gptq.py, awq.py,
compressed_tensors.py, packed.py: each linear becomes dense again as it loads,
then the configured scheme applies). For the others this check turns what would
otherwise be a confusing "checkpoint tensor 'qweight' has no matching parameter"
into an error that says what to do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from fms_worker.quantization.awq import AWQFormat
from fms_worker.quantization.compressed_tensors import CompressedTensorsFormat
from fms_worker.quantization.gptq import GPTQFormat
from fms_worker.quantization.packed import dense_view, expected_parts

log = logging.getLogger(__name__)

# what to set instead, by the checkpoint's scheme
_SCHEME_HINT = {"fp8": "fp8", "bitsandbytes": "int8"}
# read as dense weights, one linear at a time
_PACKED = {"gptq": GPTQFormat, "awq": AWQFormat, "compressed-tensors": CompressedTensorsFormat}


def prequantized_method(hf_config) -> str | None:
    """The checkpoint's `quantization_config.quant_method`, or None for a dense checkpoint."""
    qc = getattr(hf_config, "quantization_config", None)
    if qc is None:
        return None
    method = qc.get("quant_method") if isinstance(qc, dict) else getattr(qc, "quant_method", None)
    return str(getattr(method, "value", method) or "unknown")


def packed_format(hf_config):
    """The layout of a GPTQ/AWQ/compressed-tensors checkpoint (refusing versions it cannot read); None for
    anything else."""
    method = prequantized_method(hf_config)
    return _PACKED[method].from_config(_quantization_config(hf_config)) if method in _PACKED else None


def _quantization_config(hf_config) -> dict:
    qc = getattr(hf_config, "quantization_config", None) or {}
    return qc if isinstance(qc, dict) else qc.to_dict()


def checkpoint_weights(hf_config, model_dir: str | Path, weights: Iterator[tuple[str, torch.Tensor]],
                       dtype: torch.dtype, quantized: bool, names: Callable[[], list[str]]) -> Iterator[tuple[str, torch.Tensor]]:
    """The checkpoint's tensors as the model's dense layout; refuses layouts it cannot read.

    `names` lists the checkpoint's tensor names (read from the headers; called only for packed layouts)."""
    check_dense_checkpoint(hf_config, model_dir)
    fmt = packed_format(hf_config)
    if fmt is None:
        return weights
    if not quantized:
        log.warning("%s is a pre-quantized (%s) checkpoint served dense; set precision.quantization (int4, "
                    "int8 or fp8, as it was quantized) to keep it quantized", model_dir, prequantized_method(hf_config))
    return dense_view(weights, fmt, dtype, expected_parts(names(), fmt))


def check_dense_checkpoint(hf_config, model_dir: str | Path) -> None:
    method = prequantized_method(hf_config)
    if method is None or method in _PACKED:
        return
    hint = _SCHEME_HINT.get(method, "int8, int4 or fp8")
    raise ValueError(
        f"{model_dir} is a pre-quantized checkpoint (quantization_config.quant_method {method!r}); of the "
        "pre-quantized layouts fms reads 4-bit GPTQ and AWQ and compressed-tensors only. Serve the original "
        "bf16/fp16 checkpoint and set "
        f"precision.quantization {hint} to quantize it at load time"
    )
