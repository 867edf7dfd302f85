"""What the kernel tests share: the device, input builders, odd layouts and the 2x-rule check of a
function's outputs and gradients (tests/tolerance.py)."""
import torch

from tests.tolerance import assert_within_2x

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def make(B, I, H, dtype, seed=0, bias=True, state=True, gates=4):
    """x, h, c, w_ih, w_hh, b_ih, b_hh of a cell with ``gates`` gates (4: LSTM, 3: GRU), uniform in ±1 scaled."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: (torch.rand(*s, generator=g) * 2 - 1).to(DEVICE, dtype)  # noqa: E731
    x = r(B, I)
    h, c = (r(B, H), r(B, H) * 2) if state else (None, None)
    w_ih, w_hh = r(gates * H, I) * H ** -0.5 * 2, r(gates * H, H) * H ** -0.5 * 2
    b_ih, b_hh = (r(gates * H), r(gates * H)) if bias else (None, None)
    return x, h, c, w_ih, w_hh, b_ih, b_hh


def _leaves(args, dtype=None):
    return [None if t is None else t.detach().to(dtype or t.dtype).requires_grad_() for t in args]


def check_fn(kernel_fn, ref_fn, args, n_out):
    """Outputs and gradients of kernel_fn vs ref_fn in float64, bounded by 2x ref_fn's own error in the dtype."""
    ours, ref64, same = _leaves(args), _leaves(args, torch.float64), _leaves(args)
    outs = [kernel_fn(*ours), ref_fn(*ref64), ref_fn(*same)]
    flat = [list(o) if isinstance(o, tuple) else [o] for o in outs]
    # h and c are sums of products of O(1) gates: one rounding step at scale 1 is the floor when a state
    # cancels to near zero and PyTorch's own error on a one-element output is ~0 by luck (B = H = T = 1).
    out_floor = torch.finfo(args[0].dtype).eps
    for i in range(n_out):
        assert_within_2x(f"output {i}", flat[0][i], flat[1][i], flat[2][i], extra_atol=out_floor)
    gen = torch.Generator().manual_seed(7)
    weights = [torch.randn(t.shape, generator=gen) for t in flat[1][:n_out]]
    for f in flat:
        sum((t * w.to(t)).sum() for t, w in zip(f[:n_out], weights)).backward()
    # A gradient that is a short sum cancelling to near zero (hypothesis finds them at B = I = 1) can leave
    # PyTorch's own error ~0 by luck; the floor is then two rounding steps at the scale of the largest
    # gradient in the problem, which is the size of the terms being summed.
    scale = max(r.grad.abs().max().item() for r in ref64 if r is not None)
    floor = 2 * torch.finfo(args[0].dtype).eps * scale
    for i, (a, r, p) in enumerate(zip(ours, ref64, same)):
        if a is not None:
            assert a.grad is not None, f"no gradient for argument {i}"
            assert_within_2x(f"grad of argument {i}", a.grad, r.grad, p.grad, extra_atol=floor)


def assert_module_matches(fused, torch_lstm, x, hx=None):
    """Outputs, final states and every parameter gradient of a FusedLSTM equal nn.LSTM's."""
    got, (gh, gc) = fused(x, hx)
    want, (wh, wc) = torch_lstm(x, hx)
    for a, b in ((got, want), (gh, wh), (gc, wc)):
        torch.testing.assert_close(a, b, atol=5e-6, rtol=1e-5)
    fused.zero_grad()
    torch_lstm.zero_grad()
    (got * want.detach()).sum().backward()
    (want * want.detach()).sum().backward()
    for (name, p), q in zip(fused.named_parameters(), torch_lstm.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=5e-5, rtol=1e-4, msg=f"grad of {name}")


def odd_bias(b: torch.Tensor, layout: str) -> torch.Tensor:
    """``b``'s values as a strided view (huge values in between, so a contiguous read shows) or, for
    "stride0", one value expanded from a one-element tensor (a read past it leaves the tensor)."""
    if layout == "strided":
        return torch.stack([b, torch.full_like(b, 1e3)], 1).reshape(-1)[::2]
    return b[:1].clone().expand(b.shape[0])


def double_backward(fn, *args):
    leaves = [a.detach().requires_grad_() for a in args]
    out = fn(*leaves)
    out = out[0] if isinstance(out, tuple) else out
    return torch.autograd.grad(out.pow(2).sum(), leaves[0], create_graph=True)


def strided(t: torch.Tensor | None) -> torch.Tensor | None:
    """The same values in a non-contiguous layout: column-major for matrices, every other element for vectors."""
    if t is None:
        return None
    if t.ndim == 1:
        return odd_bias(t, "strided")
    return t.t().contiguous().t() if t.shape[0] > 1 else odd_bias(t.reshape(-1), "strided").view(t.shape)


def check_module(fused, module, x, hx=None, lengths=None, dtype=torch.float32, seed=0):
    """A FusedLSTM/FusedGRU against its nn module by the 2x rule: outputs, final states, the input's gradient
    and every parameter's gradient, with ``module`` in float64 as the truth and in ``dtype`` as PyTorch's own
    error.  ``lengths`` makes the input a PackedSequence (unsorted) of the padded (T, B, I) ``x``; floors as
    check_fn's."""
    import copy

    from torch.nn.utils.rnn import pack_padded_sequence
    from tests.tolerance import assert_within_2x
    runs = []
    for m, dt in ((fused, dtype), (module, torch.float64), (module, dtype)):
        m = copy.deepcopy(m).to(dt)
        xi = x.detach().to(dt).requires_grad_()
        inp = pack_padded_sequence(xi, lengths, enforce_sorted=False) if lengths is not None else xi
        state = None if hx is None else (tuple(s.to(dt) for s in hx) if isinstance(hx, tuple) else hx.to(dt))
        out, st = m(inp, state)
        out = out.data if lengths is not None else out
        states = list(st) if isinstance(st, tuple) else [st]
        g = torch.Generator().manual_seed(seed)
        weights = [torch.randn(t.shape, generator=g) for t in [out, *states]]
        sum((t * w.to(t)).sum() for t, w in zip([out, *states], weights)).backward()
        runs.append(([out, *states], [xi.grad] + [p.grad for p in m.parameters()]))
    eps = torch.finfo(dtype).eps
    for i, (a, r, p) in enumerate(zip(*(run[0] for run in runs))):
        assert_within_2x(f"output {i}", a, r, p, extra_atol=eps)
    scale = max(r.abs().max().item() for r in runs[1][1])
    names = ["input"] + [n for n, _ in module.named_parameters()]
    for name, a, r, p in zip(names, *(run[1] for run in runs)):
        assert_within_2x(f"grad of {name}", a, r, p, extra_atol=2 * eps * scale)


def assert_empty_batch_like(fused, module, x):
    """An empty batch (``x`` with batch 0) through a drop-in and its nn module: the same output and state
    shapes and dtypes, and gradients of the same shapes (all zero) for the input and every parameter."""
    import copy
    results = []
    for m in (fused, copy.deepcopy(module)):
        xi = x.detach().clone().requires_grad_()
        out, st = m(xi)
        states = list(st) if isinstance(st, tuple) else [st]
        (out.sum() + sum(s.sum() for s in states)).backward()
        results.append(([out, *states], [xi.grad, *(p.grad for p in m.parameters())]))
    for a, b in zip(results[0][0], results[1][0]):
        assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape)
    for a, b in zip(results[0][1], results[1][1]):
        assert a is not None and a.shape == b.shape and not a.any(), (None if a is None else a.shape, b.shape)


def assert_empty_cell_like(cell_fn, nn_cell, states):
    """A cell on an empty batch ((0, I) input; ``states`` the state tensors' count) against the nn cell: empty
    outputs of the right shapes and gradients of the right shapes for every argument."""
    I, H = nn_cell.input_size, nn_cell.hidden_size
    args = [torch.zeros(0, I, device=DEVICE)] + [torch.zeros(0, H, device=DEVICE) for _ in range(states)]
    ws = [p.detach().clone().requires_grad_() for p in nn_cell.parameters()]
    leaves = [a.requires_grad_() for a in args]
    out = cell_fn(*leaves, *ws)
    want = nn_cell(args[0], tuple(args[1:]) if states > 1 else args[1])
    outs, wants = (list(out), list(want)) if states > 1 else ([out], [want])
    for a, b in zip(outs, wants):
        assert a.shape == b.shape == (0, H) and a.dtype == b.dtype
    sum(o.sum() for o in outs).backward()
    for t in leaves + ws:
        assert t.grad is not None and t.grad.shape == t.shape and not t.grad.any()
