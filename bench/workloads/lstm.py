"""lstm_layer: one LSTM layer over a sequence, input size = hidden size = H, the input projection included.

FLOPs: the two matmuls, 2·B·4H·(I + H) per step (the pointwise gate work is O(B·H), left out); the
backward does twice the forward's matmul work.  Minimum bytes: the weights once, x in, h out.
Sequential floor: each step multiplies the 4H × H matrix W_hh.
"""
import math

from bench.workload import Check, Shapes, Workload, dtype_bytes, namespace, randn, uniform


def flops(s, mode):
    f = s["T"] * 2 * s["B"] * 4 * s["H"] * (s["H"] + s["H"])
    return f * (3 if mode == "fwd+bwd" else 1)


def min_bytes(s, dtype, mode):
    e = dtype_bytes(dtype)
    B, T, H = s["B"], s["T"], s["H"]
    weights = (4 * H * 2 * H + 8 * H) * e
    io = (T * B * H + T * B * H) * e
    return weights + io if mode == "fwd" else 2 * weights + 3 * io


def inputs(s, dtype, device, grad):
    H = s["H"]
    w = tuple(uniform(*shape, bound=1 / math.sqrt(H), dtype=dtype, device=device, requires_grad=grad)
              for shape in ((4 * H, H), (4 * H, H), (4 * H,), (4 * H,)))
    return namespace(x=randn(s["T"], s["B"], H, dtype=dtype, device=device, requires_grad=grad),
                     w_ih=w[0], w_hh=w[1], b_ih=w[2], b_hh=w[3])


def check_layer(device):
    """The fused-step layer at T=9, hidden 50 (tiles cross every edge), forward, against float64."""
    import torch

    from kernels.lstm import lstm
    from reference.lstm import lstm as ref
    g = torch.Generator().manual_seed(0)
    r = lambda *s: (torch.rand(*s, generator=g) * 2 - 1).to(device)  # noqa: E731
    x, W, U, b = r(9, 3, 24), r(200, 24) * 0.3, r(200, 50) * 0.3, r(200)
    return lstm(x, None, W, U, b, b)[0], ref(x.double(), None, W.double(), U.double(), b.double(), b.double())[0]


lstm_layer = Workload(
    "lstm_layer", "one LSTM layer over a sequence (input projection included)", ("B", "T", "H"), "T",
    Shapes(cpu_quick=[dict(B=4, T=t, H=64) for t in (8, 32)],
           cpu_full=[dict(B=4, T=t, H=64) for t in (8, 32, 128)],
           gpu_quick=[dict(B=16, T=t, H=1024) for t in (64, 256, 1024)],
           gpu_full=[dict(B=16, T=t, H=1024) for t in (64, 128, 256, 512, 1024, 2048)]),
    flops, min_bytes, lambda s: s["B"] * s["T"], inputs,
    recurrent_params=lambda s: 4 * s["H"] * s["H"],
    checks=(Check("LSTM layer fwd (T=9, hidden 50)", check_layer),))


def _weights(inp):
    return inp.w_ih, inp.w_hh, inp.b_ih, inp.b_hh


@lstm_layer.impl(baseline=True, note="textbook equations, one torch op per gate per step")
def torch_loop(inp):
    from reference.lstm import lstm
    return lambda: lstm(inp.x, None, *_weights(inp))[0]


@lstm_layer.impl(name="nn.LSTM", note="cuDNN on a GPU, ATen's CPU kernel otherwise")
def nn_lstm(inp):
    import torch
    H = inp.w_hh.shape[1]
    m = torch.nn.LSTM(H, H, device=inp.x.device, dtype=inp.x.dtype)
    with torch.no_grad():
        for p, src in zip((m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0), _weights(inp)):
            p.copy_(src)
    return lambda: m(inp.x)[0]


@lstm_layer.impl(triton=True, note="input GEMM + one fused Triton step per time step")
def triton_step(inp):
    from kernels.lstm import lstm
    return lambda: lstm(inp.x, None, *_weights(inp))[0]


@lstm_layer.impl(triton=True, note="input GEMM + one kernel looping over time (grid barrier between steps)")
def triton_persistent(inp):
    from kernels.lstm_persistent import lstm_persistent
    return lambda: lstm_persistent(inp.x, None, *_weights(inp))[0]
