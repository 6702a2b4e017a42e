"""Write a random-weight model directory with the shapes of a real one.

Speed does not depend on weight values, so benchmarks use random weights in
the layout users have: config.json, sharded *.safetensors with an index, and
tokenizer files (copied from a small real tokenizer; token ids beyond its
vocabulary are simply never produced by it).

    python bench/random_model.py llama-3.1-8b /tmp/llama8b --tokenizer DIR
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

# Public shapes of the models the benchmarks name.
SHAPES = {
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0),
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False, rope_theta=500000.0),
    "llama-3.1-70b": dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                          num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False, rope_theta=500000.0),
    # Small enough for correctness tests; its lm_head is scaled up (see `write`) so greedy choices are clear-cut.
    "llama-tiny": dict(hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=8,
                       num_key_value_heads=2, vocab_size=49152, tie_word_embeddings=False, rope_theta=10000.0),
    "bert-base": None,  # encoders: see bench/encoder_gpu.py
}
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def config_for(shape: str) -> dict:
    s = SHAPES[shape]
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "bos_token_id": 1, "eos_token_id": 2,
        "torch_dtype": "bfloat16", "rope_scaling": LLAMA3_ROPE, "attention_bias": False, "mlp_bias": False,
        "head_dim": s["hidden_size"] // s["num_attention_heads"], **s,
    }


def tensors_of_layer(cfg: dict, i: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    h, inter = cfg["hidden_size"], cfg["intermediate_size"]
    d = cfg["head_dim"]
    q, kv = cfg["num_attention_heads"] * d, cfg["num_key_value_heads"] * d
    shapes = {
        "self_attn.q_proj.weight": (q, h), "self_attn.k_proj.weight": (kv, h), "self_attn.v_proj.weight": (kv, h),
        "self_attn.o_proj.weight": (h, q), "mlp.gate_proj.weight": (inter, h), "mlp.up_proj.weight": (inter, h),
        "mlp.down_proj.weight": (h, inter),
    }
    out = {f"model.layers.{i}.{k}": _rand(v, gen) for k, v in shapes.items()}
    out[f"model.layers.{i}.input_layernorm.weight"] = torch.ones(h, dtype=torch.bfloat16)
    out[f"model.layers.{i}.post_attention_layernorm.weight"] = torch.ones(h, dtype=torch.bfloat16)
    return out


def _rand(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    # Scaled so activations stay finite through many layers (values do not affect speed).
    x = torch.randn(shape, generator=gen, device=gen.device) * (shape[-1] ** -0.5)
    return x.to(torch.bfloat16).cpu()


def write(shape: str, out: Path, tokenizer: Path | None, layers_per_shard: int = 4, seed: int = 0) -> Path:
    cfg = config_for(shape)
    out.mkdir(parents=True, exist_ok=True)
    # Drawing 8B random numbers on the CPU takes minutes; on a GPU, seconds.
    gen = torch.Generator(device="cuda" if torch.cuda.is_available() else "cpu").manual_seed(seed)
    weight_map: dict[str, str] = {}
    n = cfg["num_hidden_layers"]
    shards = [list(range(i, min(i + layers_per_shard, n))) for i in range(0, n, layers_per_shard)]
    total = len(shards) + 1
    for s, layer_ids in enumerate(shards):
        name = f"model-{s + 1:05d}-of-{total:05d}.safetensors"
        tensors: dict[str, torch.Tensor] = {}
        for i in layer_ids:
            tensors.update(tensors_of_layer(cfg, i, gen))
        save_file(tensors, str(out / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in tensors})
    name = f"model-{total:05d}-of-{total:05d}.safetensors"
    tensors = {"model.embed_tokens.weight": _rand((cfg["vocab_size"], cfg["hidden_size"]), gen),
               "model.norm.weight": torch.ones(cfg["hidden_size"], dtype=torch.bfloat16)}
    if not cfg["tie_word_embeddings"]:
        head = _rand((cfg["vocab_size"], cfg["hidden_size"]), gen)
        # Random weights give nearly flat logits, where rounding decides argmax; tests want clear winners.
        tensors["lm_head.weight"] = head * 16 if shape == "llama-tiny" else head
    save_file(tensors, str(out / name), metadata={"format": "pt"})
    weight_map.update({k: name for k in tensors})
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1))
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    if tokenizer is not None:
        for f in TOKENIZER_FILES:
            if (tokenizer / f).exists():
                shutil.copy(tokenizer / f, out / f)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description="write a random-weight model directory")
    ap.add_argument("shape", choices=[k for k, v in SHAPES.items() if v])
    ap.add_argument("out", type=Path)
    ap.add_argument("--tokenizer", type=Path, help="directory with tokenizer files to copy")
    args = ap.parse_args()
    print(write(args.shape, args.out, args.tokenizer))


if __name__ == "__main__":
    main()
