"""Which weight each decode matmul asks L2 for (layers/prefetch_chain.py, kernels/l2_prefetch.py): the next one's
in the order a step runs them, the LM head's the first layer's, capped by the budget, both halves of a gated
weight. Whether it is faster is a GPU measurement (docs/benchmarks.md); here, that the chain is the right one."""

from __future__ import annotations

import pytest
import torch

from fms_worker.kernels.l2_prefetch import Prefetch
from fms_worker.layers import prefetch_chain
from fms_worker.models.llama import LlamaArgs, LlamaForCausalLM
from fms_worker.quantization.int8 import Int8LinearMethod


def _model(quant_method=None) -> LlamaForCausalLM:
    args = LlamaArgs(vocab_size=48, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                     head_dim=8, rms_norm_eps=1e-5, rope_theta=10000.0, rope_scaling=None, max_position=64,
                     tie_embeddings=False)
    return LlamaForCausalLM(args, torch.bfloat16, quant_method)


def _start(t: torch.Tensor) -> int:
    return t.data_ptr()


def test_each_matmul_asks_for_the_next_ones_weight_in_step_order():
    model = _model()
    order = model.matmul_order()
    layers = model.model.layers
    assert order == [layers[0].self_attn.qkv_proj, layers[0].self_attn.o_proj, layers[0].mlp.gate_up_proj,
                     layers[0].mlp.down_proj, layers[1].self_attn.qkv_proj, layers[1].self_attn.o_proj,
                     layers[1].mlp.gate_up_proj, layers[1].mlp.down_proj, model.lm_head]
    assert prefetch_chain.link(order, budget=1 << 20) == len(order)
    for i, module in enumerate(order):
        nxt = order[(i + 1) % len(order)]
        pf = module.l2_next
        assert _start(pf.base) == _start(nxt.weight), i
        size = nxt.weight.numel() * 2
        if getattr(nxt, "gated", False):  # gate rows and up rows are read together: both halves from their starts
            assert (pf.nbytes, pf.second) == (size // 2, size // 2), i
        else:
            assert (pf.nbytes, pf.second) == (size, 0), i


def test_the_budget_caps_each_link_and_zero_turns_it_off():
    model = _model()
    order = model.matmul_order()
    prefetch_chain.link(order, budget=1000)
    gate_up = model.model.layers[0].mlp.gate_up_proj
    assert order[1].l2_next == Prefetch(order[1].l2_next.base, 500, gate_up.weight.numel())  # 500 of each half
    assert order[0].l2_next.nbytes == 1000 and order[0].l2_next.second == 0
    assert prefetch_chain.link(order, budget=0) == 0
    assert all(m.l2_next is None for m in order)


def test_quantized_matmuls_ask_for_what_their_gemv_reads():
    """int8 on CPU has no Triton GEMV: nothing to ask for, on either side of a link (the head is int8 too)."""
    model = _model(Int8LinearMethod())
    order = model.matmul_order()
    assert model.lm_head.quant_method is not None
    for m in order:  # as after loading: a dense weight in place of the meta one, then the method quantizes it
        m.weight = torch.nn.Parameter(torch.randn(m.weight.shape, dtype=torch.bfloat16), requires_grad=False)
        m.quant_method.process_weights_after_loading(m)
    assert prefetch_chain.link(order, budget=1 << 20) == 0
    for m in order:
        m.int8_kernel = "triton"  # as on CUDA: the GEMV streams qweight
    assert prefetch_chain.link(order, budget=1 << 20) == len(order)
    assert _start(order[0].l2_next.base) == _start(order[1].qweight)
    assert order[0].l2_next.nbytes == order[1].qweight.numel()  # int8: a byte a weight
    assert _start(order[-2].l2_next.base) == _start(model.lm_head.qweight)
    assert _start(order[-1].l2_next.base) == _start(order[0].qweight)


@pytest.mark.parametrize("value, budget", [("0", 0), ("8", 8 << 20), ("0.5", 1 << 19)])
def test_budget_from_env(monkeypatch, value, budget):
    monkeypatch.setenv(prefetch_chain.ENV, value)
    assert prefetch_chain.budget_from_env() == budget


@pytest.mark.parametrize("value", ["eight", "-1"])
def test_budget_from_env_refuses_what_is_not_a_size(monkeypatch, value):
    monkeypatch.setenv(prefetch_chain.ENV, value)
    with pytest.raises(ValueError, match="FMS_L2_PREFETCH_MB"):
        prefetch_chain.budget_from_env()
