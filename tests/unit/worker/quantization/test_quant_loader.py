"""The loader finishes each quantized layer as soon as its last shard is in, so dense copies never pile up."""

from __future__ import annotations

import torch

from fms_worker.loader import load_weights
from fms_worker.models.llama import LlamaArgs, LlamaForCausalLM
from fms_worker.quantization.int8 import Int8LinearMethod
from tiny_llama import ARGS, checkpoint


def _dense_staged(model) -> int:
    return sum(1 for m in model.modules()
               if isinstance(getattr(m, "quant_method", None), Int8LinearMethod) and hasattr(m, "weight")
               and not m.weight.is_meta)


def test_layers_are_quantized_as_they_complete():
    model = LlamaForCausalLM(ARGS, torch.float32, quant_method=Int8LinearMethod())
    assert _dense_staged(model) == 0  # nothing dense before loading: the staged weights are meta
    ckpt = checkpoint(ARGS)
    peak = []

    def stream():
        for name, t in ckpt.items():  # layer by layer, as checkpoint files are written
            yield name, t
            peak.append(_dense_staged(model))

    load_weights(model, stream())
    assert max(peak) == 1  # a fused weight waits for its other shards; never more than one at a time
    assert _dense_staged(model) == 0
    assert all(m.qweight.dtype == torch.int8 for m in model.modules() if hasattr(m, "qweight"))
    # and the quantized model computes what the dense one does, within int8 error
    dense = LlamaForCausalLM(ARGS, torch.float32)
    load_weights(dense, iter(ckpt.items()))
    x = torch.randn(3, ARGS.hidden_size)
    for q_layer, d_layer in zip(model.model.layers, dense.model.layers):
        ref = d_layer.mlp(x)
        assert ((q_layer.mlp(x) - ref).norm() / ref.norm()) < 0.02


def test_untied_lm_head_is_quantized_by_weight_only_schemes():
    from fms_worker.quantization.fp8 import Fp8LinearMethod
    from fms_worker.quantization.int4 import Int4LinearMethod

    ckpt = checkpoint(ARGS)
    dense = LlamaForCausalLM(ARGS, torch.float32)
    load_weights(dense, iter(ckpt.items()))
    hidden = torch.randn(5, ARGS.hidden_size)
    ref = dense.compute_logits(hidden)
    for method, qdtype, tol in ((Int8LinearMethod(), torch.int8, 0.02), (Int4LinearMethod(32), None, 0.15)):
        model = LlamaForCausalLM(ARGS, torch.float32, quant_method=method)
        load_weights(model, iter(ckpt.items()))
        head = model.lm_head
        assert not hasattr(head, "weight") and hasattr(head, "qweight")  # the dense head is gone
        if qdtype is not None:
            assert head.qweight.dtype == qdtype
        logits = model.compute_logits(hidden)
        assert logits.shape == ref.shape
        err = ((logits - ref).norm() / ref.norm()).item()
        print(type(method).__name__, "head relative error", round(err, 4))
        assert err < tol
    # a GPTQ/AWQ checkpoint's dense head stays dense, and so does fp8's (W8A8 logits lose too much)
    assert Int4LinearMethod(32, quantize_lm_head=False).for_lm_head() is None
    assert Fp8LinearMethod().for_lm_head() is None


def test_tied_lm_head_stays_the_embedding():
    args = LlamaArgs(**{**ARGS.__dict__, "tie_embeddings": True})
    model = LlamaForCausalLM(args, torch.float32, quant_method=Int8LinearMethod())
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert model.lm_head.quant_method is None


def test_logits_split_into_local_slice_and_gather():
    """What a decode CUDA graph captures (the local slice) and what runs after it (the gather) compose to
    compute_logits, quantized head or not."""
    ckpt = checkpoint(ARGS)
    hidden = torch.randn(3, ARGS.hidden_size)
    for method in (None, Int8LinearMethod()):
        model = LlamaForCausalLM(ARGS, torch.float32, quant_method=method)
        load_weights(model, iter(ckpt.items()))
        assert torch.equal(model.gather_logits(model.local_logits(hidden)), model.compute_logits(hidden))


def test_quantized_head_pads_its_rows_to_a_multiple_of_16():
    """A vocabulary that is not a multiple of 8 (here 131) still gets the kernel's row alignment; the
    padding's logits never reach the caller."""
    from fms_worker.quantization.int4 import Int4LinearMethod

    args = LlamaArgs(**{**ARGS.__dict__, "vocab_size": 131})
    ckpt = checkpoint(args)
    dense = LlamaForCausalLM(args, torch.float32)
    load_weights(dense, iter(ckpt.items()))
    model = LlamaForCausalLM(args, torch.float32, quant_method=Int4LinearMethod(32))
    load_weights(model, iter(ckpt.items()))
    hidden = torch.randn(4, args.hidden_size)
    logits = model.compute_logits(hidden)
    assert logits.shape == (4, 131)
    ref = dense.compute_logits(hidden)
    assert ((logits - ref).norm() / ref.norm()).item() < 0.15
