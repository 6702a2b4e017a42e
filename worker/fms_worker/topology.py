"""How this pod's GPUs talk to each other, and which GPU each rank gets.

The link matrix is read once at start-up through NVML (nvidia-ml-py); every
decision on it (NVLink peers, cliques, rank order, the nvlink-required check)
is a pure function over `GPUTopology`, table-tested with fake matrices.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

NVLINK, P2P, NONE = "nvlink", "p2p", "none"


@dataclass(frozen=True)
class GPUTopology:
    """links[i][j]: NVLINK (direct or through NVSwitch), P2P (PCIe peer access) or NONE; the diagonal is ignored."""

    links: tuple[tuple[str, ...], ...]
    products: tuple[str, ...] = field(default=())
    nvlink_counts: tuple[int, ...] = field(default=())  # active NVLinks per GPU; informative

    @classmethod
    def from_rows(cls, rows: list[list[str]] | list[str], **kw) -> GPUTopology:
        """Rows as lists or as strings of N/P/- per GPU (tests): "NN-" means nvlink to 0 and 1, none to 2."""
        code = {"N": NVLINK, "P": P2P, "-": NONE, "X": NONE}
        parsed = [tuple(code[c] for c in r) if isinstance(r, str) else tuple(r) for r in rows]
        return cls(tuple(parsed), **kw)

    @property
    def count(self) -> int:
        return len(self.links)

    def nvlinked(self, a: int, b: int) -> bool:
        return a == b or self.links[a][b] == NVLINK

    def nvlink_peers(self) -> dict[int, int]:
        return {i: sum(1 for j in range(self.count) if j != i and self.links[i][j] == NVLINK) for i in range(self.count)}

    def p2p(self, a: int, b: int) -> bool:
        return a == b or self.links[a][b] in (NVLINK, P2P)

    def all_nvlinked(self, gpus: list[int]) -> bool:
        return all(self.nvlinked(a, b) for a in gpus for b in gpus)

    def summary(self) -> dict:
        """For /ready and logs."""
        return {
            "gpus": self.count,
            "products": list(self.products),
            "nvlink_peers": {str(k): v for k, v in self.nvlink_peers().items()},
            "nvlink_domains": [sorted(c) for c in nvlink_domains(self)],
            "all_nvlinked": self.all_nvlinked(list(range(self.count))),
        }


def nvlink_domains(topo: GPUTopology) -> list[list[int]]:
    """Connected components of the NVLink graph, largest first, ties by lowest GPU index."""
    seen: set[int] = set()
    domains = []
    for start in range(topo.count):
        if start in seen:
            continue
        stack, comp = [start], []
        seen.add(start)
        while stack:
            g = stack.pop()
            comp.append(g)
            for h in range(topo.count):
                if h not in seen and topo.links[g][h] == NVLINK:
                    seen.add(h)
                    stack.append(h)
        domains.append(sorted(comp))
    return sorted(domains, key=lambda c: (-len(c), c[0]))


def _path(topo: GPUTopology, gpus: list[int]) -> list[int]:
    """Greedy walk: each next GPU is NVLink-connected to the previous when any such GPU is left."""
    left, order = sorted(gpus), []
    while left:
        prev = order[-1] if order else None
        nxt = next((g for g in left if prev is None or topo.nvlinked(prev, g)), left[0])
        order.append(nxt)
        left.remove(nxt)
    return order


def order_ranks(topo: GPUTopology, world_size: int, tp: int) -> list[int]:
    """GPU index for each rank (rank = stage * tp + tp_rank).

    Each tensor-parallel group (tp consecutive ranks) is taken from one NVLink
    domain when one has room (best fit: the fullest domain that still fits),
    and within a domain consecutive ranks are NVLink neighbours where possible,
    so that ring all-reduce and stage-to-stage sends stay on NVLink.
    """
    if world_size > topo.count:
        raise ValueError(f"{world_size} ranks need {world_size} GPUs but only {topo.count} are visible; "
                         "lower parallel.tensor x parallel.pipeline or give the pod more GPUs")
    free = [_path(topo, d) for d in nvlink_domains(topo)]
    order: list[int] = []
    for _ in range(world_size // tp):
        fits = [d for d in free if len(d) >= tp]
        if fits:
            domain = min(fits, key=len)
            group, domain[:] = domain[:tp], domain[tp:]
        else:  # no single domain has room: the group must span domains
            pool = [g for d in free for g in d]
            group = pool[:tp]
            free = [[g for g in d if g not in group] for d in free]
        order.extend(group)
        free = [d for d in free if d]
    return order


def interconnect_problem(topo: GPUTopology, gpus: list[int], tp: int, policy: str) -> str | None:
    """Why this placement breaks parallel.interconnect (None when it does not).

    Only tensor-parallel groups must be NVLink-connected: pipeline stages
    exchange one hidden state per step and do fine over PCIe.
    """
    if policy != "nvlink-required" or tp == 1:
        return None
    for start in range(0, len(gpus), tp):
        group = gpus[start : start + tp]
        if not topo.all_nvlinked(group):
            pairs = [f"{a}-{b}" for a in group for b in group if a < b and not topo.nvlinked(a, b)]
            return (f"parallel.interconnect is nvlink-required but GPUs {group} of a tensor-parallel group are not all "
                    f"NVLink-connected (no NVLink between {', '.join(pairs[:4])}); schedule the pod on a node whose "
                    f"NVLink domain has at least {tp} GPUs or set interconnect to nvlink-preferred")
    return None


def read_topology() -> GPUTopology | None:
    """The visible GPUs' link matrix from NVML; None without a driver or GPU (CPU workers)."""
    try:
        import pynvml as nvml

        nvml.nvmlInit()
    except Exception as exc:  # no libnvidia-ml: a CPU worker
        log.debug("NVML unavailable: %s", exc)
        return None
    try:
        handles = _visible_handles(nvml, os.environ.get("CUDA_VISIBLE_DEVICES"))
        rows = []
        for a in handles:
            row = []
            for b in handles:
                row.append(NONE if a is b else _link(nvml, a, b))
            rows.append(row)
        products = tuple(_name(nvml.nvmlDeviceGetName(h)) for h in handles)
        return GPUTopology(tuple(tuple(r) for r in rows), products, tuple(_active_links(nvml, h) for h in handles))
    finally:
        nvml.nvmlShutdown()


def _visible_handles(nvml, visible: str | None) -> list:
    """NVML counts every GPU of the host; CUDA (and so rank -> GPU index) only those in CUDA_VISIBLE_DEVICES."""
    if not visible:
        return [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
    handles = []
    for item in (v.strip() for v in visible.split(",")):
        if item.isdigit():
            handles.append(nvml.nvmlDeviceGetHandleByIndex(int(item)))
        elif item.startswith(("GPU-", "MIG-")):
            handles.append(nvml.nvmlDeviceGetHandleByUUID(item))
        else:  # CUDA stops at the first entry it cannot parse
            break
    return handles


def _link(nvml, a, b) -> str:
    try:
        if nvml.nvmlDeviceGetP2PStatus(a, b, nvml.NVML_P2P_CAPS_INDEX_NVLINK) == nvml.NVML_P2P_STATUS_OK:
            return NVLINK
        if nvml.nvmlDeviceGetP2PStatus(a, b, nvml.NVML_P2P_CAPS_INDEX_READ) == nvml.NVML_P2P_STATUS_OK:
            return P2P
    except nvml.NVMLError as exc:
        log.warning("NVML P2P status failed: %s", exc)
    return NONE


def _active_links(nvml, handle) -> int:
    active = 0
    for link in range(nvml.NVML_NVLINK_MAX_LINKS):
        try:
            active += nvml.nvmlDeviceGetNvLinkState(handle, link) == nvml.NVML_FEATURE_ENABLED
        except nvml.NVMLError:  # link index not present on this GPU (PCIe cards: none)
            break
    return active


def _name(raw) -> str:
    return (raw.decode() if isinstance(raw, bytes) else str(raw)).replace(" ", "-")
