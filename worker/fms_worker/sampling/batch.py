"""Per-row sampling parameters of one step, as tensors."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fms_worker.engine.types import SamplingParams


@dataclass
class SamplingBatch:
    temperature: torch.Tensor  # [S] float; 1.0 on greedy rows (unused there)
    greedy: torch.Tensor  # [S] bool
    top_k: torch.Tensor | None  # [S] long, 0 = off; None when no row uses it
    top_p: torch.Tensor | None  # [S] float
    min_p: torch.Tensor | None  # [S] float
    repetition_penalty: torch.Tensor | None  # [S] float
    presence_penalty: torch.Tensor | None  # [S] float
    frequency_penalty: torch.Tensor | None  # [S] float
    seen_tokens: torch.Tensor | None  # [S, L] prompt+output ids, padded with vocab_size (repetition penalty)
    output_tokens: torch.Tensor | None  # [S, L] output ids, padded with vocab_size (presence/frequency)
    generators: list[torch.Generator | None]  # per row; None -> the global RNG
    num_logprobs: int  # the most top-n logprobs any row asked for; -1 = none asked
    all_greedy: bool

    @classmethod
    def build(cls, params: list[SamplingParams], histories: list[tuple[list[int], int]],
              generators: list[torch.Generator | None], vocab_size: int, device: torch.device) -> "SamplingBatch":
        """`histories[i]` = (token ids of row i, its prompt length)."""

        def to_device(values, dtype):
            t = torch.tensor(values, dtype=dtype)
            # Pinned and non-blocking: a plain copy would wait for the step still running on the GPU.
            return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t

        def col(values, dtype=torch.float32, off=None):
            if off is not None and all(v == off for v in values):
                return None
            return to_device(values, dtype)

        def padded(rows):
            width = max(1, max(len(r) for r in rows))
            return to_device([r + [vocab_size] * (width - len(r)) for r in rows], torch.long)

        greedy = [p.temperature == 0.0 for p in params]
        rep = col([p.repetition_penalty for p in params], off=1.0)
        pres = col([p.presence_penalty for p in params], off=0.0)
        freq = col([p.frequency_penalty for p in params], off=0.0)
        return cls(
            temperature=col([1.0 if g else p.temperature for p, g in zip(params, greedy)]),
            greedy=to_device(greedy, torch.bool),
            top_k=col([p.top_k for p in params], torch.long, off=0),
            top_p=col([p.top_p for p in params], off=1.0),
            min_p=col([p.min_p for p in params], off=0.0),
            repetition_penalty=rep,
            presence_penalty=pres,
            frequency_penalty=freq,
            seen_tokens=padded([h for h, _ in histories]) if rep is not None else None,
            output_tokens=padded([h[n:] for h, n in histories]) if pres is not None or freq is not None else None,
            generators=generators,
            num_logprobs=max((p.logprobs for p in params if p.logprobs is not None), default=-1),
            all_greedy=all(greedy),
        )
