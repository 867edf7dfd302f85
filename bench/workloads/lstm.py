"""lstm_layer: one LSTM layer over a sequence, input size = hidden size = H, the input projection included;
lstm_ragged: the same over a ragged batch as a PackedSequence (padded, for contrast).

FLOPs: the two matmuls, 2·B·4H·(I + H) per step (the pointwise gate work is O(B·H), left out); the
backward does twice the forward's matmul work.  Minimum bytes: the weights once, x in, h out.
Sequential floor: each step multiplies the 4H × H matrix W_hh.  Ragged counts scale by the share of
real tokens.
"""
import torch

from bench.workload import Check, Workload, forward_backward
from bench.workloads._rnn import (LAYER_SHAPES, check_args, double, layer_bytes, layer_flops, layer_inputs,
                                  layer_params, packed_check, packed_runner, ragged_workload, torch_module,
                                  uniform_tensors)


def check_layer(device):
    """The fused-step layer at T=9, hidden 50 (tiles cross every edge), forward, against float64."""
    from kernels.lstm import lstm
    from reference.lstm import lstm as ref
    x, W, U, b, _ = check_args(device, 4, steps=9)
    return lstm(x, None, W, U, b, b)[0], ref(*double(x), None, *double(W, U, b, b))[0]


def check_gpu(kind, dtype, B=16, H=1024, T=32):
    """The fused cell or layer step at a real shape, forward and backward, against float64."""
    def run(device):
        from kernels.lstm import lstm, lstm_cell
        from reference import lstm as ref
        x, w_ih, w_hh, b = uniform_tensors(device, (T, B, H), (4 * H, H), (4 * H, H), (4 * H,), scale=H ** -0.5)
        if kind == "cell":
            args = (x[0] * H ** 0.5, w_ih, w_hh, b, b)
            ours = lambda x, *w: lstm_cell(x, None, None, *w)[0]  # noqa: E731
            theirs = lambda x, *w: ref.lstm_cell(x, None, None, *w)[0]  # noqa: E731
        else:
            args = (x * H ** 0.5, w_ih, w_hh, b, b)
            ours = lambda x, *w: lstm(x, None, *w)[0]  # noqa: E731
            theirs = lambda x, *w: ref.lstm(x, None, *w)[0]  # noqa: E731
        return forward_backward(ours, args, dtype), forward_backward(theirs, args, torch.float64)
    return run


lstm_layer = Workload(
    "lstm_layer", "one LSTM layer over a sequence (input projection included)", ("B", "T", "H"), "T", LAYER_SHAPES,
    layer_flops(4), layer_bytes(4), lambda s: s["B"] * s["T"], layer_inputs(4),
    recurrent_params=lambda s: 4 * s["H"] * s["H"], params=layer_params(4),
    checks=(Check("LSTM layer fwd (T=9, hidden 50)", check_layer),
            Check("LSTM cell fwd+bwd, B=16 I=H=1024, fp16", check_gpu("cell", torch.float16), 3e-2, gpu_only=True),
            Check("LSTM layer (fused steps) fwd+bwd, B=16 H=1024 T=32, fp16", check_gpu("layer", torch.float16), 3e-2,
                  gpu_only=True)))


def _weights(inp):
    return inp.w_ih, inp.w_hh, inp.b_ih, inp.b_hh


@lstm_layer.impl(baseline=True, guide=("LSTM", "textbook loop"),
                 note="textbook equations, one torch op per gate per step")
def torch_loop(inp):
    from reference.lstm import lstm
    return lambda: lstm(inp.x, None, *_weights(inp))[0]


@lstm_layer.impl(name="nn_lstm", guide=("LSTM", "nn (cuDNN on a GPU)"),
                 note="cuDNN on a GPU, ATen's CPU kernel otherwise")
def nn_lstm(inp):
    m = torch_module(torch.nn.LSTM, inp)
    return lambda: m(inp.x)[0]


@lstm_layer.impl(triton=True, guide=("LSTM", "Triton step"), note="input GEMM + one fused Triton step per time step")
def triton_step(inp):
    from kernels.lstm import lstm
    return lambda: lstm(inp.x, None, *_weights(inp))[0]


@lstm_layer.impl(triton=True, note="input GEMM + one kernel looping over time (grid barrier between steps)")
def triton_persistent(inp):
    from kernels.lstm_persistent import lstm_persistent
    return lambda: lstm_persistent(inp.x, None, *_weights(inp))[0]


lstm_layer.compiled("torch_loop")


def _fused_lstm_persistent(m):
    from kernels.lstm import FusedLSTM
    return FusedLSTM.from_torch(m, kernel="persistent")     # per-row lengths inside the kernel


check_packed = packed_check(torch.nn.LSTM, _fused_lstm_persistent)   # on a ragged PackedSequence


def _fused_lstm(m):
    from kernels.lstm import FusedLSTM
    return FusedLSTM.from_torch(m)


lstm_ragged = ragged_workload(
    __name__, "LSTM", 4, torch.nn.LSTM, _fused_lstm,
    "FusedLSTM (step) on the PackedSequence: each step runs its active rows only",
    checks=(Check("FusedLSTM persistent on a ragged PackedSequence (2 layers, bidirectional)", check_packed),))


@lstm_ragged.impl(name="fused_lstm_persistent_packed", triton=True,
                  note="FusedLSTM(kernel='persistent') on the PackedSequence: per-row lengths inside the kernel")
def triton_persistent_packed(inp):
    return packed_runner(_fused_lstm_persistent(torch_module(torch.nn.LSTM, inp)), inp)
