"""A worker pod's place in a multi-node pipeline group, read from the FMS_GROUP_* variables the operator sets (pure).

The operator renders a group as a StatefulSet of FMS_GROUP_SIZE pods; each
pod learns its index (FMS_GROUP_RANK, from the pod-index label) and the
leader's stable DNS name (FMS_GROUP_LEADER). Every pod holds the same number
of ranks, whole pipeline stages, so the global rank of a process is
pod index x ranks per pod + its local rank, and pod 0's local rank 0 (global
rank 0) runs the scheduler and the HTTP server. Without the variables the
worker is one pod and nothing here applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

ENV_SIZE, ENV_INDEX, ENV_LEADER = "FMS_GROUP_SIZE", "FMS_GROUP_RANK", "FMS_GROUP_LEADER"
# Only tests set this: pods have their own network namespace and always meet on the rendered rendezvous port.
ENV_PORT = "FMS_GROUP_PORT"
RENDEZVOUS_PORT = 29500  # the headless Service's and the container's `rendezvous` port


@dataclass(frozen=True)
class PodGroup:
    size: int  # pods in the group
    index: int  # this pod's index; 0 leads
    leader: str  # host the rendezvous listens on (pod 0's DNS name)
    port: int = RENDEZVOUS_PORT

    @property
    def is_leader(self) -> bool:
        return self.index == 0

    def ranks_per_pod(self, world_size: int, tensor: int) -> int:
        """Ranks in each pod; refuses a split that would cut a pipeline stage across pods."""
        per_pod, rest = divmod(world_size, self.size)
        if rest or per_pod % tensor:
            raise ValueError(f"a group of {self.size} pods cannot hold tensor x pipeline = {world_size} ranks as whole "
                             f"stages of {tensor}; make parallel.pipeline a multiple of the number of pods")
        return per_pod

    def first_rank(self, world_size: int, tensor: int) -> int:
        return self.index * self.ranks_per_pod(world_size, tensor)


def pod_group(env: Mapping[str, str]) -> PodGroup | None:
    """The group this pod belongs to, or None when FMS_GROUP_* is absent (a one-pod replica)."""
    if ENV_SIZE not in env:
        return None
    try:
        size = int(env[ENV_SIZE])
        index = int(env.get(ENV_INDEX, ""))
        port = int(env.get(ENV_PORT, RENDEZVOUS_PORT))
    except ValueError:
        raise ValueError(f"{ENV_SIZE}={env.get(ENV_SIZE)!r}, {ENV_INDEX}={env.get(ENV_INDEX)!r} and {ENV_PORT} must be "
                         f"integers; {ENV_INDEX} comes from the pod-index label (Kubernetes 1.28+)") from None
    leader = env.get(ENV_LEADER, "")
    if size < 1 or not 0 <= index < size:
        raise ValueError(f"{ENV_INDEX}={index} is outside the group of {ENV_SIZE}={size} pods")
    if not leader:
        raise ValueError(f"{ENV_LEADER} is empty; it must name pod 0 of the group (its stable DNS name)")
    if size == 1:
        return None  # a group of one is a plain pod
    return PodGroup(size, index, leader, port)
