"""kernels.scan (linear_scan, min_gru, min_lstm) against sequential float64 references, by the 2x rule; both
plans (sequential, chunked, associative) on every linear_scan case, and the shape where the choice flips."""
import functools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kernels import scan
from kernels.scan import INTERPRETER, PLANS, MinGRU, MinLSTM, linear_scan, min_gru, min_lstm
from reference import scan as ref
from tests.helpers import DEVICE, DTYPES, check_fn, double_backward

CHUNK = INTERPRETER["BLOCK_T"]
plans = pytest.mark.parametrize("plan", PLANS)


def planned(plan):
    return functools.partial(linear_scan, _plan=plan)


def make(B, T, D, dtype, seed=0, lo=0.0, hi=1.0, state=True):
    """a uniform on [lo, hi), b and h0 standard normal."""
    g = torch.Generator().manual_seed(seed)
    a = lo + (hi - lo) * torch.rand(B, T, D, generator=g, dtype=torch.float64)
    b, h0 = torch.randn(B, T, D, generator=g), torch.randn(B, D, generator=g)
    return a.to(DEVICE, dtype), b.to(DEVICE, dtype), (h0.to(DEVICE, dtype) if state else None)


@plans
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("T", [1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5])
@pytest.mark.parametrize("state", [True, False], ids=["h0", "no h0"])
def test_matches_sequential(T, state, dtype, plan):
    check_fn(planned(plan), ref.linear_scan, make(2, T, 19, dtype, state=state), 1)


@pytest.mark.parametrize("lo, hi", [(0.0, 1e-4), (1 - 1e-4, 1.0), (1 - 1e-7, 1.0), (0.0, 1.0)],
                         ids=["a near 0", "a near 1", "a within 1e-7 of 1", "a in [0, 1)"])
@plans
def test_extreme_decays(lo, hi, plan):
    """Where a log-space scan (log a summed, exp'd back) loses digits: a ~ 0 underflows and a ~ 1 needs
    log1p; the direct products here keep fp32 accuracy over 200 steps."""
    a, b, h0 = make(1, 200, 17, torch.float32, lo=lo, hi=hi)      # one row: the interpreter runs programs one by one
    check_fn(planned(plan), ref.linear_scan, (a, b, h0), 1)


@plans
def test_constant_decay_closed_form(plan):
    """a = ½ everywhere and b = 1: h0 = 3 gives h_t = 2 + 2^−(t+1), exactly."""
    T = 2 * CHUNK + 3
    a = torch.full((1, T, 5), 0.5, device=DEVICE)
    h0 = torch.full((1, 5), 3.0, device=DEVICE)
    t = torch.arange(T, device=DEVICE, dtype=torch.float32)[None, :, None]
    torch.testing.assert_close(planned(plan)(a, torch.ones_like(a), h0), (2 + 0.5 ** (t + 1)).expand(1, T, 5))


@given(B=st.integers(1, 3), T=st.integers(1, 50), D=st.integers(1, 40), dtype=st.sampled_from(DTYPES),
       seed=st.integers(0, 2**16), state=st.booleans(), plan=st.sampled_from(PLANS))
def test_random_shapes(B, T, D, dtype, seed, state, plan):
    check_fn(planned(plan), ref.linear_scan, make(B, T, D, dtype, seed, state=state), 1)


@plans
def test_strided_inputs(plan):
    """a time-major in memory, b every other element of a wider tensor, h0 a column slice."""
    a, b, h0 = make(2, 21, 12, torch.float32)
    a_t = a.transpose(0, 1).contiguous().transpose(0, 1)
    b_t = torch.stack([b, torch.full_like(b, 1e3)], -1).reshape(2, 21, 24)[..., ::2]
    h0_t = torch.stack([h0, torch.full_like(h0, 1e3)], -1).reshape(2, 24)[:, ::2]
    assert not any(t.is_contiguous() for t in (a_t, b_t, h0_t))
    check_fn(planned(plan), ref.linear_scan, (a_t, b_t, h0_t), 1)


def test_plan_flips_where_the_lanes_fill_hbm(monkeypatch):
    """plan_for: sequential from B·D·2·element size ≥ BYTES_IN_FLIGHT (750k 16-bit lanes, 375k fp32 ones on an
    H200's 3 MB), the chunked scan below; and linear_scan runs the plan it picks, forward and backward, on
    either side of the line (moved down to a testable size), matching the reference there."""
    line = scan.BYTES_IN_FLIGHT
    assert scan.plan_for(1, line // 4, torch.float16) == "sequential"
    assert scan.plan_for(1, line // 4 - 1, torch.float16) == "chunked"
    assert scan.plan_for(16, 1024, torch.float16) == "chunked"                  # 16k lanes: the shape
    assert scan.plan_for(-(-line // (8 * 1024)), 1024, torch.float32) == "sequential"   # 367 × 1024 fp32 lanes
    monkeypatch.setattr(scan, "BYTES_IN_FLIGHT", 2 * 24 * 4)                    # 24 fp32 lanes
    ran = []
    launch = scan._launch
    monkeypatch.setattr(scan, "_launch", lambda kernel, *a: ran.append(kernel.__name__) or launch(kernel, *a))
    for B, D, plan in ((2, 12, "sequential"), (1, 23, "chunked")):
        ran.clear()
        check_fn(linear_scan, ref.linear_scan, make(B, 9, D, torch.float32), 1)
        assert ran == [k.__name__ for k in scan.KERNELS[plan][0] + scan.KERNELS[plan][1]], (B, D, ran)


def test_chunks_multiply_the_lanes_up_to_the_line():
    """chunk_for: B·D lanes × chunks reach BYTES_IN_FLIGHT where T has room; else as many chunks as chunks of
    MIN_CHUNK steps allow (or MAX_CHUNKS, grid axis 2); one chunk for a sequence shorter than MIN_CHUNK."""
    lanes = scan.BYTES_IN_FLIGHT // 4                                      # 16-bit: 2 elements of 2 bytes a lane
    for B, T, D in ((16, 1024, 1024), (1, 100_000, 64), (4, 4096, 256), (1, 10, 8), (1, 17, 8), (1, 3_000_000, 1),
                    (1024, 64, 1024)):
        chunk = scan.chunk_for(B, T, D, torch.float16)
        chunks = -(-T // chunk)
        assert min(T, scan.MIN_CHUNK) <= chunk <= T and chunks <= scan.MAX_CHUNKS, (B, T, D, chunk)
        # enough lanes, or chunks as short as allowed, or one step shorter would need more than the grid's chunks
        assert (B * D * chunks >= lanes or chunk == min(T, scan.MIN_CHUNK)
                or -(-T // (chunk - 1)) > scan.MAX_CHUNKS), (B, T, D, chunk)
    assert scan.chunk_for(16, 1024, 1024, torch.float16) == 22      # 16k lanes: 46 chunks wanted, 47 of 22 steps
    assert scan.chunk_for(1, 100_000, 64, torch.float16) == 16      # T-bound: 6,250 chunks of 16
    assert scan.chunk_for(1, 3_000_000, 1, torch.float16) == 46     # grid-bound: 65,535 chunks at most
    assert scan.chunk_for(1024, 64, 1024, torch.float16) == 64      # lanes enough: one chunk
    assert scan.chunk_for(1, 10, 8, torch.float16) == 10


@pytest.mark.parametrize("T", [1, 2, 7])
def test_chunks_of_one_step(monkeypatch, T):
    """Every step its own chunk: the carry pass then composes every step (the longest carry chain)."""
    monkeypatch.setattr(scan, "MIN_CHUNK", 1)
    check_fn(planned("chunked"), ref.linear_scan, make(2, T, 5, torch.float32), 1)
    check_fn(planned("chunked"), ref.linear_scan, make(2, T, 5, torch.float32, state=False), 1)


def test_unknown_plan_is_refused():
    a, b, h0 = make(2, 5, 3, torch.float32)
    with pytest.raises(ValueError, match="_plan must be one of"):
        linear_scan(a, b, h0, _plan="chunk")


def _args(names, B, T, IN, D, dtype, seed=0, bias=True, state=True):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s, k=1.0: ((torch.rand(*s, generator=g) * 2 - 1) * k).to(DEVICE, dtype)  # noqa: E731
    x = r(B, T, IN)
    ws = [r(D, IN, k=2 * IN ** -0.5) for _ in names]
    bs = [r(D) if bias else None for _ in names]
    return (x, *ws, *bs, r(B, D) if state else None)


@plans
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("fn, gates", [(min_gru, 2), (min_lstm, 3)], ids=["min_gru", "min_lstm"])
@pytest.mark.parametrize("T", [1, 2 * CHUNK + 3])
def test_min_rnns_match_the_paper(fn, gates, T, dtype, plan):
    """Every plan: the sequential and chunked ones with the gates inside the scan, the associative one
    from a and b made in torch ops."""
    reference = getattr(ref, fn.__name__)
    check_fn(functools.partial(fn, _plan=plan), reference, _args(range(gates), 2, T, 13, 21, dtype), 1)


@plans
@pytest.mark.parametrize("fn, gates", [(min_gru, 2), (min_lstm, 3)], ids=["min_gru", "min_lstm"])
@pytest.mark.parametrize("bias, state", [(False, True), (True, False), (False, False)])
def test_min_rnns_optional_bias_and_state(fn, gates, bias, state, plan):
    check_fn(functools.partial(fn, _plan=plan), getattr(ref, fn.__name__),
             _args(range(gates), 3, 20, 7, 9, torch.float32, bias=bias, state=state), 1)


@pytest.mark.parametrize("plan", ["sequential", "chunked"])
@pytest.mark.parametrize("fn, parts, gates", [(min_gru, 2, 1), (min_lstm, 3, 2)], ids=["min_gru", "min_lstm"])
def test_min_rnns_take_the_gates_inside_the_scan(monkeypatch, fn, parts, gates, plan):
    """#26: z and h̃ (f, i and h̃) are computed in the scan's kernels from the projections, forward and
    backward, so a and b are never written: every launch has the model's GATES, and the torch-op path the
    associative plan takes is never called."""
    monkeypatch.setattr(scan, "_torch_coefficients", lambda *a: pytest.fail("a and b made in torch ops"))
    seen = []
    launch = scan._launch
    monkeypatch.setattr(scan, "_launch", lambda kernel, args, *a: seen.append(
        (kernel.__name__, args.get("GATES"))) or launch(kernel, args, *a))
    check_fn(functools.partial(fn, _plan=plan), getattr(ref, fn.__name__),
             _args(range(parts), 2, 2 * CHUNK + 3, 5, 8, torch.float32), 1)
    assert {g for _, g in seen} == {gates}, seen
    names = [k.__name__ for k in scan.KERNELS[plan][0] + scan.KERNELS[plan][1]]
    assert [n for n, _ in seen] == names, seen


@pytest.mark.parametrize("cls, fn", [(MinGRU, ref.min_gru), (MinLSTM, ref.min_lstm)], ids=["MinGRU", "MinLSTM"])
def test_modules(cls, fn):
    torch.manual_seed(0)
    m = cls(7, 11, device=DEVICE)
    x, h0 = torch.randn(3, 20, 7, device=DEVICE), torch.randn(3, 11, device=DEVICE)
    out, hn = m(x, h0)
    want = fn(x, *m.weights(), h0=h0)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(hn, want[:, -1])
    out.sum().backward()
    assert m.proj.weight.grad is not None and m.proj.bias.grad is not None
    assert cls(4, 8, bias=False).proj.bias is None and "7, 11" in repr(m)
    with pytest.raises(ValueError, match="x must have 7 features"):
        m(torch.randn(3, 20, 8, device=DEVICE))
    with pytest.raises(ValueError, match="hidden_size must be a positive int"):
        cls(3, 0)


@pytest.mark.parametrize("over, exc, msg", [
    (dict(b=torch.randn(2, 5, 4)), ValueError, "b must have a's shape"),
    (dict(a=torch.randn(2, 5)), ValueError, "a must have rank 3"),
    (dict(h0=torch.randn(3, 3)), ValueError, "h0 must have shape \\(2, 3\\)"),
    (dict(a=torch.ones(2, 5, 3, dtype=torch.int32)), TypeError, "a must be float16"),
    (dict(b=torch.randn(2, 5, 3, dtype=torch.float16)), TypeError, "b has dtype torch.float16"),
    (dict(a=torch.randn(2, 0, 3), b=torch.randn(2, 0, 3)), ValueError, "B, T and D >= 1"),
], ids=["b shape", "rank", "h0 shape", "int a", "mixed dtypes", "empty T"])
def test_bad_input(over, exc, msg):
    a, b, h0 = make(2, 5, 3, torch.float32)
    args = dict(a=a, b=b, h0=h0)
    args.update({k: v.to(DEVICE) for k, v in over.items()})
    with pytest.raises(exc, match=msg):
        linear_scan(**args)


def test_too_wide_a_state_is_refused():
    from kernels.scan import MAX_D
    a = torch.zeros(1, 1, MAX_D + 1, device=DEVICE)
    with pytest.raises(ValueError, match="D must be at most 1,048,560"):
        linear_scan(a, a)


def test_min_rnn_bad_input():
    x, wz, wh, bz, bh, h0 = _args(range(2), 2, 5, 4, 6, torch.float32)
    with pytest.raises(ValueError, match=r"w_h must have shape \(6, 4\)"):
        min_gru(x, wz, wh[:, :3], bz, bh, h0)
    with pytest.raises(ValueError, match=r"b_z must have shape \(6,\)"):
        min_gru(x, wz, wh, bz[:5], bh, h0)
    with pytest.raises(ValueError, match="x must have rank 3"):
        min_lstm(x[0], wz, wz, wh)
    with pytest.raises(TypeError, match="w_i has dtype torch.float16"):
        min_lstm(x, wz, wz.half(), wh)
    if DEVICE == "cpu":
        with pytest.raises(ValueError, match="x is on meta but w_z is on cpu|w_z is on cpu but x is on meta"):
            min_gru(x.to("meta"), wz, wh)


def test_double_backward_raises():
    a, b, h0 = make(2, 5, 3, torch.float32)
    with pytest.raises(RuntimeError, match="double backward"):
        double_backward(linear_scan, a, b, h0)


# ------------------------------------------------------------------------ rough edges (issue 21)

@pytest.mark.parametrize("cls", [MinGRU, MinLSTM], ids=["MinGRU", "MinLSTM"])
def test_h_n_does_not_alias_h(cls):
    m = cls(3, 4).to(DEVICE)
    with torch.no_grad():
        h, hn = m(torch.randn(2, 5, 3, device=DEVICE))
        want = hn.clone()
        h.zero_()
    assert torch.equal(hn, want) and want.abs().sum() > 0


@plans
@pytest.mark.parametrize("state", [False, True], ids=["no h0", "h0 = 0"])
@pytest.mark.parametrize("T", [4, CHUNK + 4])
def test_overflowing_products_meet_no_zero_state(T, state, plan):
    """∏a overflows fp32 (1e20 · 1e20) while the state is 0: the sequential loop in fp32 gives 0, 0, 1, 1 and
    so must the scan (it gave 0, nan, nan, nan when the carried state multiplied the chunk's product); its
    gradients are the fp32 loop's too (inf where dh really passes fp32, and the loop's own inf · 0 there)."""
    steps = [(1e20, 0.0), (1e20, 0.0), (1e-30, 1.0), (1e-30, 1.0)]
    a = torch.ones(1, T, 1)
    b = torch.zeros(1, T, 1)
    for i, (ai, bi) in enumerate(steps):        # in the last chunk when T > CHUNK: the carry is 0 there too
        a[0, T - 4 + i, 0], b[0, T - 4 + i, 0] = ai, bi
    h0 = torch.zeros(1, 1) if state else None
    loop = [t.clone().requires_grad_() if t is not None else None for t in (a, b, h0)]
    want = ref.linear_scan(*loop)
    assert torch.equal(want[0, -4:, 0], torch.tensor([0.0, 0.0, 1.0, 1.0]))
    want.sum().backward()
    args = [t.detach().to(DEVICE).requires_grad_() if t is not None else None for t in loop]
    got = linear_scan(*args, _plan=plan)
    torch.testing.assert_close(got.cpu(), want.detach(), rtol=1e-6, atol=0)
    got.sum().backward()
    for ours, theirs in zip(args, loop):
        if ours is not None:
            torch.testing.assert_close(ours.grad.cpu(), theirs.grad, rtol=1e-6, atol=0, equal_nan=True)
