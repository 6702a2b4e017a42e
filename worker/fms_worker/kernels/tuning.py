"""What the worker's Triton kernels share: the row-count buckets and short timing runs of the autotuned
weight-only kernels (int8, int4), their row set-up, and programmatic dependent launch."""

from __future__ import annotations

import functools
import os

try:
    import triton
    import triton.language as tl
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
except ImportError:  # CPU-only installs
    triton = None

# Programmatic dependent launch (Hopper on): the decode chain's kernels (the GEMVs, the attention and its merge,
# the fused all-reduce + norm) are launched with PDL and wait for the previous kernel's writes before anything
# else (`pdl_wait`). In mode `end` (the default) a program lets the next kernel be scheduled once it has issued
# its stores (`pdl_done`), so that launch overlaps this kernel's drain: batch 1 on H200, TP=4 +6.3%, TP=2 +6.5%,
# int8 +5.7%, int4 +7.2% (means of pairs, docs/benchmarks.md). `top` lets it be scheduled at once, after the wait (the ninth session's
# variant; its waiting programs hold SM slots the kernel before may still need); FMS_PDL=0 turns PDL off.
# `mixed` (experiment, not yet measured): `top` for kernels whose programs all fit the SMs at once (the fused norms,
# a decode step's attention and merge: their dependents' programs cannot crowd them out, and the next kernel's
# launch hides behind, e.g., a norm's wait for its peers), `end` for the others (the GEMVs).
PDL_MODES = {"0": 0, "top": 1, "end": 2, "mixed": 3}


def pdl_mode(value: str | None) -> int:
    value = "end" if value is None else value
    if value not in PDL_MODES:
        raise ValueError(f"FMS_PDL={value!r}: use one of {', '.join(PDL_MODES)}")
    return PDL_MODES[value]


PDL = pdl_mode(os.environ.get("FMS_PDL"))

# Experiment (FMS_GEMV_PREFETCH=BYTES, off until measured): a PDL-launched GEMV's programs ask L2 for the first BYTES
# of each of their weight rows before they wait for the kernel before them (the weights never depend on it), so the
# bus works while, e.g., a fused norm waits for its peers, and the loop's first loads hit L2.
GEMV_PREFETCH = int(os.environ.get("FMS_GEMV_PREFETCH", "0"))


@functools.lru_cache(maxsize=None)
def _has_pdl(device) -> bool:
    import torch

    return torch.cuda.get_device_capability(device)[0] >= 9  # griddepcontrol: sm_90 and later


@functools.lru_cache(maxsize=None)
def _sm_count(device) -> int:
    import torch

    return torch.cuda.get_device_properties(device).multi_processor_count


def pdl_choice(mode: int, programs: int | None, sm_count: int) -> int:
    """The kernel's USE_PDL (0 off, 1 top, 2 end) under `mode`; `programs`: its grid's size where known."""
    if mode != PDL_MODES["mixed"]:
        return mode
    return 1 if programs is not None and programs <= sm_count else 2


def pdl_launch(x, programs: int | None = None) -> dict:
    """Launch arguments of a kernel that calls `pdl_wait(USE_PDL)` first and `pdl_done(USE_PDL)` last: PDL's
    mode on CUDA tensors of a GPU that has it, else 0. `programs`: the grid's size, for `mixed`."""
    if not (PDL and x.is_cuda and _has_pdl(x.device)):
        return {"USE_PDL": 0, "launch_pdl": False}
    return {"USE_PDL": pdl_choice(PDL, programs, _sm_count(x.device)), "launch_pdl": True}

GEMV_MAX_M = 1  # one row: the CUDA-core GEMVs; from two rows on, tensor-core tiles (faster there)


def triton_available() -> bool:
    return triton is not None


def m_bucket(m: int) -> int:
    """The autotuning key for M: every batch up to 16 shares the 16-row tiles, then powers of two."""
    if m <= 16:
        return 16
    return min(1 << (m - 1).bit_length(), 4096)


def short_bench(fn, quantiles):
    """The autotuners' timer: shorter than Triton's default 25 + 100 ms, ~30 ms a compiled config."""
    return triton.testing.do_bench(fn, warmup=5, rep=20, quantiles=quantiles)


def group_gemv_tuner(kernel, configs_for):
    """An autotuner for a one-row GEMV that reads GPS whole quantization groups a step: it times the entries of
    `configs_for(GROUP)` (dicts of BLOCK_N, GPS, num_warps, num_stages) once per (N, K, GROUP), and sets EVEN
    where the step count divides the groups."""

    def prune(configs, named_args, **kwargs):  # the constexprs arrive in kwargs
        return [triton.Config({"BLOCK_N": c["BLOCK_N"], "GPS": c["GPS"], "STAGES": c["num_stages"]},
                              num_warps=c["num_warps"]) for c in configs_for(kwargs["GROUP"])]

    return triton.autotune(
        configs=[triton.Config({"BLOCK_N": 8}), triton.Config({"BLOCK_N": 16})],  # placeholders: see prune
        key=["N", "K", "GROUP"],
        prune_configs_by={"early_config_prune": prune},
        do_bench=short_bench,
        cache_results=True,
    )(triton.heuristics({"EVEN": lambda a: (a["K"] // a["GROUP"]) % a["GPS"] == 0})(kernel))


if triton is not None:

    @triton.jit
    def pdl_wait(USE_PDL: tl.constexpr):
        """A PDL-launched kernel's first statement: wait until the previous kernel has finished and its writes are
        visible (nothing may be read or written before), which also makes the chain's waits transitive."""
        if USE_PDL:
            gdc_wait()
        if USE_PDL == 1:
            gdc_launch_dependents()

    _L2_ASK = tl.constexpr("{ .reg .pred p; setp.ne.b32 p, $2, 0; @p prefetch.global.L2 [$1]; mov.b32 $0, 0; }")

    @triton.jit
    def l2_prefetch_rows(W, rows, row_bytes, NBYTES: tl.constexpr, LINES: tl.constexpr = 32):
        """Ask L2 for the first NBYTES (at most row_bytes) of each of `rows` ([R] int64) of W (any pointer type;
        rows row_bytes apart): one `prefetch.global.L2` a 128-byte line, no register written, nothing waited for."""
        base = W.to(tl.pointer_type(tl.int8), bitcast=True)
        lines = tl.arange(0, LINES).to(tl.int64) * 128
        todo = tl.minimum(row_bytes, NBYTES)
        for off in tl.range(0, todo, LINES * 128):
            o = off + lines
            ptrs = base + rows[:, None] * row_bytes + o[None, :]
            ok = (o < todo)[None, :] & (rows >= 0)[:, None]
            tl.inline_asm_elementwise(_L2_ASK, "=r,l,r", [ptrs, ok.to(tl.int32)], dtype=tl.int32, is_pure=False,
                                      pack=1)

    @triton.jit
    def pdl_done(USE_PDL: tl.constexpr):
        """A PDL-launched kernel's last statement (mode `end`): the next kernel may be scheduled."""
        if USE_PDL == 2:
            gdc_launch_dependents()

    @triton.jit
    def tile_ids(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_N: tl.constexpr):
        """A tile kernel's (row tile, weight tile) for program `pid`: consecutive programs walk the token
        tiles of GROUP_N weight tiles, so both stay in L2."""
        grid_n = tl.cdiv(N, BLOCK_N)
        width = GROUP_N * tl.cdiv(M, BLOCK_M)
        first_n = (pid // width) * GROUP_N
        group_size = tl.minimum(grid_n - first_n, GROUP_N)
        return (pid % width) // group_size, first_n + (pid % width) % group_size

    @triton.jit
    def group_gemv_rows(SZ, N, GATED: tl.constexpr, BLOCK_N: tl.constexpr, GPS: tl.constexpr):
        """A group-stepping GEMV program's rows and their scales/zeros (SZ [K/group, N or 2N gated, 2]):
        (rn, n_ok, rows, sz_ptr [BLOCK_N, GPS] of the first step, the up rows' sz_ptr, elements a step advances
        them). Rows past N read row n % N and are dropped at the store."""
        rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        rows = rn % N
        nsz = 2 * N if GATED else N
        sz_ptr = SZ + (tl.arange(0, GPS).to(tl.int64)[None, :] * nsz + rows[:, None]) * 2
        return rn, rn < N, rows, sz_ptr, sz_ptr + N * 2, GPS * nsz * 2

    @triton.jit
    def group_gemv_weights(Q, rows, N, stride, GPS: tl.constexpr, WIDTH: tl.constexpr):
        """The weight pointers [BLOCK_N, GPS, WIDTH] of such a program's first step, for its rows and (gated) the
        up rows N later: WIDTH elements of Q a group and row (bytes or words, as the kernel reads them)."""
        cols = (tl.arange(0, GPS) * WIDTH)[None, :, None] + tl.arange(0, WIDTH)[None, None, :]
        return (Q + rows.to(tl.int64)[:, None, None] * stride + cols,
                Q + (rows + N).to(tl.int64)[:, None, None] * stride + cols)

    @triton.jit
    def group_gemv_store(Y, rn, n_ok, out, up, GATED: tl.constexpr):
        """The rows' results; gated: silu(gate) * up."""
        if GATED:
            out = out / (1.0 + tl.exp(-out)) * up
        tl.store(Y + rn, out.to(Y.dtype.element_ty), mask=n_ok)
else:
    tile_ids = group_gemv_rows = group_gemv_weights = group_gemv_store = None  # CPU-only: no kernels
    pdl_wait = pdl_done = l2_prefetch_rows = None
