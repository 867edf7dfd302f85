"""A linear recurrence as a parallel scan, and the minGRU / minLSTM of Feng et al. 2024 ("Were RNNs All We
Needed?", arXiv 2410.01201) built on it, in Triton.

    h_t = a_t ∘ h_{t−1} + b_t,      h_{−1} = h0 (or 0)

Two plans, chosen by shape (``plan_for``); the state is fp32 whatever the input dtype:

* **sequential**: each thread walks T for its own state lanes, h = a·h + b, one FMA per element, its loads
  vectorised along D (fla's ``fused_recurrent_hgrn`` does the same).  Every step's loads are independent of
  h, but a step waits for its own: the plan fills HBM only when the lanes together keep enough bytes in
  flight.  Little's law puts the line at bandwidth × latency, about 4.8 TB/s × 0.6 µs ≈ 3 MB on an H200
  (BYTES_IN_FLIGHT), so B·D lanes reading a and b (2 elements a step) take this plan from
  B·D·2·element size ≥ 3 MB: 750k lanes in 16 bits, 375k in fp32.
* **associative**, for fewer lanes: the pairs (a_t, b_t) compose associatively, (a₁, b₁) then (a₂, b₂) =
  (a₁a₂, a₂b₁ + b₂), so h over a chunk of T is one ``tl.associative_scan`` (O(log chunk) depth); a program
  walks the chunks of its (batch row, D block) in order and carries the last state into the next: T / BLOCK_T
  dependent steps instead of T, BLOCK_T rows of work at each.

Backward, for g_t = ∂L/∂h_t: the reverse scan dh_t = g_t + a_{t+1} ∘ dh_{t+1} (the same combine, with
the chunk read backwards), then da_t = dh_t ∘ h_{t−1}, db_t = dh_t and dh0 = a_0 ∘ dh_0.

minGRU:  z = σ(x W_zᵀ + b_z),  h̃ = x W_hᵀ + b_h,           h_t = (1 − z_t) ∘ h_{t−1} + z_t ∘ h̃_t
minLSTM: f, i = σ(x W_fᵀ + b_f), σ(x W_iᵀ + b_i),  h̃ = x W_hᵀ + b_h,
         h_t = f'_t ∘ h_{t−1} + i'_t ∘ h̃_t  with f' = f / (f + i), i' = i / (f + i)
The gates read x only, never h: the projections of all steps are one GEMM, the recurrence one scan.

Range (the associative plan; the sequential one is the loop itself): the carried state enters each chunk
through its first b (b₀ + a₀·h), so a product of a's that overflows never multiplies a zero state (the loop's 0 · 1e20 · 1e20 = 0 stays 0, not inf · 0 = NaN).  What
a scan cannot avoid: within a chunk, a segment whose ∏a overflows fp32 (|a| ≫ 1 over many steps) times a
zero prefix state is NaN, and times a nonzero one is inf, where the sequential loop may come back to
finite values.  With |a| ≤ 1, as for the minGRU's 1 − z and the minLSTM's f', no product overflows.
This is the paper's plain (not log-space) form; 1 − z is taken as σ(−·), exact where z is near 1.

Dimensions (one meaning per letter in every kernel file):
    B    batch                 T    time steps              D    state (hidden) size     IN  input size
    BLOCK_T  a chunk of time steps                          BLOCK_D  a program's state units
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
def _scan_seq_fwd(A, Bv, H0, H, T, D,
                  stride_ab, stride_at, stride_ad, stride_bb, stride_bt, stride_bd, stride_h0b, stride_h0d,
                  stride_hb, stride_ht, stride_hd,
                  HAS_H0: tl.constexpr, BLOCK_D: tl.constexpr):
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
    ph = H + pid_b * stride_hb + offs_d * stride_hd
    for _ in range(T):
        h = tl.load(pa, mask=ok, other=0.0).to(tl.float32) * h + tl.load(pb, mask=ok, other=0.0).to(tl.float32)
        tl.store(ph, cast(h, H.dtype.element_ty), mask=ok)
        pa += stride_at
        pb += stride_bt
        ph += stride_ht


@triton.jit
def _scan_seq_bwd(A, H0, H, G, DA, DB, DH0, T, D,
                  stride_ab, stride_at, stride_ad, stride_h0b, stride_h0d, stride_hb, stride_ht, stride_hd,
                  stride_gb, stride_gt, stride_gd, stride_dab, stride_dat, stride_dad, stride_dbb, stride_dbt,
                  stride_dbd, stride_dh0b, stride_dh0d,
                  HAS_H0: tl.constexpr, BLOCK_D: tl.constexpr):
    """One program: one batch row × BLOCK_D lanes, from the last step: dh_t = g_t + a_{t+1}·dh_{t+1},
    da_t = dh_t·h_{t−1}, db_t = dh_t; a_t is kept for the step before, and step 0, whose h_{t−1} is h0 (read
    once), is peeled off the loop, which then has no mask but D's."""
    pid_b = tl.program_id(0).to(tl.int64)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    ok = offs_d < D
    last = pid_b * 0 + (T - 1)                       # 64-bit, also where T is specialised to a constant
    pa = A + pid_b * stride_ab + offs_d * stride_ad + last * stride_at
    ph = H + pid_b * stride_hb + offs_d * stride_hd + (last - 1) * stride_ht      # h_{t−1}
    pg = G + pid_b * stride_gb + offs_d * stride_gd + last * stride_gt
    pda = DA + pid_b * stride_dab + offs_d * stride_dad + last * stride_dat
    pdb = DB + pid_b * stride_dbb + offs_d * stride_dbd + last * stride_dbt
    if HAS_H0:
        h0 = tl.load(H0 + pid_b * stride_h0b + offs_d * stride_h0d, mask=ok, other=0.0).to(tl.float32)
    else:
        h0 = tl.zeros([BLOCK_D], tl.float32)
    dh = tl.zeros([BLOCK_D], tl.float32)
    a_next = tl.zeros([BLOCK_D], tl.float32)        # a_T: nothing after the last step (dh is 0 there)
    for _ in range(T - 1):                          # t = T − 1, ..., 1: h_{t−1} is in H
        dh = tl.load(pg, mask=ok, other=0.0).to(tl.float32) + a_next * dh
        a_next = tl.load(pa, mask=ok, other=0.0).to(tl.float32)
        tl.store(pda, cast(dh * tl.load(ph, mask=ok, other=0.0).to(tl.float32), DA.dtype.element_ty), mask=ok)
        tl.store(pdb, cast(dh, DB.dtype.element_ty), mask=ok)
        pa -= stride_at
        ph -= stride_ht
        pg -= stride_gt
        pda -= stride_dat
        pdb -= stride_dbt
    dh = tl.load(pg, mask=ok, other=0.0).to(tl.float32) + a_next * dh     # t = 0: h_{−1} is h0 (or 0)
    tl.store(pda, cast(dh * h0, DA.dtype.element_ty), mask=ok)
    tl.store(pdb, cast(dh, DB.dtype.element_ty), mask=ok)
    if HAS_H0:
        a0 = tl.load(pa, mask=ok, other=0.0).to(tl.float32)
        tl.store(DH0 + pid_b * stride_dh0b + offs_d * stride_dh0d, cast(a0 * dh, DH0.dtype.element_ty), mask=ok)


def _cfg(bt, bd, warps):
    return triton.Config({"BLOCK_T": bt, "BLOCK_D": bd}, num_warps=warps, num_stages=1)


def _seq_cfg(bd, warps):
    return triton.Config({"BLOCK_D": bd}, num_warps=warps, num_stages=1)


# Autotune candidates (sm_80 and sm_90, compiled spill-free under triton 3.6 and 3.9 by `seqbench inspect`):
# narrow D blocks give B·D/BLOCK_D programs to fill the SMs at small batch; longer chunks fewer carries.
CONFIGS = [_cfg(32, 32, 2), _cfg(64, 32, 4), _cfg(32, 64, 4), _cfg(64, 64, 4), _cfg(128, 32, 4)]
# The sequential plan: 8 lanes per thread (one 16-byte load of a 16-bit tensor) or 4 (fp32's 16 bytes).
SEQ_CONFIGS = [_seq_cfg(256, 1), _seq_cfg(512, 2), _seq_cfg(1024, 4), _seq_cfg(128, 1)]
# The interpreter runs one program at a time: small tiles so tests cross chunk and block edges.
INTERPRETER = dict(BLOCK_T=16, BLOCK_D=16, num_warps=4)
MAX_D = 65_535 * 16          # D blocks ride grid axis 1 (at most 65,535), BLOCK_D >= 16
BYTES_IN_FLIGHT = 3_000_000  # HBM bandwidth × latency (Little's law): about 4.8 TB/s × 0.6 µs on an H200
PLANS = ("sequential", "associative")


def plan_for(B: int, D: int, dtype: torch.dtype) -> str:
    """The plan for B·D lanes: sequential once the lanes' loads of a step (a and b, one element each) keep
    BYTES_IN_FLIGHT in flight, the associative chunk scan below that."""
    return "sequential" if B * D * 2 * dtype.itemsize >= BYTES_IN_FLIGHT else "associative"


KERNELS = {"sequential": (_scan_seq_fwd, _scan_seq_bwd), "associative": (_scan_fwd, _scan_bwd)}


@functools.lru_cache(maxsize=None)
def _tuned(kernel):
    configs = SEQ_CONFIGS if kernel in KERNELS["sequential"] else CONFIGS
    return autotune(kernel, configs, ["T", "D"], kernel.__name__.strip("_"))


def _launch(kernel, args: dict, B: int, D: int, device):
    if device.type == "cuda":
        _tuned(kernel)[lambda m: (B, triton.cdiv(D, m["BLOCK_D"]))](**args)
    elif kernel in KERNELS["sequential"]:          # its one tile size: no BLOCK_T
        kernel[(B, triton.cdiv(D, INTERPRETER["BLOCK_D"]))](**args, BLOCK_D=INTERPRETER["BLOCK_D"])
    else:
        kernel[(B, triton.cdiv(D, INTERPRETER["BLOCK_D"]))](**args, **INTERPRETER)


def fwd_args(a, b, h0, h) -> dict:
    B, T, D = a.shape
    return dict(A=a, Bv=b, H0=h0, H=h, T=T, D=D, **strides("a", a, "btd"), **strides("b", b, "btd"),
                **strides("h0", h0, "bd"), **strides("h", h, "btd"), HAS_H0=h0 is not None)


def bwd_args(a, h0, h, g, da, db, dh0) -> dict:
    B, T, D = a.shape
    return dict(A=a, H0=h0, H=h, G=g, DA=da, DB=db, DH0=dh0, T=T, D=D, **strides("a", a, "btd"),
                **strides("h0", h0, "bd"), **strides("h", h, "btd"), **strides("g", g, "btd"),
                **strides("da", da, "btd"), **strides("db", db, "btd"), **strides("dh0", dh0, "bd"),
                HAS_H0=h0 is not None)


def _scan(a, b, h0, plan):
    h = torch.empty(a.shape, device=a.device, dtype=a.dtype)
    _launch(KERNELS[plan][0], fwd_args(a, b, h0, h), a.shape[0], a.shape[2], a.device)
    return h


class _LinearScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, h0, plan):
        h = _scan(a, b, h0, plan)
        ctx.save_for_backward(a, h0, h)
        ctx.plan = plan
        return h

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        a, h0, h = ctx.saved_tensors
        da, db = torch.empty_like(a), torch.empty_like(a)
        dh0 = torch.empty_like(h0) if h0 is not None else None
        _launch(KERNELS[ctx.plan][1], bwd_args(a, h0, h, g, da, db, dh0), a.shape[0], a.shape[2], a.device)
        return da, db, dh0, None


def linear_scan(a, b, h0=None, *, _plan: str | None = None):
    """h_t = a_t ∘ h_{t−1} + b_t for every t: the sequential plan or the associative chunk scan, by shape
    (``plan_for``; ``_plan`` forces one, for the tests).

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
    if _plan is not None and _plan not in PLANS:
        raise ValueError(f"_plan must be one of {PLANS} or None, got {_plan!r}")
    plan = _plan or plan_for(a.shape[0], a.shape[2], a.dtype)
    args = (a, b, h0)
    if torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in args):
        return _LinearScan.apply(*args, plan)
    return _scan(*args, plan)


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


def _project(x, weight, bias, parts: int):
    """The projections of every step as one GEMM: ``parts`` (B, T, D) tensors."""
    y = torch.nn.functional.linear(x, weight, bias)
    return y.chunk(parts, dim=-1)


def _stacked(ws, bs):
    w = torch.cat(ws)
    b = None if all(t is None for t in bs) else torch.cat([t if t is not None else torch.zeros_like(ws[0][:, 0])
                                                            for t in bs])
    return w, b


def _min_gru(x, weight, bias, h0):
    k, h_tilde = _project(x, weight, bias, 2)
    return linear_scan(torch.sigmoid(-k), torch.sigmoid(k) * h_tilde, h0)


def _min_lstm(x, weight, bias, h0):
    kf, ki, h_tilde = _project(x, weight, bias, 3)
    f, i = torch.sigmoid(kf), torch.sigmoid(ki)
    s = f + i
    return linear_scan(f / s, i / s * h_tilde, h0)


def min_gru(x, w_z, w_h, b_z=None, b_h=None, h0=None):
    """minGRU over a sequence: x (B, T, IN), w_z and w_h (D, IN), biases (D,) or None, h0 (B, D) or None.
    Returns h (B, T, D).  Differentiable."""
    _check_min(x, (("w_z", w_z), ("w_h", w_h)), (("b_z", b_z), ("b_h", b_h)), h0)
    return _min_gru(x, *_stacked((w_z, w_h), (b_z, b_h)), h0)


def min_lstm(x, w_f, w_i, w_h, b_f=None, b_i=None, b_h=None, h0=None):
    """minLSTM over a sequence: x (B, T, IN), w_f, w_i and w_h (D, IN), biases (D,) or None, h0 (B, D) or
    None.  Returns h (B, T, D).  Differentiable."""
    _check_min(x, (("w_f", w_f), ("w_i", w_i), ("w_h", w_h)), (("b_f", b_f), ("b_i", b_i), ("b_h", b_h)),
               h0)
    return _min_lstm(x, *_stacked((w_f, w_i, w_h), (b_f, b_i, b_h)), h0)


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
    """Both plans' forward and backward, every config, at B=16, T=1024, D=1024 with h0."""
    for dtype in dtypes:
        t = lambda *s: torch.empty(*s, device="meta", dtype=dtype)  # noqa: E731
        a, h0 = t(16, 1024, 1024), t(16, 1024)
        for cfg in CONFIGS:
            yield "scan.fwd", _scan_fwd, fwd_args(a, a, h0, a), cfg
            yield "scan.bwd", _scan_bwd, bwd_args(a, h0, a, a, a, a, h0), cfg
        for cfg in SEQ_CONFIGS:
            yield "scan.seq_fwd", _scan_seq_fwd, fwd_args(a, a, h0, a), cfg
            yield "scan.seq_bwd", _scan_seq_bwd, bwd_args(a, h0, a, a, a, a, h0), cfg
