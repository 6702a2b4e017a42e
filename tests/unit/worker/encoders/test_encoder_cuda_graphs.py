"""CUDA-graph runner equals the eager runner (GPU machines only; bench/encoder_gpu.py checks the same at BERT-base)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fms_worker.encoders.loader import load_encoder
from fms_worker.encoders.runner import EncoderRunner


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_graphs_match_eager(minilm_dir, dtype):
    enc = load_encoder(minilm_dir, "embed")
    eager = EncoderRunner(enc, torch.device("cuda"), dtype, max_batch_size=8)
    graphs = EncoderRunner(enc, torch.device("cuda"), dtype, cuda_graphs=True, max_batch_size=8)
    batches = [[[101, 2023, 102]], [[101] + [2000 + i for i in range(n)] + [102] for n in (3, 17, 40)]]
    for seqs in batches * 2:  # second round replays captured graphs
        a, b = eager.run(seqs)[0], graphs.run(seqs)[0]
        assert np.all((a * b).sum(1) > 0.999)
    assert len(graphs.graphs) == 2
