"""Loader and registry: architecture resolution and clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from transformers import LlamaConfig

from fms_worker.loader import load_model
from fms_worker.models.registry import architecture_of

TINY = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False)


def test_unsupported_architecture_names_the_supported_ones(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    with pytest.raises(ValueError, match=r"architecture GPT2LMHeadModel is not supported; supported: LlamaForCausalLM"):
        load_model(tmp_path, torch.device("cpu"), torch.float32)


def test_model_type_stands_in_for_missing_architectures():
    cfg = LlamaConfig(**TINY)
    cfg.architectures = None
    assert architecture_of(cfg) == "LlamaForCausalLM"


def test_sharded_checkpoint_with_index_loads_fused_weights(tmp_path):
    from transformers import LlamaForCausalLM as HFLlama

    cfg = LlamaConfig(**TINY, architectures=["LlamaForCausalLM"])
    torch.manual_seed(0)
    ref = HFLlama(cfg).eval()
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file, keys in shards.items():
        save_file({k: state[k] for k in keys}, str(tmp_path / file))
    index = {"weight_map": {k: f for f, keys in shards.items() for k in keys}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    cfg.save_pretrained(tmp_path)
    model = load_model(tmp_path, torch.device("cpu"), torch.float32)
    layer = model.model.layers[1]
    q, k, v = (state[f"model.layers.1.self_attn.{n}_proj.weight"] for n in "qkv")
    assert torch.equal(layer.self_attn.qkv_proj.weight, torch.cat([q, k, v]))
    gate, up = state["model.layers.1.mlp.gate_proj.weight"], state["model.layers.1.mlp.up_proj.weight"]
    assert torch.equal(layer.mlp.gate_up_proj.weight, torch.cat([gate, up]))
    assert torch.equal(model.lm_head.weight, state["lm_head.weight"])


def test_missing_tensor_is_reported(tmp_path):
    cfg = LlamaConfig(**TINY, architectures=["LlamaForCausalLM"])
    cfg.save_pretrained(tmp_path)
    save_file({"model.norm.weight": torch.ones(32)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="checkpoint lacks"):
        load_model(tmp_path, torch.device("cpu"), torch.float32)
