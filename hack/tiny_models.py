"""Random-weight Llama directories with a word-level tokenizer: no download, any shape (tests and benches).

`write_tiny_llama` makes a small float32 model for parallelism tests;
`write_word_tokenizer` gives any model directory a tokenizer whose token i is
the word `t<i>`, so LLMEngine can load it where no real tokenizer is at hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

def write_word_tokenizer(out: Path, vocab: int) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="t0", bos_token="t1", eos_token="t2").save_pretrained(str(out))


def write_tiny_llama(out: Path, *, heads: int = 4, kv_heads: int = 1, layers: int = 4,
                     vocab: int = 257, hidden: int = 64, tie: bool = False, seed: int = 0) -> Path:
    """vocab 257 is odd on purpose: the vocabulary-parallel shards then carry a padding row."""
    out.mkdir(parents=True, exist_ok=True)
    d = hidden // heads
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
           "intermediate_size": 2 * hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
           "num_key_value_heads": kv_heads, "head_dim": d, "vocab_size": vocab, "max_position_embeddings": 512,
           "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": tie, "bos_token_id": 1,
           "eos_token_id": 2, "hidden_act": "silu", "torch_dtype": "float32"}
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(shape, generator=gen) * shape[-1] ** -0.5

    t = {"model.embed_tokens.weight": rand(vocab, hidden), "model.norm.weight": 1 + 0.1 * rand(hidden)}
    if not tie:
        t["lm_head.weight"] = rand(vocab, hidden)
    for i in range(layers):
        p = f"model.layers.{i}."
        t |= {p + "self_attn.q_proj.weight": rand(heads * d, hidden), p + "self_attn.k_proj.weight": rand(kv_heads * d, hidden),
              p + "self_attn.v_proj.weight": rand(kv_heads * d, hidden), p + "self_attn.o_proj.weight": rand(hidden, heads * d),
              p + "mlp.gate_proj.weight": rand(2 * hidden, hidden), p + "mlp.up_proj.weight": rand(2 * hidden, hidden),
              p + "mlp.down_proj.weight": rand(hidden, 2 * hidden),
              p + "input_layernorm.weight": 1 + 0.1 * rand(hidden), p + "post_attention_layernorm.weight": 1 + 0.1 * rand(hidden)}
    save_file(t, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(cfg))
    write_word_tokenizer(out, vocab)
    return out
