"""Byte-level language models for ``seqbench train``.

Every model is the same frame around a different sequence mixer: an embedding of the 256 byte values
(d_model wide), the mixer's layers, a final LayerNorm and the output head tied to the embedding.
The mixers run on this project's kernels, or with ``impl="torch"`` on their PyTorch references
(nn.LSTM/cuDNN, F.conv1d, SDPA), on the same parameters.

Registering a model is one decorated function ``(d_model, layers, impl) -> nn.Module`` mapping
(B, T, d) to (B, T, d) causally:

    @register("mymodel", impls=("triton", "torch"), description="...")
    def mymodel(d, layers, impl): ...

The Triton functions do not follow autocast (the LSTM and conv kernels run in their inputs' dtype), so
under autocast a mixer casts its input and weights to the autocast dtype itself, as autocast does for
a Linear; the fp32 parameters stay the master copy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

VOCAB = 256
MODELS: dict[str, "ModelSpec"] = {}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[[int, int, str], nn.Module]
    impls: tuple[str, ...]         # the project's kernels first, "torch" (the reference) last
    description: str
    width_step: int = 8            # widths tried when matching parameter counts

    def check_width(self, d: int) -> None:
        """ValueError for a width the mixer cannot take."""
        with torch.device("meta"):
            self.build(d, 1, "torch")


def register(name: str, impls: tuple[str, ...], description: str, width_step: int = 8):
    """Add a mixer to MODELS under ``name``; ``impls`` must end with "torch"."""
    if impls[-1] != "torch":
        raise ValueError(f"a model's impls must end with 'torch' (its reference), got {impls}")

    def deco(build):
        MODELS[name] = ModelSpec(name, build, tuple(impls), description, width_step)
        return build
    return deco


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype autocast would compute in here, or x's own dtype outside autocast."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def _cast(dtype, *ts):
    return [None if t is None else t.to(dtype) for t in ts]


class ByteLM(nn.Module):
    """Embedding (256 × d) → mixer → LayerNorm → logits through the tied embedding."""

    def __init__(self, model: str, d_model: int, layers: int, impl: str):
        super().__init__()
        spec = MODELS[model]
        if impl not in spec.impls:
            raise ValueError(f"impl for model {model!r} must be one of {spec.impls}, got {impl!r}")
        self.model, self.impl, self.d_model = model, impl, d_model
        self.embed = nn.Embedding(VOCAB, d_model)
        nn.init.normal_(self.embed.weight, std=d_model ** -0.5)    # unit-scale logits at initialisation
        self.mixer = spec.build(d_model, layers, impl)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:     # (B, T) bytes as int64 -> (B, T, 256) logits
        return F.linear(self.norm(self.mixer(self.embed(idx))), self.embed.weight)


def count_params(model: str, d_model: int, layers: int) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in ByteLM(model, d_model, layers, "torch").parameters())


def match_widths(models, d_model: int, layers: int, match: str = "params", reference: str = "transformer",
                 tolerance: float = 0.10) -> dict[str, int]:
    """Each model's width: ``d_model`` for all (match="d_model"), or the width whose parameter count is
    closest to the reference model's at ``d_model`` (match="params"); ValueError past ``tolerance``."""
    if match == "d_model":
        return {m: d_model for m in models}
    if match != "params":
        raise ValueError(f"match must be 'params' or 'd_model', got {match!r}")
    target = count_params(reference, d_model, layers)
    widths = {}
    for m in models:
        if m == reference:
            widths[m] = d_model
            continue
        best = _closest_width(m, layers, target, 4 * d_model, tolerance)
        off = count_params(m, best, layers) / target - 1
        if abs(off) > tolerance:
            raise ValueError(f"model {m!r} cannot match {reference}'s {target:,} parameters within "
                             f"{tolerance:.0%} (closest width {best} is off by {off:+.1%}); use --match d_model")
        widths[m] = best
    return widths


def _closest_width(model: str, layers: int, target: int, most: int, tolerance: float) -> int:
    return closest_width(lambda d: count_params(model, d, layers), target, most, MODELS[model].width_step, tolerance)


def closest_width(count: Callable[[int], int], target: int, most: int, step: int, tolerance: float,
                  least: int = 1) -> int:
    """The width d in [least, most] whose ``count(d)`` is closest to ``target`` (counts grow with width:
    bisection), rounded to a multiple of ``step`` where that stays within ``tolerance``."""
    lo, hi = least, most
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if count(mid) < target else (lo, mid)
    off = lambda d: abs(count(d) / target - 1)  # noqa: E731
    exact = min({max(least, lo - 1), lo}, key=off)
    rounded = [d for d in {step * (exact // step), step * (exact // step + 1)} if d >= step]
    good = [d for d in rounded if off(d) <= tolerance]
    return min(good, key=off) if good else exact


# ----------------------------------------------------------------------------------------------- mixers

class LSTMMixer(nn.Module):
    """Stacked LSTM layers held in one nn.LSTM; the kernels run the same weights layer by layer."""

    def __init__(self, d: int, layers: int, impl: str):
        super().__init__()
        self.rnn, self.impl = nn.LSTM(d, d, layers, batch_first=True), impl

    def forward(self, x):
        if self.impl == "torch":
            return self.rnn(x)[0]
        from kernels.lstm import lstm
        from kernels.lstm_persistent import lstm_persistent
        run = lstm_persistent if self.impl == "persistent" else lstm
        dtype = compute_dtype(x)
        h = x.to(dtype).transpose(0, 1)
        for layer in range(self.rnn.num_layers):
            w = [getattr(self.rnn, f"{n}_l{layer}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            h = run(h, None, *_cast(dtype, *w))[0]
        return h.transpose(0, 1)


@register("lstm", impls=("step", "persistent", "torch"),
          description="stacked LSTM (the fused step kernel, or the persistent kernel); torch: nn.LSTM / cuDNN")
def lstm_model(d, layers, impl):
    return LSTMMixer(d, layers, impl)


class ConvMixer(nn.Module):
    """Causal ConvS2S blocks, (GLU(conv(x)) + x)·√0.5, kernel width ``kernel_size``."""

    def __init__(self, d: int, layers: int, impl: str, kernel_size: int = 5):
        super().__init__()
        from kernels.conv import ConvS2SBlock
        self.blocks = nn.ModuleList(ConvS2SBlock(d, kernel_size, causal=True) for _ in range(layers))
        self.impl = impl

    def forward(self, x):
        from kernels.conv import glu_conv1d
        from reference.conv import glu_conv1d as glu_conv1d_ref
        dtype = compute_dtype(x)
        for b in self.blocks:
            if self.impl == "torch":
                y = glu_conv1d_ref(x, b.weight, b.bias, causal=True)
            else:
                y = glu_conv1d(*_cast(dtype, x, b.weight, b.bias), causal=True)
            x = (y + x) * math.sqrt(0.5)
        return x


@register("convs2s", impls=("triton", "torch"),
          description="causal ConvS2S GLU blocks, width 5 (the gated-conv kernel); torch: F.conv1d + F.glu")
def convs2s_model(d, layers, impl):
    return ConvMixer(d, layers, impl)


def sinusoids(T: int, d: int, device) -> torch.Tensor:
    """The Transformer's fixed position encoding, (T, d)."""
    pos = torch.arange(T, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, d, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / d))
    enc = torch.zeros(T, d, device=device)
    enc[:, 0::2] = torch.sin(pos * freq)
    enc[:, 1::2] = torch.cos(pos * freq[: d // 2])
    return enc


class TransformerMixer(nn.Module):
    """Sinusoidal positions, then pre-norm causal Transformer blocks with d/64 heads (at least one)."""

    def __init__(self, d: int, layers: int, impl: str):
        super().__init__()
        from bench.workloads.models import TransformerBlock
        heads = max(1, d // 64)
        if d % heads:
            raise ValueError(f"the transformer's d_model must divide into {heads} heads of 64 or more, got {d}")
        self.blocks = nn.ModuleList(TransformerBlock(d, None, None) for _ in range(layers))
        self.impl = impl

    def _attend(self, q, k, v):
        if self.impl == "torch":
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        from kernels.attention import attention
        return attention(q, k, v, causal=True)

    def forward(self, x):
        x = x + sinusoids(x.shape[1], x.shape[2], x.device)
        for b in self.blocks:
            x = b(x, self._attend)
        return x


@register("transformer", impls=("triton", "torch"),
          description="pre-norm causal Transformer blocks (the flash-attention kernel); torch: SDPA")
def transformer_model(d, layers, impl):
    return TransformerMixer(d, layers, impl)


class MinGRUMixer(nn.Module):
    """Pre-norm blocks with the Transformer's frame and a minGRU (Feng et al. 2024) in place of attention:
    x + minGRU(LN(x)), then x + MLP(LN(x)) with a 4d GELU MLP.  The minGRU's gates read x only, so each
    layer is one GEMM and one parallel scan (no positions needed: the recurrence is ordered)."""

    def __init__(self, d: int, layers: int, impl: str):
        super().__init__()
        from kernels.scan import MinGRU
        self.rnns = nn.ModuleList(MinGRU(d, d) for _ in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(2 * layers))
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
                                  for _ in range(layers))
        self.impl = impl

    def _rnn(self, m, x):
        if self.impl != "torch":
            return m(x)[0]
        from reference.scan import linear_scan, min_gru

        def scan(a, b, h0):          # the state in fp32 at least, as the kernel keeps it
            state = torch.promote_types(a.dtype, torch.float32)
            return linear_scan(a.to(state), b.to(state), h0).to(a.dtype)
        return min_gru(x, *m.weights(), scan=scan)

    def forward(self, x):
        for i, (rnn, mlp) in enumerate(zip(self.rnns, self.mlps)):
            x = x + self._rnn(rnn, self.norms[2 * i](x))
            x = x + mlp(self.norms[2 * i + 1](x))
        return x


@register("mingru", impls=("triton", "torch"),
          description="pre-norm blocks with a minGRU as the mixer (GEMM + the Triton scan); torch: a sequential loop")
def mingru_model(d, layers, impl):
    return MinGRUMixer(d, layers, impl)
