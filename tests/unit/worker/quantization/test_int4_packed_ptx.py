"""The kernels' inline-PTX blocks, executed instruction by instruction on the CPU: the int4 kernels'
(kernels/int4_ptx.py) and the int8 GEMV's byte permutes (kernels/int8_matmul.BYTES_TO_F32_PTX and
BYTES_TO_OFFSET_F32_PTX).

CI has no GPU, and Triton's interpreter runs the kernels' plain paths instead of their inline PTX. This
test reads the PTX text the kernels compile in and executes it with a small model of the
eight instructions it uses (byte permute, shift, three-input logic, packed 16-bit FMA, moves and
conversions), so a wrong byte selector, nibble mask, magic constant or lane order fails here; the
rounding model is the PTX ISA's (round to nearest even per 16-bit lane).
"""

from __future__ import annotations

import random
import re
import struct

import numpy as np
import pytest

from fms_worker.kernels import int4_ptx
from fms_worker.kernels.int8_matmul import BYTES_TO_F32_PTX, BYTES_TO_OFFSET_F32_PTX, OFFSET

M32 = 0xFFFFFFFF


def _bf16_bits(v: float) -> int:
    """Round a float to bfloat16 (nearest even) and return its 16 bits."""
    b = struct.unpack("<I", struct.pack("<f", np.float32(v)))[0]
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) & 0xFFFF


def _bf16_val(h: int) -> float:
    return struct.unpack("<f", struct.pack("<I", h << 16))[0]


def _f16_bits(v: float) -> int:
    return int(np.array(v, dtype=np.float16).view(np.uint16))


def _f16_val(h: int) -> float:
    return float(np.array(h, dtype=np.uint16).view(np.float16))


def _f32_val(bits: int) -> float:
    return struct.unpack("<f", struct.pack("<I", bits & M32))[0]


def _f32_bits(v: float) -> int:
    return struct.unpack("<I", struct.pack("<f", np.float32(v)))[0]


def run_ptx(text: str, args: dict[str, int]) -> dict[str, int]:
    regs = dict(args)

    def val(tok: str) -> int:
        tok = tok.strip()
        if tok in regs:
            return regs[tok]
        if tok.startswith("0f"):  # a float32 immediate, as its bits
            return int(tok[2:], 16)
        return int(tok, 0)

    for line in text.replace(";", ";\n").splitlines():
        line = line.strip().rstrip(";").strip()
        if not line or line in "{}" or line.startswith(".reg"):
            continue
        op, rest = line.split(None, 1)
        if op in ("mov.b64", "mov.b32") and rest.startswith("{"):  # unpack into two halves
            outs, src = re.match(r"\{\s*(\w+),\s*(\w+)\s*\},\s*(\S+)", rest).group(1, 2), val(rest.split(",")[-1])
            half = 32 if op == "mov.b64" else 16
            regs[outs[0]], regs[outs[1]] = src & ((1 << half) - 1), src >> half
            continue
        ops = [t.strip() for t in rest.split(",")]
        d, srcs = ops[0], [val(t) for t in ops[1:]]
        if op == "mov.b32":
            r = srcs[0] & M32
        elif op == "prmt.b32":
            a, b, c = srcs
            pool = [(a >> (8 * i)) & 0xFF for i in range(4)] + [(b >> (8 * i)) & 0xFF for i in range(4)]
            assert all(((c >> (4 * i)) & 0x8) == 0 for i in range(4)), "sign-replicate selectors not modelled"
            r = sum(pool[(c >> (4 * i)) & 0x7] << (8 * i) for i in range(4))
        elif op == "shr.b32":
            r = (srcs[0] & M32) >> srcs[1]
        elif op == "shl.b32":
            r = (srcs[0] << srcs[1]) & M32
        elif op == "and.b32":
            r = srcs[0] & srcs[1] & M32
        elif op == "xor.b32":
            r = (srcs[0] ^ srcs[1]) & M32
        elif op == "lop3.b32":
            a, b, c, lut = srcs
            r = 0
            for bit in range(32):
                idx = (((a >> bit) & 1) << 2) | (((b >> bit) & 1) << 1) | ((c >> bit) & 1)
                r |= ((lut >> idx) & 1) << bit
        elif op in ("fma.rn.bf16x2", "fma.rn.f16x2"):
            to_val, to_bits = (_bf16_val, _bf16_bits) if "bf16" in op else (_f16_val, _f16_bits)
            r = 0
            for lane in range(2):
                a, b, c = (to_val((s >> (16 * lane)) & 0xFFFF) for s in srcs)
                r |= to_bits(a * b + c) << (16 * lane)  # the exact a*b+c, rounded once
        elif op == "cvt.f32.f16":
            r = _f32_bits(_f16_val(srcs[0]))
        elif op == "add.f32":
            r = _f32_bits(np.float32(_f32_val(srcs[0])) + np.float32(_f32_val(srcs[1])))
        elif op == "sub.f32":
            r = _f32_bits(np.float32(_f32_val(srcs[0])) - np.float32(_f32_val(srcs[1])))
        else:
            raise AssertionError(f"instruction not modelled: {op}")
        regs[d] = r
    return regs


def _codec(dtype: str):
    return (_bf16_bits, _bf16_val) if dtype == "bf16" else (_f16_bits, _f16_val)


def _random_word(rng) -> tuple[list[int], list[int], int]:
    """Four bytes of random codes: (low nibbles, high nibbles, the 32-bit word)."""
    lo = [rng.randrange(16) for _ in range(4)]
    hi = [rng.randrange(16) for _ in range(4)]
    return lo, hi, sum((a | b << 4) << (8 * i) for i, (a, b) in enumerate(zip(lo, hi)))


@pytest.mark.parametrize("dtype", ["bf16", "f16"])
def test_word_block_computes_sum_of_q_minus_8_times_x(dtype):
    text = int4_ptx.word_dot(dtype)
    to_bits, to_val = _codec(dtype)
    rng = random.Random(0)
    for _ in range(300):
        codes_lo, codes_hi, word = _random_word(rng)
        x_lo = [to_bits(rng.gauss(0, 1)) for _ in range(4)]
        x_hi = [to_bits(rng.gauss(0, 1)) for _ in range(4)]
        xl = sum(h << (16 * i) for i, h in enumerate(x_lo))  # four activations in one 64-bit word
        xh = sum(h << (16 * i) for i, h in enumerate(x_hi))
        got = _f32_val(run_ptx(text, {"$1": word, "$2": xl, "$3": xh})["$0"])
        terms = [(q - 8) * to_val(x) for q, x in zip(codes_lo + codes_hi, x_lo + x_hi)]
        # four terms a lane rounded to 8 (bf16) or 11 (f16) significant bits; a wrong lane or constant is off
        # by whole terms
        tol = (2 ** -7 if dtype == "bf16" else 2 ** -10) * 4 * sum(abs(t) for t in terms) + 1e-6
        assert abs(got - sum(terms)) <= tol, (codes_lo, codes_hi, got, sum(terms))


def test_model_catches_a_wrong_lane_order():
    """The same check fails for a block whose activation lanes are swapped (the model is not vacuous)."""
    text = int4_ptx.word_dot("bf16").replace("mov.b64 {xa, xb}, $2", "mov.b64 {xb, xa}, $2")
    assert "mov.b64 {xb, xa}, $2" in text
    rng = random.Random(1)
    misses = 0
    for _ in range(50):
        codes = [rng.randrange(16) for _ in range(8)]
        word = sum((codes[i] | codes[i + 4] << 4) << (8 * i) for i in range(4))
        xs = [_bf16_bits(rng.gauss(0, 1)) for _ in range(8)]
        xl = sum(h << (16 * i) for i, h in enumerate(xs[:4]))
        xh = sum(h << (16 * i) for i, h in enumerate(xs[4:]))
        got = _f32_val(run_ptx(text, {"$1": word, "$2": xl, "$3": xh})["$0"])
        want = sum((q - 8) * _bf16_val(x) for q, x in zip(codes, xs))
        misses += abs(got - want) > 0.05 * sum(abs((q - 8) * _bf16_val(x)) for q, x in zip(codes, xs)) + 1e-3
    assert misses > 25


@pytest.mark.parametrize("dtype", ["bf16", "f16"])
def test_dequant_block_gives_the_weights(dtype):
    """The tiles' block: four bytes and their elements' scales and zeros -> (q - 8) * s + z for the eight
    nibbles, each rounded once to the 16-bit type, in the order the kernel hands them to the tensor cores."""
    text = int4_ptx.dequant(dtype)
    to_bits, to_val = _codec(dtype)
    rng = random.Random(2)
    for _ in range(300):
        lo, hi, word = _random_word(rng)
        s = [to_bits(abs(rng.gauss(0, 0.02)) + 1e-4) for _ in range(4)]
        z = [to_bits(rng.gauss(0, 0.05)) for _ in range(4)]
        pair = lambda v, i: v[i] | v[i + 1] << 16  # noqa: E731 - elements i, i+1 in one register
        regs = run_ptx(text, {"$4": word, "$5": pair(s, 0), "$6": pair(s, 2), "$7": pair(z, 0), "$8": pair(z, 2)})
        got = [(regs[r] >> (16 * h)) & 0xFFFF for r in ("$0", "$1") for h in (0, 1)]
        got += [(regs[r] >> (16 * h)) & 0xFFFF for r in ("$2", "$3") for h in (0, 1)]
        want = [to_bits((q - 8) * to_val(s[i]) + to_val(z[i])) for i, q in enumerate(lo)]
        want += [to_bits((q - 8) * to_val(s[i]) + to_val(z[i])) for i, q in enumerate(hi)]
        assert got == want, (lo, hi, got, want)


def _int8_word(rng) -> tuple[list[int], int]:
    qs = [rng.randrange(-128, 128) for _ in range(4)]
    return qs, sum((q & 0xFF) << (8 * i) for i, q in enumerate(qs))


def test_int8_byte_permute_gives_each_weight_exactly():
    """Four int8 weights of one word -> four float32 values, element i from byte i (Triton's packing order),
    exactly; the extremes -128 and 127 included."""
    rng = random.Random(3)
    words = [_int8_word(rng) for _ in range(500)] + [([-128, 127, 0, -1], 0xFF007F80)]
    for qs, word in words:
        regs = run_ptx(BYTES_TO_F32_PTX, {"$4": word})
        assert [_f32_val(regs[f"${i}"]) for i in range(4)] == [float(q) for q in qs], (qs, hex(word))


def test_int8_offset_permute_gives_offset_plus_each_weight():
    """The subtract-free block: OFFSET + q for each of a word's four weights, exactly, in byte order."""
    rng = random.Random(5)
    for qs, word in [_int8_word(rng) for _ in range(500)] + [([-128, 127, 0, -1], 0xFF007F80)]:
        regs = run_ptx(BYTES_TO_OFFSET_F32_PTX, {"$4": word})
        assert [_f32_val(regs[f"${i}"]) for i in range(4)] == [OFFSET + q for q in qs], (qs, hex(word))


def test_int8_model_catches_a_wrong_byte_or_offset():
    """The check above fails for a block with two selectors swapped or the offset's bias off by one."""
    rng = random.Random(4)
    cases = [(BYTES_TO_F32_PTX, "0x7440", "0x7441", 0.0), (BYTES_TO_F32_PTX, "0f4B000080", "0f4B000081", 0.0),
             (BYTES_TO_OFFSET_F32_PTX, "0x7404", "0x7414", OFFSET)]  # (block, text, its corruption, offset)
    for good, text, wrong, offset in cases:
        bad = good.replace(text, wrong, 1)
        assert bad != good
        misses = 0
        for _ in range(50):
            qs, word = _int8_word(rng)
            regs = run_ptx(bad, {"$4": word})
            misses += [_f32_val(regs[f"${i}"]) for i in range(4)] != [offset + q for q in qs]
        assert misses > 40
