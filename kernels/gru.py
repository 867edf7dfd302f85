"""Fused GRU cell step, a GRU layer and ``FusedGRU`` (a drop-in ``nn.GRU``), in Triton, with
``torch.nn.GRUCell``'s weight layout and gates (r, z, n):

    r = σ(x W_irᵀ + b_ir + h W_hrᵀ + b_hr),   z = σ(x W_izᵀ + b_iz + h W_hzᵀ + b_hz)
    a_hn = h W_hnᵀ + b_hn,                     n = tanh(x W_inᵀ + b_in + r ∘ a_hn)
    h' = (1 − z) ∘ n + z ∘ h

One launch: the stacked tile holds four slots (r, z, x-side n, h-side n); the x-side matmul fills
slots r, z, in and the h-side matmul fills r, z, hn, so a_hn stays separate as the r ∘ a_hn term
needs.  Backward: one pointwise kernel from the saved (r, z, n, a_hn), then matmuls:

    ∂n = dh'∘(1−z),  ∂a_n = ∂n∘(1−n²),  ∂a_z = dh'∘(h−n)∘z(1−z),  ∂a_r = ∂a_n∘a_hn∘r(1−r)
    x side: [∂a_r, ∂a_z, ∂a_n];  h side: [∂a_r, ∂a_z, ∂a_n∘r];  dh = (h side) W_hh + dh'∘z

The layer does the input projection of all steps as one GEMM (b_ih folded in), then one fused step
per time step reading it (``HAS_XW``); its backward runs the pointwise kernel per step in reverse and
forms dW_hh with one GEMM over all steps.

Dimensions (one meaning per letter in every kernel file):
    B    batch                 T    time steps              IN   input size (I in shapes)
    HID  hidden size           BLOCK_H / BLOCK_B / BLOCK_K  a program's hidden units / batch rows / K block
Strides are ``stride_{tensor}{dim}`` (``kernels._common.strides``), dims b batch, t time, h hidden unit,
k reduction, r weight row, g gate-vector column: e.g. ``stride_xb, stride_xk`` of x (B, IN).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from torch import nn

from kernels._rnn import (FusedRNNBase, final_states, gate_matmul, launch_bwd, load4, project_inputs, split4, step_grid,
                          step_launcher, store4, tanh)
from kernels._tl import cast
from kernels._common import check_batching, check_rnn_step, dot_options, once_differentiable, strides


@triton.jit
def _gru_step_fwd(X, WIH, XW, H0, WHH, BIH, BHH, H1, GATES, B, IN, HID,
                  stride_xb, stride_xk, stride_wir, stride_wik, stride_xwb, stride_xwg, stride_hb, stride_hk,
                  stride_whr, stride_whk, stride_big, stride_bhg, stride_h1b, stride_h1h, stride_gb, stride_gh,
                  HAS_X: tl.constexpr, HAS_XW: tl.constexpr, HAS_H: tl.constexpr, HAS_BIH: tl.constexpr,
                  HAS_BHH: tl.constexpr, STORE_GATES: tl.constexpr,
                  BLOCK_H: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr,
                  PREC: tl.constexpr):
    """One program: BLOCK_H hidden units × BLOCK_B batch rows, slots (r, z, in, hn)."""
    pid_h = tl.program_id(0)
    pid_b = tl.program_id(1)
    r = tl.arange(0, 4 * BLOCK_H)
    slot = r // BLOCK_H
    j = pid_h * BLOCK_H + r % BLOCK_H
    j_ok = j < HID
    x_rows = slot * HID + j                        # W_ih gates r, z, n in slots 0, 1, 2
    x_ok = j_ok & (slot < 3)
    h_rows = tl.where(slot == 3, 2, slot) * HID + j  # W_hh gates r, z in slots 0, 1 and n in slot 3
    h_ok = j_ok & (slot != 2)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    b_ok = offs_b < B

    acc = tl.zeros([4 * BLOCK_H, BLOCK_B], tl.float32)
    if HAS_X:
        acc = gate_matmul(acc, WIH, X, stride_wir, stride_wik, stride_xb, stride_xk, x_rows, x_ok, offs_b, b_ok, IN,
                          BLOCK_K, PREC)
    if HAS_XW:   # a layer's precomputed x W_ihᵀ + b_ih, gate-major (r, z, n) like W_ih's rows
        acc += tl.load(XW + offs_b[None, :] * stride_xwb + x_rows[:, None] * stride_xwg,
                       mask=x_ok[:, None] & b_ok[None, :], other=0.0).to(tl.float32)
    if HAS_H:
        acc = gate_matmul(acc, WHH, H0, stride_whr, stride_whk, stride_hb, stride_hk, h_rows, h_ok, offs_b, b_ok, HID,
                          BLOCK_K, PREC)
    if HAS_BIH:
        acc += tl.load(BIH + x_rows * stride_big, mask=x_ok, other=0.0).to(tl.float32)[:, None]
    if HAS_BHH:
        acc += tl.load(BHH + h_rows * stride_bhg, mask=h_ok, other=0.0).to(tl.float32)[:, None]

    a_r, a_z, a_in, a_hn = split4(acc, BLOCK_H, BLOCK_B)
    rg = tl.sigmoid(a_r)
    z = tl.sigmoid(a_z)
    n = tanh(a_in + rg * a_hn)
    hj = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)
    mask = (hj < HID)[:, None] & b_ok[None, :]
    if HAS_H:
        h = tl.load(H0 + offs_b[None, :] * stride_hb + hj[:, None] * stride_hk, mask=mask, other=0.0).to(tl.float32)
        h1 = (1.0 - z) * n + z * h
    else:
        h1 = (1.0 - z) * n
    tl.store(H1 + offs_b[None, :] * stride_h1b + hj[:, None] * stride_h1h, cast(h1, H1.dtype.element_ty), mask=mask)
    if STORE_GATES:
        store4(GATES + offs_b[None, :] * stride_gb + hj[:, None] * stride_gh, HID * stride_gh, rg, z, n, a_hn, mask)


@triton.jit
def _gru_step_bwd(GATES, H0, DH1, DGX, DGH, DHD, B, HID,
                  stride_gb, stride_gh, stride_hb, stride_hk, stride_db, stride_dh, stride_xb, stride_xg, stride_yb,
                  stride_yg, stride_dhb, stride_dhh,
                  HAS_H: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """Pointwise backward: dh' -> x-side and h-side gate gradients and the direct dh'∘z term."""
    offs_b = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_h = tl.program_id(0) * BLOCK_H + tl.arange(0, BLOCK_H)
    mask = (offs_b < B)[:, None] & (offs_h < HID)[None, :]
    rg, z, n, a_hn = load4(GATES + offs_b[:, None] * stride_gb + offs_h[None, :] * stride_gh, HID * stride_gh, mask)
    dh1 = tl.load(DH1 + offs_b[:, None] * stride_db + offs_h[None, :] * stride_dh, mask=mask, other=0.0).to(tl.float32)
    if HAS_H:
        h = tl.load(H0 + offs_b[:, None] * stride_hb + offs_h[None, :] * stride_hk, mask=mask, other=0.0).to(tl.float32)
    else:
        h = tl.zeros([BLOCK_B, BLOCK_H], tl.float32)
    dan = dh1 * (1.0 - z) * (1.0 - n * n)
    daz = dh1 * (h - n) * z * (1.0 - z)
    dar = dan * a_hn * rg * (1.0 - rg)
    xp = DGX + offs_b[:, None] * stride_xb + offs_h[None, :] * stride_xg
    yp = DGH + offs_b[:, None] * stride_yb + offs_h[None, :] * stride_yg
    ty = DGX.dtype.element_ty
    tl.store(xp, cast(dar, ty), mask=mask)
    tl.store(xp + HID * stride_xg, cast(daz, ty), mask=mask)
    tl.store(xp + 2 * HID * stride_xg, cast(dan, ty), mask=mask)
    tl.store(yp, cast(dar, ty), mask=mask)
    tl.store(yp + HID * stride_yg, cast(daz, ty), mask=mask)
    tl.store(yp + 2 * HID * stride_yg, cast(dan * rg, ty), mask=mask)
    tl.store(DHD + offs_b[:, None] * stride_dhb + offs_h[None, :] * stride_dhh, cast(dh1 * z, DHD.dtype.element_ty),
             mask=mask)


def step_fwd_args(x, h, w_ih, w_hh, b_ih, b_hh, h1, gates, xw=None) -> dict:
    """Arguments of ``_gru_step_fwd`` by name: x and w_ih, or a layer's precomputed xw (B, 3·HID)."""
    B, HID = h1.shape
    return dict(X=x, WIH=w_ih, XW=xw, H0=h, WHH=w_hh, BIH=b_ih, BHH=b_hh, H1=h1, GATES=gates, B=B,
                IN=x.shape[1] if x is not None else 0, HID=HID,
                **strides("x", x, "bk"), **strides("wi", w_ih, "rk"),
                **strides("xw", xw, "bg"), **strides("h", h, "bk"), **strides("wh", w_hh, "rk"),
                **strides("bi", b_ih, "g"), **strides("bh", b_hh, "g"),
                **strides("h1", h1, "bh"), **strides("g", gates, "bh"),
                HAS_X=x is not None, HAS_XW=xw is not None, HAS_H=h is not None, HAS_BIH=b_ih is not None,
                HAS_BHH=b_hh is not None, STORE_GATES=gates is not None, **dot_options(h1.dtype, h1.device))


def step_bwd_args(gates, h, dh1, dgx, dgh, dhd) -> dict:
    B, HID = dh1.shape
    return dict(GATES=gates, H0=h, DH1=dh1, DGX=dgx, DGH=dgh, DHD=dhd, B=B, HID=HID,
                **strides("g", gates, "bh"), **strides("h", h, "bk"),
                **strides("d", dh1, "bh"), **strides("x", dgx, "bg"),
                **strides("y", dgh, "bg"), **strides("dh", dhd, "bh"),
                HAS_H=h is not None)


def _step_fwd(x, h, w_ih, w_hh, b_ih, b_hh, gates=None, xw=None, out=None):
    """Launch one fused step (from x, or from a layer's xw); writes into ``out`` when given."""
    ref = x if x is not None else xw
    B, HID = ref.shape[0], w_hh.shape[1]
    h1 = out if out is not None else torch.empty(B, HID, device=ref.device, dtype=w_hh.dtype)
    if not B:                      # an empty batch: nothing to compute
        return h1
    fn, meta = step_launcher(_gru_step_fwd, ref.device, w_hh.dtype)
    fn[step_grid(B, HID)](**step_fwd_args(x, h, w_ih, w_hh, b_ih, b_hh, h1, gates, xw), **meta)
    return h1


class _GRUCell(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h, w_ih, w_hh, b_ih, b_hh):
        gates = torch.empty(x.shape[0], 4 * w_hh.shape[1], device=x.device, dtype=x.dtype)
        h1 = _step_fwd(x, h, w_ih, w_hh, b_ih, b_hh, gates)
        ctx.save_for_backward(x, h, w_ih, w_hh, gates)
        return h1

    @staticmethod
    @once_differentiable
    def backward(ctx, dh1):
        x, h, w_ih, w_hh, gates = ctx.saved_tensors
        B, HID = dh1.shape
        dgx = torch.empty(B, 3 * HID, device=x.device, dtype=x.dtype)
        dgh = torch.empty_like(dgx)
        dhd = torch.empty(B, HID, device=x.device, dtype=x.dtype)
        launch_bwd(_gru_step_bwd, B, HID, step_bwd_args(gates, h, dh1, dgx, dgh, dhd))
        need = ctx.needs_input_grad
        dx = dgx @ w_ih if need[0] else None
        dh = dgh @ w_hh + dhd if need[1] and h is not None else None
        dw_ih = dgx.t() @ x if need[2] else None
        dw_hh = (dgh.t() @ h if h is not None else torch.zeros_like(w_hh)) if need[3] else None
        return dx, dh, dw_ih, dw_hh, dgx.sum(0) if need[4] else None, dgh.sum(0) if need[5] else None


def gru_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None):
    """One GRU step with ``nn.GRUCell`` semantics: returns h1.

    x: (B, I) or (I,); h: (B, HID) or (HID,), None for zeros; w_ih: (3·HID, I); w_hh: (3·HID, HID);
    biases (3·HID,) or None.  Differentiable.
    """
    unbatched = check_batching(x, (("h", h),))
    if unbatched:
        x = x.unsqueeze(0)
        h = h.unsqueeze(0) if h is not None else None
    check_rnn_step(x, h, None, w_ih, w_hh, b_ih, b_hh, 3)
    args = (x, h, w_ih, w_hh, b_ih, b_hh)
    if torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in args):
        h1 = _GRUCell.apply(*args)
    else:
        h1 = _step_fwd(*args)
    return h1[0] if unbatched else h1


def _layer_forward(xw, h0, w_hh, b_hh, batch_sizes, store_gates: bool):
    """The recurrence over xw (T, B, 3·HID): every h (T, B, HID) and the gates if asked.  With
    ``batch_sizes`` step t runs only its first batch_sizes[t] rows (packed input, rows sorted by length);
    the others are left zero."""
    T, B = xw.shape[0], xw.shape[1]
    HID = w_hh.shape[1]
    alloc = torch.zeros if batch_sizes is not None else torch.empty
    out = alloc(T, B, HID, device=xw.device, dtype=xw.dtype)
    gates = alloc(T, B, 4 * HID, device=xw.device, dtype=xw.dtype) if store_gates else None
    h = h0
    for t in range(T):
        bt = batch_sizes[t] if batch_sizes is not None else B
        _step_fwd(None, h[:bt] if h is not None else None, None, w_hh, None, b_hh,
                  gates=gates[t, :bt] if store_gates else None, xw=xw[t, :bt], out=out[t, :bt])
        h = out[t]
    return out, gates


class _GRULayer(torch.autograd.Function):
    """The recurrence of one layer over precomputed xw = x W_ihᵀ + b_ih (T, B, 3·HID); b_hh stays in the
    step (its n part sits inside r ∘ (h W_hnᵀ + b_hn))."""

    @staticmethod
    def forward(ctx, xw, h0, w_hh, b_hh, batch_sizes):
        out, gates = _layer_forward(xw, h0, w_hh, b_hh, batch_sizes, store_gates=True)
        ctx.save_for_backward(h0, w_hh, out, gates)
        ctx.batch_sizes, ctx.has_bhh = batch_sizes, b_hh is not None
        return out, final_states(batch_sizes, out)[0]

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, dhn):
        h0, w_hh, out, gates = ctx.saved_tensors
        T, B, HID = out.shape
        sizes = ctx.batch_sizes
        alloc = torch.zeros if sizes is not None else torch.empty
        dgx = alloc(T, B, 3 * HID, device=out.device, dtype=out.dtype)
        dgh = alloc(T, B, 3 * HID, device=out.device, dtype=out.dtype)
        dout = dout if dout is not None else torch.zeros_like(out)
        # every row's carried dh: dh_n enters at the row's own last step (its first in reverse)
        dh = dhn.clone() if dhn is not None else torch.zeros(B, HID, device=out.device, dtype=out.dtype)
        for t in range(T - 1, -1, -1):
            bt = sizes[t] if sizes is not None else B
            h_prev = out[t - 1, :bt] if t > 0 else (h0[:bt] if h0 is not None else None)
            dhd = torch.empty(bt, HID, device=out.device, dtype=out.dtype)
            launch_bwd(_gru_step_bwd, bt, HID, step_bwd_args(gates[t, :bt], h_prev, dout[t, :bt] + dh[:bt],
                                                             dgx[t, :bt], dgh[t, :bt], dhd))
            dh[:bt] = dgh[t, :bt] @ w_hh + dhd
        h_prev = torch.cat([h0.unsqueeze(0) if h0 is not None else torch.zeros_like(out[:1]), out[:-1]])
        dw_hh = dgh.reshape(T * B, 3 * HID).t() @ h_prev.reshape(T * B, HID)
        db_hh = dgh.sum((0, 1)) if ctx.has_bhh else None
        return dgx, (dh if h0 is not None else None), dw_hh, db_hh, None


def gru(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, *, batch_first: bool = False, batch_sizes=None):
    """One unidirectional GRU layer over a sequence, ``nn.GRU`` semantics for one layer.

    x: (T, B, I), or (B, T, I) with batch_first; h0: (B, HID) or None for zeros.  The input projection of
    all steps is one GEMM, then one fused step per time step.  ``batch_sizes`` (packed input, rows sorted
    by decreasing length, time-major x): step t runs its first batch_sizes[t] rows only, and h_n holds
    each row's h at its own last step.  Returns (out (T, B, HID) or (B, T, HID), h_n (B, HID)).
    """
    xw = project_inputs(x, h0, None, w_ih, w_hh, b_ih, b_hh, 3, batch_first, batch_sizes, fold=(b_ih,))
    args = (xw, h0, w_hh, b_hh)
    if torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in args):
        out, hn = _GRULayer.apply(*args, batch_sizes)
    else:
        out, _ = _layer_forward(*args, batch_sizes, store_gates=False)
        hn = final_states(batch_sizes, out)[0]
    return (out.transpose(0, 1) if batch_first else out), hn


class FusedGRU(FusedRNNBase):
    """Drop-in for ``torch.nn.GRU`` whose recurrence runs on the fused GRU step (``gru``).

    Same parameters (``weight_ih_l0``, ``bias_hh_l1_reverse``, ...), shapes and outputs: layers, bias,
    batch_first, bidirectional, dropout, unbatched input and PackedSequence input (sorted or not).
    ``FusedGRU.from_torch(gru)`` copies an ``nn.GRU``.
    """

    GATES, TORCH, STATES = 3, nn.GRU, 1

    def _layer(self, x, state, weights, lengths, batch_sizes):
        out, hn = gru(x, state[0] if state is not None else None, *weights, batch_sizes=batch_sizes)
        return out, (hn,)


# ----------------------------------------------------------------------------------------------
# compile-only builds for `seqbench inspect`
# ----------------------------------------------------------------------------------------------

# Kernels that must issue Hopper wgmma (HGMMA) on sm_90a in 16 bits (`seqbench inspect`, tests/test_inspect.py).
WGMMA = ("gru.cell", "gru.layer_step")


def compile_builds(family: str, dtypes=(torch.float16,)):
    """Every step config as launched at batch 16, input = hidden = 1024 (the cell, and the layer's step
    reading the precomputed input projection), and the pointwise backward."""
    from kernels._rnn import BWD_CONFIG, step_configs

    for dtype in dtypes:
        t = lambda *s: torch.empty(*s, device="meta", dtype=dtype)  # noqa: E731
        B, HID = 16, 1024
        x, h, gates, w, b, g3 = t(B, HID), t(B, HID), t(B, 4 * HID), t(3 * HID, HID), t(3 * HID), t(B, 3 * HID)
        args = step_fwd_args(x, h, w, w, b, b, h, gates)
        layer = step_fwd_args(None, h, None, w, None, b, h, gates, xw=g3)      # the layer's step: xw read in
        for cfg in step_configs(dtype):
            yield "gru.cell", _gru_step_fwd, args, cfg
            yield "gru.layer_step", _gru_step_fwd, layer, cfg
        args = step_bwd_args(gates, h, h, g3, g3, h)
        yield "gru.step_bwd", _gru_step_bwd, args, BWD_CONFIG
