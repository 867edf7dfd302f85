"""The benchmark workloads, declared once as data: shapes, implementations and their counts.

The CLI (``seqbench run``), ``pytest --benchmark`` and the report all read ``WORKLOADS``.  A
workload says, for a shape and a mode ("fwd" or "fwd+bwd"), how many FLOPs it does, the fewest
bytes it must move, and how many tokens it processes; each implementation turns a shape into a
closure that runs it once on inputs built beforehand.  Adding a kernel means adding an ``Impl``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

MODES = ("fwd", "fwd+bwd")


def dtype_bytes(dtype: torch.dtype) -> int:
    return torch.finfo(dtype).bits // 8


@dataclass(frozen=True)
class Impl:
    name: str
    build: Callable  # (shape: dict, dtype, device, mode) -> zero-arg callable
    triton: bool = False          # runs a Triton kernel: needs a GPU to be timed
    needs_cuda: bool = False      # a CUDA-only library path (SDPA flash/cudnn, cuDNN LSTM)
    note: str = ""


@dataclass
class Workload:
    name: str
    description: str
    shape_keys: tuple[str, ...]
    seq_key: str
    flops: Callable    # (shape, mode) -> float
    min_bytes: Callable  # (shape, dtype, mode) -> float
    tokens: Callable   # (shape) -> int
    default_shapes: Callable  # (quick: bool, gpu: bool) -> list[dict]
    impls: dict[str, Impl] = field(default_factory=dict)

    def add(self, impl: Impl) -> Impl:
        self.impls[impl.name] = impl
        return impl


WORKLOADS: dict[str, Workload] = {}


def register(w: Workload) -> Workload:
    WORKLOADS[w.name] = w
    return w


def _randn(*shape, dtype, device, requires_grad=False, scale=1.0):
    t = torch.randn(*shape, device=device, dtype=torch.float32) * scale
    return t.to(dtype).requires_grad_(requires_grad)


def _runner(fn, inputs, mode):
    """A closure running fn(*inputs) once, and in fwd+bwd mode its backward from a fixed random grad."""
    if mode == "fwd":
        def run():
            with torch.no_grad():
                return fn(*inputs)
        return run
    out = fn(*inputs)
    first = out[0] if isinstance(out, tuple) else out
    grad = torch.randn_like(first)

    def run():
        o = fn(*inputs)
        o = o[0] if isinstance(o, tuple) else o
        o.backward(grad)
        for t in inputs:
            if isinstance(t, torch.Tensor):
                t.grad = None
    return run


# ------------------------------------------------------------------------------------ lstm_layer
# One LSTM layer, input size = hidden size = H, batch B, length T, the input projection included.
# FLOPs: the two matmuls, 2·B·4H·(I + H) per step (the pointwise gate work is O(B·H), left out);
# backward does twice the forward's matmul work.  Minimum bytes: weights once, x in, h out.

def _lstm_flops(s, mode):
    f = s["T"] * 2 * s["B"] * 4 * s["H"] * (s["H"] + s["H"])
    return f * (3 if mode == "fwd+bwd" else 1)


def _lstm_bytes(s, dtype, mode):
    e = dtype_bytes(dtype)
    B, T, H = s["B"], s["T"], s["H"]
    weights = (4 * H * 2 * H + 8 * H) * e
    io = (T * B * H + T * B * H) * e
    return weights + io if mode == "fwd" else 2 * weights + 3 * io


def _lstm_shapes(quick, gpu):
    if not gpu:
        return [dict(B=4, T=t, H=64) for t in ((8, 32) if quick else (8, 32, 128))]
    lens = (64, 256, 1024) if quick else (64, 128, 256, 512, 1024, 2048)
    return [dict(B=16, T=t, H=1024) for t in lens]


LSTM = register(Workload(
    "lstm_layer", "one LSTM layer over a sequence (input projection included)", ("B", "T", "H"), "T",
    _lstm_flops, _lstm_bytes, lambda s: s["B"] * s["T"], _lstm_shapes))


def _lstm_weights(s, dtype, device, grad):
    H = s["H"]
    bound = 1 / math.sqrt(H)
    mk = lambda *shape: ((torch.rand(*shape, device=device) * 2 - 1) * bound).to(dtype).requires_grad_(grad)  # noqa: E731
    return mk(4 * H, H), mk(4 * H, H), mk(4 * H), mk(4 * H)


def _lstm_build(kind):
    def build(s, dtype, device, mode):
        from kernels import lstm as kl
        from reference import lstm as rl
        grad = mode == "fwd+bwd"
        x = _randn(s["T"], s["B"], s["H"], dtype=dtype, device=device, requires_grad=grad)
        w = _lstm_weights(s, dtype, device, grad)
        if kind == "nn.LSTM":
            m = torch.nn.LSTM(s["H"], s["H"], device=device, dtype=dtype)
            with torch.no_grad():
                for p, src in zip((m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0), w):
                    p.copy_(src)
            return _runner(lambda x: m(x)[0], (x,), mode)
        from kernels.lstm_persistent import lstm_persistent
        fn = {"torch_loop": rl.lstm, "triton_step": kl.lstm, "triton_persistent": lstm_persistent}[kind]
        return _runner(lambda x, *w: fn(x, None, *w)[0], (x, *w), mode)
    return build


LSTM.add(Impl("torch_loop", _lstm_build("torch_loop"), note="textbook equations, one torch op per gate per step"))
LSTM.add(Impl("nn.LSTM", _lstm_build("nn.LSTM"), note="cuDNN on a GPU, ATen's CPU kernel otherwise"))
LSTM.add(Impl("triton_step", _lstm_build("triton_step"), triton=True, note="input GEMM + one fused Triton step per time step"))
LSTM.add(Impl("triton_persistent", _lstm_build("triton_persistent"), triton=True,
              note="input GEMM + one kernel looping over time (grid barrier between steps)"))


# ----------------------------------------------------------------------------------- lstm_heads
# FlashRNN's layout: NH heads of DH units, block-diagonal W_hh; same counts as lstm_layer with the
# recurrent matmul per head (2·B·4DH·DH per head per step).

def _heads_flops(s, mode):
    H = s["NH"] * s["DH"]
    f = s["T"] * 2 * s["B"] * 4 * (H * H + s["NH"] * s["DH"] ** 2)
    return f * (3 if mode == "fwd+bwd" else 1)


def _heads_bytes(s, dtype, mode):
    e = dtype_bytes(dtype)
    H = s["NH"] * s["DH"]
    weights = (4 * H * H + 4 * s["NH"] * s["DH"] ** 2 + 8 * H) * e
    io = 2 * s["T"] * s["B"] * H * e
    return weights + io if mode == "fwd" else 2 * weights + 3 * io


def _heads_shapes(quick, gpu):
    if not gpu:
        return [dict(B=4, T=t, NH=2, DH=16) for t in ((8, 32) if quick else (8, 32, 128))]
    return [dict(B=16, T=t, NH=12, DH=64) for t in ((256, 1024) if quick else (128, 256, 512, 1024, 2048))]


HEADS = register(Workload(
    "lstm_heads", "multi-head LSTM layer, block-diagonal W_hh (FlashRNN's 12 x 64 layout)", ("B", "T", "NH", "DH"), "T",
    _heads_flops, _heads_bytes, lambda s: s["B"] * s["T"], _heads_shapes))


def _heads_build(kind):
    def build(s, dtype, device, mode):
        from kernels.lstm_persistent import lstm_persistent
        from reference import lstm as rl
        grad = mode == "fwd+bwd"
        NH, DH = s["NH"], s["DH"]
        H = NH * DH
        x = _randn(s["T"], s["B"], H, dtype=dtype, device=device, requires_grad=grad)
        mk = lambda *shape: ((torch.rand(*shape, device=device) * 2 - 1) / math.sqrt(DH)).to(dtype).requires_grad_(grad)  # noqa: E731
        w = (mk(4 * H, H), mk(NH, 4 * DH, DH), mk(4 * H), mk(4 * H))
        if kind == "torch_loop":
            return _runner(lambda x, wi, wh, bi, bh: rl.lstm(x, None, wi, rl.block_diagonal(wh), bi, bh)[0], (x, *w), mode)
        return _runner(lambda x, *w: lstm_persistent(x, None, *w, heads=NH)[0], (x, *w), mode)
    return build


HEADS.add(Impl("torch_loop", _heads_build("torch_loop"), note="textbook loop with the block-diagonal matrix"))
HEADS.add(Impl("triton_persistent", _heads_build("triton_persistent"), triton=True, note="one program per head, all steps"))


# ------------------------------------------------------------------------------------- attention
# softmax(Q Kᵀ/√D) V for B sequences of N tokens, H heads of dim D, non-causal.
# FLOPs 4·B·H·N²·D forward, 2.5× that backward (FlashAttention's convention).
# Minimum bytes: q, k, v in and o out; the backward also reads o, dO and writes dq, dk, dv.

def _attn_flops(s, mode):
    f = 4 * s["B"] * s["H"] * s["N"] ** 2 * s["D"]
    return f * (3.5 if mode == "fwd+bwd" else 1)


def _attn_bytes(s, dtype, mode):
    one = s["B"] * s["H"] * s["N"] * s["D"] * dtype_bytes(dtype)
    return 4 * one if mode == "fwd" else 4 * one + 8 * one


def _attn_shapes(quick, gpu):
    if not gpu:
        return [dict(B=1, H=2, N=n, D=32) for n in ((64, 256) if quick else (64, 256, 1024))]
    lens = (512, 2048, 8192) if quick else (256, 512, 1024, 2048, 4096, 8192, 16384)
    return [dict(B=max(1, 16384 // n), H=16, N=n, D=128) for n in lens]


ATTN = register(Workload(
    "attention", "scaled dot-product attention core, non-causal", ("B", "H", "N", "D"), "N",
    _attn_flops, _attn_bytes, lambda s: s["B"] * s["N"], _attn_shapes))


def _attn_build(kind):
    def build(s, dtype, device, mode):
        from kernels.attention import attention
        from reference.attention import naive_attention, sdpa
        grad = mode == "fwd+bwd"
        q, k, v = (_randn(s["B"], s["H"], s["N"], s["D"], dtype=dtype, device=device, requires_grad=grad)
                   for _ in range(3))
        if kind == "naive":
            fn = naive_attention
        elif kind == "triton":
            fn = attention
        else:
            backend = kind.removeprefix("sdpa_")
            fn = lambda q, k, v: sdpa(q, k, v, backend=backend)  # noqa: E731
            fn(q, k, v)  # raises here if this backend cannot take these inputs
        return _runner(fn, (q, k, v), mode)
    return build


ATTN.add(Impl("naive", _attn_build("naive"), note="materialises the N×N matrix"))
ATTN.add(Impl("sdpa_math", _attn_build("sdpa_math")))
ATTN.add(Impl("sdpa_flash", _attn_build("sdpa_flash"), needs_cuda=True))
ATTN.add(Impl("sdpa_efficient", _attn_build("sdpa_efficient"), needs_cuda=True))
ATTN.add(Impl("sdpa_cudnn", _attn_build("sdpa_cudnn"), needs_cuda=True))
ATTN.add(Impl("triton", _attn_build("triton"), triton=True, note="kernels.attention, flash-style"))


# ------------------------------------------------------------------------------------ model pair
# The textbook comparison at equal d_model and tokens: one LSTM layer (d → d) against one
# pre-norm Transformer block (QKV, attention with d/64 heads, output projection, 4d MLP).
# FLOPs: LSTM 16·B·T·d²; block 24·B·T·d² + 4·B·T²·d; training ×3 (attention ×3.5 for its part).

def _model_flops(s, mode, arch):
    B, T, d = s["B"], s["T"], s["d"]
    if arch == "lstm":
        return 16 * B * T * d * d * (3 if mode == "fwd+bwd" else 1)
    dense, attn = 24 * B * T * d * d, 4 * B * T * T * d
    return dense * 3 + attn * 3.5 if mode == "fwd+bwd" else dense + attn


def _model_bytes(s, dtype, mode, arch):
    e = dtype_bytes(dtype)
    B, T, d = s["B"], s["T"], s["d"]
    weights = (8 * d * d if arch == "lstm" else 12 * d * d) * e
    io = 2 * B * T * d * e
    return weights + io if mode == "fwd" else 2 * weights + 3 * io


def _model_shapes(quick, gpu):
    if not gpu:
        return [dict(B=2, T=t, d=64) for t in ((16, 64) if quick else (16, 64, 256))]
    lens = (128, 512, 2048) if quick else (128, 256, 512, 1024, 2048)
    return [dict(B=16, T=t, d=1024) for t in lens]


class TransformerBlock(torch.nn.Module):
    """Pre-norm block: x + Attn(LN(x)), then + MLP(LN(x)); ``attn`` is sdpa-like (q, k, v) -> o."""

    def __init__(self, d, attn, device, dtype):
        super().__init__()
        f = dict(device=device, dtype=dtype)
        self.heads, self.attn = max(1, d // 64), attn
        self.ln1, self.ln2 = torch.nn.LayerNorm(d, **f), torch.nn.LayerNorm(d, **f)
        self.qkv, self.proj = torch.nn.Linear(d, 3 * d, **f), torch.nn.Linear(d, d, **f)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(d, 4 * d, **f), torch.nn.GELU(), torch.nn.Linear(4 * d, d, **f))

    def forward(self, x):  # x: (B, T, d)
        B, T, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        x = x + self.proj(self.attn(q, k, v).transpose(1, 2).reshape(B, T, d))
        return x + self.mlp(self.ln2(x))


def _model_build(kind):
    def build(s, dtype, device, mode):
        from kernels.attention import attention
        from kernels.lstm import FusedLSTM
        from reference.attention import sdpa
        grad = mode == "fwd+bwd"
        x = _randn(s["B"], s["T"], s["d"], dtype=dtype, device=device, requires_grad=grad)
        if kind.startswith("lstm"):
            m = torch.nn.LSTM(s["d"], s["d"], batch_first=True, device=device, dtype=dtype)
            if kind != "lstm_torch":
                m = FusedLSTM.from_torch(m, kernel="persistent" if kind.endswith("persistent") else "step")
            return _runner(lambda x: m(x)[0], (x,), mode)
        attn = attention if kind == "transformer_triton" else (lambda q, k, v: sdpa(q, k, v))
        m = TransformerBlock(s["d"], attn, device, dtype)
        return _runner(m, (x,), mode)
    return build


def _pair_workload(name, arch, desc):
    return register(Workload(
        name, desc, ("B", "T", "d"), "T",
        lambda s, mode: _model_flops(s, mode, arch), lambda s, dt, mode: _model_bytes(s, dt, mode, arch),
        lambda s: s["B"] * s["T"], _model_shapes))


LSTM_MODEL = _pair_workload("model_lstm", "lstm", "one LSTM layer at d_model (the textbook's LSTM side)")
LSTM_MODEL.add(Impl("lstm_torch", _model_build("lstm_torch"), note="nn.LSTM (cuDNN on a GPU)"))
LSTM_MODEL.add(Impl("lstm_triton", _model_build("lstm_triton"), triton=True, note="FusedLSTM, fused step kernel"))
LSTM_MODEL.add(Impl("lstm_triton_persistent", _model_build("lstm_triton_persistent"), triton=True,
                    note="FusedLSTM(kernel='persistent')"))
BLOCK_MODEL = _pair_workload("model_transformer", "transformer", "one Transformer block at d_model (the textbook's Transformer side)")
BLOCK_MODEL.add(Impl("transformer_torch", _model_build("transformer_torch"), note="SDPA, PyTorch's pick of backend"))
BLOCK_MODEL.add(Impl("transformer_triton", _model_build("transformer_triton"), triton=True,
                     note="attention through kernels.attention"))


def shape_label(w: Workload, s: dict) -> str:
    return " ".join(f"{k}={s[k]}" for k in w.shape_keys)
