"""FoundationModelService spec and status as typed models: the one source of the CRD.

Field names are snake_case here and camelCase on the wire (alias generator).
Cross-field rules are CEL (`x-kubernetes-validations`) so that the API server
refuses a bad spec at `kubectl apply`; the operator also validates the same
document with these models, so a rule lives here once.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "serving.fms.dev"
VERSION = "v1alpha1"
KIND = "FoundationModelService"
PLURAL = "foundationmodelservices"
SINGULAR = "foundationmodelservice"
SHORT_NAME = "fms"

# GPU products with fp8 tensor cores (Hopper, Ada Lovelace), matched against
# the GPU Feature Discovery product name, e.g. NVIDIA-H100-80GB-HBM3, NVIDIA-L4.
FP8_PRODUCTS = ("H100", "H200", "GH200", "L4", "L40", "L40S")
FP8_PRODUCT_REGEX = "(^|-)(" + "|".join(FP8_PRODUCTS) + ")(-|$)"
RATIO_METRICS = ("kvCacheUsage", "gpuUtilization", "saturation")

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|Pi|M|G|T|P)?$"


def rules(*pairs: tuple[str, str]) -> dict:
    """CEL rules for a schema node: (rule, message) pairs; a message starting with '=' is a messageExpression."""
    out = []
    for rule, message in pairs:
        key = "messageExpression" if message.startswith("=") else "message"
        out.append({"rule": rule, key: message.lstrip("=")})
    return {"x-kubernetes-validations": out}


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=to_camel)


# ---------------------------------------------------------------- model source


class SecretKeyRef(_Spec):
    name: str = Field(max_length=253, pattern=DNS_LABEL, description="Name of a Secret in the same namespace.")
    key: str = Field(default="token", max_length=253, description="Key inside the Secret.")


class PVCSource(_Spec):
    claim_name: str = Field(max_length=253, pattern=DNS_LABEL, description="PersistentVolumeClaim holding the weights (mounted read-only).")
    path: str = Field(default="", max_length=1024, pattern=r"^([^/.][^:]*)?$", description="Directory inside the claim (relative); empty for the root.")


class HFSource(_Spec):
    repo: str = Field(max_length=200, pattern=r"^[A-Za-z0-9][\w.-]*/[\w.-]+$", description="Hugging Face repository, `org/name`.")
    private: bool = Field(default=False, description="The repository is private or gated: tokenSecret is then required.")
    token_secret: SecretKeyRef | None = Field(default=None, description="Secret key with the Hugging Face token (exposed as HF_TOKEN).")


class S3Source(_Spec):
    bucket: str = Field(max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", description="S3 bucket name.")
    prefix: str = Field(default="", max_length=1024, description="Key prefix of the model directory inside the bucket.")
    endpoint: str | None = Field(default=None, max_length=512, pattern=r"^https?://", description="S3-compatible endpoint URL; AWS when unset.")
    credentials_secret: str | None = Field(
        default=None, max_length=253, pattern=DNS_LABEL,
        description="Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (loaded as environment). Required.",
    )


class LocalSource(_Spec):
    path: str = Field(max_length=1024, pattern=r"^/", description="Absolute path of the weights inside the worker image.")


class ModelSource(_Spec):
    model_config = ConfigDict(json_schema_extra=rules(
        ("[has(self.pvc), has(self.hf), has(self.s3), has(self.local)].filter(x, x).size() == 1",
         "model.source needs exactly one of pvc, hf, s3 or local"),
        ("!has(self.hf) || !self.hf.private || has(self.hf.tokenSecret)",
         "model.source.hf.private is true: set model.source.hf.tokenSecret to a Secret holding the Hugging Face token"),
        ("!has(self.s3) || has(self.s3.credentialsSecret)",
         "model.source.s3 needs credentialsSecret: a Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
    ))
    pvc: PVCSource | None = Field(default=None, description="Weights on a PersistentVolumeClaim (`pvc://claim/path`).")
    hf: HFSource | None = Field(default=None, description="Weights from the Hugging Face hub (`hf://org/name`).")
    s3: S3Source | None = Field(default=None, description="Weights from S3 (`s3://bucket/prefix`).")
    local: LocalSource | None = Field(default=None, description="Weights baked into the worker image.")

    def uri(self) -> str:
        if self.pvc:
            return f"pvc://{self.pvc.claim_name}/{self.pvc.path}".rstrip("/")
        if self.hf:
            return f"hf://{self.hf.repo}"
        if self.s3:
            return f"s3://{self.s3.bucket}/{self.s3.prefix}".rstrip("/")
        assert self.local is not None
        return self.local.path


class ModelSpec(_Spec):
    source: ModelSource = Field(description="Where the weights come from; exactly one form.")
    revision: str | None = Field(default=None, max_length=128, description="Revision (branch, tag or commit) for hf sources; informative otherwise.")
    task: Literal["generate", "embed", "classify"] = Field(default="generate", description="generate: decoder LLM; embed/classify: encoder.")
    max_model_len: int | None = Field(default=None, ge=16, le=1048576, description="Context length cap; the model's own when unset.")
    served_name: str | None = Field(default=None, max_length=128, description="Model id reported by /v1/models; the resource name when unset.")


# ---------------------------------------------------------------- engine settings


class PrecisionSpec(_Spec):
    model_config = ConfigDict(json_schema_extra=rules(
        ("self.sparsity == 'none' || self.quantization == 'none'",
         "precision.sparsity 2:4 runs unquantized weights: set precision.quantization none or sparsity none"),
        ("!self.tpInvariant || (self.quantization == 'none' && self.sparsity == 'none')",
         "precision.tpInvariant runs unquantized dense weights: set precision.quantization and sparsity to none, "
         "or tpInvariant false"),
    ))
    dtype: Literal["bfloat16", "float16", "float32"] = Field(default="bfloat16", description="Activation and weight dtype.")
    quantization: Literal["none", "int8", "int4", "fp8"] = Field(default="none", description="Weight quantization; fp8 needs a Hopper or Ada GPU.")
    kv_cache_dtype: Literal["auto", "fp8"] = Field(default="auto", description="KV cache dtype; auto follows dtype, fp8 needs a Hopper or Ada GPU.")
    sparsity: Literal["none", "2:4"] = Field(default="none", description="Structured sparsity of the weights.")
    tp_invariant: bool = Field(
        default=False,
        description="The same logits, bit for bit, at parallelism.tensor 1, 2, 4 and 8, so greedy output does not "
                    "change with the degree: matmuls add over a fixed tree of 8 input slices. About half the "
                    "batch-1 speed; for evaluations and debugging that compare degrees.")


class ParallelismSpec(_Spec):
    model_config = ConfigDict(json_schema_extra=rules(
        ("self.tensor in [1, 2, 4, 8]", "parallelism.tensor must be a power of two no larger than 8: use 1, 2, 4 or 8"),
        ("self.tensor * self.pipeline <= 64", "parallelism.tensor x parallelism.pipeline (GPUs per replica) must be at most 64"),
        ("self.pipeline % self.nodes == 0",
         "parallelism.nodes must divide parallelism.pipeline: each pod of a pipeline group holds whole stages"),
    ))
    tensor: int = Field(default=1, ge=1, le=8, description="Tensor-parallel degree (1, 2, 4 or 8).")
    pipeline: int = Field(default=1, ge=1, le=16, description="Pipeline-parallel degree. GPUs per replica = tensor x pipeline.")
    nodes: int = Field(default=1, ge=1, le=16, description="Pods per replica: above 1, a multi-node pipeline group (StatefulSet per replica) of tensor x pipeline / nodes GPUs per pod.")


class BatchingSpec(_Spec):
    model_config = ConfigDict(json_schema_extra=rules(
        ("self.chunkedPrefill || self.maxNumBatchedTokens >= self.maxNumSeqs",
         "batching.maxNumBatchedTokens is below batching.maxNumSeqs: raise it or set chunkedPrefill: true"),
    ))
    max_num_seqs: int = Field(default=256, ge=1, le=4096, description="Most sequences running at once (decoders).")
    max_num_batched_tokens: int = Field(default=8192, ge=16, le=1048576, description="Token budget of one engine step (decoders).")
    chunked_prefill: bool = Field(default=True, description="Split long prompts across steps (decoders).")
    max_batch_size: int | None = Field(default=None, ge=1, le=1024, description="Encoders only: largest dynamic batch.")
    max_queue_delay_microseconds: int | None = Field(default=None, ge=0, le=1000000, description="Encoders only: longest wait to fill a batch.")


class CacheClaimSpec(_Spec):
    model_config = ConfigDict(json_schema_extra=rules(
        ("self.accessMode == oldSelf.accessMode && has(self.storageClassName) == has(oldSelf.storageClassName)"
         " && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)",
         "caching.modelCache.claim.accessMode and storageClassName cannot change once the claim exists (a PVC's are immutable);"
         " delete the PVC <name>-model-cache first, or keep them"),
    ))
    size: str = Field(default="200Gi", max_length=32, pattern=QUANTITY,
                      description="Requested size; growing it needs a StorageClass with allowVolumeExpansion.")
    storage_class_name: str | None = Field(default=None, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
                                           description="StorageClass of the claim; the cluster default when unset.")
    access_mode: Literal["ReadWriteMany", "ReadWriteOnce"] = Field(
        default="ReadWriteMany",
        description="ReadWriteMany: one cache for all replicas on any node; ReadWriteOnce: only while all replicas share a node (else use hostPath).")


class ModelCacheSpec(_Spec):
    model_config = ConfigDict(json_schema_extra=rules(
        ("[has(self.claimName), has(self.claim), has(self.hostPath)].filter(x, x).size() <= 1",
         "caching.modelCache takes at most one of claimName (an existing PVC), claim (a PVC the operator creates) or hostPath"),
    ))
    claim_name: str | None = Field(default=None, max_length=253, pattern=DNS_LABEL,
                                   description="Existing PVC for downloaded weights and compile caches, e.g. one ReadWriteMany claim shared by every fms of the namespace.")
    claim: CacheClaimSpec | None = Field(default=None, description="The operator creates the PVC <name>-model-cache, shared by this fms's replicas and deleted with it.")
    host_path: str | None = Field(default=None, max_length=1024, pattern=r"^/[^:]*$",
                                  description="Node-local cache directory (hostPath), shared by the replicas on each node; must be writable by uid 1000.")
    size_limit: str = Field(default="100Gi", max_length=32, pattern=QUANTITY, description="Size limit of the emptyDir cache (when no other form is set).")


class CachingSpec(_Spec):
    prefix_caching: bool = Field(default=True, description="Reuse KV blocks across requests sharing a prompt prefix.")
    gpu_memory_utilization: float = Field(default=0.9, ge=0.1, le=0.99, description="Fraction of GPU memory for weights plus KV cache.")
    model_cache: ModelCacheSpec = Field(default_factory=ModelCacheSpec, description="Volume for model downloads and compile caches.")


class ResourcesSpec(_Spec):
    gpu_product: str | None = Field(
        default=None, max_length=63, pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.]*$",
        description="GPU product as the node label nvidia.com/gpu.product, e.g. NVIDIA-H100-80GB-HBM3; any GPU when unset.",
    )
    gpu_memory: str | None = Field(default=None, max_length=32, pattern=QUANTITY, description="Least memory per GPU, compared with the node label nvidia.com/gpu.memory in MiB (an H100 80GB reports 81559Mi).")
    cpu: str = Field(default="4", max_length=32, pattern=QUANTITY, description="CPU request per replica.")
    memory: str = Field(default="32Gi", max_length=32, pattern=QUANTITY, description="Memory request and limit per replica.")


class Toleration(_Spec):
    key: str | None = Field(default=None, max_length=253, description="Taint key; empty with operator Exists matches all.")
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="Exists or Equal.")
    value: str | None = Field(default=None, max_length=63, description="Taint value for operator Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(default=None, description="Taint effect; all when unset.")
    toleration_seconds: int | None = Field(default=None, ge=0, le=86400, description="NoExecute only: how long the pod stays bound.")


class DRASpec(_Spec):
    device_class_name: str = Field(default="gpu.fms.dev", max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
                                   description="DeviceClass of the DRA driver's GPUs.")
    clique_attribute: str = Field(
        default="gpu.fms.dev/nvlinkClique", max_length=127, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z][A-Za-z0-9_]*$",
        description="Fully qualified device attribute with one value per NVLink domain (nvlink-required matches it).")


class PlacementSpec(_Spec):
    interconnect: Literal["nvlink-required", "nvlink-preferred", "any"] = Field(
        default="nvlink-preferred", description="Whether a replica's GPUs must (or should) share one NVLink domain.")
    node_selector: dict[str, str] = Field(default_factory=dict, max_length=32, description="Extra node labels the pods require.")
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32, description="Extra tolerations of the pods.")
    priority_class_name: str | None = Field(default=None, max_length=253, pattern=DNS_LABEL, description="PriorityClass of the pods.")
    gpu_allocation: Literal["extendedResource", "dra"] = Field(
        default="extendedResource",
        description="extendedResource: request nvidia.com/gpu; dra: a ResourceClaim (resource.k8s.io/v1) whose GPUs share one NVLink clique under nvlink-required.")
    dra: DRASpec = Field(default_factory=DRASpec, description="DeviceClass and clique attribute for gpuAllocation dra.")
    group_topology_key: str = Field(
        default="nvidia.com/gpu.clique", max_length=317, pattern=r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
        description="Node label whose value all pods of a pipeline group (parallelism.nodes > 1) must share.")
    gang_timeout_seconds: int = Field(
        default=300, ge=10, le=86400,
        description="A pipeline group partly placed for this long is deleted (its GPUs freed) and reported GangUnschedulable.")


class AutoscalingSpec(_Spec):
    model_config = ConfigDict(json_schema_extra=rules(
        ("self.minReplicas <= self.maxReplicas", "autoscaling.minReplicas must not exceed autoscaling.maxReplicas"),
        ("!(self.metric in " + str(list(RATIO_METRICS)) + ") || self.target <= 1.0",
         "=self.metric + ' is a ratio: autoscaling.target must be between 0 and 1'"),
    ))
    mode: Literal["builtin", "external"] = Field(
        default="builtin", description="builtin: the operator scales spec.replicas; external: leave it to an HPA or KEDA (scale subresource).")
    min_replicas: int = Field(default=1, ge=0, le=1000, description="Fewest replicas.")
    max_replicas: int = Field(default=4, ge=1, le=1000, description="Most replicas.")
    metric: Literal["kvCacheUsage", "queueDepth", "gpuUtilization", "saturation", "runningRequests"] = Field(
        default="kvCacheUsage", description="Signal to hold at target: a ratio (kvCacheUsage, gpuUtilization, saturation) or a per-replica count.")
    target: float = Field(default=0.7, gt=0, le=100000, description="Per-replica target of the metric.")
    scale_up_stabilization_seconds: int = Field(default=0, ge=0, le=3600, description="Window over which scale-up takes the lowest recommendation.")
    scale_down_stabilization_seconds: int = Field(default=300, ge=0, le=3600, description="Window over which scale-down takes the highest recommendation.")


class EnvVar(_Spec):
    name: str = Field(max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Variable name.")
    value: str = Field(default="", max_length=4096, description="Variable value.")


class RolloutSpec(_Spec):
    model_config = ConfigDict(json_schema_extra=rules(
        ("self.maxSurge > 0 || self.maxUnavailable > 0",
         "worker.rollout.maxSurge and maxUnavailable cannot both be 0: with maxSurge 0 (scarce GPUs) set maxUnavailable to 1"),
    ))
    max_surge: int = Field(default=1, ge=0, le=100, description="Extra replicas during a rollout; 0 when GPUs are scarce.")
    max_unavailable: int = Field(default=0, ge=0, le=100, description="Replicas that may be down during a rollout.")


class WorkerSpec(_Spec):
    model_config = ConfigDict(json_schema_extra=rules(
        ("self.port != self.metricsPort", "worker.port and worker.metricsPort must differ"),
    ))
    image: str = Field(default="ghcr.io/fms-dev/fms-worker:0.1.0", max_length=512, description="Worker container image.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(default="IfNotPresent", description="Image pull policy.")
    port: int = Field(default=8000, ge=1024, le=65535, description="HTTP API port (/v1, /health, /ready, /metrics).")
    metrics_port: int = Field(default=9090, ge=1024, le=65535, description="Prometheus /metrics port.")
    env: list[EnvVar] = Field(default_factory=list, max_length=64, description="Extra environment variables.")
    drain_seconds: int = Field(default=30, ge=0, le=3600, description="On shutdown, how long in-flight requests may finish.")
    startup_timeout_seconds: int = Field(default=1800, ge=30, le=14400, description="How long loading the model may take before the pod restarts.")
    rollout: RolloutSpec = Field(default_factory=RolloutSpec, description="Rolling update settings.")


class FoundationModelServiceSpec(_Spec):
    model_config = ConfigDict(json_schema_extra=rules(
        ("!(self.precision.quantization == 'fp8' || self.precision.kvCacheDtype == 'fp8') || has(self.resources.gpuProduct)",
         "fp8 (precision.quantization or precision.kvCacheDtype) needs resources.gpuProduct naming a Hopper (H100, H200, GH200) or Ada (L4, L40S) GPU"),
        ("!(self.precision.quantization == 'fp8' || self.precision.kvCacheDtype == 'fp8') || !has(self.resources.gpuProduct)"
         f" || self.resources.gpuProduct.matches('{FP8_PRODUCT_REGEX}')",
         "='resources.gpuProduct ' + self.resources.gpuProduct + ' has no fp8 support: use a Hopper (H100, H200, GH200) or Ada (L4, L40S) GPU,"
         " or quantization int8/int4 with kvCacheDtype auto'"),
        ("self.model.task != 'generate' || (!has(self.batching.maxBatchSize) && !has(self.batching.maxQueueDelayMicroseconds))",
         "batching.maxBatchSize and batching.maxQueueDelayMicroseconds are for encoders (model.task embed or classify); remove them for task generate"),
        ("self.model.task == 'generate' || !has(self.autoscaling) || self.autoscaling.metric != 'kvCacheUsage'",
         "encoders (model.task embed or classify) have no KV cache: use autoscaling.metric queueDepth, gpuUtilization, saturation or runningRequests"),
        ("self.batching.chunkedPrefill || !has(self.model.maxModelLen) || self.batching.maxNumBatchedTokens >= self.model.maxModelLen",
         "without chunkedPrefill, batching.maxNumBatchedTokens must be at least model.maxModelLen: raise it or set chunkedPrefill: true"),
    ))
    model: ModelSpec = Field(description="The model to serve.")
    replicas: int = Field(default=1, ge=0, le=1000, description="Worker replicas (scale subresource; written by the autoscaler in builtin mode).")
    precision: PrecisionSpec = Field(default_factory=PrecisionSpec, description="Dtypes, quantization and sparsity.")
    parallelism: ParallelismSpec = Field(default_factory=ParallelismSpec, description="Tensor and pipeline degrees.")
    batching: BatchingSpec = Field(default_factory=BatchingSpec, description="Continuous batching (decoders) or dynamic batching (encoders).")
    caching: CachingSpec = Field(default_factory=CachingSpec, description="Prefix and KV cache, model cache volume.")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="GPU product and memory, CPU and memory per replica.")
    placement: PlacementSpec = Field(default_factory=PlacementSpec, description="Interconnect policy and scheduling constraints.")
    autoscaling: AutoscalingSpec | None = Field(default=None, description="Autoscaling; replicas stay as set when unset.")
    worker: WorkerSpec = Field(default_factory=WorkerSpec, description="Worker container, ports, drain and rollout.")

    @property
    def gpus_per_replica(self) -> int:
        return self.parallelism.tensor * self.parallelism.pipeline


# ---------------------------------------------------------------- status


class Condition(_Spec):
    type: Literal["Ready", "Progressing", "Degraded", "Placed", "ModelReady"] = Field(description="Condition type.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(default="", max_length=128, description="CamelCase reason.")
    message: str = Field(default="", max_length=4096, description="Human-readable detail.")
    last_transition_time: str | None = Field(default=None, max_length=64, description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(default=None, ge=0, description="Generation the condition was computed for.")


class Endpoint(_Spec):
    host: str = Field(default="", max_length=512, description="Service DNS name.")
    port: int = Field(default=8000, ge=1, le=65535, description="HTTP port.")
    url: str = Field(default="", max_length=600, description="Base URL of the OpenAI-compatible API.")


class ScalingDecision(_Spec):
    value: float | None = Field(default=None, description="Observed metric value (per replica).")
    target: float | None = Field(default=None, description="Target of the metric.")
    current: int | None = Field(default=None, ge=0, description="Replicas when decided.")
    desired: int | None = Field(default=None, ge=0, description="Replicas decided.")
    reason: str = Field(default="", max_length=1024, description="Why.")
    time: str | None = Field(default=None, max_length=64, description="When (RFC 3339).")


class ReplicaPlacement(_Spec):
    pod: str = Field(max_length=253, description="Pod name.")
    node: str = Field(default="", max_length=253, description="Node the pod landed on; empty while pending.")
    phase: str = Field(default="", max_length=32, description="Pod phase.")


class ModelFetchStatus(_Spec):
    source: str = Field(default="", max_length=1100, description="Source the fetch-model step read (with @revision for hf).")
    pods: int = Field(default=0, ge=0, description="Live pods whose fetch-model step finished.")
    cached_pods: int = Field(default=0, ge=0, description="Of those, pods that found the weights already on the cache volume.")
    cached: bool | None = Field(default=None, description="True when no pod had to download (a warm cache, a pvc or image path).")
    fetch_seconds: float | None = Field(default=None, ge=0, description="Wall time of the download that filled the cache.")
    seconds: float | None = Field(default=None, ge=0, description="Longest fetch-model run among the pods.")
    bytes: int | None = Field(default=None, ge=0, description="Model size on the cache volume.")
    revision: str | None = Field(default=None, max_length=128, description="Commit the hf revision resolved to.")


class StartupStatus(_Spec):
    replicas: int = Field(default=0, ge=0, description="Ready replicas measured (containers never restarted).")
    last_seconds: float = Field(default=0, ge=0, description="Scheduled -> Ready of the replica that became ready last.")
    p50_seconds: float = Field(default=0, ge=0, description="Median scheduled -> Ready.")
    max_seconds: float = Field(default=0, ge=0, description="Slowest scheduled -> Ready.")


class FoundationModelServiceStatus(_Spec):
    observed_generation: int | None = Field(default=None, ge=0, description="Generation the status describes.")
    phase: str = Field(default="", max_length=32, description="Summary for kubectl: Ready, Progressing, Pending, Degraded or ScaledToZero.")
    model: str = Field(default="", max_length=1100, description="Model source as a URI (pvc://, hf://, s3:// or a path).")
    conditions: list[Condition] = Field(default_factory=list, max_length=8, description="Ready, Progressing, Degraded, Placed, ModelReady.")
    replicas: int = Field(default=0, ge=0, description="Worker pods that exist (scale subresource).")
    ready_replicas: int = Field(default=0, ge=0, description="Worker pods that are ready.")
    desired_replicas: int = Field(default=0, ge=0, description="Replicas asked for (spec.replicas).")
    selector: str = Field(default="", max_length=1024, description="Label selector of the worker pods (scale subresource, HPA).")
    gpus_per_replica: int = Field(default=1, ge=0, description="tensor x pipeline.")
    endpoint: Endpoint | None = Field(default=None, description="Where to send requests.")
    last_scale: ScalingDecision | None = Field(default=None, description="The autoscaler's last decision.")
    placement: list[ReplicaPlacement] = Field(default_factory=list, max_length=1000, description="Where the replicas landed.")
    model_fetch: ModelFetchStatus | None = Field(default=None, description="What the pods' fetch-model step reported (ModelReady has failures).")
    startup: StartupStatus | None = Field(default=None, description="Per-replica start-up time, pod scheduled -> Ready.")
