"""Triton helpers shared by the kernels.

``INTERPRETING`` is a module-level constexpr, true when kernels run in the Triton interpreter
(TRITON_INTERPRET=1, read once at import; Triton reads it at import too).  Kernels need no argument
for it: a ``tl.constexpr`` global is folded in at compile time, and in the interpreter it is a plain
value.  The interpreter has two numeric bugs that would otherwise make CPU tests disagree with the
GPU: ``tl.dot`` on bf16 operands returns garbage (triton #11584), and fp32 -> bf16 casts truncate
instead of rounding to nearest even, which biases every recurrence.  On a GPU both helpers are the
plain operation.  ``sigmoid`` is the one helper that differs on a GPU: the interpreter has no libdevice.
"""
import os

import triton
import triton.language as tl
from triton.language.extra import libdevice

INTERPRETING = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"))


@triton.jit
def dot_acc(a, b, acc, PREC: tl.constexpr):
    """acc + a @ b (fp32 accumulate); in the interpreter the operands are upcast first."""
    if INTERPRETING:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=PREC)


@triton.jit
def cast(x, dtype: tl.constexpr):
    """x.to(dtype) with round-to-nearest-even, also for bf16 in the interpreter."""
    if INTERPRETING:
        if dtype == tl.bfloat16:
            bits = x.to(tl.float32).to(tl.uint32, bitcast=True)
            bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
            x = bits.to(tl.float32, bitcast=True)
    return x.to(dtype)


@triton.jit
def sigmoid(x):
    """σ(x) = 1 / (1 + e^−x) through the GPU's fast exp and division (ex2.approx.ftz, div.approx.ftz: one
    MUFU each).  tl.sigmoid takes ex2.approx without ftz and div.full, whose range fix-ups cost about three
    more instructions per σ (FSETP, FSEL, FMUL), 20% of the persistent LSTM's step; the error is the same few
    ulp.  Where 1 + e^−x overflows (x < −88) both give 0.  tl.sigmoid in the interpreter."""
    if INTERPRETING:
        return tl.sigmoid(x)
    return libdevice.fast_dividef(1.0, 1.0 + libdevice.fast_expf(-x))
