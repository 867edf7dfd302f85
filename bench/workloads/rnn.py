"""rnn_layer: one Elman RNN layer (tanh) over a sequence, input size = hidden size = H, the input projection
included: the textbook's §1.2 recurrence, beside gru_layer and lstm_layer.

FLOPs 2·B·H·(I + H) per step, the backward twice that; minimum bytes: the weights once, x in, h out.
Sequential floor: each step multiplies the H × H matrix W_hh.
"""
import torch

from bench.workload import Check, Workload, forward_backward
from bench.workloads._rnn import (LAYER_SHAPES, check_args, double, layer_bytes, layer_flops, layer_inputs,
                                  layer_params, packed_check, torch_module, uniform_tensors)


def check_cell(device):
    """One fused tanh step at hidden 50 against float64."""
    from kernels.rnn import rnn_cell
    from reference.rnn import rnn_cell as ref
    x, W, U, b, h = check_args(device, 1)
    return rnn_cell(x, h, W, U, b, b), ref(*double(x, h, W, U, b, b))


def check_layer(device):
    """The layer (input GEMM + fused steps) at T=9, hidden 50, relu, forward, against float64."""
    from kernels.rnn import rnn
    from reference.rnn import rnn as ref
    x, W, U, b, _ = check_args(device, 1, steps=9)
    return rnn(x, None, W, U, b, b, nonlinearity="relu")[0], ref(*double(x), None, *double(W, U, b, b),
                                                                  nonlinearity="relu")[0]


def check_gpu(device, B=16, H=1024, dtype=torch.float16):
    """One fused tanh step at a real shape, forward and backward, against float64."""
    from kernels.rnn import rnn_cell
    from reference.rnn import rnn_cell as ref
    x, h, w_ih, w_hh, b = uniform_tensors(device, (B, H), (B, H), (H, H), (H, H), (H,), scale=H ** -0.5)
    args = (x * H ** 0.5, h * H ** 0.5, w_ih, w_hh, b, b)
    return forward_backward(rnn_cell, args, dtype), forward_backward(ref, args, torch.float64)


def _fused_rnn(m):
    from kernels.rnn import FusedRNN
    return FusedRNN.from_torch(m)


rnn_layer = Workload(
    "rnn_layer", "one Elman RNN layer (tanh) over a sequence (input projection included)", ("B", "T", "H"), "T",
    LAYER_SHAPES, layer_flops(1), layer_bytes(1), lambda s: s["B"] * s["T"], layer_inputs(1),
    recurrent_params=lambda s: s["H"] * s["H"], params=layer_params(1),
    checks=(Check("Elman RNN cell fwd (tanh, hidden 50)", check_cell),
            Check("Elman RNN layer fwd (relu, T=9, hidden 50)", check_layer),
            Check("FusedRNN on a ragged PackedSequence (2 layers, bidirectional)", packed_check(torch.nn.RNN, _fused_rnn)),
            Check("Elman RNN cell fwd+bwd, B=16 I=H=1024, fp16", check_gpu, 3e-2, gpu_only=True)))


@rnn_layer.impl(baseline=True, note="the textbook equation, torch ops per step")
def torch_loop(inp):
    from reference.rnn import rnn
    return lambda: rnn(inp.x, None, inp.w_ih, inp.w_hh, inp.b_ih, inp.b_hh)[0]


@rnn_layer.impl(name="nn_rnn", note="cuDNN on a GPU, ATen's CPU kernel otherwise")
def nn_rnn(inp):
    m = torch_module(torch.nn.RNN, inp)
    return lambda: m(inp.x)[0]


@rnn_layer.impl(triton=True, note="input GEMM + one fused Triton step per time step")
def triton_step(inp):
    from kernels.rnn import rnn
    return lambda: rnn(inp.x, None, inp.w_ih, inp.w_hh, inp.b_ih, inp.b_hh)[0]


rnn_layer.compiled("torch_loop")
