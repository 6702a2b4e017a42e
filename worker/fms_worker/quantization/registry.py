"""precision config -> the LinearMethod every linear layer of the model uses."""

from __future__ import annotations

import torch

from fms_worker.config import PrecisionConfig
from fms_worker.layers.quant_method import LinearMethod, UnquantizedLinearMethod
from fms_worker.layers.tree_linear import TreeLinearMethod
from fms_worker.quantization.checkpoint import packed_format
from fms_worker.quantization.fp8 import Fp8LinearMethod, require_fp8
from fms_worker.quantization.int4 import Int4LinearMethod
from fms_worker.quantization.int8 import Int8LinearMethod
from fms_worker.quantization.sparse24 import Sparse24LinearMethod


def get_linear_method(precision: PrecisionConfig, device: torch.device | None = None, hf_config=None) -> LinearMethod:
    """`device` given: fail now, before any weight is read, if the device cannot run the scheme.

    `hf_config` given: int4 on a GPTQ/AWQ checkpoint takes the checkpoint's group size unless
    int4_group_size was set, so its weights land on their own grid again."""
    if precision.sparsity == "2:4":  # the config refuses 2:4 together with a quantization
        return Sparse24LinearMethod()
    if precision.quantization == "none":
        return TreeLinearMethod() if precision.tp_invariant else UnquantizedLinearMethod()
    if precision.quantization == "int8":
        return Int8LinearMethod()
    if precision.quantization == "int4":
        if device is not None and device.type == "cuda" and precision.dtype not in ("bfloat16", "float16"):
            raise ValueError("int4 on CUDA runs Triton kernels for bfloat16 or float16 activations; "
                             "set precision.dtype bfloat16")
        fmt = packed_format(hf_config) if hf_config is not None else None
        return Int4LinearMethod(_int4_group_size(precision, fmt), quantize_lm_head=fmt is None)
    if precision.quantization == "fp8":
        if device is not None:
            require_fp8(device)
        if precision.dtype != "bfloat16":
            raise ValueError("fp8 quantization computes in bfloat16; set precision.dtype bfloat16")
        return Fp8LinearMethod()
    raise ValueError(f"precision.quantization {precision.quantization!r} is not one of none, int8, int4, fp8")


def _int4_group_size(precision: PrecisionConfig, fmt) -> int:
    """A GPTQ/AWQ checkpoint's (`fmt`) group size unless int4_group_size was set."""
    if fmt is not None and fmt.group_size in (32, 64, 128) and "int4_group_size" not in precision.model_fields_set:
        return fmt.group_size
    return precision.int4_group_size
