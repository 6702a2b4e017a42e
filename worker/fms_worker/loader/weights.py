"""Build a model from a Hugging Face-style directory and stream its safetensors into it.

Tensors are read one at a time with safetensors' `safe_open` and copied into
the already-allocated parameters (which casts to the target dtype), so peak
host memory is one tensor, not a state dict. Each parameter's
`weight_loader` picks this rank's slice and the shard of a fused weight.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn
from transformers import AutoConfig

from fms_worker.models.registry import resolve_model_class


def load_hf_config(model_dir: str | Path):
    return AutoConfig.from_pretrained(str(model_dir), trust_remote_code=False)


def safetensors_files(model_dir: str | Path) -> list[Path]:
    model_dir = Path(model_dir)
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        files = [model_dir / n for n in names]
    else:
        files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors files in {model_dir}; the model directory must hold safetensors weights")
    return files


def iter_safetensors(model_dir: str | Path, device: str = "cpu") -> Iterator[tuple[str, torch.Tensor]]:
    for path in safetensors_files(model_dir):
        with safe_open(str(path), framework="pt", device=device) as f:
            for name in f.keys():
                yield name, f.get_tensor(name)


def load_weights(model: nn.Module, weights: Iterator[tuple[str, torch.Tensor]]) -> None:
    params = dict(model.named_parameters(remove_duplicate=False))
    packed = getattr(model, "packed_modules", {})
    tied = getattr(getattr(model, "args", None), "tie_embeddings", False)
    loaded: set[str] = set()
    for name, tensor in weights:
        if "rotary_emb.inv_freq" in name:
            continue
        if tied and name == "lm_head.weight":  # a tied checkpoint may keep only one of the two names
            name = "model.embed_tokens.weight"
        shard_id = None
        parts = name.split(".")
        for i, part in enumerate(parts):
            if part in packed:
                fused, shard_id = packed[part]
                parts[i] = fused
                break
        target = ".".join(parts)
        param = params.get(target)
        if param is None:
            raise ValueError(f"checkpoint tensor {name!r} has no matching parameter in {type(model).__name__}")
        loader = getattr(param, "weight_loader", None)
        if loader is None:
            param.data.copy_(tensor)
        elif shard_id is None:
            loader(param, tensor)
        else:
            loader(param, tensor, shard_id)
        loaded.add(target)
    missing = sorted(n for n in params if n not in loaded and not (tied and n == "lm_head.weight"))
    if missing:
        raise ValueError(f"checkpoint lacks {len(missing)} parameters, e.g. {missing[:3]}")
    for module in model.modules():
        method = getattr(module, "quant_method", None)
        if method is not None:
            method.process_weights_after_loading(module)


def load_model(model_dir: str | Path, device: torch.device, dtype: torch.dtype, hf_config=None) -> nn.Module:
    hf_config = hf_config or load_hf_config(model_dir)
    cls = resolve_model_class(hf_config)
    args = cls.args_type.from_hf(hf_config)
    with torch.device(device):
        model = cls(args, dtype)
    load_weights(model, iter_safetensors(model_dir, device="cpu" if device.type == "cpu" else str(device)))
    return model.eval()

