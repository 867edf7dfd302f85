"""kernels.gru.gru_cell against the textbook GRU in float64 (2x rule per dtype) and nn.GRUCell."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from kernels.gru import gru_cell
from reference import gru as ref
from tests.helpers import DEVICE, DTYPES, check_fn, double_backward, odd_bias, strided
from tests.helpers import make as make_cell


def make(B, I, H, dtype, seed=0, bias=True, state=True):
    x, h, _, *w = make_cell(B, I, H, dtype, seed, bias, state, gates=3)
    return (x, h, *w)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("B, I, H", [(1, 24, 50), (3, 50, 24), (17, 16, 16), (2, 33, 100)])
def test_matches_textbook(B, I, H, dtype):
    check_fn(gru_cell, ref.gru_cell, make(B, I, H, dtype), 1)


@pytest.mark.parametrize("bias, state", [(False, True), (True, False), (False, False)])
def test_optional_bias_and_state(bias, state):
    check_fn(gru_cell, ref.gru_cell, make(4, 20, 30, torch.float32, bias=bias, state=state), 1)


def test_equals_nn_grucell():
    cell = nn.GRUCell(24, 50, device=DEVICE)
    x, h = torch.randn(5, 24, device=DEVICE), torch.randn(5, 50, device=DEVICE)
    torch.testing.assert_close(gru_cell(x, h, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh),
                               cell(x, h), atol=2e-6, rtol=1e-5)
    got = gru_cell(x[0], h[0], cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    assert got.shape == (50,)
    torch.testing.assert_close(got, cell(x[0], h[0]), atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(gru_cell(x, None, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh),
                               cell(x), atol=2e-6, rtol=1e-5)


def test_large_hidden():
    check_fn(gru_cell, ref.gru_cell, make(2, 64, 768, torch.float16), 1)


@given(B=st.integers(1, 20), I=st.integers(1, 40), H=st.integers(1, 40),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_random_shapes(B, I, H, dtype, seed):
    check_fn(gru_cell, ref.gru_cell, make(B, I, H, dtype, seed=seed), 1)


@pytest.mark.parametrize("over, exc, msg", [
    (dict(w_hh=torch.randn(16, 4)), ValueError, "w_hh must have shape"),
    (dict(w_ih=torch.randn(12, 9)), ValueError, "w_ih must have shape"),
    (dict(h=torch.randn(3, 4)), ValueError, "h must have shape"),
    (dict(b_hh=torch.randn(16)), ValueError, "b_hh must have shape"),
    (dict(x=torch.ones(2, 8, dtype=torch.int32)), TypeError, "x must be float16"),
    (dict(h=torch.randn(2, 4, dtype=torch.float64)), TypeError, "h must be float16"),
    (dict(x=torch.randn(2, 8, 1)), ValueError, "x must have rank 2"),
], ids=["w_hh", "w_ih", "h", "b_hh", "int x", "float64 h", "rank"])
def test_bad_input(over, exc, msg):
    x, h, w_ih, w_hh, b_ih, b_hh = make(2, 8, 4, torch.float32)
    args = dict(x=x, h=h, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh)
    args.update({k: v.to(DEVICE) for k, v in over.items()})
    with pytest.raises(exc, match=msg):
        gru_cell(**args)


@pytest.mark.parametrize("layout", ["strided", "stride0"])
def test_non_contiguous_bias(layout):
    """Issue 10: a strided b_ih was read as if contiguous (off by 0.93)."""
    x, h, w_ih, w_hh, b_ih, b_hh = make(3, 5, 4, torch.float32)
    args = (x, h, w_ih, w_hh, odd_bias(b_ih, layout), odd_bias(b_hh, layout))
    check_fn(gru_cell, ref.gru_cell, args, 1)
    assert torch.equal(gru_cell(*args), gru_cell(*args))


def testdouble_backward_raises():
    x, h, *w = make(2, 5, 4, torch.float32)
    with pytest.raises(RuntimeError, match="double backward"):
        double_backward(gru_cell, x, h, *w)


def test_unbatched_step_needs_unbatched_state():
    x, h, *w = make(2, 5, 4, torch.float32)
    with pytest.raises(ValueError, match="h must have rank 1"):
        gru_cell(x[0], h, *w)
    assert gru_cell(x[0], h[0], *w).shape == (4,)


def test_every_argument_strided():
    args = [strided(t) for t in make(3, 5, 4, torch.float32)]
    assert not any(t.is_contiguous() for t in args)
    check_fn(gru_cell, ref.gru_cell, args, 1)


# -------------------------------------------------------------------------------- gru layer, FusedGRU

from kernels.gru import FusedGRU, gru  # noqa: E402
from tests.helpers import check_module  # noqa: E402


def _layer(x, h, *w):
    return gru(x, h, *w)


def _ref_layer(x, h, *w):
    return ref.gru(x, h, *w)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("T", [1, 37])
def test_layer_matches_textbook(T, dtype):
    x, h, *w = make(3, 24, 50, dtype)
    xs = torch.rand(T, 3, 24, generator=torch.Generator().manual_seed(2)).to(x) * 2 - 1
    check_fn(_layer, _ref_layer, (xs, h, *w), 2)


@pytest.mark.parametrize("bias, state", [(False, True), (True, False)])
def test_layer_optional_bias_and_state(bias, state):
    x, h, *w = make(2, 16, 20, torch.float32, bias=bias, state=state)
    check_fn(_layer, _ref_layer, (torch.randn(9, 2, 16, device=DEVICE), h, *w), 2)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layers, bidirectional, batch_first", [(1, False, False), (2, False, True), (2, True, False)])
def test_fused_gru_matches_nn_gru(layers, bidirectional, batch_first, dtype):
    torch.manual_seed(0)
    m = nn.GRU(12, 20, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first, device=DEVICE)
    f = FusedGRU.from_torch(m)
    x = torch.randn(3, 7, 12, device=DEVICE)
    dirs = 2 if bidirectional else 1
    for hx in (None, torch.randn(layers * dirs, 3 if batch_first else 7, 20, device=DEVICE)):
        check_module(f, m, x, hx, dtype=dtype)


def test_fused_gru_unbatched_dropout_and_names():
    m = nn.GRU(10, 20, num_layers=2, dropout=0.5, bias=False, device=DEVICE)
    f = FusedGRU.from_torch(m)
    assert [n for n, _ in f.named_parameters()] == [n for n, _ in m.named_parameters()]
    m.eval()
    f.eval()
    x = torch.randn(6, 10, device=DEVICE)
    (got, gh), (want, wh) = f(x), m(x)
    assert got.shape == want.shape == (6, 20) and gh.shape == wh.shape == (2, 20)
    torch.testing.assert_close(got, want, atol=2e-6, rtol=1e-5)
    f.train()
    a, _ = f(torch.randn(5, 2, 10, device=DEVICE))       # dropout between layers, in training only
    assert a.shape == (5, 2, 20)
    assert "num_layers=2" in repr(f) and FusedGRU(4, 8).weight_hh_l0.shape == (24, 8)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_fused_gru_packed_matches_nn_gru(bidirectional, dtype):
    """Ragged, unsorted lengths with a length of 1: outputs, h_n at each row's own end, every gradient."""
    torch.manual_seed(1)
    m = nn.GRU(12, 20, num_layers=2, bidirectional=bidirectional, device=DEVICE)
    x = torch.randn(9, 5, 12, device=DEVICE)
    lengths = torch.tensor([4, 9, 1, 6, 9])
    hx = torch.randn(2 * (2 if bidirectional else 1), 5, 20, device=DEVICE)
    for state in (None, hx):
        check_module(FusedGRU.from_torch(m), m, x, state, lengths, dtype)


@given(lengths=st.lists(st.integers(1, 8), min_size=1, max_size=6), seed=st.integers(0, 2**16))
def test_packed_lengths_hypothesis(lengths, seed):
    torch.manual_seed(seed)
    m = nn.GRU(5, 9, bidirectional=seed % 2 == 1, device=DEVICE)
    x = torch.randn(max(lengths), len(lengths), 5, device=DEVICE)
    check_module(FusedGRU.from_torch(m), m, x, None, torch.tensor(lengths))


def test_bad_module_input():
    from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence
    f = FusedGRU(4, 6, device=DEVICE)
    with pytest.raises(ValueError, match="4 features"):
        f(torch.randn(3, 2, 5, device=DEVICE))
    packed = pack_padded_sequence(torch.randn(5, 3, 4, device=DEVICE), torch.tensor([5, 2, 3]), enforce_sorted=False)
    with pytest.raises(ValueError, match="h0 must have shape \\(1, 3, 6\\) for this packed batch"):
        f(packed, torch.randn(1, 5, 6, device=DEVICE))
    bad = PackedSequence(packed.data, torch.tensor([2, 3, 3, 2]), packed.sorted_indices, packed.unsorted_indices)
    with pytest.raises(ValueError, match="input.batch_sizes must be positive, non-increasing and sum to data's 10"):
        f(bad)
    with pytest.raises(ValueError, match="input: the PackedSequence's data must have 4 features"):
        f(pack_padded_sequence(torch.randn(5, 3, 7, device=DEVICE), torch.tensor([5, 2, 3]), enforce_sorted=False))
    with pytest.raises(TypeError, match="nn.GRU"):
        FusedGRU.from_torch(nn.LSTM(4, 6))
    with pytest.raises(ValueError, match="batch_sizes must be 3 positive"):
        gru(torch.randn(3, 2, 4, device=DEVICE), None, f.weight_ih_l0, f.weight_hh_l0, batch_sizes=[2, 3, 1])


# ------------------------------------------------------------------------ rough edges (issue 21)

@pytest.mark.parametrize("batch_first, bidirectional", [(False, False), (True, True)])
def test_empty_batch_like_nn_gru(batch_first, bidirectional):
    from tests.helpers import assert_empty_batch_like
    m = nn.GRU(3, 4, num_layers=2, batch_first=batch_first, bidirectional=bidirectional, device=DEVICE)
    x = torch.zeros((0, 5, 3) if batch_first else (5, 0, 3), device=DEVICE)
    assert_empty_batch_like(FusedGRU.from_torch(m), m, x)


def test_empty_batch_cell():
    from tests.helpers import assert_empty_cell_like
    assert_empty_cell_like(gru_cell, nn.GRUCell(3, 4, device=DEVICE), states=1)


def test_flatten_parameters_is_a_no_op():
    f = FusedGRU.from_torch(nn.GRU(3, 4, device=DEVICE))
    assert f.flatten_parameters() is None


def test_batch_sizes_must_start_at_the_batch():
    x, h, *w = make(3, 5, 4, torch.float32)
    with pytest.raises(ValueError, match="batch_sizes must be 3 positive, non-increasing ints starting at"):
        gru(torch.randn(3, 3, 5, device=DEVICE), None, *w, batch_sizes=[2, 2, 1])
