"""A tiny Llama (4 layers, hidden 64) and a random checkpoint for it, shared by the quantization unit tests."""

from __future__ import annotations

import torch

from fms_worker.models.llama import LlamaArgs

ARGS = LlamaArgs(vocab_size=128, hidden_size=64, intermediate_size=128, num_layers=4, num_heads=4, num_kv_heads=2,
                 head_dim=16, rms_norm_eps=1e-5, rope_theta=10000.0, rope_scaling=None, max_position=256,
                 tie_embeddings=False)


def checkpoint(args: LlamaArgs) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    h, i, d = args.hidden_size, args.intermediate_size, args.head_dim
    shapes = {"self_attn.q_proj.weight": (args.num_heads * d, h), "self_attn.k_proj.weight": (args.num_kv_heads * d, h),
              "self_attn.v_proj.weight": (args.num_kv_heads * d, h), "self_attn.o_proj.weight": (h, args.num_heads * d),
              "mlp.gate_proj.weight": (i, h), "mlp.up_proj.weight": (i, h), "mlp.down_proj.weight": (h, i),
              "input_layernorm.weight": (h,), "post_attention_layernorm.weight": (h,)}
    out = {f"model.layers.{n}.{k}": torch.randn(s, generator=g) * 0.1 for n in range(args.num_layers)
           for k, s in shapes.items()}
    out.update({"model.embed_tokens.weight": torch.randn(args.vocab_size, h, generator=g),
                "model.norm.weight": torch.ones(h), "lm_head.weight": torch.randn(args.vocab_size, h, generator=g)})
    return out
