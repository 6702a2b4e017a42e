"""Pre-quantized copies of the SmolLM2 fixture, as the GPTQ/AWQ and compressed-tensors tests write them, and
the greedy tokens an engine of some tensor degree makes from one."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from fms_worker.config import WorkerConfig
from fms_worker.engine.llm_engine import LLMEngine
from fms_worker.engine.types import SamplingParams

LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def write_quantized_copy(src: Path, out: Path, parts_of: Callable[[torch.Tensor], dict[str, torch.Tensor]],
                         quantization_config: dict, other_dtype: torch.dtype) -> Path:
    """`src` with every decoder linear's weight replaced by `parts_of(weight)` (its stored parts), the other
    floating tensors in `other_dtype`, and `quantization_config` in config.json."""
    for p in src.iterdir():
        if p.is_file() and not p.name.endswith(".safetensors") and p.name != "model.safetensors.index.json":
            shutil.copy(p, out / p.name)
    tensors = {}
    for f in sorted(src.glob("*.safetensors")):
        for name, t in load_file(str(f)).items():
            prefix, _, leaf = name.rpartition(".")
            if leaf == "weight" and prefix.rsplit(".", 1)[-1] in LINEARS:
                tensors |= {f"{prefix}.{k}": v.contiguous() for k, v in parts_of(t).items()}
            else:
                tensors[name] = t.to(other_dtype) if t.is_floating_point() else t
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((out / "config.json").read_text())
    config["quantization_config"] = quantization_config
    (out / "config.json").write_text(json.dumps(config))
    return out


def greedy_at_degrees(path: Path, degrees=(1, 3), max_tokens: int = 8) -> list[list[int]]:
    """Greedy tokens for one prompt from a float32 CPU engine at each tensor degree (the ranks read the files
    through mmap, where tensors come in the files' dtype order, not by name)."""
    outs = []
    for tp in degrees:
        engine = LLMEngine(WorkerConfig.model_validate({
            "model": {"path": str(path)}, "precision": {"dtype": "float32"}, "runtime": {"device": "cpu"},
            "parallel": {"tensor": tp}, "caching": {"num_kv_blocks": 64, "block_size": 16},
        }))
        try:
            prompt = engine.tokenizer("The capital of France is")["input_ids"]
            (out,) = engine.generate([prompt], SamplingParams(temperature=0.0, max_tokens=max_tokens))
            outs.append(out.outputs[0].token_ids)
        finally:
            getattr(engine.runner, "close", lambda: None)()
    return outs
