"""Building blocks shared by the LSTM and GRU step kernels.

A step computes four (hidden × batch) gate tiles.  They are stacked into one (4·BLOCK_H × BLOCK_B)
tile so a single dot per K block has M = 4·BLOCK_H rows (64 or 128: Hopper's wgmma wants M >= 64
per warpgroup) and the batch is the N dimension, which suits the small batches RNNs run at.
Row r of the stacked tile is slot r // BLOCK_H (a gate) of hidden unit r % BLOCK_H.
"""
import triton
import triton.language as tl

from kernels._tl import dot_acc


@triton.jit
def gate_matmul(acc, W, A, swr, swk, sab, sak, rows, row_ok, offs_b, b_ok, K,
                BLOCK_K: tl.constexpr, PREC: tl.constexpr, INTERP: tl.constexpr):
    """acc (R × BLOCK_B) += W[rows, :K] @ A[offs_b, :K]ᵀ; rows with row_ok false contribute zero."""
    offs_k = tl.arange(0, BLOCK_K)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + offs_k
        k_ok = kk < K
        w = tl.load(W + rows[:, None] * swr + kk[None, :] * swk, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        a = tl.load(A + offs_b[None, :] * sab + kk[:, None] * sak, mask=b_ok[None, :] & k_ok[:, None], other=0.0)
        acc = dot_acc(w, a, acc, PREC, INTERP)
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
def tanh(x):
    """tanh through the exponential (no libdevice, so it also runs in the interpreter); saturates cleanly."""
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


def step_config(device_is_cuda: bool, batch: int):
    """Tile sizes of a step kernel: hidden units per program, batch columns, K block, warps."""
    if not device_is_cuda:
        return dict(BLOCK_H=16, BLOCK_B=16, BLOCK_K=32, num_warps=4)
    block_b = min(64, max(16, triton.next_power_of_2(batch)))
    return dict(BLOCK_H=16, BLOCK_B=block_b, BLOCK_K=64, num_warps=4, num_stages=3)
