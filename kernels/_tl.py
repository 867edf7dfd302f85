"""Triton helpers shared by the kernels.

``INTERP`` is true when a kernel runs in the Triton interpreter on low-precision data.  The
interpreter has two numeric bugs that would otherwise make CPU tests disagree with the GPU:
``tl.dot`` on bf16 operands returns garbage (triton #11584), and fp32 -> bf16 casts truncate
instead of rounding to nearest even, which biases every recurrence.  On a GPU ``INTERP`` is false
and both helpers reduce to the plain operation.
"""
import triton
import triton.language as tl


@triton.jit
def dot_acc(a, b, acc, PREC: tl.constexpr, INTERP: tl.constexpr):
    """acc + a @ b (fp32 accumulate); in the interpreter the operands are upcast first."""
    if INTERP:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=PREC)


@triton.jit
def cast(x, dtype: tl.constexpr, INTERP: tl.constexpr):
    """x.to(dtype) with round-to-nearest-even, also for bf16 in the interpreter."""
    if INTERP:
        if dtype == tl.bfloat16:
            bits = x.to(tl.float32).to(tl.uint32, bitcast=True)
            bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
            x = bits.to(tl.float32, bitcast=True)
    return x.to(dtype)
