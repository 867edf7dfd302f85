"""Fused scaled dot-product attention (flash-style), forward and backward, in Triton.

    S = scale · Q Kᵀ,   P = softmax(S) (row-wise),   O = P V

The forward streams K/V blocks past one block of queries and keeps a running max ``m`` and
running sum ``l`` (online softmax), so the Nq×Nk matrix never exists in memory.  It saves the
log-sum-exp per query row; the backward recomputes P from it (FlashAttention-2):

    dV = Pᵀ dO,   dP = dO Vᵀ,   dS = P ∘ (dP − δ) with δ = rowsum(dO ∘ O),
    dQ = scale · dS K,   dK = scale · dSᵀ Q

Everything inside the kernels is in base 2: ``qk_scale = scale · log2(e)`` and the saved
log-sum-exp is ``m + log2(l)`` in those units.

Causal masking follows ``F.scaled_dot_product_attention(is_causal=True)``: query i sees keys
j ≤ i (top-left aligned), also when Nq != Nk.  Grouped-query attention maps query head h to
key/value head h // (H // Hkv).

Dimensions (one meaning per letter in every kernel file):
    B    batch                 H    query heads             HKV  key/value heads (GROUP = H // HKV)
    N_Q  query length          N_K  key length              D    head dim (HEAD_DIM; BLOCK_D padded to 2^k)
    BLOCK_M / BLOCK_N  a program's query rows / key columns
Strides are ``stride_{tensor}{dim}`` (``kernels._common.strides``), the tutorial's convention: dims
b batch, h head, m query row, n key row, d head dim, e.g. ``stride_qb, stride_qh, stride_qm, stride_qd``.
"""
from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

from kernels._common import (FLOAT_DTYPES, autotune, capturing, check_same, check_tensor, cuda_arch, dot_options,
                             once_differentiable, strides)
from kernels._tl import cast, dot_acc

MAX_HEAD_DIM = 256
LOG2E = math.log2(math.e)   # the kernels work in base 2: exp(x) = exp2(x · LOG2E)


# ----------------------------------------------------------------------------------------------
# forward
# ----------------------------------------------------------------------------------------------


@triton.jit
def _softmax_block(qk, m_i, l_i, cols, col_ok, offs_m, qk_scale,
                   CAUSAL: tl.constexpr, MASK: tl.constexpr, NEG_SCALE: tl.constexpr):
    """One key block of the online softmax: (p, alpha, m_new, l_new) from the raw logits qk; ``col_ok``
    the keys that exist (and are kept by a key mask).

    Unmasked blocks scale only the row max (the row min for a negative scale) and let the scale ride in
    exp2's FFMA: qk·qk_scale − m, one instruction per element instead of a multiply and a subtract."""
    if MASK:
        keep = col_ok[None, :]
        if CAUSAL:
            keep = keep & (cols[None, :] <= offs_m[:, None])
        qk = tl.where(keep, qk * qk_scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        p = tl.math.exp2(qk - m_new[:, None])
    else:
        if NEG_SCALE:
            m_new = tl.maximum(m_i, tl.min(qk, 1) * qk_scale)
        else:
            m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        p = tl.math.exp2(qk * qk_scale - m_new[:, None])
    alpha = tl.math.exp2(m_i - m_new)
    return p, alpha, m_new, l_i * alpha + tl.sum(p, 1)


@triton.jit
def _attn_fwd_inner(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
                    offs_m, offs_n, offs_d, mask_d, lo, hi, N_K, qk_scale, km_base,
                    CAUSAL: tl.constexpr, MASK: tl.constexpr, NEG_SCALE: tl.constexpr, BLOCK_N: tl.constexpr,
                    PREC: tl.constexpr, HAS_KMASK: tl.constexpr = False):
    """Fold key/value blocks [lo, hi) into the running (acc, l, m), loading K/V through pointers.
    MASK: the blocks may need masking (the causal diagonal, the Nk tail, a key mask)."""
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        in_k = cols < N_K
        if MASK:
            kt = tl.load(k_base + cols[None, :] * stride_kn + offs_d[:, None] * stride_kd,
                         mask=in_k[None, :] & mask_d[:, None], other=0.0)
        else:
            kt = tl.load(k_base + cols[None, :] * stride_kn + offs_d[:, None] * stride_kd,
                         mask=mask_d[:, None], other=0.0)
        qk = dot_acc(q, kt, tl.zeros([q.shape[0], BLOCK_N], tl.float32), PREC)
        col_ok = in_k
        if HAS_KMASK:   # masked keys' K and V are loaded like any other; only their p is zero
            col_ok = col_ok & (tl.load(km_base + cols, mask=in_k, other=0) != 0)
        p, alpha, m_i, l_i = _softmax_block(qk, m_i, l_i, cols, col_ok, offs_m, qk_scale, CAUSAL, MASK, NEG_SCALE)
        if MASK:
            v = tl.load(v_base + cols[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                        mask=in_k[:, None] & mask_d[None, :], other=0.0)
        else:
            v = tl.load(v_base + cols[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                        mask=mask_d[None, :], other=0.0)
        acc = dot_acc(cast(p, v.dtype), v, acc * alpha[:, None], PREC)
    return acc, l_i, m_i


@triton.jit
def _attn_fwd_inner_tma(acc, l_i, m_i, q, k_desc, v_desc, b, hk, offs_m, offs_n, lo, hi, N_K, qk_scale,
                        CAUSAL: tl.constexpr, MASK: tl.constexpr, NEG_SCALE: tl.constexpr, BLOCK_N: tl.constexpr,
                        BLOCK_D: tl.constexpr, PREC: tl.constexpr):
    """The same fold with K/V blocks fetched by TMA (two UTMALDG from one thread instead of per-thread
    address arithmetic); rows past Nk come back as zeros and are masked like the pointer path's."""
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        k = k_desc.load([b, hk, start_n, 0]).reshape(BLOCK_N, BLOCK_D)
        qk = dot_acc(q, tl.trans(k), tl.zeros([q.shape[0], BLOCK_N], tl.float32), PREC)
        p, alpha, m_i, l_i = _softmax_block(qk, m_i, l_i, cols, cols < N_K, offs_m, qk_scale, CAUSAL, MASK,
                                            NEG_SCALE)
        v = v_desc.load([b, hk, start_n, 0]).reshape(BLOCK_N, BLOCK_D)
        acc = dot_acc(cast(p, v.dtype), v, acc * alpha[:, None], PREC)
    return acc, l_i, m_i


@triton.jit
def _attn_fwd(Q, K, V, O, LSE, KM, KLO, KHI,
              stride_qb, stride_qh, stride_qm, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd, stride_vb,
              stride_vh, stride_vn, stride_vd, stride_ob, stride_oh, stride_om, stride_od, stride_kmb,
              B, H, GROUP, N_Q, N_K, qk_scale, HEAD_DIM: tl.constexpr,
              CAUSAL: tl.constexpr, NEG_SCALE: tl.constexpr, HAS_KMASK: tl.constexpr, BLOCK_M: tl.constexpr,
              BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PREC: tl.constexpr,
              USE_TMA: tl.constexpr = False):
    """One program: BLOCK_M query rows of one (batch, head) against all visible keys.  USE_TMA: Q, K, V
    and O move by tensor descriptors (Hopper's TMA; the launcher checks the layout allows it).
    HAS_KMASK: KM (B, N_K) marks the kept keys; only blocks in [KLO[b], KHI[b]) (the first and past the
    last kept key) are visited, all through the masked path."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    hk = h // GROUP
    m0 = pid_m * BLOCK_M
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    mask_m = offs_m < N_Q
    mask_d = offs_d < HEAD_DIM

    if HAS_KMASK:   # finite: a row that has seen no kept key yet (causal) keeps p = 0, alpha = 1, l = 0
        m_i = tl.full([BLOCK_M], -1.0e30, tl.float32)
    else:
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)

    # Blocks below `full` need no mask at all; [full, hi) holds the causal diagonal and the Nk tail.
    if CAUSAL:
        hi = tl.minimum(N_K, m0 + BLOCK_M)
        full = tl.minimum(N_K, m0 + 1) // BLOCK_N * BLOCK_N
    else:
        hi = N_K
        full = N_K // BLOCK_N * BLOCK_N
    km_base = KM
    if HAS_KMASK:
        full = tl.load(KLO + b) // BLOCK_N * BLOCK_N     # the masked loop starts at the first kept key's block
        hi = tl.minimum(hi, tl.load(KHI + b))
        km_base = KM + b * stride_kmb
    if USE_TMA:
        b32, h32 = bh // H, bh % H
        hk32 = h32 // GROUP
        q_desc = tl.make_tensor_descriptor(Q, [B, H, N_Q, HEAD_DIM], [stride_qb, stride_qh, stride_qm, 1],
                                           [1, 1, BLOCK_M, BLOCK_D])
        k_desc = tl.make_tensor_descriptor(K, [B, H // GROUP, N_K, HEAD_DIM], [stride_kb, stride_kh, stride_kn, 1],
                                           [1, 1, BLOCK_N, BLOCK_D])
        v_desc = tl.make_tensor_descriptor(V, [B, H // GROUP, N_K, HEAD_DIM], [stride_vb, stride_vh, stride_vn, 1],
                                           [1, 1, BLOCK_N, BLOCK_D])
        q = q_desc.load([b32, h32, m0, 0]).reshape(BLOCK_M, BLOCK_D)
        acc, l_i, m_i = _attn_fwd_inner_tma(acc, l_i, m_i, q, k_desc, v_desc, b32, hk32, offs_m, offs_n, 0, full,
                                            N_K, qk_scale, CAUSAL, False, NEG_SCALE, BLOCK_N, BLOCK_D, PREC)
        acc, l_i, m_i = _attn_fwd_inner_tma(acc, l_i, m_i, q, k_desc, v_desc, b32, hk32, offs_m, offs_n, full, hi,
                                            N_K, qk_scale, CAUSAL, True, NEG_SCALE, BLOCK_N, BLOCK_D, PREC)
        o_desc = tl.make_tensor_descriptor(O, [B, H, N_Q, HEAD_DIM], [stride_ob, stride_oh, stride_om, 1],
                                           [1, 1, BLOCK_M, BLOCK_D])
        o_desc.store([b32, h32, m0, 0], cast(acc / l_i[:, None], O.dtype.element_ty).reshape(1, 1, BLOCK_M, BLOCK_D))
    else:
        q = tl.load(Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
                    mask=mask_m[:, None] & mask_d[None, :], other=0.0)
        k_base = K + b * stride_kb + hk * stride_kh
        v_base = V + b * stride_vb + hk * stride_vh
        if not HAS_KMASK:   # with a key mask every visited block takes the masked path
            acc, l_i, m_i = _attn_fwd_inner(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn,
                                            stride_vd, offs_m, offs_n, offs_d, mask_d, 0, full, N_K, qk_scale,
                                            km_base, CAUSAL, False, NEG_SCALE, BLOCK_N, PREC)
        acc, l_i, m_i = _attn_fwd_inner(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_kd, stride_vn,
                                        stride_vd, offs_m, offs_n, offs_d, mask_d, full, hi, N_K, qk_scale, km_base,
                                        CAUSAL, True, NEG_SCALE, BLOCK_N, PREC, HAS_KMASK)
        if HAS_KMASK:   # a query that sees no kept key (causal) gets 0, as SDPA's safe softmax gives it
            l_out = tl.where(l_i == 0.0, 1.0, l_i)
        else:
            l_out = l_i
        tl.store(O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od,
                 cast(acc / l_out[:, None], O.dtype.element_ty), mask=mask_m[:, None] & mask_d[None, :])
    if HAS_KMASK:       # +inf: the backward then recomputes p = 0 for such a row
        lse = tl.where(l_i == 0.0, float("inf"), m_i + tl.math.log2(l_i))
    else:
        lse = m_i + tl.math.log2(l_i)
    tl.store(LSE + bh.to(tl.int64) * N_Q + offs_m, lse, mask=mask_m)


# ----------------------------------------------------------------------------------------------
# backward
# ----------------------------------------------------------------------------------------------


@triton.jit
def _attn_bwd_delta(O, DO, DELTA, stride_ob, stride_oh, stride_om, stride_od, stride_db, stride_dh, stride_dm,
                    stride_dd, H, N_Q, HEAD_DIM: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    """δ = rowsum(dO ∘ O) per query row, in fp32."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_m < N_Q)[:, None] & (offs_d < HEAD_DIM)[None, :]
    o = tl.load(O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od,
                mask=mask, other=0.0)
    do = tl.load(DO + b * stride_db + h * stride_dh + offs_m[:, None] * stride_dm + offs_d[None, :] * stride_dd,
                 mask=mask, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + bh.to(tl.int64) * N_Q + offs_m, delta, mask=offs_m < N_Q)


@triton.jit
def _attn_bwd_dkdv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base,
                         stride_qm, stride_qd, stride_dm, stride_dd, offs_n, offs_d, mask_d, lo, hi, N_Q, qk_scale,
                         CAUSAL: tl.constexpr, MASK: tl.constexpr, BLOCK_M: tl.constexpr,
                         PREC: tl.constexpr):
    """Accumulate dK, dV of one key block over query blocks [lo, hi), working transposed (keys × queries)."""
    offs_mb = tl.arange(0, BLOCK_M)
    for start_m in range(lo, hi, BLOCK_M):
        rows = start_m + offs_mb
        in_q = rows < N_Q
        qt = tl.load(q_base + rows[None, :] * stride_qm + offs_d[:, None] * stride_qd,
                     mask=in_q[None, :] & mask_d[:, None], other=0.0)
        do = tl.load(do_base + rows[:, None] * stride_dm + offs_d[None, :] * stride_dd,
                     mask=in_q[:, None] & mask_d[None, :], other=0.0)
        lse = tl.load(lse_base + rows, mask=in_q, other=0.0)
        delta = tl.load(delta_base + rows, mask=in_q, other=0.0)
        qkt = dot_acc(k, qt, tl.zeros([k.shape[0], BLOCK_M], tl.float32), PREC)
        pt = tl.math.exp2(qkt * qk_scale - lse[None, :])
        if MASK:
            keep = in_q[None, :]
            if CAUSAL:
                keep = keep & (offs_n[:, None] <= rows[None, :])
            pt = tl.where(keep, pt, 0.0)
        dv = dot_acc(cast(pt, do.dtype), do, dv, PREC)
        dpt = dot_acc(v, tl.trans(do), tl.zeros([k.shape[0], BLOCK_M], tl.float32), PREC)
        dst = pt * (dpt - delta[None, :])
        dk = dot_acc(cast(dst, qt.dtype), tl.trans(qt), dk, PREC)
    return dk, dv


@triton.jit
def _attn_bwd_dkdv(Q, K, V, DO, DK, DV, LSE, DELTA, KM, KLO, KHI,
                   stride_qb, stride_qh, stride_qm, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd, stride_vb,
                   stride_vh, stride_vn, stride_vd,
                   stride_db, stride_dh, stride_dm, stride_dd, stride_dkb, stride_dkh, stride_dkn, stride_dkd,
                   stride_dvb, stride_dvh, stride_dvn, stride_dvd, stride_kmb,
                   H, HKV, GROUP, N_Q, N_K, qk_scale, scale, HEAD_DIM: tl.constexpr,
                   CAUSAL: tl.constexpr, HAS_KMASK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                   BLOCK_D: tl.constexpr, PREC: tl.constexpr):
    """One program: dK, dV of BLOCK_N keys of one (batch, kv head), summed over the query heads of its group.
    HAS_KMASK: a block with no kept key does no work; masked keys' rows are not stored (the launcher
    zeroes dK, dV; each of their rows depends only on its own key)."""
    pid_n = tl.program_id(0)
    bhk = tl.program_id(1)
    b = (bhk // HKV).to(tl.int64)
    hk = (bhk % HKV).to(tl.int64)
    n0 = pid_n * BLOCK_N
    offs_n = n0 + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < HEAD_DIM
    mask_kd = (offs_n < N_K)[:, None] & mask_d[None, :]

    k = tl.load(K + b * stride_kb + hk * stride_kh + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd,
                mask=mask_kd, other=0.0)
    v = tl.load(V + b * stride_vb + hk * stride_vh + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                mask=mask_kd, other=0.0)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)

    # Query blocks: [lo, diag) straddle the causal diagonal, [diag, tail) are full, [tail, end) hold the Nq edge.
    if CAUSAL:
        lo = n0 // BLOCK_M * BLOCK_M
        diag = tl.minimum((n0 + BLOCK_N - 1 + BLOCK_M - 1) // BLOCK_M * BLOCK_M, N_Q)
    else:
        lo = 0
        diag = 0
    end = N_Q
    if HAS_KMASK:
        end = tl.where((n0 < tl.load(KHI + b)) & (n0 + BLOCK_N > tl.load(KLO + b)), N_Q, 0)
        lo = tl.minimum(lo, end)
        diag = tl.minimum(diag, end)
    tail = tl.minimum(tl.maximum(diag, N_Q // BLOCK_M * BLOCK_M), end)
    for g in range(0, GROUP):
        h = hk * GROUP + g
        bh = b * H + h
        q_base = Q + b * stride_qb + h * stride_qh
        do_base = DO + b * stride_db + h * stride_dh
        lse_base = LSE + bh * N_Q
        delta_base = DELTA + bh * N_Q
        dk, dv = _attn_bwd_dkdv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base,
                                      stride_qm, stride_qd, stride_dm, stride_dd, offs_n, offs_d, mask_d, lo, diag,
                                      N_Q, qk_scale,
                                      CAUSAL, True, BLOCK_M, PREC)
        dk, dv = _attn_bwd_dkdv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base,
                                      stride_qm, stride_qd, stride_dm, stride_dd, offs_n, offs_d, mask_d, diag, tail,
                                      N_Q, qk_scale,
                                      CAUSAL, False, BLOCK_M, PREC)
        dk, dv = _attn_bwd_dkdv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base,
                                      stride_qm, stride_qd, stride_dm, stride_dd, offs_n, offs_d, mask_d, tail, end,
                                      N_Q, qk_scale,
                                      CAUSAL, True, BLOCK_M, PREC)
    if HAS_KMASK:   # masked keys' rows stay as the launcher zeroed them
        mask_kd = mask_kd & (tl.load(KM + b * stride_kmb + offs_n, mask=offs_n < N_K, other=0) != 0)[:, None]

    tl.store(DK + b * stride_dkb + hk * stride_dkh + offs_n[:, None] * stride_dkn + offs_d[None, :] * stride_dkd,
             cast(dk * scale, DK.dtype.element_ty), mask=mask_kd)
    tl.store(DV + b * stride_dvb + hk * stride_dvh + offs_n[:, None] * stride_dvn + offs_d[None, :] * stride_dvd,
             cast(dv, DV.dtype.element_ty), mask=mask_kd)


@triton.jit
def _attn_bwd_dq_inner(dq, q, do, lse, delta, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
                       offs_m, offs_n, offs_d, mask_d, lo, hi, N_K, qk_scale, km_base,
                       CAUSAL: tl.constexpr, MASK: tl.constexpr, BLOCK_N: tl.constexpr,
                       PREC: tl.constexpr, HAS_KMASK: tl.constexpr = False):
    """Accumulate dQ of one query block over key blocks [lo, hi)."""
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        in_k = cols < N_K
        kt = tl.load(k_base + cols[None, :] * stride_kn + offs_d[:, None] * stride_kd,
                     mask=in_k[None, :] & mask_d[:, None], other=0.0)
        vt = tl.load(v_base + cols[None, :] * stride_vn + offs_d[:, None] * stride_vd,
                     mask=in_k[None, :] & mask_d[:, None], other=0.0)
        qk = dot_acc(q, kt, tl.zeros([q.shape[0], BLOCK_N], tl.float32), PREC)
        p = tl.math.exp2(qk * qk_scale - lse[:, None])
        if MASK:
            keep = in_k[None, :]
            if HAS_KMASK:
                keep = keep & (tl.load(km_base + cols, mask=in_k, other=0) != 0)[None, :]
            if CAUSAL:
                keep = keep & (cols[None, :] <= offs_m[:, None])
            p = tl.where(keep, p, 0.0)
        dp = dot_acc(do, vt, tl.zeros([q.shape[0], BLOCK_N], tl.float32), PREC)
        ds = p * (dp - delta[:, None])
        dq = dot_acc(cast(ds, kt.dtype), tl.trans(kt), dq, PREC)
    return dq


@triton.jit
def _attn_bwd_dq(Q, K, V, DO, DQ, LSE, DELTA, KM, KLO, KHI,
                 stride_qb, stride_qh, stride_qm, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd, stride_vb,
                 stride_vh, stride_vn, stride_vd,
                 stride_db, stride_dh, stride_dm, stride_dd, stride_dqb, stride_dqh, stride_dqm, stride_dqd, stride_kmb,
                 H, GROUP, N_Q, N_K, qk_scale, scale, HEAD_DIM: tl.constexpr,
                 CAUSAL: tl.constexpr, HAS_KMASK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                 BLOCK_D: tl.constexpr, PREC: tl.constexpr):
    """One program: dQ of BLOCK_M query rows of one (batch, head)."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    hk = h // GROUP
    m0 = pid_m * BLOCK_M
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    mask_m = offs_m < N_Q
    mask_d = offs_d < HEAD_DIM
    mask_qd = mask_m[:, None] & mask_d[None, :]

    q = tl.load(Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
                mask=mask_qd, other=0.0)
    do = tl.load(DO + b * stride_db + h * stride_dh + offs_m[:, None] * stride_dm + offs_d[None, :] * stride_dd,
                 mask=mask_qd, other=0.0)
    lse = tl.load(LSE + bh.to(tl.int64) * N_Q + offs_m, mask=mask_m, other=0.0)
    delta = tl.load(DELTA + bh.to(tl.int64) * N_Q + offs_m, mask=mask_m, other=0.0)
    k_base = K + b * stride_kb + hk * stride_kh
    v_base = V + b * stride_vb + hk * stride_vh
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)

    if CAUSAL:
        hi = tl.minimum(N_K, m0 + BLOCK_M)
        full = tl.minimum(N_K, m0 + 1) // BLOCK_N * BLOCK_N
    else:
        hi = N_K
        full = N_K // BLOCK_N * BLOCK_N
    km_base = KM
    if HAS_KMASK:
        full = tl.load(KLO + b) // BLOCK_N * BLOCK_N     # the masked loop starts at the first kept key's block
        hi = tl.minimum(hi, tl.load(KHI + b))
        km_base = KM + b * stride_kmb
    if not HAS_KMASK:
        dq = _attn_bwd_dq_inner(dq, q, do, lse, delta, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
                                offs_m, offs_n, offs_d, mask_d, 0, full, N_K, qk_scale, km_base,
                                CAUSAL, False, BLOCK_N, PREC)
    dq = _attn_bwd_dq_inner(dq, q, do, lse, delta, k_base, v_base, stride_kn, stride_kd, stride_vn, stride_vd,
                            offs_m, offs_n, offs_d, mask_d, full, hi, N_K, qk_scale, km_base,
                            CAUSAL, True, BLOCK_N, PREC, HAS_KMASK)
    tl.store(DQ + b * stride_dqb + h * stride_dqh + offs_m[:, None] * stride_dqm + offs_d[None, :] * stride_dqd,
             cast(dq * scale, DQ.dtype.element_ty), mask=mask_qd)


# ----------------------------------------------------------------------------------------------
# configurations
# ----------------------------------------------------------------------------------------------

def _cfg(bm, bn, warps, stages):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=warps, num_stages=stages)


# CONFIGS[kernel][arch family][head-dim bucket] -> autotune candidates.  Buckets are BLOCK_D
# (the head dim padded to a power of two >= 16).  "sm90" serves Hopper and newer, "sm80" Ampere/Ada.
# The backward kernels keep fp32 accumulators of (BLOCK, BLOCK_D) per operand, so their tiles
# shrink as the head dim grows.  Entries were picked from a compile sweep (`seqbench inspect`) under
# triton 3.6 (the GPU image) and the newest triton (3.9; CI compiles both): none spills, all fit shared
# memory, and every sm90 entry uses wgmma (HGMMA) but those WGMMA_EXCEPT names.  On sm90 a 64-row query
# tile takes 4 warps (one warpgroup) where registers allow: with 8, both warpgroups computed the same
# 64×128 S (1.5× the tensor-core work, 2× the exp2).  At D=256 only 8 warps hold the tile without spills.
CONFIGS = {
    "fwd": {
        "sm90": {
            16: [_cfg(128, 128, 8, 3), _cfg(128, 64, 8, 4)],
            32: [_cfg(128, 128, 8, 3), _cfg(128, 64, 8, 4)],
            64: [_cfg(128, 128, 8, 3), _cfg(128, 64, 8, 4), _cfg(64, 128, 4, 3)],
            128: [_cfg(128, 128, 8, 2), _cfg(128, 64, 8, 3)],
            256: [_cfg(64, 64, 8, 2), _cfg(128, 32, 8, 2)],
        },
        "sm80": {
            16: [_cfg(128, 128, 8, 3), _cfg(128, 128, 8, 2)],
            32: [_cfg(128, 128, 8, 3), _cfg(128, 64, 8, 4)],
            64: [_cfg(128, 128, 8, 3), _cfg(128, 64, 8, 4), _cfg(64, 128, 8, 4)],
            128: [_cfg(128, 64, 8, 3), _cfg(64, 128, 8, 3)],
            256: [_cfg(64, 64, 8, 2), _cfg(64, 32, 8, 3)],
        },
    },
    # dK/dV: BLOCK_N keys per program, stepping BLOCK_M queries.
    "dkdv": {
        "sm90": {
            16: [_cfg(64, 128, 8, 3), _cfg(32, 128, 8, 4)],
            32: [_cfg(64, 128, 8, 3), _cfg(32, 128, 8, 4)],
            64: [_cfg(64, 128, 8, 3), _cfg(32, 128, 8, 4), _cfg(64, 64, 8, 4)],
            128: [_cfg(32, 128, 8, 3), _cfg(64, 64, 8, 3), _cfg(64, 64, 8, 2)],
            256: [_cfg(32, 32, 8, 3), _cfg(32, 32, 8, 2)],   # see WGMMA_EXCEPT
        },
        "sm80": {
            16: [_cfg(64, 128, 8, 3), _cfg(64, 128, 8, 2)],
            32: [_cfg(64, 128, 8, 3), _cfg(32, 128, 8, 4)],
            64: [_cfg(32, 128, 8, 3), _cfg(64, 32, 8, 4)],
            128: [_cfg(64, 64, 8, 2), _cfg(32, 64, 8, 3), _cfg(64, 32, 8, 3)],
            256: [_cfg(64, 32, 8, 3), _cfg(32, 32, 8, 3)],
        },
    },
    # dQ: BLOCK_M queries per program, stepping BLOCK_N keys.
    "dq": {
        "sm90": {
            16: [_cfg(128, 64, 8, 3), _cfg(128, 64, 8, 2)],
            32: [_cfg(128, 64, 8, 3), _cfg(128, 64, 8, 2)],
            64: [_cfg(128, 64, 8, 3), _cfg(64, 64, 8, 4), _cfg(128, 32, 8, 4)],
            128: [_cfg(128, 64, 8, 2), _cfg(64, 64, 8, 3), _cfg(128, 32, 8, 3)],
            256: [_cfg(64, 32, 8, 3), _cfg(128, 32, 8, 2)],
        },
        "sm80": {
            16: [_cfg(128, 64, 8, 3), _cfg(128, 64, 8, 2)],
            32: [_cfg(128, 64, 8, 2)],
            64: [_cfg(128, 32, 8, 3), _cfg(128, 32, 8, 2)],
            128: [_cfg(64, 64, 8, 3), _cfg(64, 64, 8, 2), _cfg(32, 64, 8, 3)],
            256: [_cfg(32, 64, 8, 3), _cfg(64, 32, 8, 3), _cfg(32, 64, 8, 2)],
        },
    },
}

# fp32 inputs take exact (IEEE) dots on CUDA cores by default, which hold whole tiles in registers:
# small tiles, one config per head-dim bucket for both arch families, picked from a compile sweep
# like the 16-bit ones (no spills, fits shared memory).  fp32 is the accuracy path, not the fast one.
def _tma_cfg(bm, bn, warps, stages):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "USE_TMA": True}, num_warps=warps, num_stages=stages)


# The forward with Q/K/V/O moved by tensor descriptors (TMA), the only candidates on sm90 when the layout
# allows (``tma_ok``; the pointer configs are the fallback): the static counts put the pointer path at 1.05×
# the TMA path's non-MMA instructions per MMA, and a GPU run's ``config`` column records the choice.  From
# a compile sweep under triton 3.6 and 3.9: no spills, UTMALDG and HGMMA in the SASS.  Warp-specialised
# loops (tl.range(warp_specialize=True), 4 warps) are not among them: triton 3.6's NVGPUWarpSpecialization
# pass fails on this kernel.
TMA_CONFIGS = {
    16: [_tma_cfg(128, 128, 8, 2), _tma_cfg(128, 64, 8, 3)],
    32: [_tma_cfg(128, 128, 8, 2), _tma_cfg(128, 64, 8, 3)],
    64: [_tma_cfg(128, 128, 8, 2), _tma_cfg(128, 64, 8, 3)],
    128: [_tma_cfg(128, 128, 8, 2), _tma_cfg(128, 64, 8, 3)],
    256: [_tma_cfg(128, 32, 8, 2), _tma_cfg(64, 64, 8, 2)],
}

FP32_CONFIGS = {
    "fwd": {16: [_cfg(64, 32, 4, 1)], 32: [_cfg(64, 32, 4, 1)], 64: [_cfg(32, 32, 4, 1)],
            128: [_cfg(32, 32, 8, 1)], 256: [_cfg(32, 32, 8, 1)]},
    "dkdv": {16: [_cfg(32, 64, 4, 1)], 32: [_cfg(32, 32, 4, 1)], 64: [_cfg(32, 32, 8, 1)],
             128: [_cfg(16, 32, 8, 1)], 256: [_cfg(16, 32, 8, 1)]},
    "dq": {16: [_cfg(64, 32, 4, 1)], 32: [_cfg(64, 32, 4, 1)], 64: [_cfg(32, 32, 4, 2)],
           128: [_cfg(16, 32, 8, 1)], 256: [_cfg(32, 32, 8, 1)]},
}

KERNELS = {"fwd": _attn_fwd, "dkdv": _attn_bwd_dkdv, "dq": _attn_bwd_dq}

# δ = rowsum(dO ∘ O) is a plain streaming reduction: one fixed config everywhere.
DELTA_CONFIG = triton.Config({"BLOCK_M": 64}, num_warps=4, num_stages=1)

# The interpreter runs one program at a time on the CPU: small, deliberately non-square tiles so
# that tests with a few dozen tokens cross block edges, the causal diagonal and the ragged tail.
INTERPRETER_CONFIG = {"fwd": (32, 16), "dkdv": (16, 32), "dq": (32, 16)}
# Tests set this to run the forward's tensor-descriptor (TMA) path in the interpreter.
INTERPRETER_TMA = False


def _arch_family(arch: int) -> str:
    return "sm90" if arch >= 90 else "sm80"


def head_dim_block(d: int) -> int:
    return max(16, triton.next_power_of_2(d))


# Configs the key-mask kernels leave out, (kernel, family, 16-bit?) -> {(BLOCK_M, BLOCK_N, warps, stages)}:
# the compile sweep (`seqbench inspect`, triton 3.6 and 3.9) showed them spilling 8-16 B with the mask's
# extra live values.
MASKED_SKIP = {("fwd", "sm80", True): {(128, 128, 8, 3)}, ("dkdv", "sm90", False): {(32, 32, 8, 1)}}


def _signature(c) -> tuple:
    return c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages


def configs_for(kernel: str, family: str, block_d: int, dtype: torch.dtype, tma: bool = False,
                masked: bool = False) -> list:
    """The autotune candidates.  ``tma`` (the layout allows it, ``tma_ok``): the forward on sm90 in 16 bits
    takes the tensor-descriptor configs only, the pointer ones being its fallback for layouts TMA cannot move
    (their non-MMA work per MMA is 1.05× the TMA path's, `seqbench inspect --peers`).  ``masked``: those for a
    key mask (pointer path, MASKED_SKIP left out)."""
    if dtype == torch.float32:
        found = FP32_CONFIGS[kernel][block_d]
    elif tma and not masked and kernel == "fwd" and family == "sm90":
        found = TMA_CONFIGS[block_d]
    else:
        found = CONFIGS[kernel][family][block_d]
    if masked:
        skip = MASKED_SKIP.get((kernel, family, dtype != torch.float32), set())
        found = [c for c in found if _signature(c) not in skip]
    return found


@functools.lru_cache(maxsize=None)
def _tuned(kernel: str, family: str, block_d: int, dtype: torch.dtype, tma: bool = False, masked: bool = False):
    """An autotuner over the candidates for this arch family, head-dim bucket and dtype, keyed on the lengths."""
    return autotune(KERNELS[kernel], configs_for(kernel, family, block_d, dtype, tma, masked),
                    ["N_Q", "N_K", "CAUSAL"], f"attention.{kernel}" + (".masked" if masked else ""))


def tma_ok(*tensors, allow_fp32: bool = False) -> bool:
    """Whether Hopper's TMA can move these tensors: 16-bit (fp32 takes exact dots on CUDA cores), last dim
    contiguous, base, rows and every other stride 16-byte aligned.  Anything else takes the pointer kernel."""
    for t in tensors:
        e = t.element_size()
        if (t.dtype == torch.float32 and not allow_fp32) or t.stride(-1) != 1 or t.data_ptr() % 16:
            return False
        if any(s * e % 16 for s in t.stride()[:-1]) or t.shape[-1] * e % 16:
            return False
    return True


def _tma_scratch(size: int, alignment: int, stream):
    """Global memory for the tensor descriptors a kernel builds on the device (``triton.set_allocator``)."""
    return torch.empty(size, device="cuda", dtype=torch.int8)


@functools.lru_cache(maxsize=None)
def _install_tma_scratch() -> None:
    """Once per process, not on every launch."""
    triton.set_allocator(_tma_scratch)


def _launcher(kernel: str, q: torch.Tensor, block_d: int, tma: bool = False, masked: bool = False):
    """(jit function to index with a grid, extra launch kwargs): autotuned on a GPU, fixed in the interpreter."""
    if q.device.type != "cuda":
        bm, bn = INTERPRETER_CONFIG[kernel]
        meta = {"BLOCK_M": bm, "BLOCK_N": bn, "num_warps": 4}
        if kernel == "fwd" and INTERPRETER_TMA and tma:
            meta.update(USE_TMA=True)
        return KERNELS[kernel], meta
    family = _arch_family(cuda_arch(q.device))
    tma = tma and family == "sm90"
    if tma:
        _install_tma_scratch()
    return _tuned(kernel, family, block_d, q.dtype, tma, masked), {}


# ----------------------------------------------------------------------------------------------
# launchers
# ----------------------------------------------------------------------------------------------


def _check_inputs(q, k, v, causal, scale) -> None:
    check_tensor("q", q, 4, "(B, H, Nq, D)")
    check_tensor("k", k, 4, "(B, Hkv, Nk, D)")
    check_tensor("v", v, 4, "(B, Hkv, Nk, D)")
    check_same(("q", "k", "v"), (q, k, v))
    B, H, Nq, D = q.shape
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape (B, Hkv, Nk, D), got {tuple(k.shape)} and {tuple(v.shape)}")
    if k.shape[0] != B:
        raise ValueError(f"k has batch {k.shape[0]} but q has batch {B}; expected equal batch sizes")
    if k.shape[3] != D:
        raise ValueError(f"k has head dim {k.shape[3]} but q has {D}; expected equal head dims")
    Hkv = k.shape[1]
    if Hkv < 1 or H % Hkv != 0:
        raise ValueError(f"q has {H} heads, which is not a multiple of k's {Hkv} heads (grouped-query attention)")
    if not 1 <= D <= MAX_HEAD_DIM:
        raise ValueError(f"head dim D must be between 1 and {MAX_HEAD_DIM}, got {D}")
    if B < 1 or Nq < 1 or k.shape[2] < 1:
        raise ValueError(f"B, Nq and Nk must be >= 1, got q {tuple(q.shape)} and k {tuple(k.shape)}")
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    if scale is not None:
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise TypeError(f"scale must be a float or None, got {type(scale).__name__}")
        if not (scale == scale and abs(scale) != float("inf")):
            raise ValueError(f"scale must be finite, got {scale}")


def _common(q, k, causal: bool, scale: float) -> dict:
    H, Nq, D = q.shape[1], q.shape[2], q.shape[3]
    Hkv, Nk = k.shape[1], k.shape[2]
    return dict(H=H, GROUP=H // Hkv, N_Q=Nq, N_K=Nk, qk_scale=scale * LOG2E,
                HEAD_DIM=D, BLOCK_D=head_dim_block(D), CAUSAL=causal, **dot_options(q.dtype, q.device))


def kmask_args(kmask) -> dict:
    """The key-mask arguments: kmask = (KM (B, Nk) int8, KLO (B,), KHI (B,) int32) or None."""
    km, klo, khi = kmask if kmask is not None else (None, None, None)
    return dict(KM=km, KLO=klo, KHI=khi, stride_kmb=km.stride(0) if km is not None else 0,
                HAS_KMASK=kmask is not None)


def fwd_args(q, k, v, o, lse, causal: bool, scale: float, kmask=None) -> dict:
    """Every argument of ``_attn_fwd`` but the tuned BLOCK_M/BLOCK_N, by name."""
    return dict(Q=q, K=k, V=v, O=o, LSE=lse, **strides("q", q, "bhmd"), **strides("k", k, "bhnd"),
                **strides("v", v, "bhnd"), **strides("o", o, "bhmd"), **_common(q, k, causal, scale),
                B=q.shape[0], NEG_SCALE=scale < 0, **kmask_args(kmask))


def delta_args(o, do, delta) -> dict:
    D = o.shape[3]
    return dict(O=o, DO=do, DELTA=delta, **strides("o", o, "bhmd"), **strides("d", do, "bhmd"), H=o.shape[1],
                N_Q=o.shape[2],
                HEAD_DIM=D, BLOCK_D=head_dim_block(D))


def bwd_args(q, k, v, do, dq, dk, dv, lse, delta, causal: bool, scale: float, kmask=None) -> tuple[dict, dict]:
    """Arguments of ``_attn_bwd_dkdv`` and ``_attn_bwd_dq`` (tuned block sizes excluded)."""
    shared = dict(Q=q, K=k, V=v, DO=do, LSE=lse, DELTA=delta, **strides("q", q, "bhmd"), **strides("k", k, "bhnd"),
                  **strides("v", v, "bhnd"), **strides("d", do, "bhmd"), scale=scale, **_common(q, k, causal, scale),
                  **kmask_args(kmask))
    dkdv = dict(shared, DK=dk, DV=dv, HKV=k.shape[1], **strides("dk", dk, "bhnd"), **strides("dv", dv, "bhnd"))
    dq_ = dict(shared, DQ=dq, **strides("dq", dq, "bhmd"))
    return dkdv, dq_


# CUDA caps grid axis 1, which carries batch × heads, at 65,535: bigger batches are launched in slices.
MAX_GRID_Y = 65535


def batch_slices(B: int, heads: int) -> list[slice]:
    """Slices of the batch whose batch × heads fits grid axis 1 (one slice almost always)."""
    if heads > MAX_GRID_Y:
        raise ValueError(f"q has {heads} heads; at most {MAX_GRID_Y} (CUDA's grid limit) are supported")
    step = MAX_GRID_Y // heads
    return [slice(b, min(B, b + step)) for b in range(0, B, step)]


def grid(n: int, block, bh: int):
    """(blocks of ``n`` along the sequence, batch × heads): ``block`` a size, or the name of a tuned meta-parameter."""
    if isinstance(block, int):
        return (triton.cdiv(n, block), bh)
    return lambda meta: (triton.cdiv(n, meta[block]), bh)


def _sliced(kmask, b):
    return None if kmask is None else tuple(t[b] for t in kmask)


def _forward(q, k, v, causal: bool, scale: float, kmask=None):
    B, H, Nq, D = q.shape
    o = torch.empty((B, H, Nq, D), device=q.device, dtype=q.dtype)
    lse = torch.empty((B, H, Nq), device=q.device, dtype=torch.float32)
    tma = kmask is None and tma_ok(q, k, v, o, allow_fp32=q.device.type != "cuda")   # a key mask: pointers
    fn, meta = _launcher("fwd", q, head_dim_block(D), tma=tma, masked=kmask is not None)
    for b in batch_slices(B, H):
        fn[grid(Nq, "BLOCK_M", len(range(B)[b]) * H)](**fwd_args(q[b], k[b], v[b], o[b], lse[b], causal, scale,
                                                                 _sliced(kmask, b)), **meta)
    return o, lse


def _backward(do, q, k, v, o, lse, causal: bool, scale: float, kmask=None):
    B, H, Nq, D = q.shape
    Hkv, Nk = k.shape[1], k.shape[2]
    block_d = head_dim_block(D)
    delta = torch.empty_like(lse)
    dq = torch.empty_like(q, memory_format=torch.contiguous_format)
    alloc = torch.zeros_like if kmask is not None else torch.empty_like   # masked keys' rows are not written
    dk = alloc(k, memory_format=torch.contiguous_format)
    dv = alloc(v, memory_format=torch.contiguous_format)
    bm = DELTA_CONFIG.kwargs["BLOCK_M"]
    for b in batch_slices(B, H):
        nb = len(range(B)[b])
        _attn_bwd_delta[grid(Nq, bm, nb * H)](**delta_args(o[b], do[b], delta[b]), BLOCK_M=bm,
                                              num_warps=DELTA_CONFIG.num_warps, num_stages=DELTA_CONFIG.num_stages)
        dkdv_args, dq_args = bwd_args(q[b], k[b], v[b], do[b], dq[b], dk[b], dv[b], lse[b], delta[b], causal, scale,
                                      _sliced(kmask, b))
        fn, meta = _launcher("dkdv", q, block_d, masked=kmask is not None)
        fn[grid(Nk, "BLOCK_N", nb * Hkv)](**dkdv_args, **meta)
        fn, meta = _launcher("dq", q, block_d, masked=kmask is not None)
        fn[grid(Nq, "BLOCK_M", nb * H)](**dq_args, **meta)
    return dq, dk, dv


class _Attention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal, scale, km, klo, khi):
        kmask = (km, klo, khi) if km is not None else None
        o, lse = _forward(q, k, v, causal, scale, kmask)
        ctx.save_for_backward(q, k, v, o, lse, km, klo, khi)
        ctx.causal, ctx.scale = causal, scale
        return o

    @staticmethod
    @once_differentiable
    def backward(ctx, do):
        q, k, v, o, lse, km, klo, khi = ctx.saved_tensors
        kmask = (km, klo, khi) if km is not None else None
        dq, dk, dv = _backward(do, q, k, v, o, lse, ctx.causal, ctx.scale, kmask)
        return dq, dk, dv, None, None, None, None, None


def key_mask_args(key_mask, B: int, Nk: int, device):
    """(KM int8 (B, Nk), KLO, KHI int32 (B,)) for a (B, Nk) bool key mask: the kept keys and, per sequence,
    the first kept key and one past the last; ValueError/TypeError naming key_mask."""
    if not isinstance(key_mask, torch.Tensor):
        raise TypeError(f"key_mask must be a torch.Tensor of bools, got {type(key_mask).__name__}")
    if key_mask.dtype != torch.bool:
        raise TypeError(f"key_mask must be a bool tensor (True = attend), got {key_mask.dtype}")
    if tuple(key_mask.shape) != (B, Nk):
        raise ValueError(f"key_mask must have shape (B, Nk) = ({B}, {Nk}), got {tuple(key_mask.shape)}")
    if key_mask.device != device:
        raise ValueError(f"key_mask is on {key_mask.device} but q is on {device}; expected the same device")
    kept = key_mask.any(1)
    if not capturing(device) and not bool(kept.all()):      # a host read: checked on the eager call, not in capture
        bad = (~kept).nonzero().flatten().tolist()
        raise ValueError(f"key_mask: every sequence must keep at least one key; batch rows {bad[:8]} keep none")
    km = key_mask.to(torch.int8).contiguous()
    klo = km.argmax(1).to(torch.int32)
    khi = (Nk - km.flip(1).argmax(1)).to(torch.int32)
    return km, klo, khi


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
              scale: float | None = None, key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(scale · Q Kᵀ) V, the result of ``F.scaled_dot_product_attention(..., enable_gqa=True)``.

    q: (B, H, Nq, D); k, v: (B, Hkv, Nk, D) with H a multiple of Hkv; D in 1..256; float16,
    bfloat16 or float32.  ``scale`` defaults to 1/sqrt(D).  Differentiable; the backward saves only
    the per-row log-sum-exp.  fp32 inputs use exact fp32 dots unless torch allows TF32
    (``torch.set_float32_matmul_precision("high")``).

    Inside ``torch.autocast`` it follows SDPA: q, k and v are cast to the autocast dtype (mixed
    float32/bfloat16 inputs included) and the output has that dtype; gradients flow back through
    the casts.  Not twice differentiable: ``create_graph=True`` raises.

    ``key_mask`` (B, Nk) bool, True = attend: SDPA's result with ``attn_mask = key_mask[:, None, None, :]``
    (with ``causal`` too: both apply), forward and backward.  Every sequence must keep a key; a query that
    sees none under ``causal`` gets zeros, as SDPA's safe softmax gives it.  Key blocks before a sequence's
    first kept key and past its last are skipped.
    """
    if all(isinstance(t, torch.Tensor) for t in (q, k, v)) and torch.is_autocast_enabled(q.device.type):
        low = torch.get_autocast_dtype(q.device.type)
        q, k, v = (t.to(low) if t.dtype in FLOAT_DTYPES else t for t in (q, k, v))  # as autocast: not float64
    _check_inputs(q, k, v, causal, scale)
    scale = float(scale) if scale is not None else q.shape[-1] ** -0.5
    kmask = key_mask_args(key_mask, q.shape[0], k.shape[2], q.device) if key_mask is not None else None
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        return _Attention.apply(q, k, v, causal, scale, *(kmask or (None, None, None)))
    return _forward(q, k, v, causal, scale, kmask)[0]


# ----------------------------------------------------------------------------------------------
# compile-only builds for `seqbench inspect`
# ----------------------------------------------------------------------------------------------

# Kernels that must issue Hopper wgmma (HGMMA) on sm_90a in 16 bits (`seqbench inspect`, tests/test_inspect.py).
WGMMA = ("attention.fwd", "attention.dkdv", "attention.dq", "attention_masked.")
# Head dim at which `seqbench inspect` also compiles the key-mask variants.
MASKED_INSPECT_D = 64
# (kernel, head-dim bucket) that use mma.sync (HMMA) instead, and why.
WGMMA_EXCEPT = {("attention.dkdv", 256): "a 64-key tile (wgmma's M) holds dK and dV of 64×256 in fp32: every such "
                                         "config spilled under triton 3.9 (16-136 B), so 32-key tiles use mma.sync"}

def compile_builds(family: str, dtypes=(torch.float16,)):
    """(name, jit fn, args, tuned config) for every shipped config of ``family`` ('sm80' or 'sm90'),
    with arguments as a real launch at B=2, H=8, N=1024 and D equal to the bucket would pass them."""
    for dtype in dtypes:
        for block_d in sorted(CONFIGS["fwd"][family]):
            q, k, v, o, do, dq, dk, dv = (torch.empty(2, 8, 1024, block_d, device="meta", dtype=dtype)
                                          for _ in range(8))
            lse, delta = (torch.empty(2, 8, 1024, device="meta", dtype=torch.float32) for _ in range(2))
            dkdv_args, dq_args = bwd_args(q, k, v, do, dq, dk, dv, lse, delta, False, block_d ** -0.5)
            per_kernel = {"fwd": fwd_args(q, k, v, o, lse, False, block_d ** -0.5), "dkdv": dkdv_args, "dq": dq_args}
            for kernel, args in per_kernel.items():
                args.update(PREC="ieee" if dtype == torch.float32 else "tf32")
                tma = [c for c in configs_for(kernel, family, block_d, dtype, tma=True) if c.kwargs.get("USE_TMA")]
                for cfg in configs_for(kernel, family, block_d, dtype) + tma:    # the fallback and the TMA ones
                    yield f"attention.{kernel}", KERNELS[kernel], args, cfg
            yield "attention.delta", _attn_bwd_delta, delta_args(o, do, delta), DELTA_CONFIG
            if block_d == MASKED_INSPECT_D:   # the key-mask variants (pointer path), causal, at one head dim
                kmask = (torch.empty(2, 1024, device="meta", dtype=torch.int8),
                         *(torch.empty(2, device="meta", dtype=torch.int32) for _ in range(2)))
                dkdv_args, dq_args = bwd_args(q, k, v, do, dq, dk, dv, lse, delta, True, block_d ** -0.5, kmask)
                masked = {"fwd": fwd_args(q, k, v, o, lse, True, block_d ** -0.5, kmask), "dkdv": dkdv_args,
                          "dq": dq_args}
                for kernel, args in masked.items():
                    args.update(PREC="ieee" if dtype == torch.float32 else "tf32")
                    for cfg in configs_for(kernel, family, block_d, dtype, masked=True):
                        yield f"attention_masked.{kernel}", KERNELS[kernel], args, cfg
