"""Batched token sampling over one step's logits."""

from fms_worker.sampling.sampler import Sampler, SamplerOutput, SamplingBatch

__all__ = ["Sampler", "SamplerOutput", "SamplingBatch"]
