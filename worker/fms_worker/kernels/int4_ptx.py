"""Inline-PTX blocks that turn int4 codes into 16-bit floats two at a time (packed bf16x2 / f16x2).

A 32-bit word holds four bytes; byte j holds a low and a high nibble (the layout of
`quantization/int4.py`: within a group, column j and column j + group/2). Two byte permutes spread
bytes 0-1 and 2-3 into the 16-bit halves of two words, a shift brings the high nibbles down, and a
three-input logic op (a & b) | c writes each nibble into the mantissa of MAGIC (128.0 in bf16, 1024.0
in fp16): MAGIC + q, exactly, two per register. One packed FMA then subtracts MAGIC + 8, exactly
(small integers), leaving q - 8. From there:

- `word_dot`: the GEMV's block: times two 64-bit words of activations (four 16-bit values each) and
  summed, two lanes at a time, into one float32 (kernels/int4_gemv_packed.py);
- `dequant`: the tiles' block: times the scale plus the zero, per element: the weights themselves,
  (q - 8) * s + z rounded once to the activation dtype, for the tensor cores (kernels/int4_matmul.py).

`tests/unit/worker/quantization/test_int4_packed_ptx.py` executes these texts with a model of each
instruction, since CI has no GPU and Triton's interpreter cannot run inline PTX.
"""

from __future__ import annotations

# per activation dtype: (PTX packed type, MAGIC, -(MAGIC + 8), 1.0) as 16-bit patterns
_KINDS = {"bf16": ("bf16x2", 0x4300, 0xC308, 0x3F80), "f16": ("f16x2", 0x6400, 0xE408, 0x3C00)}


def _pairs(kind: str, src: str, outs: tuple[str, str, str, str]) -> str:
    """PTX: word `src` -> outs = (low nibbles of bytes 0-1, of bytes 2-3, high nibbles of bytes 0-1, of 2-3),
    each two (q - 8) values in the packed type. Uses registers t0, t1, u0, u1, one, neg."""
    ptx, magic, neg, one = _KINDS[kind]
    m2, n2, o2 = (v | v << 16 for v in (magic, neg, one))
    lines = [f"mov.b32 one, {o2:#010x};", f"mov.b32 neg, {n2:#010x};",
             f"prmt.b32 t0, {src}, 0, 0x4140;", f"prmt.b32 t1, {src}, 0, 0x4342;",
             "shr.b32 u0, t0, 4;", "shr.b32 u1, t1, 4;"]
    for out, reg in zip(outs, ("t0", "t1", "u0", "u1")):
        lines.append(f"lop3.b32 {out}, {reg}, 0x000F000F, {m2:#010x}, 0xEA;")
    lines += [f"fma.rn.{ptx} {out}, {out}, one, neg;" for out in outs]
    return "\n".join(lines)


def word_dot(kind: str) -> str:
    """$1 eight codes (b32), $2 / $3 the low / high nibbles' four activations (b64) -> $0 float32:
    sum of (q - 8) * x over the eight, products and sums rounded to the 16-bit type four a lane."""
    ptx = _KINDS[kind][0]
    to_f32 = ("shl.b32 f0, acc, 16;\nand.b32 f1, acc, 0xFFFF0000;" if kind == "bf16" else
              "mov.b32 {ha, hb}, acc;\ncvt.f32.f16 f0, ha;\ncvt.f32.f16 f1, hb;")
    return "\n".join([
        "{",
        ".reg .b32 t0, t1, u0, u1, l0, l1, h0, h1, xa, xb, xc, xd, acc, f0, f1, one, neg, zero;",
        ".reg .b16 ha, hb;",
        _pairs(kind, "$1", ("l0", "l1", "h0", "h1")),
        "mov.b32 zero, 0;",
        "mov.b64 {xa, xb}, $2;",
        "mov.b64 {xc, xd}, $3;",
        f"fma.rn.{ptx} acc, l0, xa, zero;",
        f"fma.rn.{ptx} acc, l1, xb, acc;",
        f"fma.rn.{ptx} acc, h0, xc, acc;",
        f"fma.rn.{ptx} acc, h1, xd, acc;",
        to_f32,
        "add.f32 $0, f0, f1;",
        "}",
    ])


def dequant(kind: str) -> str:
    """$4 four bytes (b32); $5, $6 their scales and $7, $8 their zeros (two 16-bit values each) -> $0, $1 the
    low nibbles' weights and $2, $3 the high nibbles' ((q - 8) * s + z, two per register)."""
    ptx = _KINDS[kind][0]
    return "\n".join([
        "{",
        ".reg .b32 t0, t1, u0, u1, one, neg;",
        _pairs(kind, "$4", ("$0", "$1", "$2", "$3")),
        f"fma.rn.{ptx} $0, $0, $5, $7;",
        f"fma.rn.{ptx} $1, $1, $6, $8;",
        f"fma.rn.{ptx} $2, $2, $5, $7;",
        f"fma.rn.{ptx} $3, $3, $6, $8;",
        "}",
    ])
