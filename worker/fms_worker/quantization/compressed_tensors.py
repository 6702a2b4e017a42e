"""Reading compressed-tensors checkpoints (quant_method "compressed-tensors", as llm-compressor writes them).

The checkpoint's `quantization_config` names config groups: each a scheme (the weights' bits, type, strategy,
group size, symmetry) for the modules its targets match ("Linear", a module name, or "re:" and a regular
expression), and a storage format (pack-quantized int4/int8 codes in int32 words, float-quantized fp8,
int-quantized int8, nvfp4 ...). A quantized linear `P` stores `P.weight_scale` and, by format,
`P.weight_packed` + `P.weight_shape` or an fp8/int8 `P.weight` (plus zero points, activation scales). The
compressed-tensors library, which defines the format, decompresses each linear here: its compressor for the
group's format turns the parts back into the dense weight, so every format and version it reads, fms reads.
The linears then load through packed.dense_view like GPTQ and AWQ ones, and `precision.quantization`
applies to the dense weights (int4 keeps a group-quantized checkpoint's group size). Activation and KV-cache
scales are not read: the fp8 schemes compute their own.
"""

from __future__ import annotations

import logging
import re

import torch

from fms_worker.quantization.packed import LinearParts

log = logging.getLogger(__name__)

# Besides each format's own parameters (`compression_param_names`): what a quantized linear may also store.
_EXTRA = ("weight_zero_point", "weight_g_idx", "weight_global_scale", "input_scale", "input_zero_point",
          "input_global_scale", "output_scale", "output_zero_point")
_DROP = ("k_scale", "v_scale", "q_scale")  # a kv_cache_scheme's attention scales


class CompressedTensorsFormat(LinearParts):
    marker = "weight_scale"
    drop = _DROP

    def __init__(self, config, compressors: dict):
        self.config, self.compressors = config, compressors  # group name -> (scheme, compressor class)
        names = {n for scheme, comp in compressors.values() for n in comp.compression_param_names(scheme)}
        self.parts = tuple(sorted(names | set(_EXTRA)))

    @classmethod
    def from_config(cls, qc: dict) -> "CompressedTensorsFormat":
        try:
            from compressed_tensors.compressors import BaseCompressor
            from compressed_tensors.quantization import QuantizationConfig
        except ImportError as exc:  # a slim install without the worker's dependencies
            raise ValueError("compressed-tensors checkpoints need the compressed-tensors package "
                             "(pip install compressed-tensors)") from exc
        if qc.get("sparsity_config"):
            raise ValueError("compressed-tensors checkpoints with a sparsity_config (compressed sparse weights) are "
                             "not supported; serve a copy stored dense (a 2:4-pruned one can then use "
                             "precision.sparsity 2:4)")
        config = QuantizationConfig.model_validate(qc)
        compressors = {}
        for name, scheme in config.config_groups.items():
            fmt = str(getattr(scheme.format, "value", scheme.format) or config.format)
            if scheme.weights is None or fmt == "dense":
                continue  # activations only: the weights are dense
            try:
                compressors[name] = (scheme, BaseCompressor.get_value_from_registry(fmt))
            except (KeyError, ValueError) as exc:
                raise ValueError(f"compressed-tensors format {fmt!r} (config group {name}) is not one this "
                                 f"compressed-tensors version decompresses") from exc
        if qc.get("kv_cache_scheme"):
            log.warning("the checkpoint's kv_cache_scheme scales are not read; precision.kvCacheDtype fp8 "
                        "computes its own")
        return cls(config, compressors)

    @property
    def group_size(self) -> int | None:
        """The int4 group size of the weights' scheme, when all groups share one."""
        sizes = {s.weights.group_size for s, _ in self.compressors.values() if s.weights.num_bits == 4}
        return sizes.pop() if len(sizes) == 1 else None

    def _group(self, prefix: str):
        for name, (scheme, comp) in self.compressors.items():
            if any(_matches(t, prefix) for t in scheme.targets):
                return scheme, comp
        raise ValueError(f"compressed-tensors checkpoint: {prefix} stores quantized weights but no config group "
                         f"targets it (targets: {[s.targets for s, _ in self.compressors.values()]})")

    def required(self, prefix: str) -> tuple[str, ...]:
        scheme, comp = self._group(prefix)
        return tuple(comp.compression_param_names(scheme))

    def dequantize(self, parts: dict[str, torch.Tensor], dtype: torch.dtype, prefix: str = "") -> torch.Tensor:
        scheme, comp = self._group(prefix)
        return comp.decompress(dict(parts), scheme)["weight"].to(dtype)


def _matches(target: str, prefix: str) -> bool:
    """A config group target: "re:" and a regular expression over module names, a module name (or its last
    components), or a class name, which here can only be a linear's (only linears store quantized parts)."""
    if target.startswith("re:"):
        return re.match(target[3:], prefix) is not None
    if target[:1].isupper():
        return True
    return prefix == target or prefix.endswith("." + target)
