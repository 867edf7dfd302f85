"""gru_layer: one GRU layer over a sequence as a loop of cell steps, input size = hidden size = H.

The textbook's "GRU: fewer parameters, faster" beside lstm_layer: three gates instead of four.
FLOPs 2·B·3H·(I + H) per step, the backward twice that; minimum bytes: the weights once, x in, h out.
Sequential floor: each step multiplies the 3H × H matrix W_hh.
"""
import torch

from bench.workload import Check, Workload, forward_backward
from bench.workloads._rnn import (LAYER_SHAPES, check_args, double, layer_bytes, layer_flops, layer_inputs,
                                  uniform_tensors)


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


gru_layer = Workload(
    "gru_layer", "one GRU layer over a sequence, one cell step per time step", ("B", "T", "H"), "T", LAYER_SHAPES,
    layer_flops(3), layer_bytes(3), lambda s: s["B"] * s["T"], layer_inputs(3),
    recurrent_params=lambda s: 3 * s["H"] * s["H"],
    checks=(Check("GRU cell fwd (hidden 50)", check_cell),
            Check("GRU cell fwd+bwd, B=16 I=H=1024, fp16", check_gpu, 3e-2, gpu_only=True)))


def _loop(cell, inp):
    import torch
    h, outs = None, []
    for t in range(inp.x.shape[0]):
        h = cell(inp.x[t], h, inp.w_ih, inp.w_hh, inp.b_ih, inp.b_hh)
        outs.append(h)
    return torch.stack(outs)


@gru_layer.impl(baseline=True, note="textbook equations, one torch op per gate per step")
def torch_loop(inp):
    from reference.gru import gru_cell
    return lambda: _loop(gru_cell, inp)


@gru_layer.impl(name="nn.GRU", note="cuDNN on a GPU, ATen's CPU kernel otherwise")
def nn_gru(inp):
    import torch
    H = inp.w_hh.shape[1]
    m = torch.nn.GRU(H, H, device=inp.x.device, dtype=inp.x.dtype)
    with torch.no_grad():
        for p, src in zip((m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0),
                          (inp.w_ih, inp.w_hh, inp.b_ih, inp.b_hh)):
            p.copy_(src)
    return lambda: m(inp.x)[0]


@gru_layer.impl(triton=True, note="one fused Triton cell step (both matmuls) per time step")
def triton_step(inp):
    from kernels.gru import gru_cell
    return lambda: _loop(gru_cell, inp)
