"""The Llama family: Llama 2/3, Mistral, Qwen2/2.5 (QKV bias), Qwen3 (Q/K RMSNorm), SmolLM2 (tied embeddings).

Fused QKV and gate-up projections; the paged KV cache lives in `Attention`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fms_worker.layers.attention import Attention, AttentionMetadata
from fms_worker.layers.embedding import ParallelLMHead, VocabParallelEmbedding
from fms_worker.layers.linear import MergedColumnParallelLinear, QKVParallelLinear, RowParallelLinear
from fms_worker.layers.norm import RMSNorm
from fms_worker.layers.rotary import RotaryEmbedding


@dataclass
class LlamaArgs:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict | None
    max_position: int
    tie_embeddings: bool
    qkv_bias: bool = False
    qk_norm: bool = False

    @classmethod
    def from_hf(cls, cfg) -> "LlamaArgs":
        arch = (getattr(cfg, "architectures", None) or [""])[0]
        model_type = getattr(cfg, "model_type", "")
        # transformers >= 5 keeps theta and scaling in `rope_parameters`; older configs in rope_theta/rope_scaling.
        rope = dict(getattr(cfg, "rope_parameters", None) or {})
        theta = rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))
        scaling = rope if rope.get("rope_type", "default") != "default" else getattr(cfg, "rope_scaling", None)
        return cls(
            vocab_size=cfg.vocab_size,
            hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size,
            num_layers=cfg.num_hidden_layers,
            num_heads=cfg.num_attention_heads,
            num_kv_heads=getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads,
            head_dim=getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads,
            rms_norm_eps=cfg.rms_norm_eps,
            rope_theta=theta,
            rope_scaling=scaling,
            max_position=cfg.max_position_embeddings,
            tie_embeddings=bool(getattr(cfg, "tie_word_embeddings", False)),
            qkv_bias=arch == "Qwen2ForCausalLM" or model_type == "qwen2" or bool(getattr(cfg, "attention_bias", False)),
            qk_norm=arch == "Qwen3ForCausalLM" or model_type == "qwen3",
        )


class LlamaAttention(nn.Module):
    def __init__(self, args: LlamaArgs, dtype: torch.dtype, quant_method=None):
        super().__init__()
        self.qkv_proj = QKVParallelLinear(args.hidden_size, args.head_dim, args.num_heads, args.num_kv_heads,
                                          bias=args.qkv_bias, params_dtype=dtype, quant_method=quant_method)
        h, hkv, d = self.qkv_proj.num_heads, self.qkv_proj.num_kv_heads, args.head_dim
        self.sizes = [h * d, hkv * d, hkv * d]
        self.o_proj = RowParallelLinear(args.num_heads * d, args.hidden_size, params_dtype=dtype, quant_method=quant_method)
        self.q_norm = RMSNorm(d, args.rms_norm_eps, dtype) if args.qk_norm else None
        self.k_norm = RMSNorm(d, args.rms_norm_eps, dtype) if args.qk_norm else None
        self.attn = Attention(h, d, hkv, rotary=RotaryEmbedding(d, args.max_position, args.rope_theta,
                                                                args.rope_scaling))

    def forward(self, positions: torch.Tensor, x: torch.Tensor, meta: AttentionMetadata,
                reduce: bool = True) -> torch.Tensor:
        q, k, v = self.qkv_proj(x).split(self.sizes, dim=-1)  # [T, (H + 2 Hkv) D] -> [T, H D], [T, Hkv D] x2
        t, d = x.shape[0], self.attn.head_dim
        q, k, v = q.view(t, -1, d), k.view(t, -1, d), v.view(t, -1, d)  # [T, H, D], [T, Hkv, D] x2
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        o = self.attn(positions, q, k, v, meta)  # rotary, KV-cache write, attention -> [T, H, D]
        return self.o_proj(o.reshape(t, -1), reduce)  # [T, H D] -> [T, hidden]


class LlamaMLP(nn.Module):
    def __init__(self, args: LlamaArgs, dtype: torch.dtype, quant_method=None):
        super().__init__()
        self.gate_up_proj = MergedColumnParallelLinear(args.hidden_size, [args.intermediate_size] * 2,
                                                       params_dtype=dtype, quant_method=quant_method, gated=True)
        self.down_proj = RowParallelLinear(args.intermediate_size, args.hidden_size, params_dtype=dtype,
                                           quant_method=quant_method)

    def forward(self, x: torch.Tensor, reduce: bool = True) -> torch.Tensor:
        return self.down_proj(self.gate_up_proj(x, into=self.down_proj.input_format()), reduce)  # silu(gate) * up


class LlamaDecoderLayer(nn.Module):
    def __init__(self, args: LlamaArgs, dtype: torch.dtype, quant_method=None):
        super().__init__()
        self.self_attn = LlamaAttention(args, dtype, quant_method)
        self.mlp = LlamaMLP(args, dtype, quant_method)
        self.input_layernorm = RMSNorm(args.hidden_size, args.rms_norm_eps, dtype)
        self.post_attention_layernorm = RMSNorm(args.hidden_size, args.rms_norm_eps, dtype)

    @property
    def partial(self) -> bool:
        """Whether the projections before the norms hand over per-rank partial sums, which the norms then sum
        over the ranks (with the add, in one kernel where that is on): so does this layer's output."""
        return self.self_attn.o_proj.defers_reduce and self.mlp.down_proj.defers_reduce

    def forward(self, positions, x, residual, meta):
        # Each norm writes its rows in the next projection's input format where the method has one (fp8).
        # x: the embeddings (residual None) or the layer before's MLP output, a partial sum where `partial`.
        # Consecutive partial norms alternate parity (the fused kernel's buffer halves): 1 here, 0 after the
        # attention, 1 again in the next layer or the final norm.
        partial, into = self.partial, self.self_attn.qkv_proj.input_format()
        if residual is None:
            residual, x = x, self.input_layernorm(x, into=into)
        else:
            x, residual = self.input_layernorm(x, residual, into=into, partial=partial, parity=1)
        x = self.self_attn(positions, x, meta, reduce=not partial)
        x, residual = self.post_attention_layernorm(x, residual, into=self.mlp.gate_up_proj.input_format(),
                                                    partial=partial, parity=0)
        return self.mlp(x, reduce=not partial), residual


class LlamaModel(nn.Module):
    def __init__(self, args: LlamaArgs, dtype: torch.dtype, quant_method=None):
        super().__init__()
        self.embed_tokens = VocabParallelEmbedding(args.vocab_size, args.hidden_size, dtype)
        self.layers = nn.ModuleList(LlamaDecoderLayer(args, dtype, quant_method) for _ in range(args.num_layers))
        self.norm = RMSNorm(args.hidden_size, args.rms_norm_eps, dtype)

    def forward(self, input_ids, positions, meta):
        x, residual = self.embed_tokens(input_ids), None  # [T, hidden]
        for layer in self.layers:
            x, residual = layer(positions, x, residual, meta)
        return self.final_norm(x, residual)

    def final_norm(self, x, residual):
        """The last layer's output (a partial sum where its layers' `partial`) added and normed."""
        x, _ = self.norm(x, residual, partial=self.layers[-1].partial, parity=1)
        return x


class LlamaForCausalLM(nn.Module):
    args_type = LlamaArgs
    # checkpoint name -> (fused parameter, shard id), applied by the loader
    packed_modules = {
        "q_proj": ("qkv_proj", "q"),
        "k_proj": ("qkv_proj", "k"),
        "v_proj": ("qkv_proj", "v"),
        "gate_proj": ("gate_up_proj", 0),
        "up_proj": ("gate_up_proj", 1),
    }

    def __init__(self, args: LlamaArgs, dtype: torch.dtype = torch.float32, quant_method=None):
        super().__init__()
        self.args = args
        self.model = LlamaModel(args, dtype, quant_method)
        tied = self.model.embed_tokens if args.tie_embeddings else None
        self.lm_head = ParallelLMHead(args.vocab_size, args.hidden_size, dtype, tied_to=tied,
                                      quant_method=quant_method.for_lm_head() if quant_method is not None else None)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        """input_ids, positions [T] (all sequences of the step, flattened) -> hidden [T, hidden]."""
        return self.model(input_ids, positions, meta)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head.compute_logits(hidden)  # [N, hidden] -> [N, V]

    def local_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head.local_logits(hidden)  # [N, hidden] -> [N, V / tp]

    def gather_logits(self, local: torch.Tensor) -> torch.Tensor:
        return self.lm_head.gather(local)  # [N, V / tp] -> [N, V]

    def attention_layers(self) -> list[Attention]:
        return [layer.self_attn.attn for layer in self.model.layers]
