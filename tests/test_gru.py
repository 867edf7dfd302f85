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
