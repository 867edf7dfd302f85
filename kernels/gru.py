"""Fused GRU cell step in Triton, with ``torch.nn.GRUCell``'s weight layout and gates (r, z, n):

    r = σ(x W_irᵀ + b_ir + h W_hrᵀ + b_hr),   z = σ(x W_izᵀ + b_iz + h W_hzᵀ + b_hz)
    a_hn = h W_hnᵀ + b_hn,                     n = tanh(x W_inᵀ + b_in + r ∘ a_hn)
    h' = (1 − z) ∘ n + z ∘ h

One launch: the stacked tile holds four slots (r, z, x-side n, h-side n); the x-side matmul fills
slots r, z, in and the h-side matmul fills r, z, hn, so a_hn stays separate as the r ∘ a_hn term
needs.  Backward: one pointwise kernel from the saved (r, z, n, a_hn), then matmuls:

    ∂n = dh'∘(1−z),  ∂a_n = ∂n∘(1−n²),  ∂a_z = dh'∘(h−n)∘z(1−z),  ∂a_r = ∂a_n∘a_hn∘r(1−r)
    x side: [∂a_r, ∂a_z, ∂a_n];  h side: [∂a_r, ∂a_z, ∂a_n∘r];  dh = (h side) W_hh + dh'∘z
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels._rnn import gate_matmul, launch_bwd, load4, split4, step_grid, step_launcher, store4, tanh
from kernels._tl import cast
from kernels._common import dot_options, once_differentiable
from kernels.lstm import _check_batching, _check_cell, _s


@triton.jit
def _gru_step_fwd(X, WIH, H0, WHH, BIH, BHH, H1, GATES, B, IN, HID,
                  sxb, sxk, swir, swik, shb, shk, swhr, swhk, sbih, sbhh, sh1b, sh1h, sgb, sgh,
                  HAS_H: tl.constexpr, HAS_BIH: tl.constexpr, HAS_BHH: tl.constexpr, STORE_GATES: tl.constexpr,
                  BLOCK_H: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr,
                  PREC: tl.constexpr, INTERP: tl.constexpr):
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
    acc = gate_matmul(acc, WIH, X, swir, swik, sxb, sxk, x_rows, x_ok, offs_b, b_ok, IN, BLOCK_K, PREC, INTERP)
    if HAS_H:
        acc = gate_matmul(acc, WHH, H0, swhr, swhk, shb, shk, h_rows, h_ok, offs_b, b_ok, HID, BLOCK_K, PREC, INTERP)
    if HAS_BIH:
        acc += tl.load(BIH + x_rows * sbih, mask=x_ok, other=0.0).to(tl.float32)[:, None]
    if HAS_BHH:
        acc += tl.load(BHH + h_rows * sbhh, mask=h_ok, other=0.0).to(tl.float32)[:, None]

    a_r, a_z, a_in, a_hn = split4(acc, BLOCK_H, BLOCK_B)
    rg = tl.sigmoid(a_r)
    z = tl.sigmoid(a_z)
    n = tanh(a_in + rg * a_hn)
    hj = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)
    mask = (hj < HID)[:, None] & b_ok[None, :]
    if HAS_H:
        h = tl.load(H0 + offs_b[None, :] * shb + hj[:, None] * shk, mask=mask, other=0.0).to(tl.float32)
        h1 = (1.0 - z) * n + z * h
    else:
        h1 = (1.0 - z) * n
    tl.store(H1 + offs_b[None, :] * sh1b + hj[:, None] * sh1h, cast(h1, H1.dtype.element_ty, INTERP), mask=mask)
    if STORE_GATES:
        store4(GATES + offs_b[None, :] * sgb + hj[:, None] * sgh, HID * sgh, rg, z, n, a_hn, mask, INTERP)


@triton.jit
def _gru_step_bwd(GATES, H0, DH1, DGX, DGH, DHD, B, HID,
                  sgb, sgh, shb, shk, sdb, sdh, sxb, sxg, syb, syg, sdhb, sdhh,
                  HAS_H: tl.constexpr, INTERP: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """Pointwise backward: dh' -> x-side and h-side gate gradients and the direct dh'∘z term."""
    offs_b = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_h = tl.program_id(0) * BLOCK_H + tl.arange(0, BLOCK_H)
    mask = (offs_b < B)[:, None] & (offs_h < HID)[None, :]
    rg, z, n, a_hn = load4(GATES + offs_b[:, None] * sgb + offs_h[None, :] * sgh, HID * sgh, mask)
    dh1 = tl.load(DH1 + offs_b[:, None] * sdb + offs_h[None, :] * sdh, mask=mask, other=0.0).to(tl.float32)
    if HAS_H:
        h = tl.load(H0 + offs_b[:, None] * shb + offs_h[None, :] * shk, mask=mask, other=0.0).to(tl.float32)
    else:
        h = tl.zeros([BLOCK_B, BLOCK_H], tl.float32)
    dan = dh1 * (1.0 - z) * (1.0 - n * n)
    daz = dh1 * (h - n) * z * (1.0 - z)
    dar = dan * a_hn * rg * (1.0 - rg)
    xp = DGX + offs_b[:, None] * sxb + offs_h[None, :] * sxg
    yp = DGH + offs_b[:, None] * syb + offs_h[None, :] * syg
    ty = DGX.dtype.element_ty
    tl.store(xp, cast(dar, ty, INTERP), mask=mask)
    tl.store(xp + HID * sxg, cast(daz, ty, INTERP), mask=mask)
    tl.store(xp + 2 * HID * sxg, cast(dan, ty, INTERP), mask=mask)
    tl.store(yp, cast(dar, ty, INTERP), mask=mask)
    tl.store(yp + HID * syg, cast(daz, ty, INTERP), mask=mask)
    tl.store(yp + 2 * HID * syg, cast(dan * rg, ty, INTERP), mask=mask)
    tl.store(DHD + offs_b[:, None] * sdhb + offs_h[None, :] * sdhh, cast(dh1 * z, DHD.dtype.element_ty, INTERP), mask=mask)


def step_fwd_args(x, h, w_ih, w_hh, b_ih, b_hh, h1, gates) -> dict:
    B, IN = x.shape
    return dict(X=x, WIH=w_ih, H0=h, WHH=w_hh, BIH=b_ih, BHH=b_hh, H1=h1, GATES=gates, B=B, IN=IN, HID=h1.shape[1],
                **dict(zip(("sxb", "sxk"), x.stride())), **dict(zip(("swir", "swik"), w_ih.stride())),
                **dict(zip(("shb", "shk"), _s(h))), **dict(zip(("swhr", "swhk"), w_hh.stride())),
                sbih=b_ih.stride(0) if b_ih is not None else 0, sbhh=b_hh.stride(0) if b_hh is not None else 0,
                **dict(zip(("sh1b", "sh1h"), h1.stride())), **dict(zip(("sgb", "sgh"), _s(gates))),
                HAS_H=h is not None, HAS_BIH=b_ih is not None, HAS_BHH=b_hh is not None,
                STORE_GATES=gates is not None, **dot_options(x.dtype, x.device))


def step_bwd_args(gates, h, dh1, dgx, dgh, dhd) -> dict:
    B, HID = dh1.shape
    return dict(GATES=gates, H0=h, DH1=dh1, DGX=dgx, DGH=dgh, DHD=dhd, B=B, HID=HID,
                **dict(zip(("sgb", "sgh"), gates.stride())), **dict(zip(("shb", "shk"), _s(h))),
                **dict(zip(("sdb", "sdh"), dh1.stride())), **dict(zip(("sxb", "sxg"), dgx.stride())),
                **dict(zip(("syb", "syg"), dgh.stride())), **dict(zip(("sdhb", "sdhh"), dhd.stride())),
                HAS_H=h is not None, INTERP=dot_options(dh1.dtype, dh1.device)["INTERP"])


def _step_fwd(x, h, w_ih, w_hh, b_ih, b_hh, gates=None):
    B, HID = x.shape[0], w_hh.shape[1]
    h1 = torch.empty(B, HID, device=x.device, dtype=x.dtype)
    fn, meta = step_launcher(_gru_step_fwd, x.device)
    fn[step_grid(B, HID)](**step_fwd_args(x, h, w_ih, w_hh, b_ih, b_hh, h1, gates), **meta)
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

    x: (B, I) or (I,); h: (B, H) or (H,), None for zeros; w_ih: (3H, I); w_hh: (3H, H);
    biases (3H,) or None.  Differentiable.
    """
    unbatched = _check_batching(x, (("h", h),))
    if unbatched:
        x = x.unsqueeze(0)
        h = h.unsqueeze(0) if h is not None else None
    _check_cell(x, h, None, w_ih, w_hh, b_ih, b_hh, 3)
    args = (x, h, w_ih, w_hh, b_ih, b_hh)
    if torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in args):
        h1 = _GRUCell.apply(*args)
    else:
        h1 = _step_fwd(*args)
    return h1[0] if unbatched else h1


def compile_builds(family: str, dtypes=(torch.float16,)):
    """Every step config as launched at batch 16, input = hidden = 1024, and the pointwise backward."""
    from kernels._rnn import BWD_CONFIG, STEP_CONFIGS

    for dtype in dtypes:
        t = lambda *s: torch.empty(*s, device="meta", dtype=dtype)  # noqa: E731
        B, H = 16, 1024
        x, h, gates, w, b, g3 = t(B, H), t(B, H), t(B, 4 * H), t(3 * H, H), t(3 * H), t(B, 3 * H)
        args = step_fwd_args(x, h, w, w, b, b, h, gates)
        args["INTERP"] = False
        for cfg in STEP_CONFIGS:
            yield "gru.cell", _gru_step_fwd, args, cfg
        args = step_bwd_args(gates, h, h, g3, g3, h)
        args["INTERP"] = False
        yield "gru.step_bwd", _gru_step_bwd, args, BWD_CONFIG
