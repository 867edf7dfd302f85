"""kernels.rnn (rnn_cell, rnn, FusedRNN) against the textbook Elman RNN in float64 (2x rule) and nn.RNN."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from kernels.rnn import FusedRNN, rnn, rnn_cell
from reference import rnn as ref
from tests.helpers import DEVICE, DTYPES, check_fn, check_module, double_backward, odd_bias, strided
from tests.helpers import make as make_cell
from tests.tolerance import assert_within_2x

NONLIN = ["tanh", "relu"]


def make(B, I, H, dtype, seed=0, bias=True, state=True):
    x, h, _, *w = make_cell(B, I, H, dtype, seed, bias, state, gates=1)
    return (x, h, *w)


def cell(nonlinearity):
    return (lambda *a: rnn_cell(*a, nonlinearity=nonlinearity),
            lambda *a: ref.rnn_cell(*a, nonlinearity=nonlinearity))


def check(fns, args, n_out, nonlinearity):
    """check_fn, except relu in 16 bits: outputs only.  A pre-activation within a rounding step of 0 (fp16 rounds
    4e-4 to 0) flips relu's derivative between 0 and 1 in either implementation, an O(1) gradient difference
    the 2x rule cannot bound; in fp32 such a pre-activation is a 1e-7 coincidence."""
    if nonlinearity == "tanh" or args[0].dtype == torch.float32:
        return check_fn(*fns, args, n_out)
    with torch.no_grad():
        got, want, same = (fns[0](*args), fns[1](*[t.double() if t is not None else None for t in args]),
                           fns[1](*args))
    for i, (a, r, p) in enumerate(zip(*[o if isinstance(o, tuple) else (o,) for o in (got, want, same)])):
        assert_within_2x(f"output {i}", a, r, p, extra_atol=torch.finfo(a.dtype).eps)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("nonlinearity", NONLIN)
@pytest.mark.parametrize("B, I, H", [(1, 24, 50), (3, 50, 24), (17, 16, 16), (2, 33, 100)])
def test_matches_textbook(B, I, H, nonlinearity, dtype):
    check(cell(nonlinearity), make(B, I, H, dtype), 1, nonlinearity)


@pytest.mark.parametrize("bias, state", [(False, True), (True, False), (False, False)])
def test_optional_bias_and_state(bias, state):
    check_fn(*cell("tanh"), make(4, 20, 30, torch.float32, bias=bias, state=state), 1)


@pytest.mark.parametrize("nonlinearity", NONLIN)
def test_equals_nn_rnncell(nonlinearity):
    m = nn.RNNCell(24, 50, nonlinearity=nonlinearity, device=DEVICE)
    x, h = torch.randn(5, 24, device=DEVICE), torch.randn(5, 50, device=DEVICE)
    w = (m.weight_ih, m.weight_hh, m.bias_ih, m.bias_hh)
    torch.testing.assert_close(rnn_cell(x, h, *w, nonlinearity=nonlinearity), m(x, h), atol=2e-6, rtol=1e-5)
    got = rnn_cell(x[0], h[0], *w, nonlinearity=nonlinearity)
    assert got.shape == (50,)
    torch.testing.assert_close(got, m(x[0], h[0]), atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(rnn_cell(x, None, *w, nonlinearity=nonlinearity), m(x), atol=2e-6, rtol=1e-5)


def test_large_hidden():
    check_fn(*cell("tanh"), make(2, 64, 768, torch.float16), 1)


@given(B=st.integers(1, 20), I=st.integers(1, 40), H=st.integers(1, 40), dtype=st.sampled_from(DTYPES),
       seed=st.integers(0, 2**16), nonlinearity=st.sampled_from(NONLIN))
def test_random_shapes(B, I, H, dtype, seed, nonlinearity):
    check(cell(nonlinearity), make(B, I, H, dtype, seed=seed), 1, nonlinearity)


@pytest.mark.parametrize("over, exc, msg", [
    (dict(w_hh=torch.randn(4, 5)), ValueError, "w_hh must have shape"),
    (dict(w_ih=torch.randn(4, 9)), ValueError, "w_ih must have shape"),
    (dict(h=torch.randn(3, 4)), ValueError, "h must have shape"),
    (dict(b_hh=torch.randn(5)), ValueError, "b_hh must have shape"),
    (dict(x=torch.ones(2, 8, dtype=torch.int32)), TypeError, "x must be float16"),
    (dict(h=torch.randn(2, 4, dtype=torch.float64)), TypeError, "h must be float16"),
    (dict(x=torch.randn(2, 8, 1)), ValueError, "x must have rank 2"),
    (dict(nonlinearity="sigmoid"), ValueError, "nonlinearity must be 'tanh' or 'relu', got 'sigmoid'"),
], ids=["w_hh", "w_ih", "h", "b_hh", "int x", "float64 h", "rank", "nonlinearity"])
def test_bad_input(over, exc, msg):
    x, h, w_ih, w_hh, b_ih, b_hh = make(2, 8, 4, torch.float32)
    args = dict(x=x, h=h, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh)
    args.update({k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v for k, v in over.items()})
    with pytest.raises(exc, match=msg):
        rnn_cell(**args)


@pytest.mark.parametrize("layout", ["strided", "stride0"])
def test_non_contiguous_bias(layout):
    x, h, w_ih, w_hh, b_ih, b_hh = make(3, 5, 4, torch.float32)
    check_fn(*cell("tanh"), (x, h, w_ih, w_hh, odd_bias(b_ih, layout), odd_bias(b_hh, layout)), 1)


def test_every_argument_strided():
    args = [strided(t) for t in make(3, 5, 4, torch.float32)]
    assert not any(t.is_contiguous() for t in args)
    check_fn(*cell("relu"), args, 1)


def test_double_backward_raises():
    x, h, *w = make(2, 5, 4, torch.float32)
    with pytest.raises(RuntimeError, match="double backward"):
        double_backward(rnn_cell, x, h, *w)


# --------------------------------------------------------------------------------- rnn layer, FusedRNN

def layer(nonlinearity):
    return (lambda x, h, *w: rnn(x, h, *w, nonlinearity=nonlinearity),
            lambda x, h, *w: ref.rnn(x, h, *w, nonlinearity=nonlinearity))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("nonlinearity", NONLIN)
@pytest.mark.parametrize("T", [1, 37])
def test_layer_matches_textbook(T, nonlinearity, dtype):
    x, h, *w = make(3, 24, 50, dtype)
    xs = torch.rand(T, 3, 24, generator=torch.Generator().manual_seed(2)).to(x) * 2 - 1
    check(layer(nonlinearity), (xs, h, *w), 2, nonlinearity)


@pytest.mark.parametrize("bias, state", [(False, True), (True, False)])
def test_layer_optional_bias_and_state(bias, state):
    x, h, *w = make(2, 16, 20, torch.float32, bias=bias, state=state)
    check_fn(*layer("tanh"), (torch.randn(9, 2, 16, device=DEVICE), h, *w), 2)


def test_layer_batch_first():
    x, h, *w = make(3, 8, 10, torch.float32)
    xs = torch.randn(3, 6, 8, device=DEVICE)
    got, hn = rnn(xs, h, *w, batch_first=True)
    want, wn = ref.rnn(xs, h, *w, batch_first=True)
    assert got.shape == (3, 6, 10)
    torch.testing.assert_close(got, want, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(hn, wn, atol=2e-6, rtol=1e-5)


# relu's gradients by the 2x rule in fp32 only (see ``check``)
@pytest.mark.parametrize("nonlinearity, dtype", [("tanh", d) for d in DTYPES] + [("relu", torch.float32)], ids=str)
@pytest.mark.parametrize("layers, bidirectional, batch_first", [(1, False, False), (2, True, True)])
def test_fused_rnn_matches_nn_rnn(layers, bidirectional, batch_first, nonlinearity, dtype):
    torch.manual_seed(0)
    m = nn.RNN(12, 20, num_layers=layers, nonlinearity=nonlinearity, bidirectional=bidirectional,
               batch_first=batch_first, device=DEVICE)
    f = FusedRNN.from_torch(m)
    assert f.nonlinearity == nonlinearity
    x = torch.randn(3, 7, 12, device=DEVICE)
    dirs = 2 if bidirectional else 1
    for hx in (None, torch.randn(layers * dirs, 3 if batch_first else 7, 20, device=DEVICE)):
        check_module(f, m, x, hx, dtype=dtype)


@pytest.mark.parametrize("nonlinearity", NONLIN)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_fused_rnn_packed_matches_nn_rnn(bidirectional, nonlinearity):
    """Ragged, unsorted lengths with a length of 1: outputs, h_n at each row's own end, every gradient."""
    torch.manual_seed(1)
    m = nn.RNN(12, 20, num_layers=2, nonlinearity=nonlinearity, bidirectional=bidirectional, device=DEVICE)
    x = torch.randn(9, 5, 12, device=DEVICE)
    hx = torch.randn(2 * (2 if bidirectional else 1), 5, 20, device=DEVICE)
    for state in (None, hx):
        check_module(FusedRNN.from_torch(m), m, x, state, torch.tensor([4, 9, 1, 6, 9]))


@given(lengths=st.lists(st.integers(1, 8), min_size=1, max_size=6), seed=st.integers(0, 2**16))
def test_packed_lengths_hypothesis(lengths, seed):
    torch.manual_seed(seed)
    m = nn.RNN(5, 9, nonlinearity=NONLIN[seed % 2], bidirectional=seed % 3 == 1, device=DEVICE)
    x = torch.randn(max(lengths), len(lengths), 5, device=DEVICE)
    check_module(FusedRNN.from_torch(m), m, x, None, torch.tensor(lengths))


def test_fused_rnn_unbatched_names_and_bad_input():
    m = nn.RNN(10, 20, num_layers=2, nonlinearity="relu", bias=False, device=DEVICE)
    f = FusedRNN.from_torch(m)
    assert [n for n, _ in f.named_parameters()] == [n for n, _ in m.named_parameters()]
    x = torch.randn(6, 10, device=DEVICE)
    (got, gh), (want, wh) = f(x), m(x)
    assert got.shape == want.shape == (6, 20) and gh.shape == wh.shape == (2, 20)
    torch.testing.assert_close(got, want, atol=2e-6, rtol=1e-5)
    assert "nonlinearity='relu'" in repr(f) and FusedRNN(4, 8).weight_hh_l0.shape == (8, 8)
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu'"):
        FusedRNN(4, 8, 1, "gelu")
    with pytest.raises(TypeError, match="nn.RNN"):
        FusedRNN.from_torch(nn.GRU(4, 6))
    with pytest.raises(ValueError, match="10 features"):
        f(torch.randn(3, 2, 5, device=DEVICE))
    with pytest.raises(ValueError, match="batch_sizes must be 3 positive"):
        rnn(torch.randn(3, 2, 10, device=DEVICE), None, f.weight_ih_l0, f.weight_hh_l0, batch_sizes=[2, 3, 1])


# ------------------------------------------------------------------------ rough edges (issue 21)

@pytest.mark.parametrize("nonlinearity", NONLIN)
@pytest.mark.parametrize("batch_first, bidirectional", [(False, False), (True, True)])
def test_empty_batch_like_nn_rnn(batch_first, bidirectional, nonlinearity):
    from tests.helpers import assert_empty_batch_like
    m = nn.RNN(3, 4, num_layers=2, nonlinearity=nonlinearity, batch_first=batch_first, bidirectional=bidirectional,
               device=DEVICE)
    x = torch.zeros((0, 5, 3) if batch_first else (5, 0, 3), device=DEVICE)
    assert_empty_batch_like(FusedRNN.from_torch(m), m, x)


def test_empty_batch_cell():
    from tests.helpers import assert_empty_cell_like
    assert_empty_cell_like(rnn_cell, nn.RNNCell(3, 4, device=DEVICE), states=1)


def test_flatten_parameters_is_a_no_op():
    f = FusedRNN.from_torch(nn.RNN(3, 4, device=DEVICE))
    assert f.flatten_parameters() is None


def test_batch_sizes_must_start_at_the_batch():
    x, h, *w = make(3, 5, 4, torch.float32)
    with pytest.raises(ValueError, match="batch_sizes must be 3 positive, non-increasing ints starting at"):
        rnn(torch.randn(3, 3, 5, device=DEVICE), None, *w, batch_sizes=[2, 2, 1])


def test_autotuning_is_once_per_power_of_two_bucket():
    """A ragged batch shrinks B step by step; Triton's autotuner, keyed on sizes, would benchmark every config
    at every new B (seconds each on a GPU).  kernels._common.autotune tunes once per power-of-two bucket: nine
    batch sizes from 9 to 33 are three tunings here, through this Triton's own Autotuner."""
    import triton
    import triton.language as tl

    from kernels._common import autotune

    @triton.jit
    def _add_one(x_ptr, B, BLOCK: tl.constexpr):
        offs = tl.arange(0, BLOCK)
        tl.store(x_ptr + offs, tl.load(x_ptr + offs, mask=offs < B) + 1, mask=offs < B)

    tuner = autotune(_add_one, [triton.Config({"BLOCK": 64}), triton.Config({"BLOCK": 128})], ["B"], "test.add_one")
    benched = []
    tuner._do_bench = lambda call, quantiles: benched.append(call) or [1.0, 1.0, 1.0]
    x = torch.zeros(64, device=DEVICE)
    for b in (9, 12, 16, 17, 20, 31, 32, 33, 40):
        tuner[(1,)](x, b)
    assert len(benched) == 3 * 2                   # buckets 16, 32, 64 × two configs
    assert {k[0] for k in tuner.cache} == {16, 32, 64}
    assert x[0].item() == 9 and x[39].item() == 1           # every call ran, each with its own B
