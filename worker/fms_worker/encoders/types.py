"""Plain records the encoder service hands to its observer (metrics) and to the HTTP layer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class BatchRecord:
    size: int
    queue_delays_s: tuple[float, ...]  # per item: enqueue -> batch start
    forward_s: float
    padded_length: int                 # tokens per row after padding (0 for images)


@dataclass(frozen=True)
class LabelScore:
    label: str
    score: float
    index: int


@dataclass(frozen=True)
class Embeddings:
    vectors: list          # one float32 numpy array per input, in input order
    prompt_tokens: int


@dataclass(frozen=True)
class Classifications:
    labels: list[list[LabelScore]]  # per input, best first
    prompt_tokens: int


class EncoderObserver(Protocol):
    def on_batch(self, record: BatchRecord) -> None: ...
    def on_request_done(self, outcome: str, latency_s: float) -> None: ...
    def on_cache(self, queries: int, hits: int) -> None: ...


class NullObserver:
    def on_batch(self, record: BatchRecord) -> None:
        pass

    def on_request_done(self, outcome: str, latency_s: float) -> None:
        pass

    def on_cache(self, queries: int, hits: int) -> None:
        pass


class EncoderRequestError(ValueError):
    """The request itself is wrong (4xx); `param` names the offending field."""

    def __init__(self, message: str, *, status: int = 400, param: str | None = None):
        super().__init__(message)
        self.status = status
        self.param = param


class EncoderBusy(RuntimeError):
    """The queue is full (503)."""


class EncoderTimeout(TimeoutError):
    """The request did not finish within its timeout (408)."""
