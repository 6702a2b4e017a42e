"""Tensor-parallel linear layers. Each parameter carries a `weight_loader(param, loaded, shard_id)`
that narrows the full checkpoint tensor to this rank's slice, so the loader never knows the layout."""

from __future__ import annotations

import torch
from torch import nn

from fms_worker.layers import fused
from fms_worker.layers.quant_method import LinearMethod, UnquantizedLinearMethod
from fms_worker.parallel import get_parallel_state, tp_all_gather, tp_all_reduce, tp_tree_sum
from fms_worker.parallel.state import divide


class LinearBase(nn.Module):
    def __init__(self, input_size: int, output_sizes: list[int], bias: bool, params_dtype: torch.dtype,
                 quant_method: LinearMethod | None):
        super().__init__()
        state = get_parallel_state()
        self.tp_rank, self.tp_size = state.tp_rank, state.tp_size
        self.quant_method = quant_method or UnquantizedLinearMethod()
        self.input_size, self.output_sizes = input_size, output_sizes
        self.quant_method.create_weights(self, input_size, output_sizes, params_dtype, self.weight_loader)
        if bias:
            self.bias = nn.Parameter(torch.empty(sum(output_sizes), dtype=params_dtype), requires_grad=False)
            self.bias.weight_loader = self.weight_loader
        else:
            self.register_parameter("bias", None)

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id=None) -> None:
        param.data.copy_(loaded)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant_method.apply(self, x, self.bias)

    def input_format(self):
        """What the layer before may hand this one instead of a tensor (`LinearMethod.input_format`)."""
        return self.quant_method.input_format()


class ColumnParallelLinear(LinearBase):
    """Y = X A with A split by output columns: rank r holds rows [r*out/tp, (r+1)*out/tp) of the weight."""

    def __init__(self, input_size: int, output_size: int, bias: bool = False, gather_output: bool = False,
                 params_dtype: torch.dtype = torch.float32, quant_method: LinearMethod | None = None):
        self.gather_output = gather_output
        tp = get_parallel_state().tp_size
        super().__init__(input_size, [divide(output_size, tp, "the output size")], bias, params_dtype, quant_method)

    def weight_loader(self, param, loaded, shard_id=None):
        size = param.shape[0]
        param.data.copy_(loaded.narrow(0, self.tp_rank * size, size))

    def forward(self, x):
        y = super().forward(x)
        return tp_all_gather(y) if self.gather_output else y


class MergedColumnParallelLinear(ColumnParallelLinear):
    """Several column-parallel matrices stacked in one weight (gate and up): one matmul, shard i loaded by index.

    gated: a gated MLP's gate and up (two equal halves); `forward` then returns silu(gate) * up, which a
    method may compute inside its matmul (`LinearMethod.apply_silu_mul`), or, given the next layer's
    input format (`into`), writes it in that format."""

    def __init__(self, input_size: int, output_sizes: list[int], bias: bool = False,
                 params_dtype: torch.dtype = torch.float32, quant_method: LinearMethod | None = None,
                 gated: bool = False):
        self.gather_output = False
        tp = get_parallel_state().tp_size
        sizes = [divide(s, tp, "a merged output size") for s in output_sizes]
        if gated and (len(sizes) != 2 or sizes[0] != sizes[1]):
            raise ValueError(f"a gated layer has two equal halves, got output sizes {output_sizes}")
        self.gated = gated
        LinearBase.__init__(self, input_size, sizes, bias, params_dtype, quant_method)

    def forward(self, x, into=None):
        if self.gated and into is not None:
            return fused.silu_and_mul_into(into, self.quant_method.apply(self, x, self.bias))
        if self.gated:
            return self.quant_method.apply_silu_mul(self, x, self.bias)  # [T, in] -> [T, out / 2]
        return super().forward(x)

    def weight_loader(self, param, loaded, shard_id=None):
        offset = sum(self.output_sizes[:shard_id])
        size = self.output_sizes[shard_id]
        param.data.narrow(0, offset, size).copy_(loaded.narrow(0, self.tp_rank * size, size))


class QKVParallelLinear(ColumnParallelLinear):
    """Q, K and V projections in one weight; shards "q", "k", "v". KV heads are split across ranks
    (replicated when there are fewer KV heads than ranks)."""

    def __init__(self, hidden_size: int, head_dim: int, num_heads: int, num_kv_heads: int, bias: bool = False,
                 params_dtype: torch.dtype = torch.float32, quant_method: LinearMethod | None = None):
        self.gather_output = False
        tp = get_parallel_state().tp_size
        self.num_heads = divide(num_heads, tp, "the attention heads")
        self.num_kv_heads = max(1, num_kv_heads // tp) if num_kv_heads >= tp else 1
        if num_kv_heads >= tp:
            divide(num_kv_heads, tp, "the key/value heads")
        self.head_dim = head_dim
        self.kv_replicas = max(1, tp // num_kv_heads)
        sizes = [self.num_heads * head_dim, self.num_kv_heads * head_dim, self.num_kv_heads * head_dim]
        LinearBase.__init__(self, hidden_size, sizes, bias, params_dtype, quant_method)

    def weight_loader(self, param, loaded, shard_id=None):
        index = "qkv".index(shard_id)
        offset = sum(self.output_sizes[:index])
        size = self.output_sizes[index]
        rank = self.tp_rank if shard_id == "q" else self.tp_rank // self.kv_replicas
        param.data.narrow(0, offset, size).copy_(loaded.narrow(0, rank * size, size))


class RowParallelLinear(LinearBase):
    """Y = X A with A split by input rows; partial products are summed across ranks.

    A method with `sums_subtotals` (tree mode) hands over float32 subtotals, added by a fixed tree."""

    splits_input = True

    def __init__(self, input_size: int, output_size: int, bias: bool = False,
                 params_dtype: torch.dtype = torch.float32, quant_method: LinearMethod | None = None):
        tp = get_parallel_state().tp_size
        super().__init__(divide(input_size, tp, "the input size"), [output_size], bias, params_dtype, quant_method)

    def weight_loader(self, param, loaded, shard_id=None):
        if param.dim() == 1:  # bias: added once, after the reduction
            param.data.copy_(loaded)
            return
        size = param.shape[1]
        param.data.copy_(loaded.narrow(1, self.tp_rank * size, size))

    @property
    def defers_reduce(self) -> bool:
        """Whether forward(reduce=False) may hand over this rank's partial sum (no bias, not tree mode)."""
        return self.bias is None and not getattr(self.quant_method, "sums_subtotals", False)

    def forward(self, x, reduce: bool = True):
        """reduce=False (only where `defers_reduce`): this rank's partial sum, for the caller to sum over the
        ranks (the next norm does, with the add: layers/norm.py)."""
        if self.tp_size > 1 and getattr(self.quant_method, "sums_subtotals", False):
            y = tp_tree_sum(self.quant_method.apply_float32(self, x)).to(x.dtype)
        else:
            y = self.quant_method.apply(self, x, None)
            if not reduce:
                return y
            y = tp_all_reduce(y)
        return y + self.bias if self.bias is not None else y
