"""Small random-weight encoder directories saved by transformers (the reference implementation)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from encoder_fixtures import ID2LABEL


@pytest.fixture(scope="session")
def vit_dir(tmp_path_factory) -> Path:
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    cfg = ViTConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96, image_size=32,
                    patch_size=8, id2label=ID2LABEL, label2id={v: k for k, v in ID2LABEL.items()})
    out = tmp_path_factory.mktemp("vit")
    ViTForImageClassification(cfg).eval().save_pretrained(out)
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.485, 0.456, 0.406],
                      image_std=[0.229, 0.224, 0.225]).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def bert_cls_dir(tmp_path_factory, minilm_dir) -> Path:
    """BertForSequenceClassification with random weights and MiniLM's tokenizer (same vocabulary)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, id2label=ID2LABEL,
                     label2id={v: k for k, v in ID2LABEL.items()})
    out = tmp_path_factory.mktemp("bert_cls")
    BertForSequenceClassification(cfg).eval().save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(minilm_dir / name, out / name)
    return out


@pytest.fixture(scope="session")
def minilm_loaded(minilm_dir):
    from encoder_fixtures import loaded

    return loaded(minilm_dir, "embed")


@pytest.fixture(scope="session")
def st_model(minilm_dir):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_dir), device="cpu")
