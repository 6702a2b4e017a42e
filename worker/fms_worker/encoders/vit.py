"""Vision Transformer classifier as a pure nn.Module, parameter names matching Hugging Face ViT checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from fms_worker.encoders.layers import LinearFactory, activation


@dataclass(frozen=True)
class ViTArgs:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    qkv_bias: bool = True
    id2label: dict[int, str] = field(default_factory=dict)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @classmethod
    def from_hf(cls, cfg: dict) -> "ViTArgs":
        id2label = {int(k): v for k, v in (cfg.get("id2label") or {}).items()}
        if not id2label:
            raise ValueError("config.json has no id2label; a ViT classifier needs its label names")
        return cls(hidden_size=cfg["hidden_size"], num_hidden_layers=cfg["num_hidden_layers"],
                   num_attention_heads=cfg["num_attention_heads"], intermediate_size=cfg["intermediate_size"],
                   image_size=cfg.get("image_size", 224), patch_size=cfg.get("patch_size", 16),
                   num_channels=cfg.get("num_channels", 3), layer_norm_eps=cfg.get("layer_norm_eps", 1e-12),
                   hidden_act=cfg.get("hidden_act", "gelu"), qkv_bias=cfg.get("qkv_bias", True), id2label=id2label)


class _PatchEmbeddings(nn.Module):
    def __init__(self, a: ViTArgs):
        super().__init__()
        self.projection = nn.Conv2d(a.num_channels, a.hidden_size, kernel_size=a.patch_size, stride=a.patch_size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.projection(pixels).flatten(2).transpose(1, 2)  # [B, C, H, W] -> [B, N, hidden]


class ViTEmbeddings(nn.Module):
    def __init__(self, a: ViTArgs):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, a.hidden_size))
        self.position_embeddings = nn.Parameter(torch.zeros(1, a.num_patches + 1, a.hidden_size))
        self.patch_embeddings = _PatchEmbeddings(a)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embeddings(pixels)
        cls = self.cls_token.expand(patches.shape[0], -1, -1)
        return torch.cat([cls, patches], dim=1) + self.position_embeddings  # [B, N + 1, hidden]


class _SelfAttention(nn.Module):
    def __init__(self, a: ViTArgs, linear: LinearFactory):
        super().__init__()
        self.num_heads = a.num_attention_heads
        self.query = linear(a.hidden_size, a.hidden_size)
        self.key = linear(a.hidden_size, a.hidden_size)
        self.value = linear(a.hidden_size, a.hidden_size)
        if not a.qkv_bias:
            for proj in (self.query, self.key, self.value):
                proj.bias = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, h = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, s, self.num_heads, h // self.num_heads).transpose(1, 2)  # [B, nH, S, D]

        out = F.scaled_dot_product_attention(heads(self.query(x)), heads(self.key(x)), heads(self.value(x)))
        return out.transpose(1, 2).reshape(b, s, h)


class _Dense(nn.Module):
    def __init__(self, linear: LinearFactory, i: int, o: int):
        super().__init__()
        self.dense = linear(i, o)


class _Attention(nn.Module):
    def __init__(self, a: ViTArgs, linear: LinearFactory):
        super().__init__()
        self.attention = _SelfAttention(a, linear)
        self.output = _Dense(linear, a.hidden_size, a.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output.dense(self.attention(x))


class ViTLayer(nn.Module):
    """Pre-norm block: x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, a: ViTArgs, linear: LinearFactory):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(a.hidden_size, eps=a.layer_norm_eps)
        self.attention = _Attention(a, linear)
        self.layernorm_after = nn.LayerNorm(a.hidden_size, eps=a.layer_norm_eps)
        self.intermediate = _Dense(linear, a.hidden_size, a.intermediate_size)
        self.output = _Dense(linear, a.intermediate_size, a.hidden_size)
        self.act = activation(a.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.layernorm_before(x))
        return x + self.output.dense(self.act(self.intermediate.dense(self.layernorm_after(x))))


class _Encoder(nn.Module):
    def __init__(self, a: ViTArgs, linear: LinearFactory):
        super().__init__()
        self.layer = nn.ModuleList(ViTLayer(a, linear) for _ in range(a.num_hidden_layers))


class ViTBackbone(nn.Module):
    def __init__(self, a: ViTArgs, linear: LinearFactory):
        super().__init__()
        self.embeddings = ViTEmbeddings(a)
        self.encoder = _Encoder(a, linear)
        self.layernorm = nn.LayerNorm(a.hidden_size, eps=a.layer_norm_eps)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(pixels)
        for layer in self.encoder.layer:
            x = layer(x)
        return self.layernorm(x)


class ViTForImageClassification(nn.Module):
    """pixel values [B, C, H, W] (already resized and normalized) -> logits [B, num_labels]."""

    def __init__(self, a: ViTArgs, linear: LinearFactory = nn.Linear):
        super().__init__()
        self.args = a
        self.vit = ViTBackbone(a, linear)
        self.classifier = nn.Linear(a.hidden_size, len(a.id2label))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.vit(pixels)[:, 0])
