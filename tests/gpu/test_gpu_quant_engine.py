"""Each precision scheme through the whole engine on a GPU (bfloat16): the CUDA-graph path, the same compiled
kernels without graphs and the eager path part from each other only at near ties (see TIE_NATS), and how far
the scheme moves tokens from the unquantized model is reported.

Run it in its own pytest process: the fused elementwise kernels are compiled once per process, and
mixing these bf16 engines with the float32 ones of test_gpu_engine.py exceeds dynamo's recompile limit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

pytestmark = pytest.mark.gpu


STRICT = 8  # leading greedy tokens compared (reported)
TOP = 5  # logprobs asked for per token
# Where two paths part, the other path's token must have been a near tie under the reference path: within
# TIE_NATS of the reference's choice. This tiny random model's logits reach 32-128, so bf16 rounding noise
# moves them by tenths of a nat: measured on H200 (24 tokens x 8 prompts per scheme), CUDA graphs vs the same
# compiled kernels launched one by one (only the attention's split over the padded block table differs) parted
# at gaps up to 0.41 (fp8 KV), the compiled norms/rotary vs eager PyTorch up to 0.75 (int8), and the int4
# head's bf16 logits (tinygemm) make steps of 0.25-0.5. A wrong path (stale graph inputs, a mis-captured or
# mis-tuned kernel) picks tokens the reference ranks nats lower, or outside its top 5 (infinitely far).
TIE_NATS = 1.0
SCHEMES = {
    "bf16": {},
    "int8": {"quantization": "int8"},
    "int4": {"quantization": "int4"},
    "int4-g64": {"quantization": "int4", "int4_group_size": 64},
    "fp8": {"quantization": "fp8"},
    "fp8-kv": {"kv_cache_dtype": "fp8"},
    "sparse24": {"sparsity": "2:4"},
}


@pytest.fixture(scope="module")
def tiny24_dir(tiny_dir, tmp_path_factory) -> Path:
    """The tiny model with every projection pruned to 2:4."""
    from fms_worker.quantization.sparse24 import prune_24

    out = tmp_path_factory.mktemp("tiny24")
    for f in tiny_dir.iterdir():
        if f.suffix == ".safetensors":
            tensors = {k: prune_24(v) if k.endswith("proj.weight") else v for k, v in load_file(f).items()}
            save_file(tensors, out / f.name, metadata={"format": "pt"})
        else:
            out.joinpath(f.name).write_bytes(f.read_bytes())
    return out




def _agreement(a, b) -> tuple[float, float]:
    """(share of all greedy tokens equal, share of the first STRICT tokens equal)."""
    total = sum(x == y for s, t in zip(a, b) for x, y in zip(s, t)) / sum(len(s) for s in b)
    head = sum(x == y for s, t in zip(a, b) for x, y in zip(s[:STRICT], t[:STRICT])) / sum(len(s[:STRICT]) for s in b)
    return total, head


def divergences(other, reference) -> list[tuple[int, float]]:
    """Per sequence where two paths' completions part: (position, how many nats the reference path ranked the
    other's token below its own there; inf when outside its top logprobs). Up to there both saw the same tokens."""
    out = []
    for g, e in zip(other, reference):
        pos = next((i for i, (x, y) in enumerate(zip(g.token_ids, e.token_ids)) if x != y), None)
        if pos is not None:
            lp = e.logprobs[pos]
            out.append((pos, lp[e.token_ids[pos]] - lp.get(g.token_ids[pos], float("-inf"))))
    return out


_XFAIL = {
    "fp8": "per-token fp8 activations amplify rounding differences between the paths: on H200 the compiled "
           "kernels vs eager parted at gaps up to 3.3 nats (45% of the first 8 tokens agree; eager fp8 vs bf16 "
           "agrees on 41%)",
}


@pytest.mark.parametrize("scheme", [pytest.param(s, marks=pytest.mark.xfail(reason=_XFAIL[s])) if s in _XFAIL else s
                                    for s in SCHEMES])
def test_graph_path_matches_eager(tiny_dir, tiny24_dir, scheme, make_prompts, run_greedy):
    from fms_worker.engine.types import SamplingParams
    from fms_worker.quantization.fp8 import fp8_unsupported_reason

    if "fp8" in scheme and fp8_unsupported_reason(torch.device("cuda")):
        pytest.skip(fp8_unsupported_reason(torch.device("cuda")))
    model_dir = tiny24_dir if scheme == "sparse24" else tiny_dir
    prompts = make_prompts()
    precision = {"dtype": "bfloat16", **SCHEMES[scheme]}
    params = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True, logprobs=TOP)
    graph, used = run_greedy(model_dir, prompts, eager=False, precision=precision, params=params, outputs=True)
    assert used, "the CUDA-graph path was not taken"
    compiled, _ = run_greedy(model_dir, prompts, eager=False, precision=precision, params=params, outputs=True,
                             graphs_off=True)
    eager, _ = run_greedy(model_dir, prompts, eager=True, precision=precision, params=params, outputs=True)
    # The same scheme without quantization/sparsity, eager: how far the scheme itself moves tokens.
    base, _ = run_greedy(model_dir, prompts, eager=True, precision={"dtype": "bfloat16"})
    ids = {name: [c.token_ids for c in outs] for name, outs in (("graph", graph), ("compiled", compiled),
                                                                  ("eager", eager))}
    g_e, g_e_head = _agreement(ids["graph"], ids["eager"])
    e_b, e_b_head = _agreement(ids["eager"], base)
    by_graphs, by_kernels = divergences(graph, compiled), divergences(compiled, eager)

    def show(parts):
        return f"{len(parts)}/{len(prompts)} part" + "".join(f", ({p}, {gap:.3f})" for p, gap in parts)

    print(f"\n{scheme}: graph vs eager {g_e:.0%} (first {STRICT}: {g_e_head:.0%}); "
          f"eager vs unquantized {e_b:.0%} (first {STRICT}: {e_b_head:.0%}); at (position, gap in nats): "
          f"graphs vs compiled kernels alone {show(by_graphs)}; compiled vs eager kernels {show(by_kernels)}")
    # bf16 on random weights: near-ties flip between paths, so exact equality is not expected even without
    # quantization; every parting must start at a near tie.
    assert all(gap <= TIE_NATS for _, gap in by_graphs), by_graphs
    assert all(gap <= TIE_NATS for _, gap in by_kernels), by_kernels
