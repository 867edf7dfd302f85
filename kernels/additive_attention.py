"""Bahdanau's additive attention in Triton, forward and backward, and Luong's three scores.

    Pq = query W_qᵀ + bias,  Pk = keys W_kᵀ                 (GEMMs, outside the kernels)
    s[i, j] = Σ_a v_a · tanh(Pq[i, a] + Pk[j, a])            (A transcendentals per query-key pair)
    α = softmax_j(s) over the kept keys,   context = α values

The forward streams blocks of keys past a block of queries, builds each score block in chunks of A
(a (queries × keys × A-chunk) tile of tanh), and runs an online softmax with the α·values product
accumulated on tensor cores, so the (Nq, Nk, A) tensor never exists in memory.  It saves the
log-sum-exp per query.  The backward recomputes the scores (two kernels, FlashAttention-2's split):

    dvalues = αᵀ dO,  dα = dO valuesᵀ,  ds = α ∘ (dα − δ) with δ = rowsum(dO ∘ context),
    dPq[i, a] = Σ_j ds·v_a·(1 − t²),  dPk[j, a] = Σ_i ds·v_a·(1 − t²),  dv_a = Σ_ij ds·t   (t = tanh(…))

A decoder step (one query against the whole source) gets its own tiles: BLOCK_M = 1 with the
products done as sums on CUDA cores (``DOT=False``), not a 16-row tensor-core tile that would waste
15/16 of the tanh work.

Dimensions (one meaning per letter in every kernel file):
    B    batch            N_Q  query length        N_K  key length
    A    attention size (rows of w_q, w_k; length of v)         DV   value size (BLOCK_DV padded to 2^k)
    BLOCK_M / BLOCK_N / BLOCK_A  a program's queries / keys / chunk of A
Strides are ``stride_{tensor}{dim}`` (``kernels._common.strides``), dims b batch, m query, n key,
a attention unit, d value feature.
"""
from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

from kernels._common import (autotune, check_same, check_tensor, dot_options, once_differentiable, strides)
from kernels.attention import key_mask_args, kmask_args
from kernels._rnn import tanh
from kernels._tl import cast, dot_acc

LOG2E = tl.constexpr(math.log2(math.e))   # the kernels work in base 2


@triton.jit
def _mm(a, b, acc, DOT: tl.constexpr, PREC: tl.constexpr):
    """acc + a @ b: a tensor-core dot, or (DOT=False, a 1-row tile) a broadcast sum on CUDA cores."""
    if DOT:
        return dot_acc(a, b, acc, PREC)
    if a.shape[1] == 1:   # an outer product (one query): no reduction, which triton 3.9 would turn into a dot
        return acc + tl.reshape(a, [a.shape[0]]).to(tl.float32)[:, None] * tl.reshape(b, [b.shape[1]]).to(
            tl.float32)[None, :]
    return acc + tl.sum(a.to(tl.float32)[:, :, None] * b.to(tl.float32)[None, :, :], 1)


@triton.jit
def _tanh_chunk(X_ROWS, Y_ROWS, VV, stride_xa, stride_ya, x_ok, y_ok, aa, a_ok):
    """One chunk aa of the attention units: t (rows × cols × chunk) = tanh(X[i, a] + Y[j, a]) in fp32, and
    v's chunk.  X, Y are the two projections (Pq, Pk, or Pk, Pq in the transposed dK kernel)."""
    x = tl.load(X_ROWS + aa[None, :] * stride_xa, mask=x_ok[:, None] & a_ok[None, :], other=0.0).to(tl.float32)
    y = tl.load(Y_ROWS + aa[None, :] * stride_ya, mask=y_ok[:, None] & a_ok[None, :], other=0.0).to(tl.float32)
    va = tl.load(VV + aa, mask=a_ok, other=0.0).to(tl.float32)
    return tanh(x[:, None, :] + y[None, :, :]), va


@triton.jit
def _scores(PQ_ROWS, PK_ROWS, VV, stride_pqa, stride_pka, m_ok, n_ok, A,
            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_A: tl.constexpr):
    """s (BLOCK_M × BLOCK_N) = Σ_a v_a tanh(Pq[i, a] + Pk[j, a]), A in chunks of BLOCK_A."""
    offs_a = tl.arange(0, BLOCK_A)
    s = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for a0 in range(0, A, BLOCK_A):
        aa = a0 + offs_a
        t, va = _tanh_chunk(PQ_ROWS, PK_ROWS, VV, stride_pqa, stride_pka, m_ok, n_ok, aa, aa < A)
        s += tl.sum(t * va[None, None, :], 2)
    return s


@triton.jit
def _additive_fwd(PQ, PK, VAL, VV, KM, KLO, KHI, O, LSE,
                  stride_pqb, stride_pqm, stride_pqa, stride_pkb, stride_pkn, stride_pka,
                  stride_valb, stride_valn, stride_vald, stride_kmb, stride_ob, stride_om, stride_od,
                  N_Q, N_K, A, DV,
                  HAS_KMASK: tl.constexpr, DOT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                  BLOCK_A: tl.constexpr, BLOCK_DV: tl.constexpr, PREC: tl.constexpr):
    """One program: BLOCK_M queries of one sequence against its keys (those in [KLO, KHI) with a mask)."""
    pid_m = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_DV)
    m_ok = offs_m < N_Q
    d_ok = offs_d < DV
    pq_rows = PQ + b * stride_pqb + offs_m[:, None] * stride_pqm
    lo = 0
    hi = N_K
    if HAS_KMASK:
        lo = tl.load(KLO + b) // BLOCK_N * BLOCK_N
        hi = tl.load(KHI + b)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    for n0 in range(lo, hi, BLOCK_N):
        cols = n0 + offs_n
        n_ok = cols < N_K
        s = _scores(pq_rows, PK + b * stride_pkb + cols[:, None] * stride_pkn, VV, stride_pqa, stride_pka, m_ok,
                    n_ok, A, BLOCK_M, BLOCK_N, BLOCK_A)
        keep = n_ok
        if HAS_KMASK:
            keep = keep & (tl.load(KM + b * stride_kmb + cols, mask=n_ok, other=0) != 0)
        s = tl.where(keep[None, :], s * LOG2E, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        m_i = m_new
        val = tl.load(VAL + b * stride_valb + cols[:, None] * stride_valn + offs_d[None, :] * stride_vald,
                      mask=n_ok[:, None] & d_ok[None, :], other=0.0)
        acc = _mm(cast(p, val.dtype), val, acc * alpha[:, None], DOT, PREC)
    tl.store(O + b * stride_ob + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od,
             cast(acc / l_i[:, None], O.dtype.element_ty), mask=m_ok[:, None] & d_ok[None, :])
    tl.store(LSE + b * N_Q + offs_m, m_i + tl.math.log2(l_i), mask=m_ok)


@triton.jit
def _additive_bwd_q(PQ, PK, VAL, VV, KM, KLO, KHI, DO, LSE, DELTA, DPQ, DVV,
                    stride_pqb, stride_pqm, stride_pqa, stride_pkb, stride_pkn, stride_pka,
                    stride_valb, stride_valn, stride_vald, stride_kmb, stride_dob, stride_dom, stride_dod,
                    N_Q, N_K, A, DV, M_BLOCKS,
                    HAS_KMASK: tl.constexpr, DOT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                    BLOCK_A: tl.constexpr, BLOCK_DV: tl.constexpr, PREC: tl.constexpr):
    """One program: dPq of BLOCK_M queries (accumulated in DPQ, fp32, rows it owns) and its share of dv
    (DVV[b, pid_m, :]), over all keys."""
    pid_m = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_DV)
    offs_a = tl.arange(0, BLOCK_A)
    m_ok = offs_m < N_Q
    d_ok = offs_d < DV
    pq_rows = PQ + b * stride_pqb + offs_m[:, None] * stride_pqm
    dpq_rows = DPQ + b * N_Q * A + offs_m[:, None] * A
    dvv = DVV + (b * M_BLOCKS + pid_m) * A
    do = tl.load(DO + b * stride_dob + offs_m[:, None] * stride_dom + offs_d[None, :] * stride_dod,
                 mask=m_ok[:, None] & d_ok[None, :], other=0.0)
    lse = tl.load(LSE + b * N_Q + offs_m, mask=m_ok, other=0.0)
    delta = tl.load(DELTA + b * N_Q + offs_m, mask=m_ok, other=0.0)
    lo = 0
    hi = N_K
    if HAS_KMASK:
        lo = tl.load(KLO + b) // BLOCK_N * BLOCK_N
        hi = tl.load(KHI + b)
    for n0 in range(lo, hi, BLOCK_N):
        cols = n0 + offs_n
        n_ok = cols < N_K
        pk_rows = PK + b * stride_pkb + cols[:, None] * stride_pkn
        s = _scores(pq_rows, pk_rows, VV, stride_pqa, stride_pka, m_ok, n_ok, A, BLOCK_M, BLOCK_N, BLOCK_A)
        keep = n_ok[None, :] & m_ok[:, None]
        if HAS_KMASK:
            keep = keep & (tl.load(KM + b * stride_kmb + cols, mask=n_ok, other=0) != 0)[None, :]
        p = tl.where(keep, tl.math.exp2(s * LOG2E - lse[:, None]), 0.0)
        valt = tl.load(VAL + b * stride_valb + cols[None, :] * stride_valn + offs_d[:, None] * stride_vald,
                       mask=n_ok[None, :] & d_ok[:, None], other=0.0)
        dp = _mm(do, valt, tl.zeros([BLOCK_M, BLOCK_N], tl.float32), DOT, PREC)
        ds = p * (dp - delta[:, None])
        for a0 in range(0, A, BLOCK_A):
            aa = a0 + offs_a
            a_ok = aa < A
            t, va = _tanh_chunk(pq_rows, pk_rows, VV, stride_pqa, stride_pka, m_ok, n_ok, aa, a_ok)
            g = ds[:, :, None] * (1.0 - t * t)
            ptr = dpq_rows + aa[None, :]
            msk = m_ok[:, None] & a_ok[None, :]
            tl.store(ptr, tl.load(ptr, mask=msk, other=0.0) + tl.sum(g, 1) * va[None, :], mask=msk)
            tl.store(dvv + aa, tl.load(dvv + aa, mask=a_ok, other=0.0) + tl.sum(tl.sum(ds[:, :, None] * t, 1), 0),
                     mask=a_ok)


@triton.jit
def _additive_bwd_k(PQ, PK, VAL, VV, KM, DO, LSE, DELTA, DPK, DVAL,
                    stride_pqb, stride_pqm, stride_pqa, stride_pkb, stride_pkn, stride_pka,
                    stride_valb, stride_valn, stride_vald, stride_kmb, stride_dob, stride_dom, stride_dod,
                    stride_dvb, stride_dvn, stride_dvd,
                    N_Q, N_K, A, DV,
                    HAS_KMASK: tl.constexpr, DOT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                    BLOCK_A: tl.constexpr, BLOCK_DV: tl.constexpr, PREC: tl.constexpr):
    """One program: dPk (accumulated in DPK, fp32, rows it owns) and dvalues of BLOCK_N keys, over all
    queries; masked keys get zeros.  Works transposed (keys × queries), as FlashAttention-2's dK/dV kernel:
    the score is symmetric in its two projections, and no tile needs a transpose."""
    pid_n = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_mb = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_DV)
    offs_a = tl.arange(0, BLOCK_A)
    n_ok = cols < N_K
    d_ok = offs_d < DV
    keep_n = n_ok
    if HAS_KMASK:
        keep_n = keep_n & (tl.load(KM + b * stride_kmb + cols, mask=n_ok, other=0) != 0)
    pk_rows = PK + b * stride_pkb + cols[:, None] * stride_pkn
    dpk_rows = DPK + b * N_K * A + cols[:, None] * A
    val = tl.load(VAL + b * stride_valb + cols[:, None] * stride_valn + offs_d[None, :] * stride_vald,
                  mask=n_ok[:, None] & d_ok[None, :], other=0.0)
    dval = tl.zeros([BLOCK_N, BLOCK_DV], tl.float32)
    end = N_Q
    if HAS_KMASK:
        end = tl.where(tl.max(keep_n.to(tl.int32), 0) > 0, N_Q, 0)   # no kept key here: no work
    for m0 in range(0, end, BLOCK_M):
        rows = m0 + offs_mb
        m_ok = rows < N_Q
        pq_rows = PQ + b * stride_pqb + rows[:, None] * stride_pqm
        st = _scores(pk_rows, pq_rows, VV, stride_pka, stride_pqa, n_ok, m_ok, A, BLOCK_N, BLOCK_M, BLOCK_A)
        lse = tl.load(LSE + b * N_Q + rows, mask=m_ok, other=0.0)
        delta = tl.load(DELTA + b * N_Q + rows, mask=m_ok, other=0.0)
        pt = tl.where(keep_n[:, None] & m_ok[None, :], tl.math.exp2(st * LOG2E - lse[None, :]), 0.0)
        do = tl.load(DO + b * stride_dob + rows[:, None] * stride_dom + offs_d[None, :] * stride_dod,
                     mask=m_ok[:, None] & d_ok[None, :], other=0.0)
        dot_ = tl.load(DO + b * stride_dob + rows[None, :] * stride_dom + offs_d[:, None] * stride_dod,
                       mask=m_ok[None, :] & d_ok[:, None], other=0.0)
        dval = _mm(cast(pt, do.dtype), do, dval, DOT, PREC)
        dpt = _mm(val, dot_, tl.zeros([BLOCK_N, BLOCK_M], tl.float32), DOT, PREC)
        dst = pt * (dpt - delta[None, :])
        for a0 in range(0, A, BLOCK_A):
            aa = a0 + offs_a
            a_ok = aa < A
            t, va = _tanh_chunk(pk_rows, pq_rows, VV, stride_pka, stride_pqa, n_ok, m_ok, aa, a_ok)
            g = tl.sum(dst[:, :, None] * (1.0 - t * t), 1) * va[None, :]
            ptr = dpk_rows + aa[None, :]
            msk = n_ok[:, None] & a_ok[None, :]
            tl.store(ptr, tl.load(ptr, mask=msk, other=0.0) + g, mask=msk)
    tl.store(DVAL + b * stride_dvb + cols[:, None] * stride_dvn + offs_d[None, :] * stride_dvd,
             cast(dval, DVAL.dtype.element_ty), mask=n_ok[:, None] & d_ok[None, :])


KERNELS = {"fwd": _additive_fwd, "bwd_q": _additive_bwd_q, "bwd_k": _additive_bwd_k}


# ----------------------------------------------------------------------------------------------
# configurations and launchers
# ----------------------------------------------------------------------------------------------

def _cfg(bm, bn, ba, warps, dot=True):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_A": ba, "DOT": dot}, num_warps=warps, num_stages=1)


# The (queries × keys × A-chunk) tile of tanh lives in registers beside the value-wide accumulators:
# 16 × 16 × (4 or 8) for 4 warps.  A decoder step (N_Q <= DECODE_MAX_Q): one query per program, 32-key
# blocks, products on CUDA cores.  Every config compiles spill-free for sm_80 and sm_90a at DV = 256
# under triton 3.6 and 3.9 (a compile sweep; `seqbench inspect` checks them).
CONFIGS = [_cfg(16, 16, 8, 4), _cfg(16, 16, 4, 4)]
DECODE_CONFIGS = [_cfg(1, 32, 8, 4, dot=False), _cfg(1, 32, 4, 4, dot=False)]
MAX_DV = 256
DECODE_MAX_Q = 4
INTERPRETER_CONFIG = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_A=8, DOT=True, num_warps=4)
INTERPRETER_DECODE = dict(BLOCK_M=1, BLOCK_N=16, BLOCK_A=8, DOT=False, num_warps=4)


@functools.lru_cache(maxsize=None)
def _tuned(kernel: str, decode: bool):
    restore = {"bwd_q": ["DPQ", "DVV"], "bwd_k": ["DPK"]}.get(kernel)     # buffers accumulated into
    return autotune(KERNELS[kernel], DECODE_CONFIGS if decode else CONFIGS, ["N_Q", "N_K", "A", "DV"],
                    f"additive_attention.{kernel}", restore_value=restore)


def _launcher(kernel: str, device, n_q: int):
    decode = n_q <= DECODE_MAX_Q
    if device.type != "cuda":
        return KERNELS[kernel], dict(INTERPRETER_DECODE if decode else INTERPRETER_CONFIG)
    return _tuned(kernel, decode), {}


def block_dv(dv: int) -> int:
    return max(16, triton.next_power_of_2(dv))


def fwd_args(pq, pk, values, v, o, lse, kmask=None) -> dict:
    return dict(PQ=pq, PK=pk, VAL=values, VV=v, O=o, LSE=lse, **strides("pq", pq, "bma"),
                **strides("pk", pk, "bna"), **strides("val", values, "bnd"), **strides("o", o, "bmd"),
                N_Q=pq.shape[1], N_K=pk.shape[1], A=pq.shape[2], DV=values.shape[2],
                BLOCK_DV=block_dv(values.shape[2]), **kmask_args(kmask), **dot_options(values.dtype, values.device))


def bwd_args(pq, pk, values, v, do, lse, delta, dpq, dvv, dpk, dval, m_blocks, kmask=None) -> tuple[dict, dict]:
    shared = dict(PQ=pq, PK=pk, VAL=values, VV=v, DO=do, LSE=lse, DELTA=delta, **strides("pq", pq, "bma"),
                  **strides("pk", pk, "bna"), **strides("val", values, "bnd"), **strides("do", do, "bmd"),
                  N_Q=pq.shape[1], N_K=pk.shape[1], A=pq.shape[2], DV=values.shape[2],
                  BLOCK_DV=block_dv(values.shape[2]), **kmask_args(kmask), **dot_options(values.dtype, values.device))
    q_args = dict(shared, DPQ=dpq, DVV=dvv, M_BLOCKS=m_blocks)
    k_args = dict(shared, DPK=dpk, DVAL=dval, **strides("dv", dval, "bnd"))
    k_args.pop("KLO")
    k_args.pop("KHI")
    return q_args, k_args


def _forward(pq, pk, values, v, kmask):
    B, Nq, _ = pq.shape
    o = torch.empty(B, Nq, values.shape[2], device=pq.device, dtype=values.dtype)
    lse = torch.empty(B, Nq, device=pq.device, dtype=torch.float32)
    fn, meta = _launcher("fwd", pq.device, Nq)
    fn[lambda m: (triton.cdiv(Nq, m["BLOCK_M"]), B)](**fwd_args(pq, pk, values, v, o, lse, kmask), **meta)
    return o, lse


def _backward(do, pq, pk, values, v, o, lse, kmask):
    B, Nq, A = pq.shape
    Nk = pk.shape[1]
    delta = (do.float() * o.float()).sum(-1).contiguous()
    dpq = torch.zeros(B, Nq, A, device=pq.device, dtype=torch.float32)
    dpk = torch.zeros(B, Nk, A, device=pq.device, dtype=torch.float32)
    dval = torch.empty_like(values, memory_format=torch.contiguous_format)
    # the dv partials: one row per (sequence, query block) at the smallest BLOCK_M a config may pick
    m_blocks = triton.cdiv(Nq, 1 if Nq <= DECODE_MAX_Q else 16)
    dvv = torch.zeros(B, m_blocks, A, device=pq.device, dtype=torch.float32)
    q_args, k_args = bwd_args(pq, pk, values, v, do, lse, delta, dpq, dvv, dpk, dval, m_blocks, kmask)
    fn, meta = _launcher("bwd_q", pq.device, Nq)
    fn[lambda m: (triton.cdiv(Nq, m["BLOCK_M"]), B)](**q_args, **meta)
    fn, meta = _launcher("bwd_k", pq.device, Nq)
    fn[lambda m: (triton.cdiv(Nk, m["BLOCK_N"]), B)](**k_args, **meta)
    return dpq, dpk, dval, dvv.sum((0, 1))


class _Additive(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pq, pk, values, v, km, klo, khi):
        kmask = (km, klo, khi) if km is not None else None
        o, lse = _forward(pq, pk, values, v, kmask)
        ctx.save_for_backward(pq, pk, values, v, o, lse, km, klo, khi)
        return o

    @staticmethod
    @once_differentiable
    def backward(ctx, do):
        pq, pk, values, v, o, lse, km, klo, khi = ctx.saved_tensors
        kmask = (km, klo, khi) if km is not None else None
        dpq, dpk, dval, dv = _backward(do.contiguous(), pq, pk, values, v, o, lse, kmask)
        return dpq.to(pq.dtype), dpk.to(pk.dtype), dval, dv.to(v.dtype), None, None, None


# ----------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------

def _check_mask(mask, B: int, Nk: int, device):
    try:
        return key_mask_args(mask, B, Nk, device)
    except (TypeError, ValueError) as exc:
        raise type(exc)(str(exc).replace("key_mask", "mask")) from None


def additive_attention(query, keys, values=None, *, w_q, w_k, v, bias=None, mask=None, return_weights=False):
    """Bahdanau's attention: context[b, i] = Σ_j α[b, i, j] values[b, j] with α = softmax_j of
    vᵀ tanh(w_q query_i + w_k key_j + bias) over the kept keys.

    query (B, Nq, Dq), keys (B, Nk, Dk), values (B, Nk, Dv) (default: keys); w_q (A, Dq), w_k (A, Dk),
    v (A,), bias (A,) or None; mask (B, Nk) bool, True = attend (every sequence keeps a key).
    Returns the context (B, Nq, Dv); with ``return_weights`` also α (B, Nq, Nk), detached (for plots).
    The projections are GEMMs; one kernel then scores, normalises and weights without the (Nq, Nk, A)
    tensor.  Differentiable in every tensor argument (a Triton backward that recomputes the scores).
    """
    values = _check_qkv(query, keys, values)
    check_tensor("w_q", w_q, 2, "(A, Dq)")
    check_tensor("w_k", w_k, 2, "(A, Dk)")
    check_tensor("v", v, 1, "(A,)")
    named = [("query", query), ("keys", keys), ("values", values), ("w_q", w_q), ("w_k", w_k), ("v", v)]
    if bias is not None:
        check_tensor("bias", bias, 1, "(A,)")
        named.append(("bias", bias))
    check_same(*zip(*named))
    B, Nq, Dq = query.shape
    _, Nk, Dk = keys.shape
    A = w_q.shape[0]
    if Nq < 1 or Nk < 1 or A < 1:
        raise ValueError(f"Nq, Nk and A must be >= 1, got query {tuple(query.shape)}, keys {tuple(keys.shape)}, "
                         f"w_q {tuple(w_q.shape)}")
    if tuple(w_q.shape) != (A, Dq):
        raise ValueError(f"w_q must have shape (A, Dq) = (A, {Dq}), got {tuple(w_q.shape)}")
    if tuple(w_k.shape) != (A, Dk):
        raise ValueError(f"w_k must have shape (A, Dk) = ({A}, {Dk}), got {tuple(w_k.shape)}")
    if tuple(v.shape) != (A,):
        raise ValueError(f"v must have shape (A,) = ({A},), got {tuple(v.shape)}")
    if bias is not None and tuple(bias.shape) != (A,):
        raise ValueError(f"bias must have shape (A,) = ({A},), got {tuple(bias.shape)}")
    if values.shape[2] > MAX_DV:
        raise ValueError(f"values may have at most {MAX_DV} features (the kernel keeps a row of the context in "
                         f"registers), got {values.shape[2]}")
    kmask = _check_mask(mask, B, Nk, query.device) if mask is not None else None
    pq = query @ w_q.t()
    if bias is not None:
        pq = pq + bias
    pk = keys @ w_k.t()
    args = (pq.contiguous(), pk.contiguous(), values, v.contiguous())   # the kernels read v (A,) densely
    if torch.is_grad_enabled() and any(t.requires_grad for t in args):
        out = _Additive.apply(*args, *(kmask or (None, None, None)))
    else:
        out = _forward(*args, kmask)[0]
    if not return_weights:
        return out
    with torch.no_grad():
        s = (torch.tanh(pq.float()[:, :, None, :] + pk.float()[:, None, :, :]) * v.float()).sum(-1)
        if mask is not None:
            s = s.masked_fill(~mask[:, None, :], float("-inf"))
        weights = torch.softmax(s, -1).to(values.dtype)
    return out, weights


def _check_qkv(query, keys, values):
    """query (B, Nq, Dq), keys (B, Nk, Dk) and values (B, Nk, Dv) (None: keys): ranks, float dtypes, one batch
    and one Nk, each named; returns values.  Dtypes and devices are compared with check_same after."""
    values = keys if values is None else values
    check_tensor("query", query, 3, "(B, Nq, Dq)")
    check_tensor("keys", keys, 3, "(B, Nk, Dk)")
    check_tensor("values", values, 3, "(B, Nk, Dv)")
    B = query.shape[0]
    if keys.shape[0] != B or values.shape[0] != B:
        raise ValueError(f"query, keys and values must share the batch, got {B}, {keys.shape[0]}, {values.shape[0]}")
    if values.shape[1] != keys.shape[1]:
        raise ValueError(f"values must have Nk = {keys.shape[1]} rows like keys, got {tuple(values.shape)}")
    return values


SCORES = ("dot", "general", "concat")


def luong_attention(query, keys, values=None, *, score="dot", weight=None, v=None, mask=None):
    """Luong's attention with score "dot" (hᵀ s), "general" (hᵀ W s, weight W (Dk, Dq)) or "concat"
    (vᵀ tanh(W [s; h]), weight W (A, Dq + Dk) and ``v`` (A,)).  query (B, Nq, Dq), keys (B, Nk, Dk), values
    (B, Nk, Dv) (default keys), mask (B, Nk) bool.  "dot" and "general" run on ``kernels.attention`` with
    scale 1 (general projects the query first); "concat" is the additive kernel.  Returns (B, Nq, Dv)."""
    from kernels.attention import attention
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    values = _check_qkv(query, keys, values)
    if score == "concat":
        if weight is None or v is None:
            raise ValueError("score='concat' needs weight (A, Dq + Dk) and v (A,)")
        check_tensor("weight", weight, 2, "(A, Dq + Dk)")
        if weight.shape[1] != query.shape[2] + keys.shape[2]:
            raise ValueError(f"weight must have shape (A, Dq + Dk) = (A, {query.shape[2] + keys.shape[2]}), got "
                             f"{tuple(weight.shape)}")
        check_tensor("v", v, 1, "(A,)")
        check_same(("query", "keys", "values", "weight", "v"), (query, keys, values, weight, v))
        Dq = query.shape[2]
        return additive_attention(query, keys, values, w_q=weight[:, :Dq], w_k=weight[:, Dq:], v=v, mask=mask)
    if score == "general":
        if weight is None:
            raise ValueError("score='general' needs weight (Dk, Dq)")
        check_tensor("weight", weight, 2, "(Dk, Dq)")
        if tuple(weight.shape) != (keys.shape[2], query.shape[2]):
            raise ValueError(f"weight must have shape (Dk, Dq) = ({keys.shape[2]}, {query.shape[2]}), got "
                             f"{tuple(weight.shape)}")
        check_same(("query", "keys", "values", "weight"), (query, keys, values, weight))
        query = query @ weight.t()
    elif weight is not None:
        raise ValueError("score='dot' takes no weight")
    else:
        check_same(("query", "keys", "values"), (query, keys, values))
    if query.shape[2] != keys.shape[2]:
        raise ValueError(f"score={score!r} needs query and keys of one size, got {query.shape[2]} and {keys.shape[2]}")
    if values.shape[2] != keys.shape[2]:
        # kernels.attention takes one head dim: pad the smaller of k/q and v with zeros
        D = max(keys.shape[2], values.shape[2])
        pad = lambda t: torch.nn.functional.pad(t, (0, D - t.shape[2]))  # noqa: E731
        out = attention(pad(query)[:, None], pad(keys)[:, None], pad(values)[:, None], scale=1.0, key_mask=mask)
        return out[:, 0, :, :values.shape[2]]
    return attention(query[:, None], keys[:, None], values[:, None], scale=1.0, key_mask=mask)[:, 0]


# ----------------------------------------------------------------------------------------------
# compile-only builds for `seqbench inspect`
# ----------------------------------------------------------------------------------------------

# Kernels that must issue Hopper wgmma (HGMMA) on sm_90a in 16 bits: none.  The α·values product has the
# 16-row query block as M, below wgmma's 64; the tanh tile, not the dot, bounds these kernels.
WGMMA = ()


def compile_builds(family: str, dtypes=(torch.float16,)):
    """Every config as launched at B=16, Nq = Nk = 512 (and Nq = 1, the decoder step), A = Dv = 256 (MAX_DV)."""
    for dtype in dtypes:
        t = lambda *s: torch.empty(*s, device="meta", dtype=dtype)  # noqa: E731
        f32 = lambda *s: torch.empty(*s, device="meta", dtype=torch.float32)  # noqa: E731
        for label, nq, configs in (("", 512, CONFIGS), ("decode.", 1, DECODE_CONFIGS)):
            B, Nk, A = 16, 512, 256
            pq, pk, val, v, o = t(B, nq, A), t(B, Nk, A), t(B, Nk, A), t(A), t(B, nq, A)
            lse = f32(B, nq)
            q_args, k_args = bwd_args(pq, pk, val, v, o, lse, lse, f32(B, nq, A), f32(B, nq, A), f32(B, Nk, A),
                                      t(B, Nk, A), nq)
            builds = {"fwd": fwd_args(pq, pk, val, v, o, lse), "bwd_q": q_args, "bwd_k": k_args}
            for kernel, args in builds.items():
                for cfg in configs:
                    yield f"additive_attention.{label}{kernel}", KERNELS[kernel], args, cfg
