"""Building blocks shared by the LSTM and GRU step kernels.

A step computes four (hidden × batch) gate tiles.  They are stacked into one (4·BLOCK_H × BLOCK_B)
tile so a single dot per K block has M = 4·BLOCK_H rows (64 or 128: Hopper's wgmma wants M >= 64
per warpgroup) and the batch is the N dimension, which suits the small batches RNNs run at.
Row r of the stacked tile is slot r // BLOCK_H (a gate) of hidden unit r % BLOCK_H.
"""
import functools

import torch
import triton
import triton.language as tl

from kernels._common import autotune
from kernels._tl import cast, dot_acc


@triton.jit
def gate_matmul(acc, W, A, stride_wr, stride_wk, stride_ab, stride_ak, rows, row_ok, offs_b, b_ok, K,
                BLOCK_K: tl.constexpr, PREC: tl.constexpr):
    """acc (R × BLOCK_B) += W[rows, :K] @ A[offs_b, :K]ᵀ; rows with row_ok false contribute zero."""
    offs_k = tl.arange(0, BLOCK_K)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + offs_k
        k_ok = kk < K
        w = tl.load(W + rows[:, None] * stride_wr + kk[None, :] * stride_wk, mask=row_ok[:, None] & k_ok[None, :],
                    other=0.0)
        a = tl.load(A + offs_b[None, :] * stride_ab + kk[:, None] * stride_ak, mask=b_ok[None, :] & k_ok[:, None],
                    other=0.0)
        acc = dot_acc(w, a, acc, PREC)
    return acc


@triton.jit
def split4(t, BLOCK_H: tl.constexpr, BLOCK_B: tl.constexpr):
    """The four (BLOCK_H × BLOCK_B) slot tiles of a stacked (4·BLOCK_H × BLOCK_B) tile."""
    t = tl.permute(tl.reshape(t, (2, 2, BLOCK_H, BLOCK_B)), (2, 3, 0, 1))
    even, odd = tl.split(t)
    s0, s2 = tl.split(even)
    s1, s3 = tl.split(odd)
    return s0, s1, s2, s3


@triton.jit
def load4(ptr, step, mask):
    """Four same-shaped tiles at ptr, ptr + step, ptr + 2·step, ptr + 3·step (the gate blocks), in fp32."""
    a = tl.load(ptr, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(ptr + step, mask=mask, other=0.0).to(tl.float32)
    c = tl.load(ptr + 2 * step, mask=mask, other=0.0).to(tl.float32)
    d = tl.load(ptr + 3 * step, mask=mask, other=0.0).to(tl.float32)
    return a, b, c, d


@triton.jit
def store4(ptr, step, a, b, c, d, mask):
    """Store four tiles to the gate blocks at ptr + k·step, cast to the pointer's dtype."""
    ty = ptr.dtype.element_ty
    tl.store(ptr, cast(a, ty), mask=mask)
    tl.store(ptr + step, cast(b, ty), mask=mask)
    tl.store(ptr + 2 * step, cast(c, ty), mask=mask)
    tl.store(ptr + 3 * step, cast(d, ty), mask=mask)


@triton.jit
def lstm_pointwise_bwd(i, f, g, o, c_prev, c1, dh, dc):
    """One LSTM step backwards from dh' and the incoming dc': (∂a_i, ∂a_f, ∂a_g, ∂a_o, dc_prev)."""
    tc = tanh(c1)
    dc = dc + dh * o * (1.0 - tc * tc)
    return dc * g * i * (1.0 - i), dc * c_prev * f * (1.0 - f), dc * i * (1.0 - g * g), dh * tc * o * (1.0 - o), dc * f


@triton.jit
def tanh(x):
    """tanh through the exponential (no libdevice, so it also runs in the interpreter); saturates cleanly."""
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


def _cfg(bh, bb, bk, warps, stages):
    return triton.Config({"BLOCK_H": bh, "BLOCK_B": bb, "BLOCK_K": bk}, num_warps=warps, num_stages=stages)


# Autotune candidates of the step kernels (the same on sm_80 and sm_90; `seqbench inspect` shows
# each compiles to HMMA/HGMMA without spills under triton 3.6 and 3.9).  BLOCK_H = 16 gives M = 64
# stacked gate rows and the most programs per step, which small-batch steps need to spread W_hh over
# the SMs.  fp32 takes exact IEEE dots on CUDA cores, whose tiles live in registers: smaller K blocks
# (triton 3.9 spilled up to 5.3 KB with the 16-bit list on sm_80).
STEP_CONFIGS = [
    _cfg(16, 16, 64, 4, 3),
    _cfg(16, 16, 128, 4, 3),
    _cfg(16, 32, 128, 4, 3),
    _cfg(32, 16, 128, 8, 3),
    _cfg(32, 32, 64, 4, 3),
]
FP32_STEP_CONFIGS = [
    _cfg(16, 16, 64, 4, 3),
    _cfg(16, 16, 32, 4, 3),
    _cfg(32, 16, 32, 8, 3),
    _cfg(32, 32, 32, 4, 3),
]


def step_configs(dtype) -> list:
    return FP32_STEP_CONFIGS if dtype == torch.float32 else STEP_CONFIGS


# The interpreter runs one program at a time: small tiles so tests cross tile edges.
INTERPRETER_STEP = dict(BLOCK_H=16, BLOCK_B=16, BLOCK_K=32, num_warps=4)

# Pointwise backward kernels: one fixed tile.
BWD_CONFIG = triton.Config({"BLOCK_B": 16, "BLOCK_H": 64}, num_warps=4, num_stages=1)


@functools.lru_cache(maxsize=None)
def _tuned(kernel, dtype):
    return autotune(kernel, step_configs(dtype), ["B", "IN", "HID"], kernel.__name__.strip("_"))


def step_launcher(kernel, device, dtype):
    """(kernel to index with a grid, extra launch kwargs): autotuned on a GPU, fixed in the interpreter."""
    if device.type == "cuda":
        return _tuned(kernel, dtype), {}
    return kernel, dict(INTERPRETER_STEP)


def step_grid(B: int, HID: int):
    return lambda m: (triton.cdiv(HID, m["BLOCK_H"]), triton.cdiv(B, m["BLOCK_B"]))


def launch_bwd(kernel, B: int, HID: int, args: dict):
    bb, bh = BWD_CONFIG.kwargs["BLOCK_B"], BWD_CONFIG.kwargs["BLOCK_H"]
    kernel[(triton.cdiv(HID, bh), triton.cdiv(B, bb))](**args, BLOCK_B=bb, BLOCK_H=bh,
                                                      num_warps=BWD_CONFIG.num_warps, num_stages=BWD_CONFIG.num_stages)
