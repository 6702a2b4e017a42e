"""Pre-quantized checkpoints (GPTQ, AWQ, compressed-tensors, fp8, bitsandbytes ...).

fms quantizes dense checkpoints at load time; it does not read packed
third-party layouts yet. This check turns what would otherwise be a confusing
"checkpoint tensor 'qweight' has no matching parameter" into an error that
says what to do.
"""

from __future__ import annotations

from pathlib import Path

# what to set instead, by the checkpoint's scheme
_SCHEME_HINT = {"gptq": "int4", "awq": "int4", "fp8": "fp8", "bitsandbytes": "int8"}


def prequantized_method(hf_config) -> str | None:
    """The checkpoint's `quantization_config.quant_method`, or None for a dense checkpoint."""
    qc = getattr(hf_config, "quantization_config", None)
    if qc is None:
        return None
    method = qc.get("quant_method") if isinstance(qc, dict) else getattr(qc, "quant_method", None)
    return str(getattr(method, "value", method) or "unknown")


def check_dense_checkpoint(hf_config, model_dir: str | Path) -> None:
    method = prequantized_method(hf_config)
    if method is None:
        return
    hint = _SCHEME_HINT.get(method, "int8, int4 or fp8")
    raise ValueError(
        f"{model_dir} is a pre-quantized checkpoint (quantization_config.quant_method {method!r}); fms does not "
        "load pre-quantized layouts yet. Serve the original bf16/fp16 checkpoint and set "
        f"precision.quantization {hint} to quantize it at load time"
    )
