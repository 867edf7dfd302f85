"""gru_layer: one GRU layer over a sequence as a loop of cell steps, input size = hidden size = H.

The textbook's "GRU: fewer parameters, faster" beside lstm_layer: three gates instead of four.
FLOPs 2·B·3H·(I + H) per step, the backward twice that; minimum bytes: the weights once, x in, h out.
Sequential floor: each step multiplies the 3H × H matrix W_hh.
"""
import math

from bench.workload import Check, Shapes, Workload, dtype_bytes, namespace, randn, uniform


def flops(s, mode):
    f = s["T"] * 2 * s["B"] * 3 * s["H"] * (s["H"] + s["H"])
    return f * (3 if mode == "fwd+bwd" else 1)


def min_bytes(s, dtype, mode):
    e = dtype_bytes(dtype)
    B, T, H = s["B"], s["T"], s["H"]
    weights = (3 * H * 2 * H + 6 * H) * e
    io = 2 * T * B * H * e
    return weights + io if mode == "fwd" else 2 * weights + 3 * io


def inputs(s, dtype, device, grad):
    H = s["H"]
    w = tuple(uniform(*shape, bound=1 / math.sqrt(H), dtype=dtype, device=device, requires_grad=grad)
              for shape in ((3 * H, H), (3 * H, H), (3 * H,), (3 * H,)))
    return namespace(x=randn(s["T"], s["B"], H, dtype=dtype, device=device, requires_grad=grad),
                     w_ih=w[0], w_hh=w[1], b_ih=w[2], b_hh=w[3])


def check_cell(device):
    """One fused cell step at hidden 50 against float64."""
    import torch

    from kernels.gru import gru_cell
    from reference.gru import gru_cell as ref
    g = torch.Generator().manual_seed(0)
    r = lambda *s: (torch.rand(*s, generator=g) * 2 - 1).to(device)  # noqa: E731
    x, W, U, b, h = r(3, 24), r(150, 24) * 0.3, r(150, 50) * 0.3, r(150), r(3, 50)
    return gru_cell(x, h, W, U, b, b), ref(x.double(), h.double(), W.double(), U.double(), b.double(), b.double())


gru_layer = Workload(
    "gru_layer", "one GRU layer over a sequence, one cell step per time step", ("B", "T", "H"), "T",
    Shapes(cpu_quick=[dict(B=4, T=t, H=64) for t in (8, 32)],
           cpu_full=[dict(B=4, T=t, H=64) for t in (8, 32, 128)],
           gpu_quick=[dict(B=16, T=t, H=1024) for t in (64, 256, 1024)],
           gpu_full=[dict(B=16, T=t, H=1024) for t in (64, 128, 256, 512, 1024, 2048)]),
    flops, min_bytes, lambda s: s["B"] * s["T"], inputs,
    recurrent_params=lambda s: 3 * s["H"] * s["H"],
    checks=(Check("GRU cell fwd (hidden 50)", check_cell),))


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
