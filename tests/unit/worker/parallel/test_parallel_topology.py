"""Rank order and the nvlink-required check over fake NVLink matrices (no GPU)."""

import pytest

from fms_worker.topology import GPUTopology, interconnect_problem, nvlink_domains, order_ranks

DGX_H100 = GPUTopology.from_rows(["N" * 8] * 8)  # NVSwitch: all-to-all
# HGX A100 4x2: two NVLink islands of 4 (GPUs 0-3, 4-7), PCIe between them
A100_4X2 = GPUTopology.from_rows(["NNNNPPPP"] * 4 + ["PPPPNNNN"] * 4)
# the same islands, but the PCI order interleaves them: 0,2,4,6 and 1,3,5,7
INTERLEAVED = GPUTopology.from_rows(["NPNPNPNP", "PNPNPNPN"] * 4)
L4_PCIE = GPUTopology.from_rows(["PPPP"] * 4)
# NVLink bridges in pairs (0-1, 2-3), no peer access across pairs
PAIRS = GPUTopology.from_rows(["NN--", "NN--", "--NN", "--NN"])
# a ring without NVSwitch: each GPU links only its two neighbours
RING4 = GPUTopology.from_rows(["NN-N", "NNN-", "-NNN", "N-NN"])


@pytest.mark.parametrize("topo,world,tp,expected", [
    (DGX_H100, 8, 8, [0, 1, 2, 3, 4, 5, 6, 7]),
    (DGX_H100, 4, 4, [0, 1, 2, 3]),
    (A100_4X2, 4, 4, [0, 1, 2, 3]),
    (A100_4X2, 8, 4, [0, 1, 2, 3, 4, 5, 6, 7]),
    (INTERLEAVED, 4, 4, [0, 2, 4, 6]),
    (INTERLEAVED, 8, 4, [0, 2, 4, 6, 1, 3, 5, 7]),
    (INTERLEAVED, 4, 2, [0, 2, 4, 6]),  # pp=2 x tp=2: both groups in one island
    (PAIRS, 2, 2, [0, 1]),
    (PAIRS, 4, 2, [0, 1, 2, 3]),
    (RING4, 4, 4, [0, 1, 2, 3]),  # a walk along the ring: neighbours are linked
    (L4_PCIE, 4, 4, [0, 1, 2, 3]),
])
def test_order_ranks(topo, world, tp, expected):
    assert order_ranks(topo, world, tp) == expected


def test_order_ranks_best_fit_keeps_a_whole_island_free():
    # islands of 2 (0,1) and 4 (2-5): a tp=2 group takes the small island, leaving the 4 intact
    topo = GPUTopology.from_rows(["NNPPPP", "NNPPPP"] + ["PPNNNN"] * 4)
    assert order_ranks(topo, 2, 2) == [0, 1]
    assert order_ranks(topo, 6, 2)[:2] == [0, 1]


def test_order_ranks_needs_enough_gpus():
    with pytest.raises(ValueError, match="8 ranks need 8 GPUs but only 4 are visible"):
        order_ranks(L4_PCIE, 8, 8)


def test_domains_and_peers():
    assert nvlink_domains(A100_4X2) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert nvlink_domains(INTERLEAVED) == [[0, 2, 4, 6], [1, 3, 5, 7]]
    assert nvlink_domains(L4_PCIE) == [[0], [1], [2], [3]]
    assert DGX_H100.nvlink_peers() == {i: 7 for i in range(8)}
    assert A100_4X2.nvlink_peers()[5] == 3
    assert L4_PCIE.nvlink_peers() == {0: 0, 1: 0, 2: 0, 3: 0}
    summary = A100_4X2.summary()
    assert summary["nvlink_domains"] == [[0, 1, 2, 3], [4, 5, 6, 7]] and summary["all_nvlinked"] is False


@pytest.mark.parametrize("topo,gpus,tp,policy,bad", [
    (DGX_H100, list(range(8)), 8, "nvlink-required", False),
    (A100_4X2, [0, 1, 2, 3, 4, 5, 6, 7], 4, "nvlink-required", False),  # tp groups each in one island
    (A100_4X2, list(range(8)), 8, "nvlink-required", True),
    (L4_PCIE, [0, 1], 2, "nvlink-required", True),
    (L4_PCIE, [0, 1], 2, "nvlink-preferred", False),
    (L4_PCIE, [0, 1], 2, "any", False),
    (L4_PCIE, [0], 1, "nvlink-required", False),  # one GPU has nothing to talk to
    (RING4, [0, 1, 2, 3], 4, "nvlink-required", True),  # 0 and 2 are not linked
])
def test_interconnect_problem(topo, gpus, tp, policy, bad):
    problem = interconnect_problem(topo, gpus, tp, policy)
    assert (problem is not None) == bad
    if bad:
        assert "nvlink-required" in problem and "not all NVLink-connected" in problem


class _FakeNvml:
    """Host GPUs 0..3 (UUIDs GPU-a..GPU-d); handles are the host indices."""

    uuids = ["GPU-a", "GPU-b", "GPU-c", "GPU-d"]

    def nvmlDeviceGetCount(self):
        return 4

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetHandleByUUID(self, uuid):
        return self.uuids.index(uuid)


@pytest.mark.parametrize("visible, expected", [
    (None, [0, 1, 2, 3]),
    ("", [0, 1, 2, 3]),
    ("2,3", [2, 3]),
    ("3, 1", [3, 1]),
    ("GPU-c,GPU-a", [2, 0]),
    ("1,bogus,2", [1]),  # CUDA ignores entries from the first one it cannot parse
])
def test_topology_follows_cuda_visible_devices(visible, expected):
    from fms_worker.topology import _visible_handles

    assert _visible_handles(_FakeNvml(), visible) == expected
