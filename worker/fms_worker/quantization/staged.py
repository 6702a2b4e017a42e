"""The base of every scheme that rewrites a dense checkpoint weight at load time.

The dense weight is declared on the meta device and only materialised (on the
model's device) when its first shard arrives; `process_weights_after_loading`
then quantizes it and drops it. With the loader finishing each layer as soon
as its last shard is in, at most the layers of one checkpoint file are ever
dense on the GPU, never the whole model.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from fms_worker.layers.quant_method import LinearMethod


class StagedLinearMethod(LinearMethod):
    """Subclasses implement `convert(layer, weight)` (register their own tensors) and `apply`."""

    def create_weights(self, layer: nn.Module, input_size: int, output_sizes: list[int], params_dtype: torch.dtype,
                       weight_loader: Callable) -> None:
        device = torch.get_default_device()  # the model is built under `with torch.device(target)`
        shape = (sum(output_sizes), input_size)
        layer.register_parameter("weight", _param(torch.empty(shape, dtype=params_dtype, device="meta")))

        def load(param: nn.Parameter, loaded: torch.Tensor, shard_id=None) -> None:
            if layer.weight.is_meta:
                layer.weight = _param(torch.empty(shape, dtype=params_dtype, device=device))
                layer.weight.weight_loader = load
            weight_loader(layer.weight, loaded, shard_id)

        layer.weight.weight_loader = load

    def process_weights_after_loading(self, layer: nn.Module) -> None:
        weight = layer.weight
        if weight.is_meta:
            raise ValueError(f"{type(layer).__name__} was never loaded; the checkpoint lacks its weight")
        del layer.weight
        with torch.no_grad():
            self.convert(layer, weight.data)

    def convert(self, layer: nn.Module, weight: torch.Tensor) -> None:
        raise NotImplementedError


def _param(t: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(t, requires_grad=False)


def set_param(layer: nn.Module, name: str, t: torch.Tensor) -> None:
    layer.register_parameter(name, _param(t))
