"""A linear recurrence as a parallel scan, and the minGRU / minLSTM of Feng et al. 2024 ("Were RNNs All We
Needed?", arXiv 2410.01201) built on it, in Triton.

    h_t = a_t ∘ h_{t−1} + b_t,      h_{−1} = h0 (or 0)

Three plans; the state is fp32 whatever the input dtype.  ``plan_for`` picks sequential or chunked by shape:

* **sequential**: each thread walks T for its own state lanes, h = a·h + b, one FMA per element, its loads
  vectorised along D (fla's ``fused_recurrent_hgrn`` does the same).  Every step's loads are independent of
  h, but a step waits for its own: the plan fills HBM only when the lanes together keep enough bytes in
  flight.  Little's law puts the line at bandwidth × latency, about 4.8 TB/s × 0.6 µs ≈ 3 MB on an H200
  (BYTES_IN_FLIGHT), so B·D lanes reading a and b (2 elements a step) take this plan from
  B·D·2·element size ≥ 3 MB: 750k lanes in 16 bits, 375k in fp32.
* **chunked**, for fewer lanes: T is cut into chunks (``chunk_for``: enough that lanes × chunks reach the same
  line, of MIN_CHUNK steps at least) and three passes each walk their steps one FMA at a time, as the
  sequential plan does: *reduce* (every chunk at once) composes its chunk into one map h ↦ p·h + s, with
  p = ∏a and s the chunk's state from zero; *carry* walks a lane's chunk maps in order, giving the state
  entering each chunk (T / chunk steps); *fwd* (every chunk at once) replays each chunk from its entering
  state and writes h: a and b are read twice, h written once, with lanes × chunks in flight.
* **associative** (chosen by no shape; ``_plan`` forces it): the pairs (a_t, b_t) compose associatively,
  (a₁, b₁) then (a₂, b₂) = (a₁a₂, a₂b₁ + b₂), so h over a chunk of T is one ``tl.associative_scan``
  (O(log chunk) depth); a program walks the chunks of its (batch row, D block) in order and carries the last
  state into the next.  Its static count is about 3× the chunked plan's instructions per element
  (``seqbench inspect --peers``); it stays until a GPU times the two side by side.

Backward, for g_t = ∂L/∂h_t: the reverse scan dh_t = g_t + a_{t+1} ∘ dh_{t+1} (the same combine, read
backwards; the chunked plan's reduce and carry run REVERSE, then its bwd pass replays each chunk from the dh
entering it from above), then da_t = dh_t ∘ h_{t−1}, db_t = dh_t and dh0 = a_0 ∘ dh_0.

minGRU:  z = σ(x W_zᵀ + b_z),  h̃ = x W_hᵀ + b_h,           h_t = (1 − z_t) ∘ h_{t−1} + z_t ∘ h̃_t
minLSTM: f, i = σ(x W_fᵀ + b_f), σ(x W_iᵀ + b_i),  h̃ = x W_hᵀ + b_h,
         h_t = f'_t ∘ h_{t−1} + i'_t ∘ h̃_t  with f' = f / (f + i), i' = i / (f + i)
The gates read x only, never h: the projections of all steps are one GEMM, the recurrence one scan, and
the gate math runs inside the scan's kernels (GATES: 0 plain a and b, 1 the minGRU, 2 the minLSTM), forward
and backward, from the projections: a and b are never written.

Range.  The sequential plan is the loop itself.  The chunked and associative plans let a carried state in
only where it is nonzero (the chunked carry skips p·h when h = 0; the associative plan adds it through the
chunk's first b, b₀ + a₀·h), so a product of a's that overflows never multiplies a zero state (the loop's
0 · 1e20 · 1e20 = 0 stays 0, not inf · 0 = NaN).  What a scan cannot avoid: a chunk whose ∏a overflows fp32
(|a| ≫ 1 over many steps) times a nonzero state is inf or NaN, where the step-by-step loop may come back to
finite values.  With |a| ≤ 1, as for the minGRU's 1 − z and the minLSTM's f', no product overflows.
This is the paper's plain (not log-space) form; 1 − z is taken as σ(−·), exact where z is near 1.

Dimensions (one meaning per letter in every kernel file):
    B    batch                 T    time steps              D    state (hidden) size     IN  input size
    BLOCK_T  a chunk of time steps (associative)             BLOCK_D  a program's state units
    CHUNK    a chunk's time steps (chunked)                   NC   chunks (grid axis 2 of reduce, fwd, bwd)
Strides are ``stride_{tensor}{dim}`` (``kernels._common.strides``), dims b batch, t time, d state unit.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl
from torch import nn

from kernels._common import autotune, check_same, check_tensor, once_differentiable, strides
from kernels._tl import cast


@triton.jit
def _compose(a1, b1, a2, b2):
    """(a₁, b₁) then (a₂, b₂): h ↦ a₂(a₁h + b₁) + b₂."""
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _scan_fwd(A, Bv, H0, H, T, D,
              stride_ab, stride_at, stride_ad, stride_bb, stride_bt, stride_bd, stride_h0b, stride_h0d,
              stride_hb, stride_ht, stride_hd,
              HAS_H0: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    """One program: one batch row × BLOCK_D state units, every chunk of T in order."""
    pid_b = tl.program_id(0).to(tl.int64)          # B on grid axis 0 (2³¹ − 1 programs); 64-bit row offsets
    pid_d = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    if HAS_H0:
        carry = tl.load(H0 + pid_b * stride_h0b + offs_d * stride_h0d, mask=d_ok, other=0.0).to(tl.float32)
    else:
        carry = tl.zeros([BLOCK_D], tl.float32)
    rows = tl.arange(0, BLOCK_T)
    for t0 in range(0, T, BLOCK_T):
        t = t0 + rows
        ok = (t < T)[:, None] & d_ok[None, :]
        # past T: the identity (a = 1, b = 0), so the chunk's last row is the last real state
        a = tl.load(A + pid_b * stride_ab + t[:, None] * stride_at + offs_d[None, :] * stride_ad, mask=ok,
                    other=1.0).to(tl.float32)
        b = tl.load(Bv + pid_b * stride_bb + t[:, None] * stride_bt + offs_d[None, :] * stride_bd, mask=ok,
                    other=0.0).to(tl.float32)
        # the carried state enters through the chunk's first b (b₀ + a₀·carry), not as ∏a · carry: a product
        # of a's that overflows then never meets a zero state (inf · 0 = NaN where the loop gives 0)
        b = tl.where((rows == 0)[:, None], b + a * carry[None, :], b)
        _, h = tl.associative_scan((a, b), 0, _compose)
        tl.store(H + pid_b * stride_hb + t[:, None] * stride_ht + offs_d[None, :] * stride_hd,
                 cast(h, H.dtype.element_ty), mask=ok)
        carry = tl.sum(tl.where((rows == BLOCK_T - 1)[:, None], h, 0.0), axis=0)


@triton.jit
def _scan_bwd(A, H0, H, G, DA, DB, DH0, T, D,
              stride_ab, stride_at, stride_ad, stride_h0b, stride_h0d, stride_hb, stride_ht, stride_hd,
              stride_gb, stride_gt, stride_gd, stride_dab, stride_dat, stride_dad, stride_dbb, stride_dbt, stride_dbd,
              stride_dh0b, stride_dh0d,
              HAS_H0: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    """One program: one batch row × BLOCK_D state units, the chunks from the last; row r of a chunk is
    time step t0 − r, so a forward scan over rows runs backwards in time."""
    pid_b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    d_ok = offs_d[None, :] < D
    rows = tl.arange(0, BLOCK_T)
    carry = tl.zeros([BLOCK_D], tl.float32)          # dh of the step after the chunk
    for c in range(0, tl.cdiv(T, BLOCK_T)):
        t = T - 1 - c * BLOCK_T - rows
        ok = (t >= 0)[:, None] & d_ok
        g = tl.load(G + pid_b * stride_gb + t[:, None] * stride_gt + offs_d[None, :] * stride_gd, mask=ok,
                    other=0.0).to(tl.float32)
        nxt = (t + 1 < T)[:, None] & ok
        a_next = tl.load(A + pid_b * stride_ab + (t + 1)[:, None] * stride_at + offs_d[None, :] * stride_ad,
                         mask=nxt, other=0.0).to(tl.float32)
        a_next = tl.where((t >= 0)[:, None], a_next, 1.0)   # before step 0: the identity, carrying dh_0
        g = tl.where((rows == 0)[:, None], g + a_next * carry[None, :], g)     # the carry, as in the forward
        _, dh = tl.associative_scan((a_next, g), 0, _compose)
        prev = (t >= 1)[:, None] & ok
        h_prev = tl.load(H + pid_b * stride_hb + (t - 1)[:, None] * stride_ht + offs_d[None, :] * stride_hd,
                         mask=prev, other=0.0).to(tl.float32)
        if HAS_H0:
            h0 = tl.load(H0 + pid_b * stride_h0b + offs_d * stride_h0d, mask=offs_d < D, other=0.0).to(tl.float32)
            h_prev = tl.where((t == 0)[:, None], h0[None, :], h_prev)
        tl.store(DA + pid_b * stride_dab + t[:, None] * stride_dat + offs_d[None, :] * stride_dad,
                 cast(dh * h_prev, DA.dtype.element_ty), mask=ok)
        tl.store(DB + pid_b * stride_dbb + t[:, None] * stride_dbt + offs_d[None, :] * stride_dbd,
                 cast(dh, DB.dtype.element_ty), mask=ok)
        carry = tl.sum(tl.where((rows == BLOCK_T - 1)[:, None], dh, 0.0), axis=0)
    if HAS_H0:   # carry is dh_0 now
        a0 = tl.load(A + pid_b * stride_ab + offs_d * stride_ad, mask=offs_d < D, other=0.0).to(tl.float32)
        tl.store(DH0 + pid_b * stride_dh0b + offs_d * stride_dh0d, cast(a0 * carry, DH0.dtype.element_ty),
                 mask=offs_d < D)


@triton.jit
def _coefficients(pa, pb, pi, ok, GATES: tl.constexpr):
    """(a_t, b_t) of one step from the inputs at pa, pb and pi.  GATES 0: a and b themselves.  1, the minGRU:
    k at pa, h̃ at pb; a = 1 − z = σ(−k), b = z·h̃.  2, the minLSTM: k_f at pa, h̃ at pb, k_i at pi;
    a = f / (f + i), b = i / (f + i)·h̃.  In fp32, never written to memory."""
    x = tl.load(pa, mask=ok, other=0.0).to(tl.float32)
    y = tl.load(pb, mask=ok, other=0.0).to(tl.float32)
    if GATES == 1:
        a = tl.sigmoid(-x)
        b = tl.sigmoid(x) * y
    elif GATES == 2:
        f = tl.sigmoid(x)
        i = tl.sigmoid(tl.load(pi, mask=ok, other=0.0).to(tl.float32))
        r = 1.0 / (f + i)                           # one division: its slow path is a call
        a = f * r
        b = i * r * y
    else:
        a = x
        b = y
    return a, b


@triton.jit
def _gate_a(pa, pi, ok, GATES: tl.constexpr):
    """a_t alone (``_coefficients``' first), 0 where ``ok`` is false (past T or D)."""
    x = tl.load(pa, mask=ok, other=0.0).to(tl.float32)
    if GATES == 1:
        x = tl.where(ok, tl.sigmoid(-x), 0.0)
    elif GATES == 2:
        f = tl.sigmoid(x)
        x = tl.where(ok, f / (f + tl.sigmoid(tl.load(pi, mask=ok, other=0.0).to(tl.float32))), 0.0)
    return x


@triton.jit
def _input_grads(pa, pb, pi, ok, dh, h_prev, GATES: tl.constexpr):
    """(a_t, and ∂L/∂ of the inputs at pa, pb, pi) of one step from dh_t and h_{t−1}: da_t = dh_t·h_{t−1},
    db_t = dh_t, through the gates.  minGRU: ∂k = dh·z(1 − z)(h̃ − h_{t−1}), ∂h̃ = dh·z.  minLSTM, with
    r = 1 / (f + i) and u = (da − db·h̃)·r²: ∂k_f = i·u·f(1 − f), ∂k_i = −f·u·i(1 − i), ∂h̃ = db·i·r.  1 − σ(k)
    is taken as σ(−k), exact where σ(k) is near 1."""
    x = tl.load(pa, mask=ok, other=0.0).to(tl.float32)
    if GATES == 1:
        y = tl.load(pb, mask=ok, other=0.0).to(tl.float32)
        a = tl.sigmoid(-x)
        d2 = dh * tl.sigmoid(x)
        d1 = d2 * a * (y - h_prev)
        d3 = d2
    elif GATES == 2:
        y = tl.load(pb, mask=ok, other=0.0).to(tl.float32)
        k_i = tl.load(pi, mask=ok, other=0.0).to(tl.float32)
        f = tl.sigmoid(x)
        i = tl.sigmoid(k_i)
        r = 1.0 / (f + i)
        a = f * r
        d2 = dh * i * r
        u = (dh * h_prev - dh * y) * r * r
        d1 = i * u * f * tl.sigmoid(-x)
        d3 = -f * u * i * tl.sigmoid(-k_i)
    else:
        a = x
        d1 = dh * h_prev
        d2 = dh
        d3 = dh
    return a, d1, d2, d3


@triton.jit
def _store_grads(pda, pdb, pdi, d1, d2, d3, ok, GATES: tl.constexpr):
    """One step's input gradients, each in its tensor's dtype; the third input (minLSTM's k_i) only with GATES 2."""
    tl.store(pda, cast(d1, pda.dtype.element_ty), mask=ok)
    tl.store(pdb, cast(d2, pdb.dtype.element_ty), mask=ok)
    if GATES == 2:
        tl.store(pdi, cast(d3, pdi.dtype.element_ty), mask=ok)


@triton.jit
def _scan_seq_fwd(A, Bv, Iv, H0, H, T, D,
                  stride_ab, stride_at, stride_ad, stride_bb, stride_bt, stride_bd, stride_ib, stride_it, stride_id,
                  stride_h0b, stride_h0d, stride_hb, stride_ht, stride_hd,
                  HAS_H0: tl.constexpr, GATES: tl.constexpr, BLOCK_D: tl.constexpr):
    """One program: one batch row × BLOCK_D state lanes; every step, h = a·h + b (the pointers advance by a
    step's stride, so no offset is ever formed from t: no 32-bit product to overflow)."""
    pid_b = tl.program_id(0).to(tl.int64)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    ok = offs_d < D
    if HAS_H0:
        h = tl.load(H0 + pid_b * stride_h0b + offs_d * stride_h0d, mask=ok, other=0.0).to(tl.float32)
    else:
        h = tl.zeros([BLOCK_D], tl.float32)
    pa = A + pid_b * stride_ab + offs_d * stride_ad
    pb = Bv + pid_b * stride_bb + offs_d * stride_bd
    pi = Iv + pid_b * stride_ib + offs_d * stride_id
    ph = H + pid_b * stride_hb + offs_d * stride_hd
    for _ in range(T):
        a, b = _coefficients(pa, pb, pi, ok, GATES)
        h = a * h + b
        tl.store(ph, cast(h, H.dtype.element_ty), mask=ok)
        pa += stride_at
        pb += stride_bt
        pi += stride_it
        ph += stride_ht


@triton.jit
def _scan_seq_bwd(A, Bv, Iv, H0, H, G, DA, DB, DI, DH0, T, D,
                  stride_ab, stride_at, stride_ad, stride_bb, stride_bt, stride_bd, stride_ib, stride_it, stride_id,
                  stride_h0b, stride_h0d, stride_hb, stride_ht, stride_hd, stride_gb, stride_gt, stride_gd,
                  stride_dab, stride_dat, stride_dad, stride_dbb, stride_dbt, stride_dbd, stride_dib, stride_dit,
                  stride_did, stride_dh0b, stride_dh0d,
                  HAS_H0: tl.constexpr, GATES: tl.constexpr, BLOCK_D: tl.constexpr):
    """One program: one batch row × BLOCK_D lanes, from the last step: dh_t = g_t + a_{t+1}·dh_{t+1}, then
    the inputs' gradients (``_input_grads``); a_t is kept for the step before, and step 0, whose h_{t−1} is h0
    (read once), is peeled off the loop, which then has no mask but D's."""
    pid_b = tl.program_id(0).to(tl.int64)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    ok = offs_d < D
    last = pid_b * 0 + (T - 1)                       # 64-bit, also where T is specialised to a constant
    pa = A + pid_b * stride_ab + offs_d * stride_ad + last * stride_at
    pb = Bv + pid_b * stride_bb + offs_d * stride_bd + last * stride_bt
    pi = Iv + pid_b * stride_ib + offs_d * stride_id + last * stride_it
    ph = H + pid_b * stride_hb + offs_d * stride_hd + (last - 1) * stride_ht      # h_{t−1}
    pg = G + pid_b * stride_gb + offs_d * stride_gd + last * stride_gt
    pda = DA + pid_b * stride_dab + offs_d * stride_dad + last * stride_dat
    pdb = DB + pid_b * stride_dbb + offs_d * stride_dbd + last * stride_dbt
    pdi = DI + pid_b * stride_dib + offs_d * stride_did + last * stride_dit
    if HAS_H0:
        h0 = tl.load(H0 + pid_b * stride_h0b + offs_d * stride_h0d, mask=ok, other=0.0).to(tl.float32)
    else:
        h0 = tl.zeros([BLOCK_D], tl.float32)
    dh = tl.zeros([BLOCK_D], tl.float32)
    a_next = tl.zeros([BLOCK_D], tl.float32)        # a_T: nothing after the last step (dh is 0 there)
    for _ in range(T - 1):                          # t = T − 1, ..., 1: h_{t−1} is in H
        dh = tl.load(pg, mask=ok, other=0.0).to(tl.float32) + a_next * dh
        h_prev = tl.load(ph, mask=ok, other=0.0).to(tl.float32)
        a_next, d1, d2, d3 = _input_grads(pa, pb, pi, ok, dh, h_prev, GATES)
        _store_grads(pda, pdb, pdi, d1, d2, d3, ok, GATES)
        pa -= stride_at
        pb -= stride_bt
        pi -= stride_it
        ph -= stride_ht
        pg -= stride_gt
        pda -= stride_dat
        pdb -= stride_dbt
        pdi -= stride_dit
    dh = tl.load(pg, mask=ok, other=0.0).to(tl.float32) + a_next * dh     # t = 0: h_{−1} is h0 (or 0)
    a0, d1, d2, d3 = _input_grads(pa, pb, pi, ok, dh, h0, GATES)
    _store_grads(pda, pdb, pdi, d1, d2, d3, ok, GATES)
    if HAS_H0:
        tl.store(DH0 + pid_b * stride_dh0b + offs_d * stride_dh0d, cast(a0 * dh, DH0.dtype.element_ty), mask=ok)


@triton.jit
def _scan_chunk_reduce(A, Bv, Iv, P, S, T, D, CHUNK,
                       stride_ab, stride_at, stride_ad, stride_bb, stride_bt, stride_bd, stride_ib, stride_it,
                       stride_id, stride_pb, stride_pc, stride_pd, stride_sb, stride_sc, stride_sd,
                       REVERSE: tl.constexpr, GATES: tl.constexpr, BLOCK_D: tl.constexpr):
    """One program: chunk c of one batch row × BLOCK_D lanes, walked step by step; its map h ↦ p·h + s
    (p = ∏a, s the chunk's h from a zero start) into P[b, c] and S[b, c].  REVERSE (the backward, Bv = G, taken
    as it is): from the chunk's last step down, with the coefficient a_{t+1} (the next chunk's first, 0 at T)."""
    pid_b = tl.program_id(0).to(tl.int64)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    c = tl.program_id(2)
    ok = offs_d < D
    t0 = c * CHUNK
    n = tl.minimum(CHUNK, T - t0)
    p = tl.full([BLOCK_D], 1.0, tl.float32)
    s = tl.zeros([BLOCK_D], tl.float32)
    if REVERSE:
        last = (t0 + n - 1).to(tl.int64)
        pa = A + pid_b * stride_ab + offs_d * stride_ad + last * stride_at
        pi = Iv + pid_b * stride_ib + offs_d * stride_id + last * stride_it
        pb = Bv + pid_b * stride_bb + offs_d * stride_bd + last * stride_bt
        # lanes whose step t0 + n exists.  Not ok & (a scalar): triton 3.9's interpreter makes that an int32
        # mask it then refuses; the compare broadcast over the lanes first (0·offs_d: the compiler folds it)
        a_next = _gate_a(pa + stride_at, pi + stride_it, ok & (t0 + n < T + 0 * offs_d), GATES)
        for _ in range(n):
            s = tl.load(pb, mask=ok, other=0.0).to(tl.float32) + a_next * s
            p = a_next * p
            a_next = _gate_a(pa, pi, ok, GATES)
            pa -= stride_at
            pi -= stride_it
            pb -= stride_bt
    else:
        pa = A + pid_b * stride_ab + offs_d * stride_ad + t0.to(tl.int64) * stride_at
        pb = Bv + pid_b * stride_bb + offs_d * stride_bd + t0.to(tl.int64) * stride_bt
        pi = Iv + pid_b * stride_ib + offs_d * stride_id + t0.to(tl.int64) * stride_it
        for _ in range(n):
            a, b = _coefficients(pa, pb, pi, ok, GATES)
            s = a * s + b
            p = a * p
            pa += stride_at
            pb += stride_bt
            pi += stride_it
    tl.store(P + pid_b * stride_pb + c * stride_pc + offs_d * stride_pd, p, mask=ok)
    tl.store(S + pid_b * stride_sb + c * stride_sc + offs_d * stride_sd, s, mask=ok)


@triton.jit
def _scan_chunk_carry(P, S, C, H0, A, Iv, DH0, NC, D,
                      stride_pb, stride_pc, stride_pd, stride_sb, stride_sc, stride_sd, stride_cb, stride_cc,
                      stride_cd, stride_h0b, stride_h0d, stride_ab, stride_ad, stride_ib, stride_id, stride_dh0b,
                      stride_dh0d,
                      HAS_H0: tl.constexpr, REVERSE: tl.constexpr, GATES: tl.constexpr, BLOCK_D: tl.constexpr):
    """One program: one batch row × BLOCK_D lanes, the chunks in order (REVERSE: from the last); C[b, c] is
    the state entering chunk c, then h = p_c·h + s_c.  A zero state skips the product: an overflowed ∏a
    times 0 is NaN where the step-by-step loop gives 0.  REVERSE ends at dh_0: DH0 = a_0·dh_0 (HAS_H0)."""
    pid_b = tl.program_id(0).to(tl.int64)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    ok = offs_d < D
    if HAS_H0 and not REVERSE:
        h = tl.load(H0 + pid_b * stride_h0b + offs_d * stride_h0d, mask=ok, other=0.0).to(tl.float32)
    else:
        h = tl.zeros([BLOCK_D], tl.float32)
    for i in range(NC):
        c = NC - 1 - i if REVERSE else i
        tl.store(C + pid_b * stride_cb + c * stride_cc + offs_d * stride_cd, h, mask=ok)
        p = tl.load(P + pid_b * stride_pb + c * stride_pc + offs_d * stride_pd, mask=ok, other=1.0)
        s = tl.load(S + pid_b * stride_sb + c * stride_sc + offs_d * stride_sd, mask=ok, other=0.0)
        h = tl.where(h == 0.0, s, p * h + s)
    if REVERSE and HAS_H0:
        a0 = _gate_a(A + pid_b * stride_ab + offs_d * stride_ad, Iv + pid_b * stride_ib + offs_d * stride_id, ok,
                     GATES)
        tl.store(DH0 + pid_b * stride_dh0b + offs_d * stride_dh0d, cast(a0 * h, DH0.dtype.element_ty), mask=ok)


@triton.jit
def _scan_chunk_fwd(A, Bv, Iv, C, H, T, D, CHUNK,
                    stride_ab, stride_at, stride_ad, stride_bb, stride_bt, stride_bd, stride_ib, stride_it, stride_id,
                    stride_cb, stride_cc, stride_cd, stride_hb, stride_ht, stride_hd,
                    GATES: tl.constexpr, BLOCK_D: tl.constexpr):
    """One program: chunk c of one batch row × BLOCK_D lanes, from the state entering it (C[b, c]), as the
    sequential plan walks T: h = a·h + b, one FMA a step."""
    pid_b = tl.program_id(0).to(tl.int64)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    c = tl.program_id(2)
    ok = offs_d < D
    t0 = (c * CHUNK).to(tl.int64)
    h = tl.load(C + pid_b * stride_cb + c * stride_cc + offs_d * stride_cd, mask=ok, other=0.0)
    pa = A + pid_b * stride_ab + offs_d * stride_ad + t0 * stride_at
    pb = Bv + pid_b * stride_bb + offs_d * stride_bd + t0 * stride_bt
    pi = Iv + pid_b * stride_ib + offs_d * stride_id + t0 * stride_it
    ph = H + pid_b * stride_hb + offs_d * stride_hd + t0 * stride_ht
    for _ in range(tl.minimum(CHUNK, T - c * CHUNK)):
        a, b = _coefficients(pa, pb, pi, ok, GATES)
        h = a * h + b
        tl.store(ph, cast(h, H.dtype.element_ty), mask=ok)
        pa += stride_at
        pb += stride_bt
        pi += stride_it
        ph += stride_ht


@triton.jit
def _scan_chunk_bwd(A, Bv, Iv, H0, H, G, C, DA, DB, DI, T, D, CHUNK,
                    stride_ab, stride_at, stride_ad, stride_bb, stride_bt, stride_bd, stride_ib, stride_it, stride_id,
                    stride_h0b, stride_h0d, stride_hb, stride_ht, stride_hd, stride_gb, stride_gt, stride_gd,
                    stride_cb, stride_cc, stride_cd, stride_dab, stride_dat, stride_dad, stride_dbb, stride_dbt,
                    stride_dbd, stride_dib, stride_dit, stride_did,
                    HAS_H0: tl.constexpr, GATES: tl.constexpr, BLOCK_D: tl.constexpr):
    """One program: chunk c of one batch row × BLOCK_D lanes, from its last step down, from dh entering it
    from above (C[b, c]), as the sequential plan's backward: dh_t = g_t + a_{t+1}·dh_{t+1}, then the inputs'
    gradients; step 0 (chunk 0's first), whose h_{t−1} is h0, is peeled off the loop."""
    pid_b = tl.program_id(0).to(tl.int64)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    c = tl.program_id(2)
    ok = offs_d < D
    t0 = c * CHUNK
    n = tl.minimum(CHUNK, T - t0)
    last = (t0 + n - 1).to(tl.int64)
    pa = A + pid_b * stride_ab + offs_d * stride_ad + last * stride_at
    pb = Bv + pid_b * stride_bb + offs_d * stride_bd + last * stride_bt
    pi = Iv + pid_b * stride_ib + offs_d * stride_id + last * stride_it
    ph = H + pid_b * stride_hb + offs_d * stride_hd + (last - 1) * stride_ht      # h_{t−1}
    pg = G + pid_b * stride_gb + offs_d * stride_gd + last * stride_gt
    pda = DA + pid_b * stride_dab + offs_d * stride_dad + last * stride_dat
    pdb = DB + pid_b * stride_dbb + offs_d * stride_dbd + last * stride_dbt
    pdi = DI + pid_b * stride_dib + offs_d * stride_did + last * stride_dit
    dh = tl.load(C + pid_b * stride_cb + c * stride_cc + offs_d * stride_cd, mask=ok, other=0.0)
    a_next = _gate_a(pa + stride_at, pi + stride_it, ok & (t0 + n < T + 0 * offs_d), GATES)   # see the reduce
    for _ in range(n - (c == 0).to(tl.int32)):      # t = last, ..., max(t0, 1): h_{t−1} is in H
        dh = tl.load(pg, mask=ok, other=0.0).to(tl.float32) + a_next * dh
        h_prev = tl.load(ph, mask=ok, other=0.0).to(tl.float32)
        a_next, d1, d2, d3 = _input_grads(pa, pb, pi, ok, dh, h_prev, GATES)
        _store_grads(pda, pdb, pdi, d1, d2, d3, ok, GATES)
        pa -= stride_at
        pb -= stride_bt
        pi -= stride_it
        ph -= stride_ht
        pg -= stride_gt
        pda -= stride_dat
        pdb -= stride_dbt
        pdi -= stride_dit
    if c == 0:                                      # t = 0: h_{−1} is h0 (or 0)
        if HAS_H0:
            h0 = tl.load(H0 + pid_b * stride_h0b + offs_d * stride_h0d, mask=ok, other=0.0).to(tl.float32)
        else:
            h0 = tl.zeros([BLOCK_D], tl.float32)
        dh = tl.load(pg, mask=ok, other=0.0).to(tl.float32) + a_next * dh
        a0, d1, d2, d3 = _input_grads(pa, pb, pi, ok, dh, h0, GATES)     # a0: the carry pass's dh0
        _store_grads(pda, pdb, pdi, d1, d2, d3, ok, GATES)


def _cfg(bt, bd, warps):
    return triton.Config({"BLOCK_T": bt, "BLOCK_D": bd}, num_warps=warps, num_stages=1)


def _seq_cfg(bd, warps):
    return triton.Config({"BLOCK_D": bd}, num_warps=warps, num_stages=1)


# Autotune candidates (sm_80 and sm_90, compiled spill-free under triton 3.6 and 3.9 by `seqbench inspect`):
# narrow D blocks give B·D/BLOCK_D programs to fill the SMs at small batch; longer chunks fewer carries.
CONFIGS = [_cfg(32, 32, 2), _cfg(64, 32, 4), _cfg(32, 64, 4), _cfg(64, 64, 4), _cfg(128, 32, 4)]
# The sequential and chunked plans: 8 lanes per thread (one 16-byte load of a 16-bit tensor) or 4 (fp32's).
SEQ_CONFIGS = [_seq_cfg(256, 1), _seq_cfg(512, 2), _seq_cfg(1024, 4), _seq_cfg(128, 1)]
# The interpreter runs one program at a time: small tiles so tests cross chunk and block edges.
INTERPRETER = dict(BLOCK_T=16, BLOCK_D=16, num_warps=4)
MAX_D = 65_535 * 16          # D blocks ride grid axis 1 (at most 65,535), BLOCK_D >= 16
BYTES_IN_FLIGHT = 3_000_000  # HBM bandwidth × latency (Little's law): about 4.8 TB/s × 0.6 µs on an H200
MIN_CHUNK = 16               # the chunked plan's shortest chunk: its carry pass then reads ≤ 1/16 of the steps
MAX_CHUNKS = 65_535          # chunks ride grid axis 2
# "associative" is chosen by no shape: the static counts (`seqbench inspect --peers`) put it at 3× the chunked
# plan's instructions per element; it stays, forced by ``_plan``, until a GPU times the two side by side.
PLANS = ("sequential", "chunked", "associative")


def plan_for(B: int, D: int, dtype: torch.dtype) -> str:
    """The plan for B·D lanes: sequential once the lanes' loads of a step (a and b, one element each) keep
    BYTES_IN_FLIGHT in flight, the chunked scan below that (its chunks multiply the lanes)."""
    return "sequential" if B * D * 2 * dtype.itemsize >= BYTES_IN_FLIGHT else "chunked"


def chunk_for(B: int, T: int, D: int, dtype: torch.dtype) -> int:
    """Steps per chunk of the chunked plan: enough chunks that their B·D·chunks lanes keep BYTES_IN_FLIGHT in
    flight, as the sequential plan's line asks, but chunks of at least MIN_CHUNK steps."""
    lanes = triton.cdiv(BYTES_IN_FLIGHT, 2 * dtype.itemsize)
    chunks = max(1, min(triton.cdiv(lanes, B * D), triton.cdiv(T, MIN_CHUNK), MAX_CHUNKS))
    chunk = min(T, max(MIN_CHUNK, T // chunks))     # rounded down: at least the chunks asked for
    return chunk if triton.cdiv(T, chunk) <= MAX_CHUNKS else triton.cdiv(T, MAX_CHUNKS)


# plan -> (forward kernels, backward kernels), in launch order
KERNELS = {"sequential": ((_scan_seq_fwd,), (_scan_seq_bwd,)),
           "chunked": ((_scan_chunk_reduce, _scan_chunk_carry, _scan_chunk_fwd),
                       (_scan_chunk_reduce, _scan_chunk_carry, _scan_chunk_bwd)),
           "associative": ((_scan_fwd,), (_scan_bwd,))}
_LANE_KERNELS = KERNELS["sequential"][0] + KERNELS["sequential"][1] + KERNELS["chunked"][0] + KERNELS["chunked"][1]


@functools.lru_cache(maxsize=None)
def _tuned(kernel):
    configs = SEQ_CONFIGS if kernel in _LANE_KERNELS else CONFIGS
    key = [k for k in ("T", "D", "NC", "GATES", "REVERSE") if k in kernel.arg_names]
    return autotune(kernel, configs, key, kernel.__name__.strip("_"))


def _launch(kernel, args: dict, B: int, D: int, device, chunks: int | None = None):
    """Grid (B, D blocks) or, with ``chunks``, (B, D blocks, chunks)."""
    extra = (chunks,) if chunks else ()
    if device.type == "cuda":
        _tuned(kernel)[lambda m: (B, triton.cdiv(D, m["BLOCK_D"]), *extra)](**args)
    elif kernel in _LANE_KERNELS:                   # its one tile size: no BLOCK_T
        kernel[(B, triton.cdiv(D, INTERPRETER["BLOCK_D"]), *extra)](**args, BLOCK_D=INTERPRETER["BLOCK_D"])
    else:
        kernel[(B, triton.cdiv(D, INTERPRETER["BLOCK_D"]))](**args, **INTERPRETER)


def fwd_args(a, b, h0, h) -> dict:
    """The associative plan's forward."""
    B, T, D = a.shape
    return dict(A=a, Bv=b, H0=h0, H=h, T=T, D=D, **strides("a", a, "btd"), **strides("b", b, "btd"),
                **strides("h0", h0, "bd"), **strides("h", h, "btd"), HAS_H0=h0 is not None)


def bwd_args(a, h0, h, g, da, db, dh0) -> dict:
    """The associative plan's backward."""
    B, T, D = a.shape
    return dict(A=a, H0=h0, H=h, G=g, DA=da, DB=db, DH0=dh0, T=T, D=D, **strides("a", a, "btd"),
                **strides("h0", h0, "bd"), **strides("h", h, "btd"), **strides("g", g, "btd"),
                **strides("da", da, "btd"), **strides("db", db, "btd"), **strides("dh0", dh0, "bd"),
                HAS_H0=h0 is not None)


def input_args(a, b, i, gates: int) -> dict:
    """The lane kernels' inputs: a and b (GATES 0), the minGRU's k and h̃ (1), the minLSTM's k_f, h̃ and k_i (2).
    Where there is no k_i, Iv is a again (never read)."""
    i = a if i is None else i
    return dict(A=a, Bv=b, Iv=i, **strides("a", a, "btd"), **strides("b", b, "btd"), **strides("i", i, "btd"),
                GATES=gates)


def _grads_args(da, db, di) -> dict:
    di = da if di is None else di
    return dict(DA=da, DB=db, DI=di, **strides("da", da, "btd"), **strides("db", db, "btd"),
                **strides("di", di, "btd"))


def seq_fwd_args(a, b, i, h0, h, gates: int = 0) -> dict:
    B, T, D = a.shape
    return dict(input_args(a, b, i, gates), H0=h0, H=h, T=T, D=D, **strides("h0", h0, "bd"),
                **strides("h", h, "btd"), HAS_H0=h0 is not None)


def seq_bwd_args(a, b, i, h0, h, g, da, db, di, dh0, gates: int = 0) -> dict:
    B, T, D = a.shape
    return dict(input_args(a, b, i, gates), **_grads_args(da, db, di), H0=h0, H=h, G=g, DH0=dh0, T=T, D=D,
                **strides("h0", h0, "bd"), **strides("h", h, "btd"), **strides("g", g, "btd"),
                **strides("dh0", dh0, "bd"), HAS_H0=h0 is not None)


def chunk_args(x, y, i, p, s, c, h0, dh0, chunk: int, reverse: bool, gates: int = 0) -> tuple[dict, dict]:
    """The chunked plan's reduce and carry arguments: x, y are the inputs (a, b) forward and (a, g) backward,
    i the minLSTM's k_i; p, s, c the (B, chunks, D) fp32 scratch of the chunk maps and the carries."""
    B, T, D = x.shape
    reduce = dict(input_args(x, y, i, gates), P=p, S=s, T=T, D=D, CHUNK=chunk, **strides("p", p, "bcd"),
                  **strides("s", s, "bcd"), REVERSE=reverse)
    i = x if i is None else i
    carry = dict(P=p, S=s, C=c, H0=h0, A=x, Iv=i, DH0=dh0, NC=p.shape[1], D=D, **strides("p", p, "bcd"),
                 **strides("s", s, "bcd"), **strides("c", c, "bcd"), **strides("h0", h0, "bd"),
                 stride_ab=x.stride(0), stride_ad=x.stride(2), stride_ib=i.stride(0), stride_id=i.stride(2),
                 **strides("dh0", dh0, "bd"), HAS_H0=h0 is not None, REVERSE=reverse, GATES=gates)
    return reduce, carry


def chunk_fwd_args(a, b, i, c, h, chunk: int, gates: int = 0) -> dict:
    B, T, D = a.shape
    return dict(input_args(a, b, i, gates), C=c, H=h, T=T, D=D, CHUNK=chunk, **strides("c", c, "bcd"),
                **strides("h", h, "btd"))


def chunk_bwd_args(a, b, i, h0, h, g, c, da, db, di, chunk: int, gates: int = 0) -> dict:
    B, T, D = a.shape
    return dict(input_args(a, b, i, gates), **_grads_args(da, db, di), H0=h0, H=h, G=g, C=c, T=T, D=D,
                CHUNK=chunk, **strides("h0", h0, "bd"), **strides("h", h, "btd"), **strides("g", g, "btd"),
                **strides("c", c, "bcd"), HAS_H0=h0 is not None)


def _chunked(x, y, i, h0, dh0, gates: int, reverse: bool):
    """Launch the chunked plan's reduce and carry passes; (chunk length, chunk count, carries C)."""
    B, T, D = x.shape
    chunk = chunk_for(B, T, D, x.dtype)
    nc = triton.cdiv(T, chunk)
    p, s, c = (torch.empty(B, nc, D, device=x.device, dtype=torch.float32) for _ in range(3))
    reduce, carry = chunk_args(x, y, i, p, s, c, h0, dh0, chunk, reverse, gates)
    _launch(_scan_chunk_reduce, reduce, B, D, x.device, nc)
    _launch(_scan_chunk_carry, carry, B, D, x.device)
    return chunk, nc, c


def _scan(a, b, i, h0, plan: str, gates: int):
    B, T, D = a.shape
    h = torch.empty((B, T, D), device=a.device, dtype=a.dtype)
    if plan == "chunked":
        chunk, nc, c = _chunked(a, b, i, h0, None, gates, reverse=False)
        _launch(_scan_chunk_fwd, chunk_fwd_args(a, b, i, c, h, chunk, gates), B, D, a.device, nc)
    elif plan == "sequential":
        _launch(_scan_seq_fwd, seq_fwd_args(a, b, i, h0, h, gates), B, D, a.device)
    else:                                           # associative: plain a and b only (``_recur``)
        _launch(_scan_fwd, fwd_args(a, b, h0, h), B, D, a.device)
    return h


def _scan_backward(a, b, i, h0, h, g, plan: str, gates: int):
    """The gradients of the inputs (a, b, i) and of h0; i's is None where there is no i."""
    B, T, D = a.shape
    da, db = torch.empty_like(a), torch.empty_like(a)
    di = torch.empty_like(a) if i is not None else None
    dh0 = torch.empty_like(h0) if h0 is not None else None
    b = a if b is None else b                       # GATES 0 reads no b in the backward
    if plan == "chunked":
        chunk, nc, c = _chunked(a, g, i, h0, dh0, gates, reverse=True)
        _launch(_scan_chunk_bwd, chunk_bwd_args(a, b, i, h0, h, g, c, da, db, di, chunk, gates), B, D, a.device, nc)
    elif plan == "sequential":
        _launch(_scan_seq_bwd, seq_bwd_args(a, b, i, h0, h, g, da, db, di, dh0, gates), B, D, a.device)
    else:
        _launch(_scan_bwd, bwd_args(a, h0, h, g, da, db, dh0), B, D, a.device)
    return da, db, di, dh0


class _Scan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, i, h0, plan, gates):
        h = _scan(a, b, i, h0, plan, gates)
        ctx.save_for_backward(a, b if gates else None, i, h0, h)      # b: the minRNNs' h̃
        ctx.plan, ctx.gates = plan, gates
        return h

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        a, b, i, h0, h = ctx.saved_tensors
        return (*_scan_backward(a, b, i, h0, h, g, ctx.plan, ctx.gates), None, None)


def _torch_coefficients(a, b, i, gates: int):
    """a and b from the minRNNs' projections in torch ops: the associative plan takes no gates."""
    if gates == 1:
        return torch.sigmoid(-a), torch.sigmoid(a) * b
    f, i = torch.sigmoid(a), torch.sigmoid(i)
    return f / (f + i), i / (f + i) * b


def _recur(a, b, i, h0, plan: str, gates: int):
    """h for checked inputs, differentiable where any of them asks for it."""
    if plan == "associative" and gates:
        a, b, i, gates = *_torch_coefficients(a, b, i, gates), None, 0
    args = (a, b, i, h0)
    if torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in args):
        return _Scan.apply(*args, plan, gates)
    return _scan(*args, plan, gates)


def _check_plan(plan):
    if plan is not None and plan not in PLANS:
        raise ValueError(f"_plan must be one of {PLANS} or None, got {plan!r}")


def linear_scan(a, b, h0=None, *, _plan: str | None = None):
    """h_t = a_t ∘ h_{t−1} + b_t for every t: the sequential or the chunked plan, by shape (``plan_for``;
    ``_plan`` forces one of PLANS, for the tests and the benchmarks).

    a, b: (B, T, D) of one float dtype; h0: (B, D) or None for zeros.  Returns h (B, T, D) in that dtype,
    computed with an fp32 state.  Differentiable in a, b and h0.
    """
    check_tensor("a", a, 3, "(B, T, D)")
    check_tensor("b", b, 3, "(B, T, D)")
    if b.shape != a.shape:
        raise ValueError(f"b must have a's shape {tuple(a.shape)} (B, T, D), got {tuple(b.shape)}")
    named = [("a", a), ("b", b)]
    if h0 is not None:
        check_tensor("h0", h0, 2, "(B, D)")
        if h0.shape != (a.shape[0], a.shape[2]):
            raise ValueError(f"h0 must have shape {(a.shape[0], a.shape[2])} (B, D), got {tuple(h0.shape)}")
        named.append(("h0", h0))
    check_same(tuple(n for n, _ in named), tuple(t for _, t in named))
    if min(a.shape) < 1:
        raise ValueError(f"a and b must have B, T and D >= 1, got shape {tuple(a.shape)}")
    if a.shape[2] > MAX_D:
        raise ValueError(f"a and b: D must be at most {MAX_D:,} (CUDA's 65,535 grid rows of 16), got {a.shape[2]:,}")
    _check_plan(_plan)
    return _recur(a, b, None, h0, _plan or plan_for(a.shape[0], a.shape[2], a.dtype), 0)


# ------------------------------------------------------------------------------------ minGRU, minLSTM

def _check_min(x, weights, biases, h0):
    """x (B, T, IN); the weights (D, IN) and biases (D,) or None; h0 (B, D) or None."""
    check_tensor("x", x, 3, "(B, T, input_size)")
    D = None
    named = [("x", x)]
    for wname, w in weights:
        check_tensor(wname, w, 2, "(hidden_size, input_size)")
        D = w.shape[0] if D is None else D
        if w.shape != (D, x.shape[2]):
            raise ValueError(f"{wname} must have shape ({D}, {x.shape[2]}) (hidden_size, input_size) to match x and "
                             f"{weights[0][0]}, got {tuple(w.shape)}")
        named.append((wname, w))
    for bname, b in biases:
        if b is not None:
            check_tensor(bname, b, 1, "(hidden_size,)")
            if b.shape != (D,):
                raise ValueError(f"{bname} must have shape ({D},), got {tuple(b.shape)}")
            named.append((bname, b))
    if h0 is not None:
        check_tensor("h0", h0, 2, "(B, hidden_size)")
        if h0.shape != (x.shape[0], D):
            raise ValueError(f"h0 must have shape {(x.shape[0], D)} (B, hidden_size), got {tuple(h0.shape)}")
        named.append(("h0", h0))
    check_same(tuple(n for n, _ in named), tuple(t for _, t in named))
    if min(x.shape) < 1 or D < 1:
        raise ValueError(f"x must have B, T and input_size >= 1 and hidden_size >= 1, got x {tuple(x.shape)}, "
                         f"hidden_size {D}")
    if D > MAX_D:
        raise ValueError(f"hidden_size must be at most {MAX_D:,} (CUDA's 65,535 grid rows of 16), got {D:,}")


def _project(x, weight, bias, parts: int):
    """The projections of every step as one GEMM: ``parts`` (B, T, D) tensors."""
    y = torch.nn.functional.linear(x, weight, bias)
    return y.chunk(parts, dim=-1)


def _stacked(ws, bs):
    w = torch.cat(ws)
    b = None if all(t is None for t in bs) else torch.cat([t if t is not None else torch.zeros_like(ws[0][:, 0])
                                                            for t in bs])
    return w, b


def _min_gru(x, weight, bias, h0, plan=None):
    """One GEMM for k and h̃ of every step, then the scan with the gates inside (a and b never written)."""
    k, h_tilde = _project(x, weight, bias, 2)
    return _recur(k, h_tilde, None, h0, plan or plan_for(x.shape[0], k.shape[2], x.dtype), 1)


def _min_lstm(x, weight, bias, h0, plan=None):
    k_f, k_i, h_tilde = _project(x, weight, bias, 3)
    return _recur(k_f, h_tilde, k_i, h0, plan or plan_for(x.shape[0], k_f.shape[2], x.dtype), 2)


def min_gru(x, w_z, w_h, b_z=None, b_h=None, h0=None, *, _plan: str | None = None):
    """minGRU over a sequence: x (B, T, IN), w_z and w_h (D, IN), biases (D,) or None, h0 (B, D) or None.
    Returns h (B, T, D).  Differentiable.  ``_plan`` as linear_scan's."""
    _check_min(x, (("w_z", w_z), ("w_h", w_h)), (("b_z", b_z), ("b_h", b_h)), h0)
    _check_plan(_plan)
    return _min_gru(x, *_stacked((w_z, w_h), (b_z, b_h)), h0, _plan)


def min_lstm(x, w_f, w_i, w_h, b_f=None, b_i=None, b_h=None, h0=None, *, _plan: str | None = None):
    """minLSTM over a sequence: x (B, T, IN), w_f, w_i and w_h (D, IN), biases (D,) or None, h0 (B, D) or
    None.  Returns h (B, T, D).  Differentiable.  ``_plan`` as linear_scan's."""
    _check_min(x, (("w_f", w_f), ("w_i", w_i), ("w_h", w_h)), (("b_f", b_f), ("b_i", b_i), ("b_h", b_h)),
               h0)
    _check_plan(_plan)
    return _min_lstm(x, *_stacked((w_f, w_i, w_h), (b_f, b_i, b_h)), h0, _plan)


class _MinRNN(nn.Module):
    """The projections' weights stacked in one (PARTS·hidden, input) matrix, as one GEMM reads them."""

    PARTS: int
    NAMES: tuple[str, ...]

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None):
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.input_size, self.hidden_size = input_size, hidden_size
        self.proj = nn.Linear(input_size, self.PARTS * hidden_size, bias=bias, device=device, dtype=dtype)

    def weights(self):
        """The per-gate weights and biases in the function's order (views of the stacked ones)."""
        ws = list(self.proj.weight.chunk(self.PARTS))
        bs = list(self.proj.bias.chunk(self.PARTS)) if self.proj.bias is not None else [None] * self.PARTS
        return ws + bs

    def forward(self, x, h0=None):
        """x (B, T, input_size) -> (h (B, T, hidden_size), h_n (B, hidden_size))."""
        check_tensor("x", x, 3, "(B, T, input_size)")
        if x.shape[2] != self.input_size:
            raise ValueError(f"x must have {self.input_size} features in its last dim, got {tuple(x.shape)}")
        _check_min(x, tuple(zip(self.NAMES, self.proj.weight.chunk(self.PARTS))), (), h0)
        h = self._run(x, self.proj.weight, self.proj.bias, h0)
        return h, h[:, -1].clone()          # h_n never aliases h (nn.GRU's rule)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.proj.bias is not None}"


class MinGRU(_MinRNN):
    """minGRU layer: ``MinGRU(input_size, hidden_size)(x, h0)`` with x batch-first."""
    PARTS, NAMES = 2, ("w_z", "w_h")
    _run = staticmethod(_min_gru)


class MinLSTM(_MinRNN):
    """minLSTM layer: ``MinLSTM(input_size, hidden_size)(x, h0)`` with x batch-first."""
    PARTS, NAMES = 3, ("w_f", "w_i", "w_h")
    _run = staticmethod(_min_lstm)


# ----------------------------------------------------------------------------------------------
# compile-only builds for `seqbench inspect`
# ----------------------------------------------------------------------------------------------

def compile_builds(family: str, dtypes=(torch.float16,)):
    """Every plan's forward and backward kernels, every config, at B=16, T=1024, D=1024 with h0 (the chunked
    plan's passes at that shape's chunk_for); the lane kernels plain (GATES 0) and with the minLSTM's gates
    (2, the most live values; the minGRU's are a subset)."""
    for dtype in dtypes:
        t = lambda *s: torch.empty(*s, device="meta", dtype=dtype)  # noqa: E731
        a, h0 = t(16, 1024, 1024), t(16, 1024)
        chunk = chunk_for(16, 1024, 1024, dtype)
        p = torch.empty(16, triton.cdiv(1024, chunk), 1024, device="meta", dtype=torch.float32)
        for cfg in SEQ_CONFIGS:
            for gates, i, tag in ((0, None, ""), (2, a, ".min_lstm")):
                for reverse, part in ((False, "fwd"), (True, "bwd")):
                    reduce, carry = chunk_args(a, a, i, p, p, p, h0, h0, chunk, reverse, gates)
                    yield f"scan.chunk_reduce.{part}{tag}", _scan_chunk_reduce, reduce, cfg
                    yield f"scan.chunk_carry.{part}{tag}", _scan_chunk_carry, carry, cfg
                yield f"scan.chunk_fwd{tag}", _scan_chunk_fwd, chunk_fwd_args(a, a, i, p, a, chunk, gates), cfg
                yield (f"scan.chunk_bwd{tag}", _scan_chunk_bwd,
                       chunk_bwd_args(a, a, i, h0, a, a, p, a, a, i, chunk, gates), cfg)
                yield f"scan.seq_fwd{tag}", _scan_seq_fwd, seq_fwd_args(a, a, i, h0, a, gates), cfg
                yield f"scan.seq_bwd{tag}", _scan_seq_bwd, seq_bwd_args(a, a, i, h0, a, a, a, a, i, h0, gates), cfg
        for cfg in CONFIGS:
            yield "scan.fwd", _scan_fwd, fwd_args(a, a, h0, a), cfg
            yield "scan.bwd", _scan_bwd, bwd_args(a, h0, a, a, a, a, h0), cfg
