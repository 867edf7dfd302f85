"""kernels.lstm_persistent against the textbook LSTM in float64 (2x rule per dtype) and nn.LSTM:
one program per head (a single launch over all steps, also in the interpreter) and a head split
over programs (one launch per step here; on a GPU one launch with a grid barrier)."""
import pytest
import torch
import triton
import triton.language as tl
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from kernels.lstm import FusedLSTM
from kernels.lstm_persistent import grid_barrier, lstm_persistent, plan
from reference import lstm_persistent as ref
from tests.helpers import DEVICE, DTYPES, assert_module_matches, check_fn, double_backward, make, odd_bias, strided


def _persistent(block_h=None, heads=1):
    def run(x, h, c, *w):
        out, (hn, cn) = lstm_persistent(x, None if h is None else (h, c), *w, heads=heads, _block_h=block_h)
        return out, hn, cn
    return run


def _ref(heads=1):
    def run(x, h, c, *w):
        out, (hn, cn) = ref.lstm_persistent(x, None if h is None else (h, c), *w, heads=heads)
        return out, hn, cn
    return run


def _seq(T, B, I, dtype, seed=2):
    return (torch.rand(T, B, I, generator=torch.Generator().manual_seed(seed)) * 2 - 1).to(DEVICE, dtype)


def test_plans():
    one = plan(768, 12, 16, torch.float16, sms=132)
    assert one.TILES == 1 and one.single_launch and not one.barrier and one.HOIST_W
    split = plan(768, 1, 16, torch.float16, sms=132)
    assert split.TILES == 48 and split.single_launch and split.barrier
    too_big = plan(1024, 1, 256, torch.float16, sms=132)      # 64 × 8 programs cannot all be resident
    assert not too_big.single_launch and not too_big.barrier
    interp = plan(768, 1, 16, torch.float16, sms=0)
    assert not interp.single_launch                           # the interpreter cannot wait on programs
    assert plan(1024, 4, 16, torch.float16, sms=132).TILES == 1   # a 256-wide head is one program
    assert plan(1024, 4, 16, torch.float16, sms=132, backward=True).TILES == 2


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("block_h", [None, 16], ids=["one-program", "split-head"])
@pytest.mark.parametrize("T", [1, 37])
def test_matches_textbook(T, block_h, dtype):
    x, h, c, *w = make(3, 24, 50, dtype)
    check_fn(_persistent(block_h), _ref(), (_seq(T, 3, 24, dtype), h, c, *w), 3)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_multi_head_block_diagonal(dtype):
    g = torch.Generator().manual_seed(5)
    heads, dh, I, B, T = 3, 20, 16, 5, 9
    r = lambda *s: ((torch.rand(*s, generator=g) * 2 - 1) * 0.4).to(DEVICE, dtype)  # noqa: E731
    args = (_seq(T, B, I, dtype), r(B, heads * dh), r(B, heads * dh), r(4 * heads * dh, I), r(heads, 4 * dh, dh),
            r(4 * heads * dh), r(4 * heads * dh))
    check_fn(_persistent(heads=heads), _ref(heads), args, 3)


@pytest.mark.parametrize("bias, state", [(False, True), (True, False)])
def test_optional_bias_and_state(bias, state):
    x, h, c, *w = make(2, 16, 20, torch.float32, bias=bias, state=state)
    for block_h in (None, 16):
        check_fn(_persistent(block_h), _ref(), (_seq(6, 2, 16, torch.float32), h, c, *w), 3)


@pytest.mark.parametrize("grad", [False, True])
def test_does_not_modify_inputs(grad):
    x, h, c, *w = make(2, 8, 12, torch.float32)
    args = [t.requires_grad_(grad) for t in (_seq(4, 2, 8, torch.float32), h, c, *w)]
    before = [t.detach().clone() for t in args]
    out, (hn, cn) = lstm_persistent(args[0], (args[1], args[2]), *args[3:])
    if grad:
        dcn = torch.ones_like(cn)
        saved = dcn.clone()
        torch.autograd.backward([out.sum(), cn], [None, dcn])
        assert torch.equal(dcn, saved)
    for a, b in zip(before, args):
        assert torch.equal(a, b.detach())


def test_fused_lstm_persistent_equals_nn_lstm():
    torch.manual_seed(0)
    m = nn.LSTM(12, 40, num_layers=2, bidirectional=True, batch_first=True, device=DEVICE)
    f = FusedLSTM.from_torch(m, kernel="persistent")
    assert "kernel='persistent'" in repr(f)
    assert_module_matches(f, m, torch.randn(3, 6, 12, device=DEVICE))


@given(B=st.integers(1, 20), I=st.integers(1, 24), H=st.integers(1, 40), T=st.integers(1, 5),
       split=st.booleans(), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_random_shapes(B, I, H, T, split, dtype, seed):
    x, h, c, *w = make(B, I, H, dtype, seed=seed)
    check_fn(_persistent(16 if split else None), _ref(), (_seq(T, B, I, dtype, seed), h, c, *w), 3)


def test_bad_input():
    x, h, c, *w = make(2, 8, 12, torch.float32)
    xs = _seq(3, 2, 8, torch.float32)
    with pytest.raises(ValueError, match="heads must be a positive int"):
        lstm_persistent(xs, None, *w, heads=0)
    with pytest.raises(ValueError, match=r"w_hh must have shape \(3, 4\*head_size, head_size\)"):
        lstm_persistent(xs, None, w[0], torch.randn(2, 16, 4, device=DEVICE), heads=3)
    with pytest.raises(ValueError, match="w_hh must have rank 3"):
        lstm_persistent(xs, None, *w, heads=3)
    with pytest.raises(ValueError, match="x must have rank 3"):
        lstm_persistent(xs[0], None, *w)
    with pytest.raises(ValueError, match="h must have shape"):
        lstm_persistent(xs, (h[:1], c), *w)
    with pytest.raises(TypeError, match="w_ih has dtype"):
        lstm_persistent(xs, None, w[0].double().half(), *w[1:])
    with pytest.raises(ValueError, match="kernel must be one of"):
        FusedLSTM(4, 4, kernel="fast")


@triton.jit
def _barrier_kernel(BAR, target, MAX_SPIN: tl.constexpr):
    grid_barrier(BAR, target, MAX_SPIN)


def test_grid_barrier_passes_and_times_out():
    """The barrier's logic in the interpreter (one program): it passes once the count is reached, and when
    it never is, gives up after MAX_SPIN polls with the stuck flag raised instead of hanging."""
    bar = torch.zeros(2, dtype=torch.int32, device=DEVICE)
    _barrier_kernel[(1,)](bar, 1, MAX_SPIN=8)
    assert bar.tolist() == [1, 0]
    _barrier_kernel[(1,)](bar, 3, MAX_SPIN=8)          # a second program that never arrives
    assert bar.tolist() == [2, 1]


@pytest.mark.parametrize("layout", ["strided", "stride0"])
@pytest.mark.parametrize("block_h", [None, 16], ids=["one-program", "split-head"])
def test_non_contiguous_bias(layout, block_h):
    x, h, c, w_ih, w_hh, b_ih, b_hh = make(3, 5, 20, torch.float32)
    check_fn(_persistent(block_h), _ref(),
             (_seq(4, 3, 5, torch.float32), h, c, w_ih, w_hh, odd_bias(b_ih, layout), odd_bias(b_hh, layout)), 3)


def testdouble_backward_raises():
    x, h, c, *w = make(2, 5, 4, torch.float32)
    with pytest.raises(RuntimeError, match="double backward"):
        double_backward(lambda xs, *a: lstm_persistent(xs, (a[0], a[1]), *a[2:])[0], _seq(3, 2, 5, torch.float32),
                         h, c, *w)


def test_zero_steps_is_a_value_error():
    x, h, c, *w = make(2, 5, 4, torch.float32)
    with pytest.raises(ValueError, match="at least one time step"):
        lstm_persistent(torch.randn(0, 2, 5, device=DEVICE), None, *w)


@pytest.mark.parametrize("block_h", [None, 16], ids=["one-program", "split-head"])
def test_h_n_does_not_alias_out(block_h):
    x, h, c, *w = make(2, 5, 20, torch.float32)
    with torch.no_grad():
        out, (hn, cn) = lstm_persistent(_seq(3, 2, 5, torch.float32), (h, c), *w, _block_h=block_h)
        want = out[-1].clone()
        out.zero_()
    assert torch.equal(hn, want)


@pytest.mark.parametrize("block_h", [None, 16], ids=["one-program", "split-head"])
def test_every_argument_strided(block_h):
    x, h, c, *w = make(3, 5, 20, torch.float32)
    xs = _seq(4, 5, 3, torch.float32).transpose(1, 2)          # (T, B, I) view of (T, I, B) storage
    args = [xs] + [strided(t) for t in (h, c, *w)]
    assert not any(t.is_contiguous() for t in args)
    check_fn(_persistent(block_h), _ref(), args, 3)


class _Kernel:
    """Stands in for a jit kernel: records launches, and refuses a cooperative one as the driver does when
    the grid cannot be co-resident."""
    def __init__(self, refuse):
        self.calls, self.refuse = [], refuse

    def __getitem__(self, grid):
        def launch(**kw):
            if kw.get("launch_cooperative_grid") and self.refuse:
                raise RuntimeError("Triton Error [CUDA]: too many blocks in cooperative launch")
            self.calls.append(kw)
        return launch


@pytest.mark.parametrize("refuse", [False, True])
def test_barrier_grid_is_cooperative_and_falls_back(refuse):
    from kernels.lstm_persistent import _run
    p = plan(768, 1, 16, torch.float16, sms=132)
    assert p.barrier and p.launch()["launch_cooperative_grid"]

    def launches(q):
        return [dict(t_lo=0, t_hi=5)] if q.single_launch else [dict(t_lo=t, t_hi=t + 1) for t in range(5)]
    k = _Kernel(refuse)
    _run(k, {}, p, torch.zeros(2, dtype=torch.int32), launches)
    if refuse:   # one launch per step, barrier compiled out
        assert [c["t_lo"] for c in k.calls] == [0, 1, 2, 3, 4]
        assert not any(c["BARRIER"] or "launch_cooperative_grid" in c for c in k.calls)
    else:
        assert len(k.calls) == 1 and k.calls[0]["BARRIER"] and k.calls[0]["num_stages"] == 1


def test_barrier_check_is_skipped_while_capturing(monkeypatch):
    """--cuda-graph: the stuck flag cannot be read (.item()) during capture."""
    from kernels.lstm_persistent import _check_barrier
    p = plan(768, 1, 16, torch.float16, sms=132)
    stuck = torch.tensor([3, 1], dtype=torch.int32)
    with pytest.raises(RuntimeError, match="grid barrier timed out"):
        _check_barrier(stuck, p)
    monkeypatch.setattr("kernels.lstm_persistent._capturing", lambda device: True)
    _check_barrier(stuck, p)
