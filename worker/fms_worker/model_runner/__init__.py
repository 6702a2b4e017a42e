"""Turns a SchedulerOutput into tensors, runs the model and the sampler, returns a ModelRunnerOutput."""

from fms_worker.model_runner.runner import ModelRunner

__all__ = ["ModelRunner"]
