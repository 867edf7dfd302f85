"""The Elman RNN of the textbook's §1.2 in Triton: a fused cell step, a layer and ``FusedRNN`` (a drop-in
``nn.RNN``), with ``torch.nn.RNNCell``'s weight layout:

    h' = f(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh),     f = tanh or relu

One launch does both matmuls, the biases and f.  Backward: one pointwise kernel from the saved h',
    ∂a = dh' ∘ (1 − h'²)  (tanh)   or   dh' ∘ [h' > 0]  (relu),
then matmuls: dx = ∂a W_ih, dh = ∂a W_hh, dW_ih = ∂aᵀ x, dW_hh = ∂aᵀ h, db = Σ_batch ∂a.

The layer does the input projection of all steps as one GEMM (b_ih folded in), then one fused step per
time step reading it (``HAS_XW``); its backward runs the pointwise kernel per step in reverse and forms
dW_hh with one GEMM over all steps.  This is the recurrence the textbook calls impossible to parallelise:
T dependent steps, each a (B × HID) · (HID × HID) product.

Dimensions (one meaning per letter in every kernel file):
    B    batch                 T    time steps              IN   input size (I in shapes)
    HID  hidden size           BLOCK_H / BLOCK_B / BLOCK_K  a program's hidden units / batch rows / K block
Strides are ``stride_{tensor}{dim}`` (``kernels._common.strides``), dims b batch, h hidden unit, k reduction,
r weight row, g gate-vector column: e.g. ``stride_xb, stride_xk`` of x (B, IN).
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl
from torch import nn

from kernels._common import autotune, check_batching, check_rnn_step, dot_options, once_differentiable, strides
from kernels._rnn import FusedRNNBase, final_states, gate_matmul, launch_bwd, project_inputs, tanh
from kernels._tl import cast

NONLINEARITIES = ("tanh", "relu")


@triton.jit
def _rnn_step_fwd(X, WIH, XW, H0, WHH, BIH, BHH, H1, B, IN, HID,
                  stride_xb, stride_xk, stride_wir, stride_wik, stride_xwb, stride_xwg, stride_hb, stride_hk,
                  stride_whr, stride_whk, stride_big, stride_bhg, stride_h1b, stride_h1h,
                  HAS_X: tl.constexpr, HAS_XW: tl.constexpr, HAS_H: tl.constexpr, HAS_BIH: tl.constexpr,
                  HAS_BHH: tl.constexpr, RELU: tl.constexpr,
                  BLOCK_H: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr, PREC: tl.constexpr):
    """One program: BLOCK_H hidden units × BLOCK_B batch rows of one step, as an (H × B) tile."""
    rows = tl.program_id(0) * BLOCK_H + tl.arange(0, BLOCK_H)
    row_ok = rows < HID
    offs_b = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    b_ok = offs_b < B
    acc = tl.zeros([BLOCK_H, BLOCK_B], tl.float32)
    if HAS_X:
        acc = gate_matmul(acc, WIH, X, stride_wir, stride_wik, stride_xb, stride_xk, rows, row_ok, offs_b, b_ok, IN,
                          BLOCK_K, PREC)
    if HAS_XW:   # a layer's precomputed x W_ihᵀ + b_ih
        acc += tl.load(XW + offs_b[None, :] * stride_xwb + rows[:, None] * stride_xwg,
                       mask=row_ok[:, None] & b_ok[None, :], other=0.0).to(tl.float32)
    if HAS_H:
        acc = gate_matmul(acc, WHH, H0, stride_whr, stride_whk, stride_hb, stride_hk, rows, row_ok, offs_b, b_ok, HID,
                          BLOCK_K, PREC)
    if HAS_BIH:
        acc += tl.load(BIH + rows * stride_big, mask=row_ok, other=0.0).to(tl.float32)[:, None]
    if HAS_BHH:
        acc += tl.load(BHH + rows * stride_bhg, mask=row_ok, other=0.0).to(tl.float32)[:, None]
    if RELU:
        h1 = tl.maximum(acc, 0.0)
    else:
        h1 = tanh(acc)
    tl.store(H1 + offs_b[None, :] * stride_h1b + rows[:, None] * stride_h1h, cast(h1, H1.dtype.element_ty),
             mask=row_ok[:, None] & b_ok[None, :])


@triton.jit
def _rnn_step_bwd(H1, DH1, DA, B, HID, stride_h1b, stride_h1h, stride_db, stride_dh, stride_ab, stride_ah,
                  RELU: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """Pointwise backward: dh' -> ∂a through f, from the step's output h'."""
    offs_b = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_h = tl.program_id(0) * BLOCK_H + tl.arange(0, BLOCK_H)
    mask = (offs_b < B)[:, None] & (offs_h < HID)[None, :]
    h1 = tl.load(H1 + offs_b[:, None] * stride_h1b + offs_h[None, :] * stride_h1h, mask=mask, other=0.0).to(tl.float32)
    dh1 = tl.load(DH1 + offs_b[:, None] * stride_db + offs_h[None, :] * stride_dh, mask=mask, other=0.0).to(tl.float32)
    if RELU:
        da = tl.where(h1 > 0.0, dh1, 0.0)
    else:
        da = dh1 * (1.0 - h1 * h1)
    tl.store(DA + offs_b[:, None] * stride_ab + offs_h[None, :] * stride_ah, cast(da, DA.dtype.element_ty), mask=mask)


def _cfg(bh, bb, bk, warps, stages):
    return triton.Config({"BLOCK_H": bh, "BLOCK_B": bb, "BLOCK_K": bk}, num_warps=warps, num_stages=stages)


# Autotune candidates (sm_80 and sm_90; `seqbench inspect` compiles each spill-free under triton 3.6 and 3.9).
# One gate: the tile is BLOCK_H rows, so BLOCK_H = 64 gives wgmma its M = 64 and BLOCK_H = 16 or 32 gives a
# small-batch step more programs (HID / BLOCK_H) to spread W_hh over the SMs, on mma.sync.
CONFIGS = [_cfg(16, 16, 128, 4, 3), _cfg(32, 16, 128, 4, 3), _cfg(64, 16, 64, 4, 3), _cfg(64, 32, 64, 4, 3)]
FP32_CONFIGS = [_cfg(16, 16, 64, 4, 3), _cfg(32, 16, 32, 4, 3), _cfg(64, 16, 32, 4, 3)]
# The interpreter runs one program at a time: small tiles so tests cross tile edges.
INTERPRETER = dict(BLOCK_H=16, BLOCK_B=16, BLOCK_K=32, num_warps=4)


def configs(dtype) -> list:
    return FP32_CONFIGS if dtype == torch.float32 else CONFIGS


@functools.lru_cache(maxsize=None)
def _tuned(dtype):
    return autotune(_rnn_step_fwd, configs(dtype), ["B", "IN", "HID"], "rnn_step_fwd")


def step_fwd_args(x, h, w_ih, w_hh, b_ih, b_hh, h1, relu: bool, xw=None) -> dict:
    """Arguments of ``_rnn_step_fwd`` by name: x and w_ih, or a layer's precomputed xw (B, HID)."""
    B, HID = h1.shape
    return dict(X=x, WIH=w_ih, XW=xw, H0=h, WHH=w_hh, BIH=b_ih, BHH=b_hh, H1=h1, B=B,
                IN=x.shape[1] if x is not None else 0, HID=HID,
                **strides("x", x, "bk"), **strides("wi", w_ih, "rk"), **strides("xw", xw, "bg"),
                **strides("h", h, "bk"), **strides("wh", w_hh, "rk"), **strides("bi", b_ih, "g"),
                **strides("bh", b_hh, "g"), **strides("h1", h1, "bh"),
                HAS_X=x is not None, HAS_XW=xw is not None, HAS_H=h is not None, HAS_BIH=b_ih is not None,
                HAS_BHH=b_hh is not None, RELU=relu, **dot_options(h1.dtype, h1.device))


def step_bwd_args(h1, dh1, da, relu: bool) -> dict:
    B, HID = h1.shape
    return dict(H1=h1, DH1=dh1, DA=da, B=B, HID=HID, **strides("h1", h1, "bh"), **strides("d", dh1, "bh"),
                **strides("a", da, "bh"), RELU=relu)


def _step_fwd(x, h, w_ih, w_hh, b_ih, b_hh, relu: bool, xw=None, out=None):
    """Launch one fused step (from x, or from a layer's xw); writes into ``out`` when given."""
    ref = x if x is not None else xw
    B, HID = ref.shape[0], w_hh.shape[1]
    h1 = out if out is not None else torch.empty(B, HID, device=ref.device, dtype=w_hh.dtype)
    if not B:                      # an empty batch: nothing to compute
        return h1
    args = step_fwd_args(x, h, w_ih, w_hh, b_ih, b_hh, h1, relu, xw)
    if ref.device.type == "cuda":
        _tuned(w_hh.dtype)[lambda m: (triton.cdiv(HID, m["BLOCK_H"]), triton.cdiv(B, m["BLOCK_B"]))](**args)
    else:
        m = INTERPRETER
        _rnn_step_fwd[(triton.cdiv(HID, m["BLOCK_H"]), triton.cdiv(B, m["BLOCK_B"]))](**args, **m)
    return h1


def _step_bwd(h1, dh1, relu: bool):
    da = torch.empty_like(h1)
    launch_bwd(_rnn_step_bwd, h1.shape[0], h1.shape[1], step_bwd_args(h1, dh1, da, relu))
    return da


def _relu(nonlinearity) -> bool:
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    return nonlinearity == "relu"


class _RNNCell(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h, w_ih, w_hh, b_ih, b_hh, relu):
        h1 = _step_fwd(x, h, w_ih, w_hh, b_ih, b_hh, relu)
        ctx.save_for_backward(x, h, w_ih, w_hh, h1)
        ctx.relu = relu
        return h1

    @staticmethod
    @once_differentiable
    def backward(ctx, dh1):
        x, h, w_ih, w_hh, h1 = ctx.saved_tensors
        da = _step_bwd(h1, dh1, ctx.relu)
        need = ctx.needs_input_grad
        dh = da @ w_hh if need[1] and h is not None else None
        dw_hh = (da.t() @ h if h is not None else torch.zeros_like(w_hh)) if need[3] else None
        db = da.sum(0)
        return (da @ w_ih if need[0] else None, dh, da.t() @ x if need[2] else None, dw_hh,
                db if need[4] else None, db if need[5] else None, None)


def rnn_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity: str = "tanh"):
    """One Elman step with ``nn.RNNCell`` semantics: returns h1 = f(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh).

    x: (B, I) or (I,); h: (B, HID) or (HID,), None for zeros; w_ih: (HID, I); w_hh: (HID, HID); biases
    (HID,) or None; nonlinearity 'tanh' or 'relu'.  Differentiable.
    """
    relu = _relu(nonlinearity)
    unbatched = check_batching(x, (("h", h),))
    if unbatched:
        x = x.unsqueeze(0)
        h = h.unsqueeze(0) if h is not None else None
    check_rnn_step(x, h, None, w_ih, w_hh, b_ih, b_hh, 1)
    args = (x, h, w_ih, w_hh, b_ih, b_hh)
    if torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in args):
        h1 = _RNNCell.apply(*args, relu)
    else:
        h1 = _step_fwd(*args, relu)
    return h1[0] if unbatched else h1


def _layer_forward(xw, h0, w_hh, b_hh, relu, batch_sizes):
    """The recurrence over xw (T, B, HID): every h (T, B, HID).  With ``batch_sizes`` step t runs only its
    first batch_sizes[t] rows (packed input, rows sorted by length); the others are left zero."""
    T, B, HID = xw.shape
    out = (torch.zeros if batch_sizes is not None else torch.empty)(T, B, HID, device=xw.device, dtype=xw.dtype)
    h = h0
    for t in range(T):
        bt = batch_sizes[t] if batch_sizes is not None else B
        _step_fwd(None, h[:bt] if h is not None else None, None, w_hh, None, b_hh, relu, xw=xw[t, :bt],
                  out=out[t, :bt])
        h = out[t]
    return out


class _RNNLayer(torch.autograd.Function):
    """The recurrence of one layer over precomputed xw = x W_ihᵀ + b_ih (T, B, HID)."""

    @staticmethod
    def forward(ctx, xw, h0, w_hh, b_hh, relu, batch_sizes):
        out = _layer_forward(xw, h0, w_hh, b_hh, relu, batch_sizes)
        ctx.save_for_backward(h0, w_hh, out)
        ctx.relu, ctx.batch_sizes, ctx.has_bhh = relu, batch_sizes, b_hh is not None
        return out, final_states(batch_sizes, out)[0]

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, dhn):
        h0, w_hh, out = ctx.saved_tensors
        T, B, HID = out.shape
        sizes = ctx.batch_sizes
        da = (torch.zeros if sizes is not None else torch.empty)(T, B, HID, device=out.device, dtype=out.dtype)
        dout = dout if dout is not None else torch.zeros_like(out)
        # every row's carried dh: dh_n enters at the row's own last step (its first in reverse)
        dh = dhn.clone() if dhn is not None else torch.zeros(B, HID, device=out.device, dtype=out.dtype)
        for t in range(T - 1, -1, -1):
            bt = sizes[t] if sizes is not None else B
            launch_bwd(_rnn_step_bwd, bt, HID, step_bwd_args(out[t, :bt], dout[t, :bt] + dh[:bt], da[t, :bt],
                                                             ctx.relu))
            dh[:bt] = da[t, :bt] @ w_hh
        h_prev = torch.cat([h0.unsqueeze(0) if h0 is not None else torch.zeros_like(out[:1]), out[:-1]])
        dw_hh = da.reshape(T * B, HID).t() @ h_prev.reshape(T * B, HID)
        db_hh = da.sum((0, 1)) if ctx.has_bhh else None
        return da, (dh if h0 is not None else None), dw_hh, db_hh, None, None


def rnn(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, *, nonlinearity: str = "tanh", batch_first: bool = False,
        batch_sizes=None):
    """One unidirectional Elman layer over a sequence, ``nn.RNN`` semantics for one layer.

    x: (T, B, I), or (B, T, I) with batch_first; h0: (B, HID) or None for zeros.  The input projection of
    all steps is one GEMM, then one fused step per time step.  ``batch_sizes`` (packed input, rows sorted
    by decreasing length, time-major x): step t runs its first batch_sizes[t] rows only, and h_n holds
    each row's h at its own last step.  Returns (out (T, B, HID) or (B, T, HID), h_n (B, HID)).
    """
    relu = _relu(nonlinearity)
    xw = project_inputs(x, h0, None, w_ih, w_hh, b_ih, b_hh, 1, batch_first, batch_sizes, fold=(b_ih,))
    args = (xw, h0, w_hh, b_hh)
    if torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in args):
        out, hn = _RNNLayer.apply(*args, relu, batch_sizes)
    else:
        out = _layer_forward(*args, relu, batch_sizes)
        hn = final_states(batch_sizes, out)[0]
    return (out.transpose(0, 1) if batch_first else out), hn


class FusedRNN(FusedRNNBase):
    """Drop-in for ``torch.nn.RNN`` whose recurrence runs on the fused Elman step (``rnn``).

    Same arguments in the same order (``nonlinearity`` fourth), parameters, shapes and outputs: layers, bias,
    batch_first, bidirectional, dropout, unbatched input and PackedSequence input (sorted or not).
    ``FusedRNN.from_torch(rnn)`` copies an ``nn.RNN``.
    """

    GATES, TORCH, STATES = 1, nn.RNN, 1

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None):
        _relu(nonlinearity)
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         device=device, dtype=dtype)

    @classmethod
    def from_torch(cls, module, **kw):
        return super().from_torch(module, nonlinearity=getattr(module, "nonlinearity", "tanh"), **kw)

    def _layer(self, x, state, weights, lengths, batch_sizes):
        out, hn = rnn(x, state[0] if state is not None else None, *weights, nonlinearity=self.nonlinearity,
                      batch_sizes=batch_sizes)
        return out, (hn,)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", nonlinearity={self.nonlinearity!r}"


# ----------------------------------------------------------------------------------------------
# compile-only builds for `seqbench inspect`
# ----------------------------------------------------------------------------------------------

def compile_builds(family: str, dtypes=(torch.float16,)):
    """Every step config at batch 16, input = hidden = 1024 (the cell, and the layer's step reading the
    precomputed input projection), tanh, and the pointwise backward."""
    from kernels._rnn import BWD_CONFIG

    for dtype in dtypes:
        t = lambda *s: torch.empty(*s, device="meta", dtype=dtype)  # noqa: E731
        B, HID = 16, 1024
        x, h, w, b = t(B, HID), t(B, HID), t(HID, HID), t(HID)
        for cfg in configs(dtype):
            yield "rnn.cell", _rnn_step_fwd, step_fwd_args(x, h, w, w, b, b, h, False), cfg
            yield "rnn.layer_step", _rnn_step_fwd, step_fwd_args(None, h, None, w, None, b, h, False, xw=x), cfg
        yield "rnn.step_bwd", _rnn_step_bwd, step_bwd_args(h, h, h, False), BWD_CONFIG
