"""Fused LSTM cell step, an LSTM layer and ``FusedLSTM`` (a drop-in ``nn.LSTM``), in Triton.

One step, with ``torch.nn.LSTMCell``'s weight layout and gate order (i, f, g, o):

    a = x W_ihᵀ + b_ih + h W_hhᵀ + b_hh          (B × 4·HID, never written to memory)
    i, f, o = σ(a_i), σ(a_f), σ(a_o);  g = tanh(a_g)
    c' = f ∘ c + i ∘ g;                h' = o ∘ tanh(c')

The forward kernel does both matmuls, the biases, the gates and the c/h update in one launch.
When a gradient is needed it also stores the activated gates (what cuDNN keeps as reserve
space); the backward is one fused pointwise kernel giving ∂a, then matmuls:

    dc = dc' + dh' ∘ o ∘ (1 − tanh²c'),   ∂a_i = dc∘g∘i(1−i),  ∂a_f = dc∘c∘f(1−f),
    ∂a_g = dc∘i∘(1−g²),  ∂a_o = dh'∘tanh c'∘o(1−o),  dc_prev = dc∘f,
    dx = ∂a W_ih,  dh = ∂a W_hh,  dW_ih = ∂aᵀ x,  dW_hh = ∂aᵀ h,  db = Σ_batch ∂a

The layer runs the input projection of all T steps as one GEMM, then one fused recurrent step
per time step; its backward runs the pointwise kernel per step in reverse and forms dW_hh with a
single GEMM over all steps.

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

from kernels._common import check_batching, check_rnn_step, dot_options, once_differentiable, strides
from kernels._rnn import (FusedRNNBase, final_states, gate_matmul, launch_bwd, load4, lstm_pointwise_bwd, project_inputs,
                          split4, step_grid, step_launcher, store4, tanh)
from kernels._tl import cast
from kernels.lstm_persistent import lstm_persistent


@triton.jit
def _lstm_step_fwd(X, WIH, XW, H0, C0, WHH, BIH, BHH, H1, C1, GATES,
                   B, IN, HID,
                   stride_xb, stride_xk, stride_wir, stride_wik, stride_xwb, stride_xwg, stride_hb, stride_hk,
                   stride_cb, stride_ch, stride_whr, stride_whk, stride_big, stride_bhg,
                   stride_h1b, stride_h1h, stride_c1b, stride_c1h, stride_gb, stride_gh,
                   HAS_X: tl.constexpr, HAS_XW: tl.constexpr, HAS_H: tl.constexpr, HAS_C: tl.constexpr,
                   HAS_BIH: tl.constexpr, HAS_BHH: tl.constexpr, STORE_GATES: tl.constexpr,
                   BLOCK_H: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr,
                   PREC: tl.constexpr):
    """One program: BLOCK_H hidden units × BLOCK_B batch rows of one time step, all four gates."""
    pid_h = tl.program_id(0)
    pid_b = tl.program_id(1)
    r = tl.arange(0, 4 * BLOCK_H)
    j = pid_h * BLOCK_H + r % BLOCK_H
    rows = (r // BLOCK_H) * HID + j          # row of W / column of the gate vector, gate-major
    row_ok = j < HID
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    b_ok = offs_b < B

    acc = tl.zeros([4 * BLOCK_H, BLOCK_B], tl.float32)
    if HAS_X:
        acc = gate_matmul(acc, WIH, X, stride_wir, stride_wik, stride_xb, stride_xk, rows, row_ok, offs_b, b_ok, IN,
                          BLOCK_K, PREC)
    if HAS_H:
        acc = gate_matmul(acc, WHH, H0, stride_whr, stride_whk, stride_hb, stride_hk, rows, row_ok, offs_b, b_ok, HID,
                          BLOCK_K, PREC)
    if HAS_XW:
        acc += tl.load(XW + offs_b[None, :] * stride_xwb + rows[:, None] * stride_xwg,
                       mask=row_ok[:, None] & b_ok[None, :], other=0.0).to(tl.float32)
    if HAS_BIH:
        acc += tl.load(BIH + rows * stride_big, mask=row_ok, other=0.0).to(tl.float32)[:, None]
    if HAS_BHH:
        acc += tl.load(BHH + rows * stride_bhg, mask=row_ok, other=0.0).to(tl.float32)[:, None]

    a_i, a_f, a_g, a_o = split4(acc, BLOCK_H, BLOCK_B)
    i = tl.sigmoid(a_i)
    f = tl.sigmoid(a_f)
    g = tanh(a_g)
    o = tl.sigmoid(a_o)

    hj = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)
    mask = (hj < HID)[:, None] & b_ok[None, :]
    if HAS_C:
        c = tl.load(C0 + offs_b[None, :] * stride_cb + hj[:, None] * stride_ch, mask=mask, other=0.0).to(tl.float32)
        c1 = f * c + i * g
    else:
        c1 = i * g
    h1 = o * tanh(c1)
    tl.store(C1 + offs_b[None, :] * stride_c1b + hj[:, None] * stride_c1h, cast(c1, C1.dtype.element_ty), mask=mask)
    tl.store(H1 + offs_b[None, :] * stride_h1b + hj[:, None] * stride_h1h, cast(h1, H1.dtype.element_ty), mask=mask)
    if STORE_GATES:
        store4(GATES + offs_b[None, :] * stride_gb + hj[:, None] * stride_gh, HID * stride_gh, i, f, g, o, mask)


@triton.jit
def _lstm_step_bwd(GATES, C0, C1, DH1, DC1, DGATES, DC0, B, HID,
                   stride_gb, stride_gh, stride_cb, stride_ch, stride_c1b, stride_c1h, stride_dhb, stride_dhh,
                   stride_dcb, stride_dch, stride_dgb, stride_dgh, stride_dc0b, stride_dc0h,
                   HAS_C: tl.constexpr, HAS_DC1: tl.constexpr,
                   BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """Pointwise backward of one step: (dh', dc') -> (∂a for all four gates, dc_prev)."""
    offs_b = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_h = tl.program_id(0) * BLOCK_H + tl.arange(0, BLOCK_H)
    mask = (offs_b < B)[:, None] & (offs_h < HID)[None, :]
    i, f, g, o = load4(GATES + offs_b[:, None] * stride_gb + offs_h[None, :] * stride_gh, HID * stride_gh, mask)
    c1 = tl.load(C1 + offs_b[:, None] * stride_c1b + offs_h[None, :] * stride_c1h, mask=mask, other=0.0).to(tl.float32)
    dh1 = tl.load(DH1 + offs_b[:, None] * stride_dhb + offs_h[None, :] * stride_dhh, mask=mask,
                  other=0.0).to(tl.float32)

    if HAS_DC1:
        dc = tl.load(DC1 + offs_b[:, None] * stride_dcb + offs_h[None, :] * stride_dch, mask=mask,
                     other=0.0).to(tl.float32)
    else:
        dc = tl.zeros([BLOCK_B, BLOCK_H], tl.float32)
    if HAS_C:
        c = tl.load(C0 + offs_b[:, None] * stride_cb + offs_h[None, :] * stride_ch, mask=mask, other=0.0).to(tl.float32)
    else:
        c = tl.zeros([BLOCK_B, BLOCK_H], tl.float32)
    da_i, da_f, da_g, da_o, dc = lstm_pointwise_bwd(i, f, g, o, c, c1, dh1, dc)
    store4(DGATES + offs_b[:, None] * stride_dgb + offs_h[None, :] * stride_dgh, HID * stride_dgh, da_i, da_f, da_g,
           da_o, mask)
    tl.store(DC0 + offs_b[:, None] * stride_dc0b + offs_h[None, :] * stride_dc0h, cast(dc, DC0.dtype.element_ty),
             mask=mask)


# ----------------------------------------------------------------------------------------------
# launchers
# ----------------------------------------------------------------------------------------------

def step_fwd_args(x, xw, h, c, w_ih, w_hh, b_ih, b_hh, h1, c1, gates) -> dict:
    """Arguments of ``_lstm_step_fwd`` by name; any of x/xw/h/c/biases/gates may be None."""
    B, HID = h1.shape
    return dict(X=x, WIH=w_ih, XW=xw, H0=h, C0=c, WHH=w_hh, BIH=b_ih, BHH=b_hh, H1=h1, C1=c1, GATES=gates,
                B=B, IN=x.shape[1] if x is not None else 0, HID=HID,
                **strides("x", x, "bk"), **strides("wi", w_ih, "rk"),
                **strides("xw", xw, "bg"), **strides("h", h, "bk"),
                **strides("c", c, "bh"), **strides("wh", w_hh, "rk"),
                **strides("bi", b_ih, "g"), **strides("bh", b_hh, "g"),
                **strides("h1", h1, "bh"), **strides("c1", c1, "bh"),
                **strides("g", gates, "bh"),
                HAS_X=x is not None, HAS_XW=xw is not None, HAS_H=h is not None, HAS_C=c is not None,
                HAS_BIH=b_ih is not None, HAS_BHH=b_hh is not None, STORE_GATES=gates is not None,
                **dot_options(h1.dtype, h1.device))


def step_bwd_args(gates, c, c1, dh1, dc1, dgates, dc0) -> dict:
    B, HID = c1.shape
    return dict(GATES=gates, C0=c, C1=c1, DH1=dh1, DC1=dc1, DGATES=dgates, DC0=dc0, B=B, HID=HID,
                **strides("g", gates, "bh"), **strides("c", c, "bh"),
                **strides("c1", c1, "bh"), **strides("dh", dh1, "bh"),
                **strides("dc", dc1, "bh"), **strides("dg", dgates, "bh"),
                **strides("dc0", dc0, "bh"), HAS_C=c is not None, HAS_DC1=dc1 is not None)


def _step_fwd(x, xw, h, c, w_ih, w_hh, b_ih, b_hh, out_h=None, out_c=None, gates=None):
    """Launch one fused step; writes into out_h/out_c when given (views into the layer's outputs)."""
    ref = h if h is not None else (x if x is not None else xw)
    B, HID = ref.shape[0], w_hh.shape[1]
    h1 = out_h if out_h is not None else torch.empty(B, HID, device=ref.device, dtype=w_hh.dtype)
    c1 = out_c if out_c is not None else torch.empty(B, HID, device=ref.device, dtype=w_hh.dtype)
    if not B:                      # an empty batch: nothing to compute
        return h1, c1
    fn, meta = step_launcher(_lstm_step_fwd, ref.device, w_hh.dtype)
    fn[step_grid(B, HID)](**step_fwd_args(x, xw, h, c, w_ih, w_hh, b_ih, b_hh, h1, c1, gates), **meta)
    return h1, c1


def _step_bwd(gates, c, c1, dh1, dc1, dgates=None):
    """Gate-gradient (B, 4·HID) and dc_prev of one step; writes into ``dgates`` when given."""
    B, HID = c1.shape
    if dgates is None:
        dgates = torch.empty(B, 4 * HID, device=c1.device, dtype=gates.dtype)
    dc0 = torch.empty(B, HID, device=c1.device, dtype=c1.dtype)
    launch_bwd(_lstm_step_bwd, B, HID, step_bwd_args(gates, c, c1, dh1, dc1, dgates, dc0))
    return dgates, dc0


# ----------------------------------------------------------------------------------------------
# autograd
# ----------------------------------------------------------------------------------------------


class _LSTMCell(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h, c, w_ih, w_hh, b_ih, b_hh):
        gates = torch.empty(x.shape[0], 4 * w_hh.shape[1], device=x.device, dtype=x.dtype)
        h1, c1 = _step_fwd(x, None, h, c, w_ih, w_hh, b_ih, b_hh, gates=gates)
        ctx.save_for_backward(x, h, c, w_ih, w_hh, gates, c1)
        return h1, c1

    @staticmethod
    @once_differentiable
    def backward(ctx, dh1, dc1):
        x, h, c, w_ih, w_hh, gates, c1 = ctx.saved_tensors
        if dh1 is None:
            dh1 = torch.zeros_like(c1)
        da, dc = _step_bwd(gates, c, c1, dh1, dc1)
        need = ctx.needs_input_grad
        dx = da @ w_ih if need[0] else None
        dh = da @ w_hh if need[1] and h is not None else None
        dc = dc if need[2] and c is not None else None
        dw_ih = da.t() @ x if need[3] else None
        dw_hh = (da.t() @ h if h is not None else torch.zeros_like(w_hh)) if need[4] else None
        db = da.sum(0) if (need[5] or need[6]) else None
        return dx, dh, dc, dw_ih, dw_hh, db if need[5] else None, db if need[6] else None


def _layer_forward(xw, h0, c0, w_hh, store_gates: bool, batch_sizes=None):
    """Run the recurrence over xw (T, B, 4·HID): returns every h (T, B, HID), every c, and the gates if asked.
    With ``batch_sizes`` step t runs only its first batch_sizes[t] rows (packed input, rows sorted by
    length); the others are left zero."""
    T, B = xw.shape[0], xw.shape[1]
    HID = w_hh.shape[1]
    alloc = torch.zeros if batch_sizes is not None else torch.empty
    out = alloc(T, B, HID, device=xw.device, dtype=xw.dtype)
    cs = alloc(T, B, HID, device=xw.device, dtype=xw.dtype)
    gates = alloc(T, B, 4 * HID, device=xw.device, dtype=xw.dtype) if store_gates else None
    h, c = h0, c0
    for t in range(T):
        bt = batch_sizes[t] if batch_sizes is not None else B
        _step_fwd(None, xw[t, :bt], h[:bt] if h is not None else None, c[:bt] if c is not None else None, None,
                  w_hh, None, None, out_h=out[t, :bt], out_c=cs[t, :bt], gates=gates[t, :bt] if store_gates else None)
        h, c = out[t], cs[t]
    return out, cs, gates


class _LSTMLayer(torch.autograd.Function):
    """The recurrence of one layer over precomputed input projections xw (T, B, 4·HID), biases included."""

    @staticmethod
    def forward(ctx, xw, h0, c0, w_hh, batch_sizes):
        out, cs, gates = _layer_forward(xw, h0, c0, w_hh, True, batch_sizes)
        ctx.save_for_backward(h0, c0, w_hh, out, cs, gates)
        ctx.batch_sizes = batch_sizes
        return (out, *final_states(batch_sizes, out, cs))

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, dhn, dcn):
        h0, c0, w_hh, out, cs, gates = ctx.saved_tensors
        T, B, HID = out.shape
        sizes = ctx.batch_sizes
        dgates = torch.zeros_like(gates) if sizes is not None else torch.empty_like(gates)
        dout = dout if dout is not None else torch.zeros_like(out)
        # every row's carried (dh, dc): dh_n and dc_n enter at the row's own last step (its first in reverse)
        dh = dhn.clone() if dhn is not None else torch.zeros(B, HID, device=out.device, dtype=out.dtype)
        dc = dcn.clone() if dcn is not None else None
        for t in range(T - 1, -1, -1):
            bt = sizes[t] if sizes is not None else B
            c_prev = cs[t - 1, :bt] if t > 0 else (c0[:bt] if c0 is not None else None)
            da, dc_prev = _step_bwd(gates[t, :bt], c_prev, cs[t, :bt], dout[t, :bt] + dh[:bt],
                                    dc[:bt] if dc is not None else None, dgates[t, :bt])
            if dc is None:
                dc = torch.zeros(B, HID, device=out.device, dtype=out.dtype)
            dc[:bt] = dc_prev
            dh[:bt] = da @ w_hh
        h_prev = torch.cat([h0.unsqueeze(0) if h0 is not None else torch.zeros_like(out[:1]), out[:-1]])
        dw_hh = dgates.reshape(T * B, 4 * HID).t() @ h_prev.reshape(T * B, HID)
        return dgates, (dh if h0 is not None else None), (dc if c0 is not None else None), dw_hh, None


# ----------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------


def lstm_cell(x, h, c, w_ih, w_hh, b_ih=None, b_hh=None):
    """One LSTM step with ``nn.LSTMCell`` semantics: returns (h1, c1).

    x: (B, I) or (I,); h, c: (B, HID) or (HID,), None for zeros; w_ih: (4·HID, I); w_hh: (4·HID, HID);
    biases (4·HID,) or None.  Differentiable.
    """
    unbatched = check_batching(x, (("h", h), ("c", c)))
    if unbatched:
        x = x.unsqueeze(0)
        h = h.unsqueeze(0) if h is not None else None
        c = c.unsqueeze(0) if c is not None else None
    check_rnn_step(x, h, c, w_ih, w_hh, b_ih, b_hh, 4)
    args = (x, h, c, w_ih, w_hh, b_ih, b_hh)
    if torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in args):
        h1, c1 = _LSTMCell.apply(*args)
    else:
        h1, c1 = _step_fwd(x, None, h, c, w_ih, w_hh, b_ih, b_hh)
    return (h1[0], c1[0]) if unbatched else (h1, c1)


def lstm(x, hx, w_ih, w_hh, b_ih=None, b_hh=None, *, batch_first: bool = False, batch_sizes=None):
    """One unidirectional LSTM layer over a sequence, ``nn.LSTM`` semantics for one layer.

    x: (T, B, I), or (B, T, I) with batch_first; hx: (h0, c0) each (B, HID), or None for zeros.
    ``batch_sizes`` (packed input, rows sorted by decreasing length, time-major x): step t runs its
    first batch_sizes[t] rows only, and (h_n, c_n) hold each row's state at its own last step.
    Returns (out (T, B, HID) or (B, T, HID), (h_n, c_n) each (B, HID)).
    """
    h0, c0 = (None, None) if hx is None else hx
    xw = project_inputs(x, h0, c0, w_ih, w_hh, b_ih, b_hh, 4, batch_first, batch_sizes, fold=(b_ih, b_hh))
    args = (xw, h0, c0, w_hh)
    if torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in args):
        out, hn, cn = _LSTMLayer.apply(*args, batch_sizes)
    else:
        out, cs, _ = _layer_forward(*args, store_gates=False, batch_sizes=batch_sizes)
        hn, cn = final_states(batch_sizes, out, cs)
    if batch_first:
        out = out.transpose(0, 1)
    return out, (hn, cn)


class FusedLSTM(FusedRNNBase):
    """Drop-in for ``torch.nn.LSTM`` whose recurrence runs on Triton kernels.

    Same parameters (``weight_ih_l0``, ``bias_hh_l1_reverse``, ...), shapes and outputs: layers, bias,
    batch_first, bidirectional, dropout, unbatched input and PackedSequence input (sorted or not); no
    ``proj_size``.  ``kernel="step"`` runs one fused step per time step (``lstm``);
    ``kernel="persistent"`` runs the time loop inside one kernel (``kernels.lstm_persistent``), with each
    row's length inside the kernel for packed input.  ``FusedLSTM.from_torch(lstm)`` copies an ``nn.LSTM``.
    """

    GATES, TORCH, STATES = 4, nn.LSTM, 2
    KERNELS = ("step", "persistent")

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, kernel: str = "step", proj_size: int = 0):
        if kernel not in self.KERNELS:
            raise ValueError(f"kernel must be one of {self.KERNELS}, got {kernel!r}")
        if proj_size:
            raise ValueError(f"FusedLSTM does not support proj_size > 0, got proj_size={proj_size}")
        self.kernel = kernel
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, device,
                         dtype)

    @classmethod
    def from_torch(cls, lstm: nn.LSTM, kernel: str = "step") -> "FusedLSTM":
        """A FusedLSTM holding a copy of ``lstm``'s weights, on its device and dtype."""
        return super().from_torch(lstm, kernel=kernel)

    def _layer(self, x, state, weights, lengths, batch_sizes):
        if self.kernel == "persistent":
            out, st = lstm_persistent(x, state, *weights, lengths=lengths)
        else:
            out, st = lstm(x, state, *weights, batch_sizes=batch_sizes)
        return out, st

    def extra_repr(self) -> str:
        return super().extra_repr() + f", kernel={self.kernel!r}"


# ----------------------------------------------------------------------------------------------
# compile-only builds for `seqbench inspect`
# ----------------------------------------------------------------------------------------------

# Kernels that must issue Hopper wgmma (HGMMA) on sm_90a in 16 bits (`seqbench inspect`, tests/test_inspect.py).
WGMMA = ("lstm.cell", "lstm.layer_step")

def compile_builds(family: str, dtypes=(torch.float16,)):
    """Every step config as launched at batch 16, input = hidden = 1024: the cell (both matmuls),
    the layer's recurrent step (precomputed input projection) and the pointwise backward."""
    from kernels._rnn import BWD_CONFIG, step_configs

    for dtype in dtypes:
        t = lambda *s: torch.empty(*s, device="meta", dtype=dtype)  # noqa: E731
        B, HID = 16, 1024
        x, h, c, gates = t(B, HID), t(B, HID), t(B, HID), t(B, 4 * HID)
        w, b, xw = t(4 * HID, HID), t(4 * HID), t(B, 4 * HID)
        builds = {"lstm.cell": step_fwd_args(x, None, h, c, w, w, b, b, h, c, gates),
                  "lstm.layer_step": step_fwd_args(None, xw, h, c, None, w, None, None, h, c, gates)}
        for name, args in builds.items():
            for cfg in step_configs(dtype):
                yield name, _lstm_step_fwd, args, cfg
        args = step_bwd_args(gates, c, c, h, c, gates, c)
        yield "lstm.step_bwd", _lstm_step_bwd, args, BWD_CONFIG
