"""What the recurrent-layer workloads share: counts, inputs and shapes of one layer whose input size
equals its hidden size H, with ``gates`` gate blocks (4: LSTM, 3: GRU)."""
import math

import torch

from bench.workload import Shapes, dtype_bytes, namespace, randn, uniform

LAYER_SHAPES = Shapes(cpu_quick=[dict(B=4, T=t, H=64) for t in (8, 32)],
                      cpu_full=[dict(B=4, T=t, H=64) for t in (8, 32, 128)],
                      gpu_quick=[dict(B=16, T=t, H=1024) for t in (64, 256, 1024)],
                      gpu_full=[dict(B=16, T=t, H=1024) for t in (64, 128, 256, 512, 1024, 2048)])


def layer_flops(gates):
    """The two matmuls, 2·B·gates·H·(I + H) per step (pointwise work left out); the backward twice that."""
    def flops(s, mode):
        f = s["T"] * 2 * s["B"] * gates * s["H"] * (s["H"] + s["H"])
        return f * (3 if mode == "fwd+bwd" else 1)
    return flops


def layer_bytes(gates):
    """The weights once, x in, h out (training: weights and their gradients, x, h and their gradients)."""
    def min_bytes(s, dtype, mode):
        e = dtype_bytes(dtype)
        B, T, H = s["B"], s["T"], s["H"]
        weights = (gates * H * 2 * H + 2 * gates * H) * e
        io = 2 * T * B * H * e
        return weights + io if mode == "fwd" else 2 * weights + 3 * io
    return min_bytes


def layer_inputs(gates):
    """x (T, B, H) and nn.LSTM/GRU-initialised w_ih, w_hh, b_ih, b_hh."""
    def inputs(s, dtype, device, grad):
        H = s["H"]
        w = tuple(uniform(*shape, bound=1 / math.sqrt(H), dtype=dtype, device=device, requires_grad=grad)
                  for shape in ((gates * H, H), (gates * H, H), (gates * H,), (gates * H,)))
        return namespace(x=randn(s["T"], s["B"], H, dtype=dtype, device=device, requires_grad=grad),
                         w_ih=w[0], w_hh=w[1], b_ih=w[2], b_hh=w[3])
    return inputs


def check_args(device, gates, hidden=50, inputs=24, batch=3, steps=None):
    """Uniform fp32 arguments of a small check: (x, w_ih, w_hh, b, h); x is (steps, batch, inputs) when given."""
    g = torch.Generator().manual_seed(0)
    r = lambda *s: (torch.rand(*s, generator=g) * 2 - 1).to(device)  # noqa: E731
    x = r(steps, batch, inputs) if steps else r(batch, inputs)
    return x, r(gates * hidden, inputs) * 0.3, r(gates * hidden, hidden) * 0.3, r(gates * hidden), r(batch, hidden)


def double(*ts):
    return [t.double() for t in ts]


def uniform_tensors(device, *shapes, scale=1.0):
    """Seeded uniform(−scale, scale) tensors of the given shapes, in fp32 on ``device``."""
    g = torch.Generator().manual_seed(0)
    return [((torch.rand(*s, generator=g) * 2 - 1) * scale).to(device) for s in shapes]

