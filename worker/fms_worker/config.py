"""The worker's one typed configuration document.

The operator renders exactly this document (as YAML in a ConfigMap) and the
worker validates it once at start-up; the CLI builds the same object from
flags. A contract test checks that what the operator renders validates here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ModelConfig(_Section):
    path: str = Field(description="Local directory with config.json, *.safetensors and tokenizer files.")
    source: str | None = Field(default=None, description="Where the model came from (hf://, s3://, pvc://, or a path); informative.")
    revision: str | None = None
    served_name: str | None = Field(default=None, description="Model id reported by /v1/models; defaults to the directory name.")
    task: Literal["generate", "embed", "classify"] = "generate"
    max_model_len: int | None = Field(default=None, ge=16, description="Context length cap; defaults to the model's own.")
    trust_remote_code: Literal[False] = False


class PrecisionConfig(_Section):
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    quantization: Literal["none", "int8", "int4", "fp8"] = "none"
    kv_cache_dtype: Literal["auto", "fp8"] = "auto"
    sparsity: Literal["none", "2:4"] = "none"
    int4_group_size: Literal[32, 64, 128] = Field(default=128, description="Input columns sharing one int4 scale and zero.")
    tp_invariant: bool = Field(
        default=False,
        description="The same logits, bit for bit, at tensor degree 1, 2, 4 or 8 (so greedy output does not "
                    "change with the degree): unquantized matmuls add their products over a fixed tree of 8 "
                    "input slices, across ranks too, and decode attention splits its keys as one GPU does. "
                    "Slower; for evaluations and debugging that compare degrees.")

    @model_validator(mode="after")
    def _check(self) -> "PrecisionConfig":
        if self.sparsity == "2:4" and self.quantization != "none":
            raise ValueError(f"precision.sparsity 2:4 runs unquantized weights; set quantization none "
                             f"(got {self.quantization}) or sparsity none")
        if self.tp_invariant and (self.quantization != "none" or self.sparsity != "none"):
            raise ValueError("precision.tp_invariant runs unquantized dense weights; set quantization none and "
                             "sparsity none, or tp_invariant false")
        return self


class ParallelConfig(_Section):
    tensor: int = Field(default=1, ge=1, le=8)
    pipeline: int = Field(default=1, ge=1, le=16)
    interconnect: Literal["nvlink-required", "nvlink-preferred", "any"] = "any"
    all_reduce: Literal["auto", "nccl"] = Field(
        default="auto", description="auto: tensor-parallel all-reduces on GPU up to the largest decode batch go "
                                    "through a one-shot kernel over symmetric memory (NVLink P2P), so decode CUDA "
                                    "graphs capture no NCCL operation; larger ones use NCCL. nccl: NCCL for all "
                                    "(decode graphs then capture NCCL all-reduces).")

    @property
    def world_size(self) -> int:
        return self.tensor * self.pipeline


class BatchingConfig(_Section):
    max_num_seqs: int = Field(default=256, ge=1, description="Most sequences running at once.")
    max_num_batched_tokens: int = Field(default=8192, ge=16, description="Token budget of one engine step.")
    chunked_prefill: bool = True
    max_waiting: int = Field(default=1024, ge=1, description="Waiting-queue bound; beyond it requests get 429/503.")
    # Encoders (task embed/classify): dynamic batching.
    max_batch_size: int = Field(default=32, ge=1)
    max_queue_delay_us: int = Field(default=2000, ge=0)
    preferred_batch_sizes: list[int] = Field(default_factory=list)
    request_timeout_s: float = Field(default=60.0, gt=0, description="Encoders: a request not finished by then gets 408.")


class CachingConfig(_Section):
    prefix_caching: bool = True
    gpu_memory_utilization: float = Field(default=0.9, gt=0.0, le=0.99)
    block_size: int = Field(default=16, ge=1)
    num_kv_blocks: int | None = Field(default=None, ge=1, description="Fixed KV block count (tests, CPU); default sizes from free memory.")
    cpu_kv_cache_bytes: int = Field(default=1 << 30, ge=1 << 20, description="KV cache size when running on CPU.")
    compile_cache_dir: str | None = Field(default=None, description="Persistent torch.compile / Triton cache (on the model cache volume).")
    result_cache_size: int = Field(default=0, ge=0, description="Encoders: bounded cache of results by input hash; 0 disables.")


class ServerConfig(_Section):
    host: str = "0.0.0.0"
    port: int = Field(default=8000, ge=1, le=65535)
    metrics_port: int | None = Field(default=None, ge=1, le=65535, description="Separate /metrics port; None serves it on `port`.")
    drain_seconds: int = Field(default=30, ge=0)
    keep_alive_s: int = Field(
        default=75, ge=1,
        description="How long an idle client connection stays open. Keep it above the idle timeout of any proxy "
                    "or load balancer in front (often 60 s): one that reuses a connection the worker has just "
                    "closed fails that request (a 502, or a read error in the client).")
    max_body_bytes: int = Field(default=4 << 20, ge=1024)
    api_key: str | None = None


class RuntimeConfig(_Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    enforce_eager: bool = Field(default=False, description="Skip CUDA graphs and torch.compile.")
    async_scheduling: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Schedule step N+1 while the GPU runs step N (auto: on CUDA without pipeline parallelism).",
    )
    step_timeout_s: float = Field(
        default=600.0, ge=0,
        description="An engine step running longer than this (a hung GPU, driver or collective) fails the worker "
                    "so it restarts; 0 disables.")
    seed: int = 0


class WorkerConfig(_Section):
    model: ModelConfig
    precision: PrecisionConfig = Field(default_factory=PrecisionConfig)
    parallel: ParallelConfig = Field(default_factory=ParallelConfig)
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    caching: CachingConfig = Field(default_factory=CachingConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)

    @model_validator(mode="after")
    def _check(self) -> "WorkerConfig":
        if self.precision.tp_invariant and self.parallel.tensor not in (1, 2, 4, 8):
            raise ValueError(f"precision.tp_invariant works at tensor degree 1, 2, 4 or 8, not "
                             f"{self.parallel.tensor}; change parallel.tensor or set tp_invariant false")
        if self.batching.max_num_batched_tokens < self.batching.max_num_seqs and not self.batching.chunked_prefill:
            raise ValueError(
                f"batching.max_num_batched_tokens ({self.batching.max_num_batched_tokens}) is below "
                f"max_num_seqs ({self.batching.max_num_seqs}); raise it or lower max_num_seqs"
            )
        return self

    @property
    def served_name(self) -> str:
        return self.model.served_name or Path(self.model.path).name

    @classmethod
    def from_yaml(cls, path: str | Path) -> "WorkerConfig":
        with open(path) as f:
            return cls.model_validate(yaml.safe_load(f))
