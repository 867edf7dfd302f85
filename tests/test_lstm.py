"""kernels.lstm against the textbook equations in float64 (FlashAttention's 2x rule per dtype),
nn.LSTMCell and nn.LSTM, forward and gradients."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from kernels.lstm import FusedLSTM, lstm, lstm_cell
from reference import lstm as ref
from tests.helpers import DEVICE, DTYPES, assert_module_matches, check_fn, double_backward, make, odd_bias, strided


def _layer(x, h, c, *w, batch_first=False):
    out, (hn, cn) = lstm(x, None if h is None else (h, c), *w, batch_first=batch_first)
    return out, hn, cn


def _ref_layer(x, h, c, *w, batch_first=False):
    out, (hn, cn) = ref.lstm(x, None if h is None else (h, c), *w, batch_first=batch_first)
    return out, hn, cn


# ------------------------------------------------------------------------------------------ cell

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("B, I, H", [(1, 24, 50), (3, 50, 24), (17, 16, 16), (2, 33, 100)])
def test_cell_matches_textbook(B, I, H, dtype):
    check_fn(lstm_cell, ref.lstm_cell, make(B, I, H, dtype), 2)


@pytest.mark.parametrize("bias, state", [(False, True), (True, False), (False, False)])
def test_cell_optional_bias_and_state(bias, state):
    check_fn(lstm_cell, ref.lstm_cell, make(4, 20, 30, torch.float32, bias=bias, state=state), 2)


def test_cell_equals_nn_lstmcell():
    cell = nn.LSTMCell(24, 50, device=DEVICE)
    x, h, c = (torch.randn(5, n, device=DEVICE) for n in (24, 50, 50))
    got = lstm_cell(x, h, c, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    want = cell(x, (h, c))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=2e-6, rtol=1e-5)
    # unbatched, as nn.LSTMCell accepts it
    got = lstm_cell(x[0], h[0], c[0], cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    want = cell(x[0], (h[0], c[0]))
    assert got[0].shape == (50,)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=2e-6, rtol=1e-5)


def test_cell_large_hidden():
    """Hidden 768 (a realistic size, many programs and K blocks), fp16."""
    check_fn(lstm_cell, ref.lstm_cell, make(2, 64, 768, torch.float16), 2)


# ----------------------------------------------------------------------------------------- layer

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("T", [1, 37])
def test_layer_matches_textbook(T, dtype):
    x, h, c, *w = make(3, 24, 50, dtype)
    xs = torch.rand(T, 3, 24, generator=torch.Generator().manual_seed(2)).to(x) * 2 - 1
    check_fn(_layer, _ref_layer, (xs, h, c, *w), 3)


@pytest.mark.parametrize("bias, state", [(False, True), (True, False)])
def test_layer_optional_bias_and_state(bias, state):
    x, h, c, *w = make(2, 16, 20, torch.float32, bias=bias, state=state)
    xs = torch.randn(9, 2, 16, device=DEVICE)
    check_fn(_layer, _ref_layer, (xs, h, c, *w), 3)


def test_layer_batch_first_equals_nn_lstm():
    x, h, c, *w = make(4, 24, 50, torch.float32)
    xs = torch.randn(4, 11, 24, device=DEVICE)
    out, (hn, cn) = lstm(xs, (h, c), *w, batch_first=True)
    rout, (rh, rc) = ref.torch_lstm(xs, (h, c), *w, batch_first=True)
    for a, b in ((out, rout), (hn, rh), (cn, rc)):
        torch.testing.assert_close(a, b, atol=2e-6, rtol=1e-5)


# ------------------------------------------------------------------------------------ FusedLSTM

@pytest.mark.parametrize("layers, bidirectional, batch_first", [(1, False, False), (2, False, True), (2, True, False),
                                                               (3, True, True)])
def test_fused_lstm_from_torch(layers, bidirectional, batch_first):
    torch.manual_seed(0)
    m = nn.LSTM(24, 50, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first, device=DEVICE)
    f = FusedLSTM.from_torch(m)
    x = torch.randn(3, 7, 24, device=DEVICE)
    dirs = 2 if bidirectional else 1
    hx = (torch.randn(layers * dirs, 3 if batch_first else 7, 50, device=DEVICE),
          torch.randn(layers * dirs, 3 if batch_first else 7, 50, device=DEVICE))
    for state in (None, hx):
        assert_module_matches(f, m, x, state)


def test_fused_lstm_unbatched_and_no_bias():
    m = nn.LSTM(10, 20, bias=False, device=DEVICE)
    f = FusedLSTM.from_torch(m)
    x = torch.randn(6, 10, device=DEVICE)
    got, (gh, gc) = f(x)
    want, (wh, wc) = m(x)
    assert got.shape == want.shape == (6, 20) and gh.shape == wh.shape == (1, 20)
    torch.testing.assert_close(got, want, atol=2e-6, rtol=1e-5)
    assert [n for n, _ in f.named_parameters()] == [n for n, _ in m.named_parameters()]


def test_fused_lstm_dtype_and_repr():
    f = FusedLSTM(8, 16, num_layers=2, dtype=torch.bfloat16, device=DEVICE)
    out, _ = f(torch.randn(5, 2, 8, device=DEVICE, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and out.shape == (5, 2, 16)
    assert "num_layers=2" in repr(f)


# -------------------------------------------------------------------------------------- hypothesis

@given(B=st.integers(1, 20), I=st.integers(1, 40), H=st.integers(1, 40), T=st.integers(1, 6),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_random_shapes(B, I, H, T, dtype, seed):
    x, h, c, *w = make(B, I, H, dtype, seed=seed)
    check_fn(lstm_cell, ref.lstm_cell, (x, h, c, *w), 2)
    xs = (torch.rand(T, B, I, generator=torch.Generator().manual_seed(seed)) * 2 - 1).to(x)
    check_fn(_layer, _ref_layer, (xs, h, c, *w), 3)


# ------------------------------------------------------------------------------------- bad input

def _cell_args(**over):
    x, h, c, w_ih, w_hh, b_ih, b_hh = make(2, 8, 4, torch.float32)
    args = dict(x=x, h=h, c=c, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh)
    args.update({k: (v.to(DEVICE) if isinstance(v, torch.Tensor) and v.device.type == "cpu" else v)
                 for k, v in over.items()})
    return args


BAD_CELL = {
    "x rank 3": (dict(x=torch.randn(2, 2, 8)), ValueError, "x must have rank 2"),
    "w_hh not 4H": (dict(w_hh=torch.randn(15, 4)), ValueError, "w_hh must have shape"),
    "w_ih wrong input size": (dict(w_ih=torch.randn(16, 9)), ValueError, "w_ih must have shape"),
    "h wrong batch": (dict(h=torch.randn(3, 4)), ValueError, "h must have shape"),
    "c wrong hidden": (dict(c=torch.randn(2, 5)), ValueError, "c must have shape"),
    "bias wrong size": (dict(b_ih=torch.randn(15)), ValueError, "b_ih must have shape"),
    "integer x": (dict(x=torch.ones(2, 8, dtype=torch.int64)), TypeError, "x must be float16"),
    "mixed dtypes": (dict(w_hh=torch.randn(16, 4).half()), TypeError, "w_hh has dtype torch.float16"),
    "not a tensor": (dict(w_ih="weights"), TypeError, "w_ih must be a torch.Tensor"),
    "meta device": (dict(h=torch.randn(2, 4, device="meta")), ValueError, "h is on meta"),
}


@pytest.mark.parametrize("case", list(BAD_CELL))
def test_bad_cell_input(case):
    over, exc, msg = BAD_CELL[case]
    with pytest.raises(exc, match=msg):
        lstm_cell(**_cell_args(**over))


def test_bad_layer_input():
    x, h, c, *w = make(2, 8, 4, torch.float32)
    with pytest.raises(ValueError, match="x must have rank 3"):
        lstm(x, None, *w)
    with pytest.raises(ValueError, match="at least one time step"):
        lstm(torch.randn(0, 2, 8, device=DEVICE), None, *w)
    with pytest.raises(ValueError, match="w_ih must have shape"):
        lstm(torch.randn(3, 2, 9, device=DEVICE), None, *w)


def test_bad_module_input():
    with pytest.raises(ValueError, match="hidden_size must be a positive int"):
        FusedLSTM(4, 0)
    with pytest.raises(ValueError, match="dropout"):
        FusedLSTM(4, 4, dropout=1.5)
    f = FusedLSTM(4, 6, device=DEVICE)
    with pytest.raises(ValueError, match="4 features"):
        f(torch.randn(3, 2, 5, device=DEVICE))
    with pytest.raises(ValueError, match="h0 must have shape"):
        f(torch.randn(3, 2, 4, device=DEVICE), (torch.randn(1, 3, 6, device=DEVICE), torch.randn(1, 2, 6, device=DEVICE)))
    with pytest.raises(ValueError, match="input must have rank 3"):
        f(torch.randn(4, device=DEVICE))
    with pytest.raises(ValueError, match="proj_size"):
        FusedLSTM.from_torch(nn.LSTM(4, 6, proj_size=3))
    with pytest.raises(TypeError, match="nn.LSTM"):
        FusedLSTM.from_torch(nn.GRU(4, 6))


# ------------------------------------------------------------------- layouts and defects (issue 10)

@pytest.mark.parametrize("layout", ["strided", "stride0"])
def test_cell_non_contiguous_bias(layout):
    x, h, c, w_ih, w_hh, b_ih, b_hh = make(3, 5, 4, torch.float32)
    b_ih, b_hh = odd_bias(b_ih, layout), odd_bias(b_hh, layout)
    assert not b_ih.is_contiguous()
    check_fn(lstm_cell, ref.lstm_cell, (x, h, c, w_ih, w_hh, b_ih, b_hh), 2)
    first = lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh)
    for a, b in zip(first, lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh)):
        assert torch.equal(a, b)                 # no read outside the tensor: the same answer every call


@pytest.mark.parametrize("layout", ["strided", "stride0"])
def test_layer_non_contiguous_bias(layout):
    x, h, c, w_ih, w_hh, b_ih, b_hh = make(3, 5, 4, torch.float32)
    xs = torch.randn(6, 3, 5, device=DEVICE)
    check_fn(_layer, _ref_layer, (xs, h, c, w_ih, w_hh, odd_bias(b_ih, layout), odd_bias(b_hh, layout)), 3)


def test_double_backward_raises():
    """create_graph=True would give a gradient that is wrong or detached: it raises instead."""
    x, h, c, *w = make(2, 5, 4, torch.float32)
    with pytest.raises(RuntimeError, match="double backward"):
        double_backward(lstm_cell, x, h, c, *w)
    with pytest.raises(RuntimeError, match="double backward"):
        double_backward(lambda xs, *a: lstm(xs, (a[0], a[1]), *a[2:])[0], torch.randn(3, 2, 5, device=DEVICE), h, c, *w)


def test_unbatched_step_needs_unbatched_state():
    x, h, c, *w = make(2, 5, 4, torch.float32)
    with pytest.raises(ValueError, match="h must have rank 1"):
        lstm_cell(x[0], h, c, *w)                  # nn.LSTMCell rejects a 1-D input with 2-D states
    with pytest.raises(ValueError, match="c must have rank 2"):
        lstm_cell(x, h, c[0], *w)
    h1, c1 = lstm_cell(x[0], h[0], c[0], *w)
    assert h1.shape == c1.shape == (4,)


def test_h_n_does_not_alias_out():
    x, h, c, *w = make(2, 5, 4, torch.float32)
    with torch.no_grad():
        out, (hn, cn) = lstm(torch.randn(3, 2, 5, device=DEVICE), (h, c), *w)
        want = out[-1].clone()
        out.zero_()
    assert torch.equal(hn, want)


def test_from_torch_keeps_eval_mode():
    m = nn.LSTM(6, 8, num_layers=2, dropout=0.5, device=DEVICE).eval()
    f = FusedLSTM.from_torch(m)
    assert not f.training
    x = torch.randn(4, 3, 6, device=DEVICE)
    torch.testing.assert_close(f(x)[0], m(x)[0], atol=2e-6, rtol=1e-5)   # no dropout applied
    assert FusedLSTM.from_torch(m.train()).training


def test_cell_every_argument_strided():
    args = [strided(t) for t in make(3, 5, 4, torch.float32)]
    assert not any(t.is_contiguous() for t in args)
    check_fn(lstm_cell, ref.lstm_cell, args, 2)


# ------------------------------------------------------------------------ packed sequences (issue 14)

from tests.helpers import check_module  # noqa: E402


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kernel", FusedLSTM.KERNELS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_packed_matches_nn_lstm(bidirectional, kernel, dtype):
    """Ragged, unsorted lengths with a length of 1, both kernels: outputs, (h_n, c_n) at each row's own end,
    the input's and every parameter's gradient."""
    torch.manual_seed(1)
    m = nn.LSTM(12, 20, num_layers=2, bidirectional=bidirectional, device=DEVICE)
    x = torch.randn(9, 5, 12, device=DEVICE)
    lengths = torch.tensor([4, 9, 1, 6, 9])
    dirs = 2 if bidirectional else 1
    hx = (torch.randn(2 * dirs, 5, 20, device=DEVICE), torch.randn(2 * dirs, 5, 20, device=DEVICE))
    for state in (None, hx):
        check_module(FusedLSTM.from_torch(m, kernel=kernel), m, x, state, lengths, dtype)


def test_packed_persistent_split_head():
    """A head split over programs (one launch per step, dh carried between launches through memory)."""
    from kernels.lstm_persistent import lstm_persistent
    torch.manual_seed(2)
    m = nn.LSTM(6, 40, device=DEVICE)
    x = torch.randn(7, 5, 6, device=DEVICE, requires_grad=True)
    lengths = torch.tensor([3, 7, 1, 5, 7])
    w = [m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0]
    out, (hn, cn) = lstm_persistent(x, None, *w, lengths=lengths, _block_h=16)
    loss = sum(out[:n, b].sum() for b, n in enumerate(lengths.tolist())) + hn.square().sum() + cn.sum()
    got = torch.autograd.grad(loss, [x, *w])
    rows = [m(x[:n, b:b + 1]) for b, n in enumerate(lengths.tolist())]
    loss = sum(o.sum() + h.square().sum() + c.sum() for o, (h, c) in rows)
    want = torch.autograd.grad(loss, [x, *w])
    torch.testing.assert_close(hn, torch.cat([h[0] for _, (h, _) in rows]), atol=2e-6, rtol=1e-5)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


@given(lengths=st.lists(st.integers(1, 8), min_size=1, max_size=6), seed=st.integers(0, 2**16),
       kernel=st.sampled_from(FusedLSTM.KERNELS))
def test_packed_lengths_hypothesis(lengths, seed, kernel):
    torch.manual_seed(seed)
    m = nn.LSTM(5, 9, bidirectional=seed % 2 == 1, device=DEVICE)
    x = torch.randn(max(lengths), len(lengths), 5, device=DEVICE)
    check_module(FusedLSTM.from_torch(m, kernel=kernel), m, x, None, torch.tensor(lengths))


def test_packed_bad_input():
    from torch.nn.utils.rnn import pack_padded_sequence
    from kernels.lstm_persistent import lstm_persistent
    f = FusedLSTM(4, 6, device=DEVICE)
    packed = pack_padded_sequence(torch.randn(5, 3, 4, device=DEVICE), torch.tensor([5, 2, 3]), enforce_sorted=False)
    with pytest.raises(ValueError, match="h0 must have shape \\(1, 3, 6\\) for this packed batch"):
        f(packed, (torch.randn(1, 5, 6, device=DEVICE), torch.randn(1, 5, 6, device=DEVICE)))
    with pytest.raises(ValueError, match="proj_size"):
        FusedLSTM(4, 6, proj_size=2)
    w = [f.weight_ih_l0, f.weight_hh_l0]
    with pytest.raises(ValueError, match="lengths must lie in 1 … 5"):
        lstm_persistent(torch.randn(5, 3, 4, device=DEVICE), None, *w, lengths=torch.tensor([5, 0, 2]))
    with pytest.raises(ValueError, match="lengths must have shape \\(3,\\)"):
        lstm_persistent(torch.randn(5, 3, 4, device=DEVICE), None, *w, lengths=torch.tensor([5, 2]))
    with pytest.raises(TypeError, match="lengths must be an integer tensor"):
        lstm_persistent(torch.randn(5, 3, 4, device=DEVICE), None, *w, lengths=torch.tensor([5.0, 1.0, 2.0]))


# --------------------------------------------------------- the drop-ins in the textbook's own code (issue 14)

@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_textbook_gradient_demo_runs_unchanged(kind):
    """§1.3's demo with the recurrent layer swapped for ours: |dL/dx_t| over 100 positions equals nn's."""
    from kernels.gru import FusedGRU
    torch.manual_seed(0)
    rnn = (nn.LSTM if kind == "lstm" else nn.GRU)(input_size=1, hidden_size=64, batch_first=True, device=DEVICE)
    fused = (FusedLSTM if kind == "lstm" else FusedGRU).from_torch(rnn)
    head = nn.Linear(64, 1, device=DEVICE)
    grads = []
    for layer in (rnn, fused):
        x = torch.randn(1, 100, 1, device=DEVICE, generator=torch.Generator(DEVICE).manual_seed(1)).requires_grad_()
        output, _ = layer(x)
        head(output[:, -1]).sum().backward()
        grads.append(x.grad.abs().squeeze())
    torch.testing.assert_close(grads[1], grads[0], atol=1e-7, rtol=1e-4)
    assert grads[1][0] / grads[1][99] > 0      # the ratio the chapter prints is finite and computed


@pytest.mark.parametrize("kind", ["lstm-step", "lstm-persistent", "gru"])
def test_packed_training_step(kind):
    """One optimizer step on a packed batch of variable-length sentences: the same update as nn's."""
    from torch.nn.utils.rnn import pack_sequence
    from kernels.gru import FusedGRU
    torch.manual_seed(0)
    ref_rnn = (nn.GRU if kind == "gru" else nn.LSTM)(8, 16, num_layers=2, bidirectional=True, device=DEVICE)
    rnn = FusedGRU.from_torch(ref_rnn) if kind == "gru" else FusedLSTM.from_torch(ref_rnn, kernel=kind[5:])
    sentences = [torch.randn(n, 8, device=DEVICE) for n in (5, 2, 7, 1)]
    labels = torch.tensor([0, 1, 1, 0], device=DEVICE)
    updated = []
    for model in (ref_rnn, rnn):
        torch.manual_seed(3)
        head = nn.Linear(32, 2, device=DEVICE)
        opt = torch.optim.SGD([*model.parameters(), *head.parameters()], lr=0.5)
        _, state = model(pack_sequence(sentences, enforce_sorted=False))
        h_n = state[0] if isinstance(state, tuple) else state
        loss = nn.functional.cross_entropy(head(torch.cat([h_n[-2], h_n[-1]], -1)), labels)
        loss.backward()
        opt.step()
        updated.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*updated):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------------ rough edges (issue 21)

@pytest.mark.parametrize("kernel", FusedLSTM.KERNELS)
@pytest.mark.parametrize("batch_first, bidirectional", [(False, False), (True, True)])
def test_empty_batch_like_nn_lstm(kernel, batch_first, bidirectional):
    from tests.helpers import assert_empty_batch_like
    m = nn.LSTM(3, 4, num_layers=2, batch_first=batch_first, bidirectional=bidirectional, device=DEVICE)
    x = torch.zeros((0, 5, 3) if batch_first else (5, 0, 3), device=DEVICE)
    assert_empty_batch_like(FusedLSTM.from_torch(m, kernel=kernel), m, x)


def test_empty_batch_cell_and_layer():
    from tests.helpers import assert_empty_cell_like
    assert_empty_cell_like(lstm_cell, nn.LSTMCell(3, 4, device=DEVICE), states=2)
    x, h, c, *w = make(1, 3, 4, torch.float32)
    out, (hn, cn) = lstm(torch.zeros(5, 0, 3, device=DEVICE), None, *w)
    assert out.shape == (5, 0, 4) and hn.shape == cn.shape == (0, 4)


def test_flatten_parameters_is_a_no_op():
    m = nn.LSTM(3, 4, device=DEVICE)
    f = FusedLSTM.from_torch(m)
    before = {k: v.clone() for k, v in f.state_dict().items()}
    assert f.flatten_parameters() is None
    assert all(torch.equal(before[k], v) for k, v in f.state_dict().items())


@pytest.mark.parametrize("sizes", [[2, 2, 1], [1, 1, 1]])
def test_batch_sizes_must_start_at_the_batch(sizes):
    x, h, c, *w = make(3, 5, 4, torch.float32)
    with pytest.raises(ValueError, match="batch_sizes must be 3 positive, non-increasing ints starting at"):
        lstm(torch.randn(3, 3, 5, device=DEVICE), None, *w, batch_sizes=sizes)
