"""Who this process is in the tensor-parallel group. Layers read it; only start-up sets it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ParallelState:
    tp_rank: int = 0
    tp_size: int = 1
    group: object | None = None  # torch.distributed ProcessGroup once tensor parallelism is wired

    def __post_init__(self):
        if not 0 <= self.tp_rank < self.tp_size:
            raise ValueError(f"tp_rank {self.tp_rank} is outside [0, {self.tp_size})")


_state = ParallelState()


def get_parallel_state() -> ParallelState:
    return _state


def set_parallel_state(state: ParallelState) -> None:
    global _state
    _state = state


def divide(numerator: int, denominator: int, what: str) -> int:
    if numerator % denominator:
        raise ValueError(f"tensor parallel {denominator} does not divide {what} ({numerator})")
    return numerator // denominator
