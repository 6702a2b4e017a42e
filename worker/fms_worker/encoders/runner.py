"""Runs one formed batch through the model: pad, forward, pool, copy to host. Called from the batcher's thread."""

from __future__ import annotations

import bisect

import numpy as np
import torch

from fms_worker.encoders.batch_policy import DEFAULT_LENGTH_BUCKETS, length_bucket
from fms_worker.encoders.cuda_graphs import CudaGraphCache
from fms_worker.encoders.loader import LoadedEncoder
from fms_worker.encoders.pooling import normalize, pool

class EncoderRunner:
    def __init__(self, enc: LoadedEncoder, device: torch.device, dtype: torch.dtype, *, cuda_graphs: bool = False,
                 max_batch_size: int = 32, preferred_batch_sizes: tuple[int, ...] = ()):
        self.enc = enc
        self.device = device
        self.model = enc.model.to(device=device, dtype=dtype)
        self.dtype = dtype
        self.graphs = CudaGraphCache(self._forward) if cuda_graphs and device.type == "cuda" else None
        powers = [1 << i for i in range(max_batch_size.bit_length()) if 1 << i <= max_batch_size]
        self._batch_buckets = sorted({*powers, *preferred_batch_sizes, max_batch_size})
        self._length_buckets = tuple(b for b in DEFAULT_LENGTH_BUCKETS if b < enc.max_len) + (enc.max_len,)

    def warm_up(self) -> None:
        if self.enc.kind == "classify_image":
            p = self.enc.image_processor
            self.run([torch.zeros(3, p.height, p.width)])
        else:
            self.run([[self.enc.pad_token_id]])

    @torch.inference_mode()
    def run(self, payloads: list) -> tuple[np.ndarray, int]:
        """Token-id lists or pixel tensors -> (outputs [B, D] float32 on host, padded length)."""
        n = len(payloads)
        if self.enc.kind == "classify_image":
            inputs = (torch.stack(payloads).to(self.device, self.dtype, non_blocking=True),)
            length = 0
        else:
            inputs, length = self._pad_tokens(payloads)
        if len(inputs) == 2 and all(len(p) == length for p in payloads):
            inputs = inputs[:1]  # no padding: no mask, so SDPA may use its flash kernel
        if self.graphs is not None:
            out = self.graphs(*self._pad_rows(inputs))[:n]
        else:
            out = self._forward(*inputs)
        return out.float().cpu().numpy(), length  # the one host sync per batch

    def _forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """(pixels,) or (ids,) or (ids, mask) -> [B, D] float32."""
        out = self.model(*inputs)
        if self.enc.kind != "embed":
            return out.float()  # logits [B, L]
        pooled = pool(out, inputs[1] if len(inputs) > 1 else None, self.enc.pooling)
        return normalize(pooled) if self.enc.normalize else pooled

    def _pad_tokens(self, seqs: list[list[int]]) -> tuple[tuple[torch.Tensor, torch.Tensor], int]:
        longest = max(len(s) for s in seqs)
        # Eager: pad to the longest row only. Graphs: pad to the length bucket so shapes repeat.
        length = length_bucket(longest, self._length_buckets) if self.graphs is not None else longest
        if all(len(s) == length for s in seqs):  # one C-level conversion instead of a row loop
            ids = np.asarray(seqs, dtype=np.int64)
            mask = np.ones_like(ids)
        else:
            ids = np.full((len(seqs), length), self.enc.pad_token_id, dtype=np.int64)
            mask = np.zeros((len(seqs), length), dtype=np.int64)
            for i, s in enumerate(seqs):
                ids[i, : len(s)] = s
                mask[i, : len(s)] = 1
        return (torch.from_numpy(ids).to(self.device, non_blocking=True),
                torch.from_numpy(mask).to(self.device, non_blocking=True)), length

    def _pad_rows(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        n = inputs[0].shape[0]
        i = bisect.bisect_left(self._batch_buckets, n)
        target = self._batch_buckets[min(i, len(self._batch_buckets) - 1)]
        if target == n:
            return inputs
        if self.enc.kind != "classify_image" and len(inputs) == 1:  # filler rows need a mask after all
            inputs = (inputs[0], torch.ones_like(inputs[0]))
        padded = []
        for j, x in enumerate(inputs):
            extra = torch.zeros((target - n, *x.shape[1:]), dtype=x.dtype, device=x.device)
            if self.enc.kind != "classify_image" and j == 1:
                extra[:, 0] = 1  # filler rows attend to one token, so no row is fully masked (NaN-free)
            padded.append(torch.cat([x, extra]))
        return tuple(padded)
