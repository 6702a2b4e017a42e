"""The mapped safetensors reader matches safetensors' own, and stages keep only their layers."""

from __future__ import annotations

import torch
from safetensors.torch import load_file, save_file

from fms_worker.parallel.weights import iter_mapped, stage_weights


def test_mapped_tensors_equal_safetensors(tmp_path):
    tensors = {"a": torch.randn(3, 5), "b": torch.randn(7).to(torch.bfloat16), "c": torch.arange(6, dtype=torch.int64).view(2, 3),
               "empty": torch.zeros(0, 4)}
    path = tmp_path / "m.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    expected = load_file(str(path))
    got = dict(iter_mapped(path))
    assert got.keys() == expected.keys()
    for name, t in expected.items():
        assert got[name].dtype == t.dtype and got[name].shape == t.shape and torch.equal(got[name], t)
    # a narrowed copy (what a weight loader does) reads only that slice and leaves the file alone
    part = got["a"].narrow(0, 1, 2).clone()
    part.fill_(0)
    assert torch.equal(load_file(str(path))["a"], tensors["a"])


def test_stage_weights_renumber_their_layers():
    names = ["model.embed_tokens.weight", "model.layers.0.mlp.w", "model.layers.1.mlp.w", "model.layers.2.mlp.w",
             "model.layers.3.mlp.w", "model.norm.weight", "lm_head.weight"]
    kept = [n for n, _ in stage_weights(((n, None) for n in names), 2, 4)]
    assert kept == ["model.embed_tokens.weight", "model.layers.0.mlp.w", "model.layers.1.mlp.w", "model.norm.weight",
                    "lm_head.weight"]
