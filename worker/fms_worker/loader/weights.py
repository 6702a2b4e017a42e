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
from fms_worker.quantization.checkpoint import checkpoint_weights


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


def tensor_names(model_dir: str | Path) -> list[str]:
    """Every tensor name in the checkpoint, from the files' headers (no tensor data is read)."""
    names: list[str] = []
    for path in safetensors_files(model_dir):
        with safe_open(str(path), framework="pt") as f:
            names.extend(f.keys())
    return names


def _pending_shards(model: nn.Module, packed: dict) -> dict[str, set]:
    """For each module with a quant method: the (parameter, shard id) pairs it still waits for."""
    shard_ids: dict[str, set] = {}
    for fused, sid in packed.values():
        shard_ids.setdefault(fused, set()).add(sid)
    pending: dict[str, set] = {}
    for prefix, module in model.named_modules():
        if getattr(module, "quant_method", None) is not None:
            sids = shard_ids.get(prefix.rsplit(".", 1)[-1], {None})
            pending[prefix] = {(f"{prefix}.{n}", s) for n, _ in module.named_parameters(recurse=False) for s in sids}
    return pending


def load_weights(model: nn.Module, weights: Iterator[tuple[str, torch.Tensor]]) -> None:
    params = dict(model.named_parameters(remove_duplicate=False))
    packed = getattr(model, "packed_modules", {})
    tied = getattr(getattr(model, "args", None), "tie_embeddings", False)
    loaded: set[str] = set()
    # Each layer is finished (quantized, repacked) as soon as its last shard is in, so a quantized
    # model never holds all of its dense weights at once.
    pending = _pending_shards(model, packed)
    modules = dict(model.named_modules())
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
        owner = target.rsplit(".", 1)[0]
        if owner in pending:
            pending[owner].discard((target, shard_id))
            if not pending[owner]:
                del pending[owner]
                modules[owner].quant_method.process_weights_after_loading(modules[owner])
    missing = sorted(n for n in params if n not in loaded and not (tied and n == "lm_head.weight"))
    if missing:
        raise ValueError(f"checkpoint lacks {len(missing)} parameters, e.g. {missing[:3]}")
    for owner in pending:  # complete but never processed: shard ids the checkpoint spelled differently
        modules[owner].quant_method.process_weights_after_loading(modules[owner])


def load_model(model_dir: str | Path, device: torch.device, dtype: torch.dtype, hf_config=None,
               quant_method=None) -> nn.Module:
    hf_config = hf_config or load_hf_config(model_dir)
    weights = iter_safetensors(model_dir, device="cpu" if device.type == "cpu" else str(device))
    weights = checkpoint_weights(hf_config, model_dir, weights, dtype, quantized=quant_method is not None,
                                 names=lambda: tensor_names(model_dir))
    cls = resolve_model_class(hf_config)
    args = cls.args_type.from_hf(hf_config)
    with torch.device(device):
        model = cls(args, dtype, quant_method=quant_method)
    load_weights(model, weights)
    return model.eval()

