"""Building blocks shared by the LSTM, GRU and Elman RNN step kernels.

A step computes four (hidden × batch) gate tiles.  They are stacked into one (4·BLOCK_H × BLOCK_B)
tile so a single dot per K block has M = 4·BLOCK_H rows (64 or 128: Hopper's wgmma wants M >= 64
per warpgroup) and the batch is the N dimension, which suits the small batches RNNs run at.
Row r of the stacked tile is slot r // BLOCK_H (a gate) of hidden unit r % BLOCK_H.
"""
import functools
import math

import torch
import triton
import triton.language as tl
from torch import nn

from kernels._common import autotune
from kernels._tl import cast, dot_acc, sigmoid


@triton.jit
def gate_matmul(acc, W, A, stride_wr, stride_wk, stride_ab, stride_ak, rows, row_ok, offs_b, b_ok, K,
                BLOCK_K: tl.constexpr, PREC: tl.constexpr):
    """acc (R × BLOCK_B) += W[rows, :K] @ A[offs_b, :K]ᵀ; rows with row_ok false contribute zero."""
    offs_k = tl.arange(0, BLOCK_K)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + offs_k
        k_ok = kk < K
        w = tl.load(W + rows[:, None] * stride_wr + kk[None, :] * stride_wk, mask=row_ok[:, None] & k_ok[None, :],
                    other=0.0)
        a = tl.load(A + offs_b[None, :] * stride_ab + kk[:, None] * stride_ak, mask=b_ok[None, :] & k_ok[:, None],
                    other=0.0)
        acc = dot_acc(w, a, acc, PREC)
    return acc


@triton.jit
def split4(t, BLOCK_H: tl.constexpr, BLOCK_B: tl.constexpr):
    """The four (BLOCK_H × BLOCK_B) slot tiles of a stacked (4·BLOCK_H × BLOCK_B) tile."""
    t = tl.permute(tl.reshape(t, (2, 2, BLOCK_H, BLOCK_B)), (2, 3, 0, 1))
    even, odd = tl.split(t)
    s0, s2 = tl.split(even)
    s1, s3 = tl.split(odd)
    return s0, s1, s2, s3


@triton.jit
def load4(ptr, step, mask):
    """Four same-shaped tiles at ptr, ptr + step, ptr + 2·step, ptr + 3·step (the gate blocks), in fp32."""
    a = tl.load(ptr, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(ptr + step, mask=mask, other=0.0).to(tl.float32)
    c = tl.load(ptr + 2 * step, mask=mask, other=0.0).to(tl.float32)
    d = tl.load(ptr + 3 * step, mask=mask, other=0.0).to(tl.float32)
    return a, b, c, d


@triton.jit
def store4(ptr, step, a, b, c, d, mask):
    """Store four tiles to the gate blocks at ptr + k·step, cast to the pointer's dtype."""
    ty = ptr.dtype.element_ty
    tl.store(ptr, cast(a, ty), mask=mask)
    tl.store(ptr + step, cast(b, ty), mask=mask)
    tl.store(ptr + 2 * step, cast(c, ty), mask=mask)
    tl.store(ptr + 3 * step, cast(d, ty), mask=mask)


@triton.jit
def lstm_pointwise_bwd(i, f, g, o, c_prev, c1, dh, dc):
    """One LSTM step backwards from dh' and the incoming dc': (∂a_i, ∂a_f, ∂a_g, ∂a_o, dc_prev)."""
    tc = tanh(c1)
    dc = dc + dh * o * (1.0 - tc * tc)
    return dc * g * i * (1.0 - i), dc * c_prev * f * (1.0 - f), dc * i * (1.0 - g * g), dh * tc * o * (1.0 - o), dc * f


@triton.jit
def tanh(x):
    """tanh as 2σ(2x) − 1 through kernels._tl.sigmoid (libdevice's fast exp and division on a GPU, tl.sigmoid
    in the interpreter); saturates cleanly."""
    return 2.0 * sigmoid(2.0 * x) - 1.0


def _cfg(bh, bb, bk, warps, stages):
    return triton.Config({"BLOCK_H": bh, "BLOCK_B": bb, "BLOCK_K": bk}, num_warps=warps, num_stages=stages)


# Autotune candidates of the step kernels (the same on sm_80 and sm_90; `seqbench inspect` shows
# each compiles to HMMA/HGMMA without spills under triton 3.6 and 3.9).  BLOCK_H = 16 gives M = 64
# stacked gate rows and the most programs per step, which small-batch steps need to spread W_hh over
# the SMs.  fp32 takes exact IEEE dots on CUDA cores, whose tiles live in registers: smaller K blocks
# (triton 3.9 spilled up to 5.3 KB with the 16-bit list on sm_80).
STEP_CONFIGS = [
    _cfg(16, 16, 64, 4, 3),
    _cfg(16, 16, 128, 4, 3),
    _cfg(16, 32, 128, 4, 3),
    _cfg(32, 16, 128, 8, 3),
    _cfg(32, 32, 64, 4, 3),
]
FP32_STEP_CONFIGS = [
    _cfg(16, 16, 64, 4, 3),
    _cfg(16, 16, 32, 4, 3),
    _cfg(32, 16, 32, 8, 3),
    _cfg(32, 32, 32, 4, 3),
]


def step_configs(dtype) -> list:
    return FP32_STEP_CONFIGS if dtype == torch.float32 else STEP_CONFIGS


# The interpreter runs one program at a time: small tiles so tests cross tile edges.
INTERPRETER_STEP = dict(BLOCK_H=16, BLOCK_B=16, BLOCK_K=32, num_warps=4)

# Pointwise backward kernels: one fixed tile.
BWD_CONFIG = triton.Config({"BLOCK_B": 16, "BLOCK_H": 64}, num_warps=4, num_stages=1)


@functools.lru_cache(maxsize=None)
def _tuned(kernel, dtype):
    return autotune(kernel, step_configs(dtype), ["B", "IN", "HID"], kernel.__name__.strip("_"))


def step_launcher(kernel, device, dtype):
    """(kernel to index with a grid, extra launch kwargs): autotuned on a GPU, fixed in the interpreter."""
    if device.type == "cuda":
        return _tuned(kernel, dtype), {}
    return kernel, dict(INTERPRETER_STEP)


def step_grid(B: int, HID: int):
    return lambda m: (triton.cdiv(HID, m["BLOCK_H"]), triton.cdiv(B, m["BLOCK_B"]))


def launch_bwd(kernel, B: int, HID: int, args: dict):
    if not B:                      # an empty batch: nothing to compute
        return
    bb, bh = BWD_CONFIG.kwargs["BLOCK_B"], BWD_CONFIG.kwargs["BLOCK_H"]
    kernel[(triton.cdiv(HID, bh), triton.cdiv(B, bb))](**args, BLOCK_B=bb, BLOCK_H=bh,
                                                      num_warps=BWD_CONFIG.num_warps, num_stages=BWD_CONFIG.num_stages)


# ----------------------------------------------------------------------------------------------
# layers and modules shared by FusedLSTM, FusedGRU and FusedRNN: packed sequences, directions, stacking
# ----------------------------------------------------------------------------------------------

def check_batch_sizes(batch_sizes, T: int, B: int) -> None:
    """A layer's batch_sizes: None, or T positive non-increasing ints starting at B (every row runs its first
    step, as in a PackedSequence; a row that never ran would have no state to return)."""
    if batch_sizes is None:
        return
    sizes = list(batch_sizes)
    if (len(sizes) != T or not all(isinstance(b, int) and b >= 1 for b in sizes) or sizes[0] != B
            or any(b > a for a, b in zip(sizes, sizes[1:]))):
        raise ValueError(f"batch_sizes must be {T} positive, non-increasing ints starting at the batch size {B}, "
                         f"got {sizes}")


def project_inputs(x, h0, c0, w_ih, w_hh, b_ih, b_hh, gates: int, batch_first: bool, batch_sizes, fold=()):
    """A layer's input checks, then the input projection of all its steps as one GEMM: xw = x W_ihᵀ plus the
    biases in ``fold``, time-major (T, B, gates·HID) and contiguous for the step kernels."""
    from kernels._common import check_rnn_step, check_tensor
    check_tensor("x", x, 3, "(B, T, input_size)" if batch_first else "(T, B, input_size)")
    if batch_first:
        x = x.transpose(0, 1)
    T, B, IN = x.shape
    if T < 1:
        raise ValueError(f"x must hold at least one time step, got shape {tuple(x.shape)}")
    check_rnn_step(x[0], h0, c0, w_ih, w_hh, b_ih, b_hh, gates)
    check_batch_sizes(batch_sizes, T, B)
    xw = (x.reshape(T * B, IN) @ w_ih.t()).reshape(T, B, w_ih.shape[0])
    for b in fold:
        if b is not None:
            xw = xw + b
    return xw.contiguous()


def lengths_of(batch_sizes, B: int, device=None) -> torch.Tensor:
    """Each row's length (B,) from the per-step active-row counts of rows sorted by decreasing length."""
    return (torch.tensor(list(batch_sizes))[None, :] > torch.arange(B)[:, None]).sum(1).to(device)


def unpack(packed):
    """A PackedSequence as (x (T, B, I) padded, rows sorted by decreasing length as PyTorch packs them,
    lengths (B,) int64 on x's device, batch_sizes: the active rows per step, a list).  Padding is zero."""
    from torch.nn.utils.rnn import PackedSequence
    data, bs = packed.data, packed.batch_sizes
    if not isinstance(packed, PackedSequence) or not isinstance(data, torch.Tensor) or data.ndim != 2:
        raise ValueError(f"input: a PackedSequence must hold 2-D data (total steps, input_size), got "
                         f"{tuple(getattr(data, 'shape', ()))}")
    sizes = bs.tolist()
    if (bs.ndim != 1 or not sizes or sizes[-1] < 1 or sum(sizes) != data.shape[0]
            or any(later > earlier for earlier, later in zip(sizes, sizes[1:]))):
        raise ValueError(f"input.batch_sizes must be positive, non-increasing and sum to data's {data.shape[0]} "
                         f"rows, got {sizes}")
    T, B = len(sizes), sizes[0]
    steps = torch.arange(T)
    lengths = lengths_of(sizes, B)                                                      # (B,) sorted, decreasing
    mask = steps[:, None] < lengths[None, :]                                            # (T, B) time-major
    x = data.new_zeros(T, B, data.shape[1])
    x[mask.to(data.device)] = data
    return x, lengths.to(data.device), sizes


def repack(out, lengths, like):
    """The (T, B, H) padded output as a PackedSequence shaped like ``like`` (same batch sizes and order)."""
    from torch.nn.utils.rnn import PackedSequence
    mask = torch.arange(out.shape[0], device=out.device)[:, None] < lengths[None, :]
    return PackedSequence(out[mask], like.batch_sizes, like.sorted_indices, like.unsorted_indices)


def reverse_padded(x, lengths):
    """Each row's first lengths[b] steps reversed in place of them (padding stays): the reverse direction
    starts at each sequence's own end."""
    T = x.shape[0]
    t = torch.arange(T, device=x.device)[:, None]
    idx = torch.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)             # (T, B)
    return x.gather(0, idx[:, :, None].expand(-1, -1, x.shape[2]))


def final_states(batch_sizes, *seqs):
    """Each (T, B, H) sequence's state at its end: the last step's, or for packed input (``batch_sizes``) each
    row's at its own last step; copies, never views of the sequences (nn.LSTM's h_n never aliases out)."""
    if batch_sizes is None:
        return tuple(s[-1].clone() for s in seqs)
    lengths = lengths_of(batch_sizes, seqs[0].shape[1], seqs[0].device)
    return tuple(last_steps(s, lengths) for s in seqs)


def last_steps(out, lengths):
    """out[lengths[b] − 1, b] for every row b: each sequence's state at its own last step, (B, H)."""
    idx = (lengths - 1)[None, :, None].expand(1, -1, out.shape[2])
    return out.gather(0, idx)[0]


class FusedRNNBase(nn.Module):
    """The nn.LSTM/GRU/RNN module around a layer function: parameters by PyTorch's names, stacked layers,
    both directions, dropout between layers, batch_first, unbatched input and PackedSequence input.

    Subclasses set GATES (4 LSTM, 3 GRU, 1 RNN), TORCH (the module they replace), STATES (2: (h, c); 1: h) and
    implement ``_layer(x (T, B, I), state tuple or None, weights, lengths, batch_sizes) -> (out, state
    tuple)``, where ``batch_sizes`` (a list, rows sorted by decreasing length) is given for packed input:
    a row past its length neither updates its state nor writes output, and each state holds the row's
    state at its own last step."""

    GATES: int
    TORCH: type
    STATES: int

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None):
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout must be in [0, 1], got {dropout}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout, self.bidirectional = bias, batch_first, float(dropout), bidirectional
        dirs = 2 if bidirectional else 1
        factory = dict(device=device, dtype=dtype)
        G = self.GATES * hidden_size
        for layer in range(num_layers):
            layer_in = input_size if layer == 0 else hidden_size * dirs
            for suffix in ("", "_reverse")[:dirs]:
                setattr(self, f"weight_ih_l{layer}{suffix}", nn.Parameter(torch.empty(G, layer_in, **factory)))
                setattr(self, f"weight_hh_l{layer}{suffix}", nn.Parameter(torch.empty(G, hidden_size, **factory)))
                if bias:
                    setattr(self, f"bias_ih_l{layer}{suffix}", nn.Parameter(torch.empty(G, **factory)))
                    setattr(self, f"bias_hh_l{layer}{suffix}", nn.Parameter(torch.empty(G, **factory)))
        self.reset_parameters()

    def reset_parameters(self):
        """PyTorch's initialisation: U(−1/√hidden, 1/√hidden) for every parameter."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    @classmethod
    def from_torch(cls, module, **kw):
        """A copy of ``module`` (the nn module in TORCH: nn.LSTM, nn.GRU, nn.RNN), on its device and dtype."""
        if not isinstance(module, cls.TORCH):
            raise TypeError(f"from_torch expects an nn.{cls.TORCH.__name__}, got {type(module).__name__}")
        if getattr(module, "proj_size", 0):
            raise ValueError(f"{cls.__name__} does not support proj_size > 0, got proj_size={module.proj_size}")
        w = module.weight_ih_l0
        new = cls(module.input_size, module.hidden_size, num_layers=module.num_layers, bias=module.bias,
                  batch_first=module.batch_first, dropout=module.dropout, bidirectional=module.bidirectional,
                  device=w.device, dtype=w.dtype, **kw)
        new.load_state_dict(module.state_dict())
        return new.train(module.training)

    def _weights(self, layer: int, suffix: str):
        get = lambda n: getattr(self, f"{n}_l{layer}{suffix}", None)  # noqa: E731
        return get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh")

    def _states_in(self, hx, B: int, unbatched: bool, sorted_indices):
        """hx as a tuple of STATES tensors (layers·dirs, B, hidden), checked; None stays None."""
        if hx is None:
            return None
        names = ("h0", "c0")[: self.STATES]
        states = tuple(hx) if self.STATES > 1 else (hx,)
        if self.STATES > 1 and (not isinstance(hx, (tuple, list)) or len(hx) != self.STATES):
            raise ValueError(f"hx must be a tuple (h0, c0) for {type(self).__name__}, got {type(hx).__name__}")
        dirs = 2 if self.bidirectional else 1
        expect = (self.num_layers * dirs, B, self.hidden_size)
        out = []
        for name, t in zip(names, states):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
            t = t.unsqueeze(1) if unbatched else t
            if tuple(t.shape) != expect:
                raise ValueError(f"{name} must have shape {expect if not unbatched else (expect[0], expect[2])}"
                                 f"{' for this packed batch' if sorted_indices is not None else ''}, "
                                 f"got {tuple(t.shape)}")
            out.append(t.index_select(1, sorted_indices) if sorted_indices is not None else t)
        return tuple(out)

    def forward(self, input, hx=None):
        from torch.nn.utils.rnn import PackedSequence
        packed = isinstance(input, PackedSequence)
        dirs = 2 if self.bidirectional else 1
        lengths = batch_sizes = sorted_indices = None
        unbatched = False
        if packed:
            x, lengths, batch_sizes = unpack(input)
            sorted_indices = input.sorted_indices
            if x.shape[-1] != self.input_size:
                raise ValueError(f"input: the PackedSequence's data must have {self.input_size} features, got "
                                 f"{tuple(input.data.shape)}")
        else:
            from kernels._common import check_tensor
            unbatched = isinstance(input, torch.Tensor) and input.ndim == 2
            check_tensor("input", input, 2 if unbatched else 3,
                         "(B, T, input_size)" if self.batch_first else "(T, B, input_size)")
            x = input.unsqueeze(1 if not self.batch_first else 0) if unbatched else input
            if self.batch_first:
                x = x.transpose(0, 1)
            if x.shape[-1] != self.input_size:
                raise ValueError(f"input must have {self.input_size} features in its last dim, got "
                                 f"{tuple(input.shape)}")
        B = x.shape[1]
        states = self._states_in(hx, B, unbatched, sorted_indices)
        finals = [[] for _ in range(self.STATES)]
        for layer in range(self.num_layers):
            outs = []
            for d, suffix in enumerate(("", "_reverse")[:dirs]):
                idx = layer * dirs + d
                state = tuple(s[idx] for s in states) if states is not None else None
                seq = x if not d else (reverse_padded(x, lengths) if packed else x.flip(0))
                out, st = self._layer(seq, state, self._weights(layer, suffix), lengths, batch_sizes)
                outs.append(out if not d else (reverse_padded(out, lengths) if packed else out.flip(0)))
                for f, s in zip(finals, st):
                    f.append(s)
            x = torch.cat(outs, -1) if dirs == 2 else outs[0]
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = nn.functional.dropout(x, self.dropout, training=True)
        finals = [torch.stack(f) for f in finals]
        if packed:
            unsorted = input.unsorted_indices
            finals = [f.index_select(1, unsorted) if unsorted is not None else f for f in finals]
            out = repack(x, lengths, input)
        else:
            out = x.transpose(0, 1) if self.batch_first else x
            if unbatched:
                out = out.squeeze(1 if not self.batch_first else 0)
                finals = [f.squeeze(1) for f in finals]
        return out, (tuple(finals) if self.STATES > 1 else finals[0])

    def flatten_parameters(self) -> None:
        """nn.LSTM/GRU/RNN's cuDNN weight-compaction call: a no-op here (the kernels read the weights in place),
        so code written for the nn module runs unchanged."""

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, bias={self.bias}, "
                f"batch_first={self.batch_first}, dropout={self.dropout}, bidirectional={self.bidirectional}")
