"""Continuous batching under a per-step token budget. Pure Python: no torch."""

from fms_worker.scheduler.output import ModelRunnerOutput, ScheduledSeq, SchedulerOutput
from fms_worker.scheduler.scheduler import Scheduler, SchedulerConfig
from fms_worker.scheduler.sequence import Sequence, SequenceStatus

__all__ = [
    "ModelRunnerOutput",
    "ScheduledSeq",
    "Scheduler",
    "SchedulerConfig",
    "SchedulerOutput",
    "Sequence",
    "SequenceStatus",
]
