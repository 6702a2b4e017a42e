"""CUDA graphs per padded input shape: capture once per (batch bucket, length bucket), then copy inputs and replay.

Encoders have no state between calls, so a graph is a pure function of its
static input buffers; all graphs share one memory pool. Used only on CUDA and
only when runtime.enforce_eager is off.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class CudaGraphCache:
    def __init__(self, fn: Callable[..., torch.Tensor]):
        self.fn = fn
        self._graphs: dict[tuple, tuple[list[torch.Tensor], torch.Tensor, torch.cuda.CUDAGraph]] = {}
        self._pool = None

    def __len__(self) -> int:
        return len(self._graphs)

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Returns the graph's static output; it is overwritten by the next call, so copy it out first."""
        key = tuple((tuple(x.shape), x.dtype) for x in inputs)
        if key not in self._graphs:
            self._graphs[key] = self._capture(inputs)
        static_in, static_out, graph = self._graphs[key]
        for buf, x in zip(static_in, inputs):
            buf.copy_(x, non_blocking=True)
        graph.replay()
        return static_out

    def _capture(self, inputs: tuple[torch.Tensor, ...]):
        static_in = [x.clone() for x in inputs]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside the graph: lazy inits and autotuning happen here
            for _ in range(2):
                self.fn(*static_in)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            static_out = self.fn(*static_in)
        self._pool = graph.pool()
        return static_in, static_out, graph
