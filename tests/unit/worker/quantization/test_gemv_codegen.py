"""The decode GEMVs' inner loops as compiled for Hopper (sm_90), on this CPU machine.

Speed is measured on GPUs (docs/benchmarks.md); what a change does to the loop can be checked here:
Triton compiles for a named target with the ptxas it ships and lists the machine code with its
nvdisasm (bench/kernel_ptx.py). These checks hold the structure the GPU figures were measured with:
weights and activations streamed by the software pipeliner (no scalar global loads for them), and at
most as many machine instructions per weight as the kernels have now (the int4 GEMV is bound by them).
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed (CPU-only install)", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "bench"))
import kernel_ptx  # noqa: E402


@pytest.fixture(scope="module")
def int8_rows():
    return {name: (weights, st) for name, weights, st in kernel_ptx.int8_rows()}


@pytest.fixture(scope="module")
def int4_rows():
    return {name: (weights, st) for name, weights, st in kernel_ptx.int4_rows()}


def test_int8_gemv_streams_everything_and_stays_lean(int8_rows):
    assert len(int8_rows) == 24  # six tiles x four conversions
    for name, (weights, st) in int8_rows.items():
        assert st["scalar_global_loads"] == 0 and st["cp_async"] >= 2, (name, st)
        assert st["sass"] / weights <= 8.0, (name, st["sass"] / weights)


def test_int8_byte_permute_takes_fewer_instructions_than_the_magic_add(int8_rows):
    """FMS_INT8_PERMUTE's conversion as compiled: per weight one byte permute (plus a quarter xor) where the magic
    add sign-extends and adds, so fewer machine instructions a weight on every tile (sm_90: 4.4-7.1 against
    5.2-7.9)."""
    for name, (weights, st) in int8_rows.items():
        if "'MAGIC': 2" not in name:
            continue
        magic = int8_rows[name.replace("'MAGIC': 2", "'MAGIC': 1")]
        assert st["sass"] / weights < magic[1]["sass"] / magic[0], (name, st["sass"] / weights)
        assert st["float_ops"] / weights <= 2.0, (name, st)  # the subtract and the multiply-add
        offset = int8_rows[name.replace("'MAGIC': 2", "'MAGIC': 3")]  # no subtract: one float op a weight
        assert offset[1]["sass"] / offset[0] < st["sass"] / weights, (name, offset[1]["sass"] / offset[0])
        assert offset[1]["float_ops"] / offset[0] <= 1.25, (name, offset[1])  # + the x sum's add, shared by the rows


def test_int4_gemv_streams_weights_and_activations(int4_rows):
    for name, (weights, st) in int4_rows.items():
        # only the per-group scales and zeros are loaded directly: two per row and group of a step
        assert st["scalar_global_loads"] <= weights / 8, (name, st)
        assert st["cp_async"] >= 2, (name, st)
        assert st["sass"] / weights <= 8.5, (name, st["sass"] / weights)
        assert st["float_ops"] / weights <= 2.1, (name, st)  # one FMA to dequantize, one to accumulate


def test_int4_packed_gemv_keeps_two_weights_per_instruction():
    """The packed-pair GEMV (inline PTX) as compiled: its weights and activations streamed, and no more machine
    instructions per weight than now (3.4-5.8 across its configs, gated 3.1-4.5; the one-nibble GEMV: 6.5-8.1)."""
    rows = list(kernel_ptx.int4_packed_rows())
    assert len(rows) == 16
    for name, weights, st in rows:
        assert st["cp_async"] >= 2, (name, st)
        assert st["scalar_global_loads"] <= weights / 8, (name, st)
        assert st["sass"] / weights <= 6.2, (name, st["sass"] / weights)


def test_int4_pair_tiles_issue_fewer_instructions():
    """The tiles' packed-pair dequantization compiles to fewer machine instructions a weight than the float32 one
    for every tile family (6.6-7.4 -> 4.4-5.2 for all but the smallest tile), with the same streamed loads."""
    rows = {name: (weights, st) for name, weights, st in kernel_ptx.int4_tile_rows()}
    plain = {name: v for name, v in rows.items() if not name.endswith(" pairs")}
    assert len(plain) == 9 and len(rows) == 18
    for name, (weights, st) in plain.items():
        p_weights, p_st = rows[name + " pairs"]
        assert p_st["cp_async"] == st["cp_async"] and p_st["scalar_global_loads"] <= st["scalar_global_loads"], name
        assert p_st["sass"] / p_weights <= 0.8 * st["sass"] / weights, (name, p_st["sass"], st["sass"])


def _memory_ops(ptx: str) -> list[int]:
    return [m.start() for m in re.finditer(r"\b(?:ld\.global|st\.global|cp\.async|atom\.|red\.)", ptx)]


@pytest.mark.parametrize("mode", [0, 1, 2])
def test_pdl_waits_before_any_memory_access(mode):
    """Programmatic dependent launch (kernels/tuning.py, FMS_PDL): with a mode, the GEMV's first instruction that
    touches memory comes after the grid-dependency wait; `end` (2) lets dependents launch after its last store,
    `top` (1) right after the wait; without a mode neither appears. The K loop is the same in every mode."""
    from fms_worker.kernels import int8_matmul as k8

    c = k8.gemv_configs(permute=True)[0]

    def build(use_pdl):
        ptx = kernel_ptx.int8_gemv_ptx(c, GATED=True, USE_PDL=use_pdl)
        return ptx, kernel_ptx.loop_stats(ptx)

    ptx, loop = build(mode)
    plain_ptx, plain_loop = build(0)
    assert loop == plain_loop
    if mode == 0:
        assert "griddepcontrol" not in ptx
        return
    memory = _memory_ops(ptx)
    assert ptx.count("griddepcontrol.wait") == 1 and ptx.count("griddepcontrol.launch_dependents") == 1
    assert ptx.index("griddepcontrol.wait") < memory[0]
    launch = ptx.index("griddepcontrol.launch_dependents")
    if mode == 1:
        assert launch < memory[0]
    else:
        assert launch > memory[-1]


def test_pdl_mode_names():
    from fms_worker.kernels.tuning import pdl_mode

    assert (pdl_mode(None), pdl_mode("0"), pdl_mode("top"), pdl_mode("end"), pdl_mode("mixed")) == (2, 0, 1, 2, 3)
    with pytest.raises(ValueError, match="FMS_PDL='1'"):
        pdl_mode("1")


def test_pdl_mixed_lets_only_single_wave_kernels_launch_their_dependents_at_once():
    from fms_worker.kernels.tuning import pdl_choice

    assert [pdl_choice(3, programs, 132) for programs in (1, 64, 132, 133, 4096, None)] == [1, 1, 1, 2, 2, 2]
    assert [pdl_choice(mode, 8, 132) for mode in (0, 1, 2)] == [0, 1, 2]  # the other modes: as named


def test_pdl_is_never_asked_of_cpu_tensors():
    """The interpreter and CPU runs launch without PDL whatever the mode (GPUs before sm_90 likewise)."""
    import torch

    from fms_worker.kernels.tuning import pdl_launch

    assert pdl_launch(torch.zeros(1)) == {"USE_PDL": 0, "launch_pdl": False}


def test_gemv_prefetch_asks_l2_before_the_wait_and_leaves_the_loop_alone():
    """FMS_GEMV_PREFETCH (with PDL): the GEMV's L2 prefetches of its rows (gate and up rows when gated) come before
    the grid-dependency wait, no load or store does, and the K loop is the one without them."""
    from fms_worker.kernels import int8_matmul as k8

    c = k8.gemv16_configs()[0]

    def build(prefetch):
        ptx = kernel_ptx.int8_gemv_ptx(c, "*bf16", GATED=True, USE_PDL=2, PREFETCH=prefetch)
        return ptx, kernel_ptx.loop_stats(ptx)

    ptx, loop = build(8192)
    plain, plain_loop = build(0)
    wait = ptx.index("griddepcontrol.wait")
    asks = [m.start() for m in re.finditer(r"prefetch\.global\.L2", ptx)]
    assert len(asks) >= 2 and max(asks) < wait < _memory_ops(ptx)[0]  # gate and up rows, all before the wait
    assert "prefetch.global.L2" not in plain
    assert loop == plain_loop
