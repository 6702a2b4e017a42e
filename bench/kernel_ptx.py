"""What the decode GEMVs' inner loops compile to, on a machine without a GPU.

Triton compiles for a named target (here sm_90, Hopper) with the ptxas it ships, no driver needed,
and its wheel carries nvdisasm for the machine code (SASS). For each shipped GEMV candidate this
prints, per K step of one thread: the weights it handles, the global loads left outside the software
pipeliner's asynchronous copies, the asynchronous copies, barriers, float and integer-bit instructions
per weight (PTX), and all SASS instructions per weight. A GEMV that reads 4-bit weights at 3 TB/s
must retire ~6e12 weights/s; an H100/H200 SM issues four warp instructions a clock, so above ~4 SASS
instructions per weight the loop, not memory, is the limit. It is the check used to restructure the
int4 GEMV between GPU runs; speed itself is measured on a GPU (bench/decode_kernels_gpu.py,
bench/profile_decode.py).

    python3 bench/kernel_ptx.py [--kernel int4 int4-packed int4-tiles int8]   (from the repository root)
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, "worker")
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from fms_worker.kernels import int4_gemv_packed as k4p  # noqa: E402
from fms_worker.kernels import int4_matmul as k4  # noqa: E402
from fms_worker.kernels import int8_matmul as k8  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)


def compile_kernel(fn, sig: dict, consts: dict, warps: int, stages: int):
    """`fn` compiled with every pointer and int argument specialised as 16-divisible, as the JIT does for
    the real shapes (N, K, strides multiples of 16; aligned tensors)."""
    names = list(sig)
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n, t in sig.items() if t != "constexpr"}
    src = ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs)
    return triton.compile(src, target=TARGET, options={"num_warps": warps, "num_stages": stages})


def sass_loop_ops(cubin: bytes) -> collections.Counter:
    """SASS opcodes of the longest backward-branching block (the K loop)."""
    nvdisasm = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "nvdisasm"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([str(nvdisasm), "-c", f.name], capture_output=True, text=True, check=True).stdout
    lines = text.splitlines()
    labels = {m.group(1): i for i, line in enumerate(lines) if (m := re.match(r"\.(L_x_\d+):", line.strip()))}
    loops = [(labels[m.group(1)], i) for i, line in enumerate(lines)
             if (m := re.search(r"BRA\s+`?\(?\.(L_x_\d+)", line)) and labels.get(m.group(1), i) < i]
    start, end = max(loops, key=lambda t: t[1] - t[0])
    return collections.Counter(m.group(1) for line in lines[start:end]
                               if (m := re.search(r"\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", line)))


def stats(fn, sig, consts, warps, stages) -> dict:
    kernel = compile_kernel(fn, sig, consts, warps, stages)
    return dict(loop_stats(kernel.asm["ptx"]), sass=sum(sass_loop_ops(kernel.asm["cubin"]).values()))


def loop_stats(ptx: str) -> dict:
    """Counts over the longest innermost loop's body (from its header label to its back branch): the K loop, where
    a kernel has short loops too (e.g. L2 prefetches before it)."""
    lines = ptx.splitlines()
    loops = []
    for start, line in enumerate(lines):
        if "Inner Loop Header" in line and ":" in line.split("//")[0]:
            label = line.split(":")[0].strip()
            end = next(i for i in range(start + 1, len(lines)) if re.search(rf"bra\s+{re.escape(label)};", lines[i]))
            loops.append((end - start, start, end))
    _, start, end = max(loops)
    body = "\n".join(lines[start:end])
    return {
        "scalar_global_loads": len(re.findall(r"\bld\.global", body)),
        "cp_async": len(re.findall(r"\bcp\.async\.(?:ca|cg)", body)),
        "barriers": body.count("bar.sync"),
        "float_ops": sum(len(re.findall(rf"\b{op}\.(?:rn\.)?f32", body)) for op in ("fma", "add", "sub", "mul")),
        "int_bit_ops": sum(len(re.findall(rf"\b{op}\.b32", body)) for op in ("and", "or", "xor", "shl", "shr"))
        + body.count("prmt.b32") + body.count("lop3.b32"),
        "ptx_lines": end - start,
    }


def int4_rows(group: int = 128):
    sig = {"X": "*bf16", "Q": "*u8", "SZ": "*bf16", "Y": "*bf16", "N": "i32", "K": "i32", "stride_qn": "i32",
           "GROUP": "constexpr", "GATED": "constexpr", "EVEN": "constexpr", "BLOCK_N": "constexpr",
           "GPS": "constexpr", "STAGES": "constexpr"}
    for c in k4.gemv_configs(group):
        for gated in (False, True):
            consts = dict(GROUP=group, GATED=gated, EVEN=True, BLOCK_N=c["BLOCK_N"], GPS=c["GPS"],
                          STAGES=c["num_stages"])
            weights = c["BLOCK_N"] * c["GPS"] * group * (2 if gated else 1) / (32 * c["num_warps"])
            yield (f"int4 g{group} {c}{' gated' if gated else ''}", weights,
                   stats(k4._int4_gemv_kernel, sig, consts, c["num_warps"], c["num_stages"]))


INT4_PACKED_SIG = {"X": "*bf16", "XW": "*i64", "QW": "*i32", "SZ": "*bf16", "Y": "*bf16", "N": "i32", "K": "i32",
                   "stride_qw": "i32", "GROUP": "constexpr", "GATED": "constexpr", "EVEN": "constexpr",
                   "IS_BF16": "constexpr", "ASM": "constexpr", "BLOCK_N": "constexpr", "GPS": "constexpr",
                   "STAGES": "constexpr"}


def int4_packed_rows(group: int = 128):
    sig = INT4_PACKED_SIG
    for c in k4p.configs(group):
        for gated in (False, True):
            consts = dict(GROUP=group, GATED=gated, EVEN=True, IS_BF16=True, ASM=True, BLOCK_N=c["BLOCK_N"],
                          GPS=c["GPS"], STAGES=c["num_stages"])
            weights = c["BLOCK_N"] * c["GPS"] * group * (2 if gated else 1) / (32 * c["num_warps"])
            yield (f"int4-packed g{group} {c}{' gated' if gated else ''}", weights,
                   stats(k4p._packed_gemv_kernel, sig, consts, c["num_warps"], c["num_stages"]))


def int4_tile_rows(group: int = 128):
    """The int4 tensor-core tiles, dequantizing in float32 (default) or two weights an instruction (pairs)."""
    sig = {"X": "*bf16", "Q": "*u8", "SZ": "*bf16", "Y": "*bf16", "M": "i32", "N": "i32", "K": "i32", "stride_xm": "i32",
           "stride_qn": "i32", "stride_ym": "i32", "M_BUCKET": "i32", "GROUP": "constexpr", "ASM": "constexpr",
           "BLOCK_M": "constexpr", "BLOCK_N": "constexpr", "GROUP_N": "constexpr"}
    for bucket in (16, 64, 256):
        for c in k4.tile_configs(bucket)[:3]:
            for pairs in (False, True):
                consts = dict(GROUP=group, ASM=pairs, BLOCK_M=c["BLOCK_M"], BLOCK_N=c["BLOCK_N"], GROUP_N=c["GROUP_N"])
                weights = c["BLOCK_N"] * group / (32 * c["num_warps"])  # per K step, for all BLOCK_M rows
                yield (f"int4-tiles g{group} {c}{' pairs' if pairs else ''}", weights,
                       stats(k4._int4_mm_kernel, sig, consts, c["num_warps"], c["num_stages"]))


def int8_gemv_signature(weight: str = "*i8") -> dict:
    """`_int8_gemv_kernel`'s signature with int8 weights, or ("*bf16") the 16-bit weights of `gemv16`."""
    return {"X": "*bf16", "Q": weight, "S": "*bf16", "B": "*bf16", "Y": "*bf16", "N": "i32", "K": "i32",
            "stride_qn": "i32", "HAS_BIAS": "constexpr", "EVEN_K": "constexpr", "GATED": "constexpr",
            "MAGIC": "constexpr", "BLOCK_N": "constexpr", "BLOCK_K": "constexpr", "STAGES": "constexpr",
            "SCALED": "constexpr", "ASM": "constexpr", "USE_PDL": "constexpr", "PREFETCH": "constexpr"}


def int8_gemv_consts(c: dict, weight: str = "*i8", **consts) -> dict:
    """The GEMV's constexprs for a `gemv_configs` entry `c`: no bias, EVEN_K, ASM on, PDL off unless `consts` say."""
    return dict(HAS_BIAS=False, EVEN_K=True, GATED=False, MAGIC=c["MAGIC"], BLOCK_N=c["BLOCK_N"], BLOCK_K=c["BLOCK_K"],
                STAGES=c["num_stages"], SCALED=weight == "*i8", ASM=True, USE_PDL=0, PREFETCH=0) | consts


def int8_gemv_ptx(c: dict, weight: str = "*i8", **consts) -> str:
    return compile_kernel(k8._int8_gemv_kernel, int8_gemv_signature(weight), int8_gemv_consts(c, weight, **consts),
                          c["num_warps"], c["num_stages"]).asm["ptx"]


def int8_rows():
    for c in k8.gemv_configs(permute=True):
        yield (f"int8 {c}", c["BLOCK_N"] * c["BLOCK_K"] / (32 * c["num_warps"]),
               stats(k8._int8_gemv_kernel, int8_gemv_signature(), int8_gemv_consts(c), c["num_warps"],
                     c["num_stages"]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernel", nargs="+", default=["int4", "int4-packed", "int4-tiles", "int8"],
                    choices=["int4", "int4-packed", "int4-tiles", "int8"])
    args = ap.parse_args()
    rows = []
    if "int4" in args.kernel:
        rows += list(int4_rows())
    if "int4-packed" in args.kernel:
        rows += list(int4_packed_rows())
    if "int4-tiles" in args.kernel:
        rows += list(int4_tile_rows())
    if "int8" in args.kernel:
        rows += list(int8_rows())
    print(f"{'kernel and config':90} weights/thread  scalar-ld  cp.async  bar  float/w  int/w  SASS/w")
    for name, weights, st in rows:
        print(f"{name:90} {weights:14.0f} {st['scalar_global_loads']:10d} {st['cp_async']:9d} {st['barriers']:4d} "
              f"{st['float_ops'] / weights:8.2f} {st['int_bit_ops'] / weights:6.2f} {st['sass'] / weights:7.2f}")


if __name__ == "__main__":
    main()
