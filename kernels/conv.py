"""Gated convolution of ConvS2S (Gehring et al. 2017) in Triton: a 1-D convolution whose 2·CO output
channels are split into a and b, then the GLU a ∘ σ(b), with ``nn.Conv1d``'s weight layout:

    pre[b, t, j] = bias[j] + Σ_k Σ_ci x[b, t + k − P, ci] · W[j, ci, k]      (x = 0 outside 0 … T−1)
    out[b, t, c] = pre[b, t, c] · σ(pre[b, t, CO + c])

P = K − 1 for ``causal`` (the decoder's left padding), P = (K − 1) // 2 otherwise (``padding="same"``,
also for even K).  The forward is an implicit GEMM over K·CI: each program accumulates the a and b tiles
of its output block and applies bias and GLU in the epilogue, so the 2·CO pre-activations never reach
memory.  The backward saves nothing of size 2·CO either; it recomputes pre (the same kernel) and writes
its gradient, then two more implicit GEMMs:

    ∂a = dout ∘ σ(b),   ∂b = dout ∘ a ∘ σ(b)(1 − σ(b))              (∂pre = [∂a, ∂b])
    dx[b, s, ci] = Σ_k Σ_j ∂pre[b, s − k + P, j] · W[j, ci, k]
    dW[j, ci, k] = Σ_(b,t) ∂pre[b, t, j] · x[b, t + k − P, ci],   dbias[j] = Σ_(b,t) ∂pre[b, t, j]

Dimensions (one meaning per letter in every kernel file):
    B    batch                 T    sequence length          K    kernel width (taps)
    CI   input channels        CO   output channels (the weight has 2·CO rows: a, then b)
    BLOCK_T / BLOCK_C / BLOCK_CI  a program's time rows / output channels / K-loop channel block
Strides are ``stride_{tensor}{dim}`` (``kernels._common.strides``), dims b batch, t time, c channel,
o weight row (output channel), i weight column (input channel), k tap: e.g. ``stride_xb, stride_xt, stride_xc``.
"""
from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl
from torch import nn

from kernels._common import autotune, check_same, check_tensor, dot_options, once_differentiable, strides
from kernels._tl import cast, dot_acc


@triton.jit
def _conv_tiles(acc_a, acc_b, X, W, b, offs_t, t_ok, offs_c, c_ok, T, CI, CO, K, P,
                stride_xb, stride_xt, stride_xc, stride_wo, stride_wi, stride_wk,
                BLOCK_CI: tl.constexpr, PREC: tl.constexpr):
    """acc_a += Σ_k x[b, offs_t + k − P, :] @ W[offs_c, :, k]ᵀ and acc_b the same with rows CO + offs_c,
    over CI in blocks: each x tile is loaded once for both GLU halves."""
    offs_ci = tl.arange(0, BLOCK_CI)
    for k in range(0, K):
        src = offs_t + k - P
        src_ok = (src >= 0) & (src < T) & t_ok
        for ci0 in range(0, CI, BLOCK_CI):
            ci = ci0 + offs_ci
            ci_ok = ci < CI
            xt = tl.load(X + b * stride_xb + src[:, None] * stride_xt + ci[None, :] * stride_xc,
                         mask=src_ok[:, None] & ci_ok[None, :], other=0.0)
            w = W + offs_c[None, :] * stride_wo + ci[:, None] * stride_wi + k * stride_wk
            w_mask = ci_ok[:, None] & c_ok[None, :]
            acc_a = dot_acc(xt, tl.load(w, mask=w_mask, other=0.0), acc_a, PREC)
            acc_b = dot_acc(xt, tl.load(w + CO * stride_wo, mask=w_mask, other=0.0), acc_b, PREC)
    return acc_a, acc_b


@triton.jit
def _glu_conv_fwd(X, W, BIAS, O, DO, DPRE, T, CI, CO, K, P,
                  stride_xb, stride_xt, stride_xc, stride_wo, stride_wi, stride_wk, stride_biaso,
                  stride_ob, stride_ot, stride_oc, stride_dob, stride_dot, stride_doc,
                  stride_dpb, stride_dpt, stride_dpc,
                  HAS_BIAS: tl.constexpr, BACKWARD: tl.constexpr,
                  BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_CI: tl.constexpr, PREC: tl.constexpr):
    """One program: BLOCK_T steps × BLOCK_C output channels of one sequence, the a and b halves together.
    Forward: out = a ∘ σ(b).  BACKWARD: recompute a, b and write ∂pre = [∂a, ∂b] from dout instead."""
    offs_t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    b = tl.program_id(2).to(tl.int64)
    t_ok = offs_t < T
    c_ok = offs_c < CO
    acc_a = tl.zeros([BLOCK_T, BLOCK_C], tl.float32)
    acc_b = tl.zeros([BLOCK_T, BLOCK_C], tl.float32)
    acc_a, acc_b = _conv_tiles(acc_a, acc_b, X, W, b, offs_t, t_ok, offs_c, c_ok, T, CI, CO, K, P,
                               stride_xb, stride_xt, stride_xc, stride_wo, stride_wi, stride_wk, BLOCK_CI, PREC)
    if HAS_BIAS:
        acc_a += tl.load(BIAS + offs_c * stride_biaso, mask=c_ok, other=0.0).to(tl.float32)[None, :]
        acc_b += tl.load(BIAS + (CO + offs_c) * stride_biaso, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    gate = tl.sigmoid(acc_b)
    mask = t_ok[:, None] & c_ok[None, :]
    if BACKWARD:
        dout = tl.load(DO + b * stride_dob + offs_t[:, None] * stride_dot + offs_c[None, :] * stride_doc,
                       mask=mask, other=0.0).to(tl.float32)
        dp = DPRE + b * stride_dpb + offs_t[:, None] * stride_dpt + offs_c[None, :] * stride_dpc
        ty = DPRE.dtype.element_ty
        tl.store(dp, cast(dout * gate, ty), mask=mask)
        tl.store(dp + CO * stride_dpc, cast(dout * acc_a * gate * (1.0 - gate), ty), mask=mask)
    else:
        tl.store(O + b * stride_ob + offs_t[:, None] * stride_ot + offs_c[None, :] * stride_oc,
                 cast(acc_a * gate, O.dtype.element_ty), mask=mask)


@triton.jit
def _conv_bwd_dx(DPRE, W, DX, T, CI, J, K, P,
                 stride_dpb, stride_dpt, stride_dpc, stride_wo, stride_wi, stride_wk,
                 stride_dxb, stride_dxt, stride_dxc,
                 BLOCK_T: tl.constexpr, BLOCK_CI: tl.constexpr, BLOCK_J: tl.constexpr, PREC: tl.constexpr):
    """dx for BLOCK_T steps × BLOCK_CI input channels of one sequence: Σ_k ∂pre[s − k + P, :] @ W[:, ci, k]."""
    offs_s = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_ci = tl.program_id(1) * BLOCK_CI + tl.arange(0, BLOCK_CI)
    b = tl.program_id(2).to(tl.int64)
    ci_ok = offs_ci < CI
    offs_j = tl.arange(0, BLOCK_J)
    acc = tl.zeros([BLOCK_T, BLOCK_CI], tl.float32)
    for k in range(0, K):
        src = offs_s - k + P
        src_ok = (src >= 0) & (src < T) & (offs_s < T)
        for j0 in range(0, J, BLOCK_J):
            j = j0 + offs_j
            j_ok = j < J
            dp = tl.load(DPRE + b * stride_dpb + src[:, None] * stride_dpt + j[None, :] * stride_dpc,
                         mask=src_ok[:, None] & j_ok[None, :], other=0.0)
            w = tl.load(W + j[:, None] * stride_wo + offs_ci[None, :] * stride_wi + k * stride_wk,
                        mask=j_ok[:, None] & ci_ok[None, :], other=0.0)
            acc = dot_acc(dp, w, acc, PREC)
    tl.store(DX + b * stride_dxb + offs_s[:, None] * stride_dxt + offs_ci[None, :] * stride_dxc,
             cast(acc, DX.dtype.element_ty), mask=(offs_s < T)[:, None] & ci_ok[None, :])


@triton.jit
def _conv_bwd_dw(DPRE, X, DW, DBIAS, B, T, CI, J, P,
                 stride_dpb, stride_dpt, stride_dpc, stride_xb, stride_xt, stride_xc,
                 stride_dwo, stride_dwi, stride_dwk, stride_dbiaso, HAS_BIAS: tl.constexpr,
                 BLOCK_J: tl.constexpr, BLOCK_CI: tl.constexpr, BLOCK_R: tl.constexpr, PREC: tl.constexpr):
    """dW[j, ci, k] for BLOCK_J rows × BLOCK_CI columns of tap k, summed over all B·T positions in blocks
    of BLOCK_R; the programs of tap 0 and the first column block also sum dbias."""
    offs_j = tl.program_id(0) * BLOCK_J + tl.arange(0, BLOCK_J)
    offs_ci = tl.program_id(1) * BLOCK_CI + tl.arange(0, BLOCK_CI)
    k = tl.program_id(2)
    j_ok = offs_j < J
    ci_ok = offs_ci < CI
    offs_r = tl.arange(0, BLOCK_R)
    acc = tl.zeros([BLOCK_J, BLOCK_CI], tl.float32)
    db = tl.zeros([BLOCK_J], tl.float32)
    for r0 in range(0, B * T, BLOCK_R):
        r = r0 + offs_r
        r_ok = r < B * T
        bb = (r // T).to(tl.int64)
        t = r % T
        dpt = tl.load(DPRE + bb[None, :] * stride_dpb + t[None, :] * stride_dpt + offs_j[:, None] * stride_dpc,
                      mask=j_ok[:, None] & r_ok[None, :], other=0.0)
        src = t + k - P
        src_ok = r_ok & (src >= 0) & (src < T)
        xs = tl.load(X + bb[:, None] * stride_xb + src[:, None] * stride_xt + offs_ci[None, :] * stride_xc,
                     mask=src_ok[:, None] & ci_ok[None, :], other=0.0)
        acc = dot_acc(dpt, xs, acc, PREC)
        if HAS_BIAS:
            db += tl.sum(dpt.to(tl.float32), 1)
    tl.store(DW + offs_j[:, None] * stride_dwo + offs_ci[None, :] * stride_dwi + k * stride_dwk,
             cast(acc, DW.dtype.element_ty), mask=j_ok[:, None] & ci_ok[None, :])
    if HAS_BIAS:
        # a scalar branch, not a mask: triton 3.9's interpreter refuses a mask built from program ids
        if (tl.program_id(1) == 0) & (k == 0):
            tl.store(DBIAS + offs_j * stride_dbiaso, cast(db, DBIAS.dtype.element_ty), mask=j_ok)


# ----------------------------------------------------------------------------------------------
# configurations
# ----------------------------------------------------------------------------------------------

def _cfg(names, values, warps, stages):
    return triton.Config(dict(zip(names, values)), num_warps=warps, num_stages=stages)


FWD, DX, DW = ("BLOCK_T", "BLOCK_C", "BLOCK_CI"), ("BLOCK_T", "BLOCK_CI", "BLOCK_J"), ("BLOCK_J", "BLOCK_CI",
                                                                                   "BLOCK_R")
# Autotune candidates (the same for sm_80 and sm_90): 64-row tiles give Hopper's wgmma its M; from a
# compile sweep under triton 3.6 and 3.9 (`seqbench inspect`): no spills, HGMMA on sm_90a in 16 bits.
CONFIGS = {
    "fwd": [_cfg(FWD, (128, 64, 32), 8, 3), _cfg(FWD, (64, 128, 32), 8, 3)],
    "dx": [_cfg(DX, (64, 64, 64), 4, 3), _cfg(DX, (128, 64, 32), 8, 3)],
    "dw": [_cfg(DW, (64, 64, 64), 4, 3), _cfg(DW, (128, 64, 32), 8, 3)],
}
# fp32 takes exact IEEE dots on CUDA cores: small register tiles.
FP32_CONFIGS = {
    "fwd": [_cfg(FWD, (32, 32, 16), 8, 2)],     # two fp32 accumulators (a and b): 8 warps hold them
    "dx": [_cfg(DX, (32, 32, 16), 4, 2)],
    "dw": [_cfg(DW, (32, 32, 16), 4, 2)],
}
KERNELS = {"fwd": _glu_conv_fwd, "dx": _conv_bwd_dx, "dw": _conv_bwd_dw}
KEYS = {"fwd": ["T", "CI", "CO", "K"], "dx": ["T", "CI", "J", "K"], "dw": ["B", "T", "CI", "J"]}
# The interpreter runs one program at a time: small tiles so tests cross every edge.
INTERPRETER_CONFIG = {"fwd": dict(BLOCK_T=16, BLOCK_C=16, BLOCK_CI=16),
                      "dx": dict(BLOCK_T=16, BLOCK_CI=16, BLOCK_J=16),
                      "dw": dict(BLOCK_J=16, BLOCK_CI=16, BLOCK_R=16)}


def configs_for(kernel: str, dtype: torch.dtype) -> list:
    return (FP32_CONFIGS if dtype == torch.float32 else CONFIGS)[kernel]


@functools.lru_cache(maxsize=None)
def _tuned(kernel: str, dtype: torch.dtype):
    return autotune(KERNELS[kernel], configs_for(kernel, dtype), KEYS[kernel], f"conv.{kernel}")


def _launcher(kernel: str, x: torch.Tensor):
    if x.device.type != "cuda":
        return KERNELS[kernel], dict(INTERPRETER_CONFIG[kernel], num_warps=4)
    return _tuned(kernel, x.dtype), {}


# ----------------------------------------------------------------------------------------------
# launchers
# ----------------------------------------------------------------------------------------------

def padding(K: int, causal: bool) -> int:
    """Steps of zeros before the sequence: K − 1 causal, (K − 1) // 2 for padding='same'."""
    return K - 1 if causal else (K - 1) // 2


def fwd_args(x, w, bias, o, do, dpre, causal: bool) -> dict:
    """Every argument of ``_glu_conv_fwd`` but the tuned blocks; ``do``/``dpre`` given: the backward form."""
    B, T, CI = x.shape
    K = w.shape[2]
    return dict(X=x, W=w, BIAS=bias, O=o, DO=do, DPRE=dpre, T=T, CI=CI, CO=w.shape[0] // 2, K=K, P=padding(K, causal),
                **strides("x", x, "btc"), **strides("w", w, "oik"), **strides("bias", bias, "o"),
                **strides("o", o, "btc"), **strides("do", do, "btc"), **strides("dp", dpre, "btc"),
                HAS_BIAS=bias is not None, BACKWARD=dpre is not None, **dot_options(x.dtype, x.device))


def dx_args(dpre, w, dx, causal: bool) -> dict:
    K = w.shape[2]
    return dict(DPRE=dpre, W=w, DX=dx, T=dx.shape[1], CI=dx.shape[2], J=w.shape[0], K=K, P=padding(K, causal),
                **strides("dp", dpre, "btc"), **strides("w", w, "oik"), **strides("dx", dx, "btc"),
                **dot_options(dx.dtype, dx.device))


def dw_args(dpre, x, dw, dbias, causal: bool) -> dict:
    B, T, CI = x.shape
    return dict(DPRE=dpre, X=x, DW=dw, DBIAS=dbias, B=B, T=T, CI=CI, J=dw.shape[0], P=padding(dw.shape[2], causal),
                **strides("dp", dpre, "btc"), **strides("x", x, "btc"), **strides("dw", dw, "oik"),
                **strides("dbias", dbias, "o"), HAS_BIAS=dbias is not None, **dot_options(x.dtype, x.device))


def _forward(x, w, bias, causal):
    B, T, _ = x.shape
    CO = w.shape[0] // 2
    out = torch.empty(B, T, CO, device=x.device, dtype=x.dtype)
    fn, meta = _launcher("fwd", x)
    fn[lambda m: (triton.cdiv(T, m["BLOCK_T"]), triton.cdiv(CO, m["BLOCK_C"]), B)](
        **fwd_args(x, w, bias, out, None, None, causal), **meta)
    return out


def _backward(dout, x, w, bias, causal, need_dx: bool, need_dw: bool):
    B, T, CI = x.shape
    CO, K = w.shape[0] // 2, w.shape[2]
    dpre = torch.empty(B, T, 2 * CO, device=x.device, dtype=x.dtype)
    fn, meta = _launcher("fwd", x)
    fn[lambda m: (triton.cdiv(T, m["BLOCK_T"]), triton.cdiv(CO, m["BLOCK_C"]), B)](
        **fwd_args(x, w, bias, None, dout, dpre, causal), **meta)
    dx = dw = dbias = None
    if need_dx:
        dx = torch.empty(B, T, CI, device=x.device, dtype=x.dtype)
        fn, meta = _launcher("dx", x)
        fn[lambda m: (triton.cdiv(T, m["BLOCK_T"]), triton.cdiv(CI, m["BLOCK_CI"]), B)](
            **dx_args(dpre, w, dx, causal), **meta)
    if need_dw:
        dw = torch.empty_like(w, memory_format=torch.contiguous_format)
        dbias = torch.empty(2 * CO, device=x.device, dtype=bias.dtype) if bias is not None else None
        fn, meta = _launcher("dw", x)
        fn[lambda m: (triton.cdiv(2 * CO, m["BLOCK_J"]), triton.cdiv(CI, m["BLOCK_CI"]), K)](
            **dw_args(dpre, x, dw, dbias, causal), **meta)
    return dx, dw, dbias


class _GLUConv1d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, bias, causal):
        ctx.save_for_backward(x, w, bias)
        ctx.causal = causal
        return _forward(x, w, bias, causal)

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        x, w, bias = ctx.saved_tensors
        need = ctx.needs_input_grad
        dx, dw, dbias = _backward(dout, x, w, bias, ctx.causal, need[0], need[1] or need[2])
        return dx, dw if need[1] else None, dbias if need[2] else None, None


# ----------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------

def _check(x, weight, bias, causal):
    check_tensor("x", x, 3, "(B, T, C_in)")
    check_tensor("weight", weight, 3, "(2*C_out, C_in, K)")
    if weight.shape[0] % 2:
        raise ValueError(f"weight must have an even first dim 2*C_out (the GLU halves), got {tuple(weight.shape)}")
    if weight.shape[1] != x.shape[2]:
        raise ValueError(f"weight has C_in {weight.shape[1]} but x has {x.shape[2]} channels (x is (B, T, C_in), "
                         f"channels last); expected them equal")
    names, tensors = ("x", "weight"), (x, weight)
    if bias is not None:
        check_tensor("bias", bias, 1, "(2*C_out,)")
        if bias.shape[0] != weight.shape[0]:
            raise ValueError(f"bias must have shape ({weight.shape[0]},) to match weight, got {tuple(bias.shape)}")
        names, tensors = names + ("bias",), tensors + (bias,)
    check_same(names, tensors)
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    if min(x.shape) < 1 or min(weight.shape) < 1:
        raise ValueError(f"B, T, C_in, C_out and K must be >= 1, got x {tuple(x.shape)}, weight {tuple(weight.shape)}")


def glu_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
               causal: bool = True) -> torch.Tensor:
    """``F.glu(F.conv1d(x, weight, bias, padding), dim=channels)`` on channels-last sequences, one kernel.

    x: (B, T, C_in), any strides; weight: (2·C_out, C_in, K) as ``nn.Conv1d``'s; bias: (2·C_out,) or None.
    ``causal``: K − 1 zeros on the left (decoder); else ``padding="same"`` (encoder).  Returns (B, T, C_out).
    Differentiable (Triton kernels for dx, dW and dbias; not twice).
    """
    _check(x, weight, bias, causal)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)):
        return _GLUConv1d.apply(x, weight, bias, causal)
    return _forward(x, weight, bias, causal)


class ConvS2SBlock(nn.Module):
    """ConvS2S's residual block: (glu_conv1d(x) + x) · √0.5, channels kept (C_out = C_in = channels)."""

    def __init__(self, channels: int, kernel_size: int, causal: bool = True, bias: bool = True,
                 device=None, dtype=None):
        super().__init__()
        for name, value in (("channels", channels), ("kernel_size", kernel_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.channels, self.kernel_size, self.causal = channels, kernel_size, causal
        f = dict(device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.empty(2 * channels, channels, kernel_size, **f))
        self.bias = nn.Parameter(torch.empty(2 * channels, **f)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        """``nn.Conv1d``'s initialisation."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.channels * self.kernel_size)
            nn.init.uniform_(self.bias, -bound, bound)

    @classmethod
    def from_torch(cls, conv: nn.Conv1d, causal: bool = True) -> "ConvS2SBlock":
        """A block holding a copy of ``conv``'s weights: out_channels = 2 × in_channels, stride 1, no dilation.
        The padding is the block's (``causal``), not the conv's."""
        if not isinstance(conv, nn.Conv1d):
            raise TypeError(f"from_torch expects an nn.Conv1d, got {type(conv).__name__}")
        plain = conv.stride == (1,) and conv.dilation == (1,) and conv.groups == 1
        if conv.out_channels != 2 * conv.in_channels or not plain:
            raise ValueError("from_torch needs out_channels = 2 * in_channels, stride 1, dilation 1 and groups 1, got "
                             f"{conv}")
        w = conv.weight
        new = cls(conv.in_channels, conv.kernel_size[0], causal, conv.bias is not None, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            new.weight.copy_(w)
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
        return new.train(conv.training)

    def forward(self, x):  # x: (B, T, channels)
        return (glu_conv1d(x, self.weight, self.bias, causal=self.causal) + x) * math.sqrt(0.5)

    def extra_repr(self) -> str:
        return f"{self.channels}, kernel_size={self.kernel_size}, causal={self.causal}, bias={self.bias is not None}"


# ----------------------------------------------------------------------------------------------
# compile-only builds for `seqbench inspect`
# ----------------------------------------------------------------------------------------------

# Kernels that must issue Hopper wgmma (HGMMA) on sm_90a in 16 bits (`seqbench inspect`, tests/test_inspect.py).
WGMMA = ("conv.fwd", "conv.dx", "conv.dw")


def compile_builds(family: str, dtypes=(torch.float16,)):
    """Every config as launched at B=16, T=1024, C_in = C_out = 1024, K=3 (ConvS2S's width)."""
    for dtype in dtypes:
        t = lambda *s: torch.empty(*s, device="meta", dtype=dtype)  # noqa: E731
        x, w, bias, o, dpre = t(16, 1024, 1024), t(2048, 1024, 3), t(2048), t(16, 1024, 1024), t(16, 1024, 2048)
        builds = {"fwd": fwd_args(x, w, bias, o, None, None, True), "dx": dx_args(dpre, w, x, True),
                  "dw": dw_args(dpre, x, w, bias, True)}
        for kernel, args in builds.items():
            for cfg in configs_for(kernel, dtype):
                yield f"conv.{kernel}", KERNELS[kernel], args, cfg
