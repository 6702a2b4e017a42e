"""BERT encoder as a pure nn.Module, parameter names matching Hugging Face BERT checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from fms_worker.encoders.layers import LinearFactory, activation, padding_mask


@dataclass(frozen=True)
class BertArgs:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    pad_token_id: int = 0
    num_labels: int = 0  # > 0 adds the pooler + classifier head (BertForSequenceClassification)
    id2label: dict[int, str] = field(default_factory=dict)

    @classmethod
    def from_hf(cls, cfg: dict, with_classifier: bool) -> "BertArgs":
        if cfg.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"position_embedding_type {cfg['position_embedding_type']!r} is not supported; "
                             "only 'absolute' BERT checkpoints load")
        id2label = {int(k): v for k, v in (cfg.get("id2label") or {}).items()}
        return cls(vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"],
                   num_hidden_layers=cfg["num_hidden_layers"], num_attention_heads=cfg["num_attention_heads"],
                   intermediate_size=cfg["intermediate_size"],
                   max_position_embeddings=cfg.get("max_position_embeddings", 512),
                   type_vocab_size=cfg.get("type_vocab_size", 2), layer_norm_eps=cfg.get("layer_norm_eps", 1e-12),
                   hidden_act=cfg.get("hidden_act", "gelu"), pad_token_id=cfg.get("pad_token_id") or 0,
                   num_labels=len(id2label) if with_classifier else 0, id2label=id2label)


class BertEmbeddings(nn.Module):
    def __init__(self, a: BertArgs):
        super().__init__()
        self.word_embeddings = nn.Embedding(a.vocab_size, a.hidden_size)
        self.position_embeddings = nn.Embedding(a.max_position_embeddings, a.hidden_size)
        self.token_type_embeddings = nn.Embedding(a.type_vocab_size, a.hidden_size)
        self.LayerNorm = nn.LayerNorm(a.hidden_size, eps=a.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        # Single-segment inputs only: token type 0 everywhere.
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions) + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)


class _SelfAttention(nn.Module):
    def __init__(self, a: BertArgs, linear: LinearFactory):
        super().__init__()
        self.num_heads = a.num_attention_heads
        self.query = linear(a.hidden_size, a.hidden_size)
        self.key = linear(a.hidden_size, a.hidden_size)
        self.value = linear(a.hidden_size, a.hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, s, h = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, s, self.num_heads, h // self.num_heads).transpose(1, 2)  # [B, nH, S, D]

        out = F.scaled_dot_product_attention(heads(self.query(x)), heads(self.key(x)), heads(self.value(x)),
                                             attn_mask=mask)
        return out.transpose(1, 2).reshape(b, s, h)  # [B, S, H]


class _DenseNorm(nn.Module):
    """dense -> residual add -> LayerNorm (BERT's post-norm `output` blocks)."""

    def __init__(self, a: BertArgs, linear: LinearFactory, in_features: int):
        super().__init__()
        self.dense = linear(in_features, a.hidden_size)
        self.LayerNorm = nn.LayerNorm(a.hidden_size, eps=a.layer_norm_eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class _Attention(nn.Module):
    def __init__(self, a: BertArgs, linear: LinearFactory):
        super().__init__()
        self.self = _SelfAttention(a, linear)
        self.output = _DenseNorm(a, linear, a.hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(x, mask), x)


class _Intermediate(nn.Module):
    def __init__(self, a: BertArgs, linear: LinearFactory):
        super().__init__()
        self.dense = linear(a.hidden_size, a.intermediate_size)
        self.act = activation(a.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class BertLayer(nn.Module):
    def __init__(self, a: BertArgs, linear: LinearFactory):
        super().__init__()
        self.attention = _Attention(a, linear)
        self.intermediate = _Intermediate(a, linear)
        self.output = _DenseNorm(a, linear, a.intermediate_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


class _Encoder(nn.Module):
    def __init__(self, a: BertArgs, linear: LinearFactory):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(a, linear) for _ in range(a.num_hidden_layers))


class _Pooler(nn.Module):
    def __init__(self, a: BertArgs):
        super().__init__()
        self.dense = nn.Linear(a.hidden_size, a.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


class BertModel(nn.Module):
    """input ids [B, S] + attention mask [B, S] -> hidden states [B, S, H], or logits [B, L] with a classifier."""

    def __init__(self, a: BertArgs, linear: LinearFactory = nn.Linear):
        super().__init__()
        self.args = a
        self.embeddings = BertEmbeddings(a)
        self.encoder = _Encoder(a, linear)
        if a.num_labels:
            self.pooler = _Pooler(a)
            self.classifier = nn.Linear(a.hidden_size, a.num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        # No mask (a batch without padding) lets SDPA pick its fastest (flash) kernel.
        mask = None if attention_mask is None else padding_mask(attention_mask)
        x = self.embeddings(input_ids)
        for layer in self.encoder.layer:
            x = layer(x, mask)
        if self.args.num_labels:
            return self.classifier(self.pooler(x))
        return x
