"""gru_layer: one GRU layer over a sequence, input size = hidden size = H, the input projection included;
gru_ragged: the same over a ragged batch as a PackedSequence.

The textbook's "GRU: fewer parameters, faster" beside lstm_layer / lstm_ragged (the guide table pairs the
impls marked ``guide``): three gates instead of four.  FLOPs 2·B·3H·(I + H) per step, the backward
twice that; minimum bytes: the weights once, x in, h out.  Sequential floor: each step multiplies the
3H × H matrix W_hh.  Ragged counts scale by the share of real tokens.
"""
import torch

from bench.workload import Check, Workload, forward_backward
from bench.workloads._rnn import (LAYER_SHAPES, check_args, double, layer_bytes, layer_flops, layer_inputs,
                                  layer_params, packed_check, ragged_workload, torch_module, uniform_tensors)


def check_cell(device):
    """One fused cell step at hidden 50 against float64."""
    from kernels.gru import gru_cell
    from reference.gru import gru_cell as ref
    x, W, U, b, h = check_args(device, 3)
    return gru_cell(x, h, W, U, b, b), ref(*double(x, h, W, U, b, b))


def check_gpu(device, B=16, H=1024, dtype=torch.float16):
    """One fused cell step at a real shape, forward and backward, against float64."""
    from kernels.gru import gru_cell
    from reference.gru import gru_cell as ref
    x, h, w_ih, w_hh, b = uniform_tensors(device, (B, H), (B, H), (3 * H, H), (3 * H, H), (3 * H,), scale=H ** -0.5)
    args = (x * H ** 0.5, h * H ** 0.5, w_ih, w_hh, b, b)
    return forward_backward(gru_cell, args, dtype), forward_backward(ref, args, torch.float64)


def check_layer(device):
    """The GRU layer (input GEMM + fused steps) at T=9, hidden 50, forward, against float64."""
    from kernels.gru import gru
    from reference.gru import gru as ref
    x, W, U, b, _ = check_args(device, 3, steps=9)
    return gru(x, None, W, U, b, b)[0], ref(*double(x), None, *double(W, U, b, b))[0]


def _fused_gru(m):
    from kernels.gru import FusedGRU
    return FusedGRU.from_torch(m)


gru_layer = Workload(
    "gru_layer", "one GRU layer over a sequence (input projection included)", ("B", "T", "H"), "T", LAYER_SHAPES,
    layer_flops(3), layer_bytes(3), lambda s: s["B"] * s["T"], layer_inputs(3),
    recurrent_params=lambda s: 3 * s["H"] * s["H"], params=layer_params(3),
    checks=(Check("GRU cell fwd (hidden 50)", check_cell),
            Check("GRU layer fwd (T=9, hidden 50)", check_layer),
            Check("GRU cell fwd+bwd, B=16 I=H=1024, fp16", check_gpu, 3e-2, gpu_only=True)))


def _loop(cell, inp):
    import torch
    h, outs = None, []
    for t in range(inp.x.shape[0]):
        h = cell(inp.x[t], h, inp.w_ih, inp.w_hh, inp.b_ih, inp.b_hh)
        outs.append(h)
    return torch.stack(outs)


@gru_layer.impl(baseline=True, guide=("GRU", "textbook loop"),
                note="textbook equations, one torch op per gate per step")
def torch_loop(inp):
    from reference.gru import gru_cell
    return lambda: _loop(gru_cell, inp)


@gru_layer.impl(name="nn_gru", guide=("GRU", "nn (cuDNN on a GPU)"), note="cuDNN on a GPU, ATen's CPU kernel otherwise")
def nn_gru(inp):
    m = torch_module(torch.nn.GRU, inp)
    return lambda: m(inp.x)[0]


@gru_layer.impl(triton=True, guide=("GRU", "Triton step"), note="input GEMM + one fused Triton step per time step")
def triton_step(inp):
    from kernels.gru import gru
    return lambda: gru(inp.x, None, inp.w_ih, inp.w_hh, inp.b_ih, inp.b_hh)[0]


gru_layer.compiled("torch_loop")

gru_ragged = ragged_workload(
    __name__, "GRU", 3, torch.nn.GRU, _fused_gru, "FusedGRU on the PackedSequence: each step runs its active rows only",
    checks=(Check("FusedGRU on a ragged PackedSequence (2 layers, bidirectional)",
                  packed_check(torch.nn.GRU, _fused_gru)),))
