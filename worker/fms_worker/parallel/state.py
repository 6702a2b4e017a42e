"""Who this process is in the tensor- and pipeline-parallel groups. Layers read it; only start-up sets it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ParallelState:
    tp_rank: int = 0
    tp_size: int = 1
    group: object | None = None  # torch.distributed ProcessGroup of this rank's tensor-parallel group
    pp_rank: int = 0
    pp_size: int = 1
    one_shot: object | None = None  # parallel.one_shot.OneShotAllReduce for small CUDA all-reduces, or None
    reduce_norm: object | None = None  # parallel.reduce_norm.AllReduceAddNorm for the decoder's norms, or None

    def __post_init__(self):
        if not 0 <= self.tp_rank < self.tp_size:
            raise ValueError(f"tp_rank {self.tp_rank} is outside [0, {self.tp_size})")
        if not 0 <= self.pp_rank < self.pp_size:
            raise ValueError(f"pp_rank {self.pp_rank} is outside [0, {self.pp_size})")

    @property
    def is_first_stage(self) -> bool:
        return self.pp_rank == 0

    @property
    def is_last_stage(self) -> bool:
        return self.pp_rank == self.pp_size - 1


_state = ParallelState()


def get_parallel_state() -> ParallelState:
    return _state


def set_parallel_state(state: ParallelState) -> None:
    global _state
    _state = state


def usable_degrees(count: int, limit: int = 16) -> list[int]:
    """Degrees that split `count` evenly (at most `limit`), for error messages."""
    return [d for d in range(1, min(count, limit) + 1) if count % d == 0]


def _choices(values: list[int]) -> str:
    words = [str(v) for v in values]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def divide(numerator: int, denominator: int, what: str) -> int:
    if numerator % denominator:
        raise ValueError(f"tensor parallel {denominator} does not divide {what} ({numerator}); "
                         f"use {_choices(usable_degrees(numerator))}")
    return numerator // denominator


def check_tensor_parallel(tp: int, num_heads: int, num_kv_heads: int) -> None:
    """Refuse a degree the attention cannot be split by, before any process is spawned.

    Query heads must split evenly. KV heads either split evenly or, when there
    are fewer KV heads than ranks, are replicated: then tp must be a multiple of them.
    """
    if num_heads % tp:
        raise ValueError(f"tensor parallel {tp} does not divide {num_heads} attention heads; "
                         f"use {_choices(usable_degrees(num_heads))}")
    if (num_kv_heads >= tp and num_kv_heads % tp) or (num_kv_heads < tp and tp % num_kv_heads):
        good = [d for d in usable_degrees(num_heads) if (d <= num_kv_heads and num_kv_heads % d == 0)
                or (d > num_kv_heads and d % num_kv_heads == 0)]
        raise ValueError(f"tensor parallel {tp} does not fit {num_kv_heads} key/value heads (they must split "
                         f"evenly or be replicated evenly); use {_choices(good)}")


def check_pipeline_parallel(pp: int, num_layers: int) -> None:
    if pp > num_layers:
        raise ValueError(f"pipeline parallel {pp} exceeds the model's {num_layers} layers; use at most {num_layers}")
