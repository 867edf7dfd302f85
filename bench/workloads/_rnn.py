"""What the recurrent-layer workloads share: counts, inputs and shapes of one layer whose input size
equals its hidden size H, with ``gates`` gate blocks (4: LSTM, 3: GRU, 1: Elman RNN)."""
import math

import torch

from bench.workload import Shapes, Workload, dtype_bytes, namespace, randn, uniform

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


def layer_params(gates):
    """Parameters of one layer with input = hidden = H: gates·H·(2H + 2) (both matrices, both biases)."""
    return lambda s: gates * s["H"] * (2 * s["H"] + 2)


# Ragged batches: more rows than LAYER_SHAPES (packing pays off with many sequences of mixed length).
RAGGED_SHAPES = Shapes(cpu_quick=[dict(B=8, T=t, H=64) for t in (16, 32)],
                       cpu_full=[dict(B=8, T=t, H=64) for t in (16, 32, 128)],
                       gpu_quick=[dict(B=64, T=t, H=1024) for t in (64, 256, 1024)],
                       gpu_full=[dict(B=64, T=t, H=1024) for t in (64, 128, 256, 512, 1024)])


def ragged_lengths(B: int, T: int) -> torch.Tensor:
    """The fixed length distribution of the ragged workloads: uniform on [T/4, T] (seeded), one row of T,
    in random order."""
    g = torch.Generator().manual_seed(0)
    lengths = torch.ceil(T * (0.25 + 0.75 * torch.rand(B, generator=g))).long().clamp(1, T)
    lengths[torch.randint(0, B, (1,), generator=g)] = T
    return lengths


def ragged_inputs(gates):
    """layer_inputs plus the batch's lengths (x is padded, (T, B, H))."""
    base = layer_inputs(gates)

    def inputs(s, dtype, device, grad):
        inp = base(s, dtype, device, grad)
        inp.lengths = ragged_lengths(s["B"], s["T"])
        return inp
    return inputs


def ragged_tokens(s) -> int:
    """The real tokens of a ragged batch (padding excluded)."""
    return int(ragged_lengths(s["B"], s["T"]).sum())


def ragged_scaled(count):
    """A padded-batch count scaled by the share of real tokens."""
    return lambda s, *a: count(s, *a) * ragged_tokens(s) / (s["B"] * s["T"])


def torch_module(cls, inp):
    """An nn.LSTM/nn.GRU holding the shared weights (a copy: its gradients stay its own)."""
    H = inp.w_hh.shape[1]
    m = cls(H, H, device=inp.x.device, dtype=inp.x.dtype)
    with torch.no_grad():
        for p, src in zip((m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0),
                          (inp.w_ih, inp.w_hh, inp.b_ih, inp.b_hh)):
            p.copy_(src)
    return m


def packed_check(torch_cls, fused):
    """A Check: ``fused(nn_module)`` (two layers, bidirectional) on an unsorted ragged PackedSequence against
    the nn module in float64."""
    def run(device):
        from torch.nn.utils.rnn import pack_padded_sequence
        torch.manual_seed(0)
        m = torch_cls(24, 50, num_layers=2, bidirectional=True, device=device)
        x = torch.randn(9, 4, 24, device=device)
        lengths = torch.tensor([5, 9, 1, 7])
        pack = lambda t: pack_padded_sequence(t, lengths, enforce_sorted=False)  # noqa: E731
        return fused(m)(pack(x))[0].data, m.double()(pack(x.double()))[0].data
    return run


def packed_runner(module, inp):
    """module on the padded batch packed by its lengths (the packing timed, as a user pays it); the packed
    output's data."""
    from torch.nn.utils.rnn import pack_padded_sequence
    return lambda: module(pack_padded_sequence(inp.x, inp.lengths, enforce_sorted=False))[0].data


def padded_runner(module, inp):
    """module on the whole padded batch (padding computed at full cost), its output at the real positions
    in the packed order (so it compares with the packed impls)."""
    from torch.nn.utils.rnn import pack_padded_sequence
    order = pack_padded_sequence(inp.x, inp.lengths, enforce_sorted=False).sorted_indices.to(inp.x.device)
    lengths = inp.lengths.to(inp.x.device)[order]
    mask = torch.arange(inp.x.shape[0], device=inp.x.device)[:, None] < lengths[None, :]
    return lambda: module(inp.x)[0].index_select(1, order)[mask]


def ragged_workload(module: str, arch: str, gates: int, torch_cls, fused, fused_note: str, checks=()):
    """``<arch>_ragged``: one layer over a ragged batch, declared by ``module``, with the impls every
    architecture shares: nn on the PackedSequence (the baseline), nn on the padded batch, and
    ``fused(nn_module)`` on the PackedSequence."""
    nn_name = f"nn.{torch_cls.__name__}"
    w = Workload(
        f"{arch.lower()}_ragged", f"one {arch} layer over a ragged batch (PackedSequence; lengths uniform on [T/4, T])",
        ("B", "T", "H"), "T", RAGGED_SHAPES, ragged_scaled(layer_flops(gates)), layer_bytes(gates), ragged_tokens,
        ragged_inputs(gates), recurrent_params=lambda s: gates * s["H"] * s["H"], params=layer_params(gates),
        checks=tuple(checks), module=module)
    w.impl(name=f"nn_{arch.lower()}_packed", baseline=True, guide=(arch, "nn, packed ragged batch"),
           note=f"{nn_name} on the PackedSequence")(lambda inp: packed_runner(torch_module(torch_cls, inp), inp))
    w.impl(name=f"nn_{arch.lower()}_padded", note=f"{nn_name} on the padded batch: padding computed at full cost")(
        lambda inp: padded_runner(torch_module(torch_cls, inp), inp))
    w.impl(name=f"fused_{arch.lower()}_packed", triton=True, guide=(arch, "Triton step, packed ragged batch"),
           note=fused_note)(lambda inp: packed_runner(fused(torch_module(torch_cls, inp)), inp))
    return w
