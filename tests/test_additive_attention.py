"""kernels.additive_attention (Bahdanau; Luong's scores) against float64 references with the shared 2x
rule, forward and every gradient; masks, a decoder step, odd sizes, layouts and bad input."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kernels.additive_attention import additive_attention, luong_attention
from reference import additive_attention as ref
from tests.helpers import DEVICE, DTYPES, check_fn, double_backward, strided


def make(B, Nq, Nk, Dq, Dk, Dv, A, dtype, seed=0, bias=True):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s, scale=1.0: (torch.randn(*s, generator=g) * scale).to(DEVICE, dtype)  # noqa: E731
    return (r(B, Nq, Dq), r(B, Nk, Dk), r(B, Nk, Dv), r(A, Dq, scale=Dq ** -0.5), r(A, Dk, scale=Dk ** -0.5),
            r(A, scale=A ** -0.5), r(A) if bias else None)


def ragged(B, Nk, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, Nk + 1, (B,), generator=g)
    return (torch.arange(Nk)[None, :] < lengths[:, None]).to(DEVICE)


def term_scales(args, mask, dout):
    """Largest sum of |terms| behind each gradient, in float64 (as tests/test_attention.py's): the backward
    forms ds = α∘(dα − δ) with δ = rowsum(dO∘context), which cancels; a rounding error in any term is
    bounded by eps × these sums, not by the gradient itself."""
    q, k, val, wq, wk, v, bias = [None if t is None else t.detach().double().cpu() for t in args]
    pq = q @ wq.t() + (bias if bias is not None else 0)
    pk = k @ wk.t()
    t = torch.tanh(pq[:, :, None, :] + pk[:, None, :, :])
    sc = t @ v
    if mask is not None:
        sc = sc.masked_fill(~mask.cpu()[:, None, :], float("-inf"))
    p = torch.softmax(sc, -1)
    do = dout.double().cpu()
    dp = do @ val.transpose(1, 2)
    delta = (p * dp).sum(-1, keepdim=True)
    ds = p * (dp.abs() + delta.abs())
    dpq = (ds[..., None] * v.abs() * (1 - t * t)).sum(2)
    dpk = (ds[..., None] * v.abs() * (1 - t * t)).sum(1)
    terms = [dpq @ wq.abs(), dpk @ wk.abs(), p.transpose(1, 2) @ do.abs(),
             torch.einsum("bia,bid->ad", dpq, q.abs()), torch.einsum("bja,bjd->ad", dpk, k.abs()),
             (ds[..., None] * t.abs()).sum((0, 1, 2)), dpq.sum((0, 1))]
    return [x.max().item() for x in terms]        # query, keys, values, w_q, w_k, v, bias


def check(args, mask=None, dtype=None):
    """check_fn's rule, with each gradient's floor at two rounding steps of its sum of |terms|."""
    from tests.tolerance import assert_within_2x
    ours_fn, ref_fn = fns(mask)
    n = 7 if args[6] is not None else 6
    leaves = [[t.detach().to(dt).requires_grad_() for t in args[:n]] for dt in (None, torch.float64, None)]
    outs = [f(*ls) for f, ls in zip((ours_fn, ref_fn, ref_fn), leaves)]
    eps = torch.finfo(args[0].dtype).eps
    assert_within_2x("output", outs[0], outs[1], outs[2], extra_atol=eps)
    dout = torch.randn(outs[1].shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    for o, ls in zip(outs, leaves):
        o.backward(dout.to(o))
    scales = term_scales(list(args[:n]) + [None] * (7 - n), mask, dout)
    # the backward also recomputes α from fp32 scores: a relative error of fp32 eps × max|score|
    rel = torch.finfo(torch.float32).eps * float(args[5].double().abs().sum())
    names = ["query", "keys", "values", "w_q", "w_k", "v", "bias"]
    for i, (name, scale) in enumerate(zip(names[:n], scales)):
        a, r, pt = (ls[i].grad for ls in leaves)
        assert_within_2x(f"d{name}", a, r, pt, extra_atol=2 * (eps + rel) * scale)


def fns(mask=None):
    def ours(q, k, val, wq, wk, v, bias=None):
        return additive_attention(q, k, val, w_q=wq, w_k=wk, v=v, bias=bias, mask=mask)

    def theirs(q, k, val, wq, wk, v, bias=None):
        return ref.additive_attention(q, k, val, w_q=wq, w_k=wk, v=v, bias=bias, mask=mask)
    return ours, theirs


SHAPES = [  # (B, Nq, Nk, Dq, Dk, Dv, A): each crosses a tile edge somewhere
    (2, 5, 9, 6, 7, 5, 11),      # odd everything
    (2, 1, 40, 8, 8, 8, 20),     # a decoder step: one query against the source
    (1, 20, 1, 4, 4, 4, 3),      # one key
    (3, 33, 17, 16, 24, 40, 37),  # Nq and Nk past a block, Dv past 32
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_reference(shape, dtype):
    check(make(*shape, dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES[:2] + SHAPES[3:], ids=lambda s: "x".join(map(str, s)))
def test_ragged_mask(shape, dtype):
    check(make(*shape, dtype), ragged(shape[0], shape[2]))


def test_interior_mask_and_no_bias():
    mask = ragged(3, 17, seed=1) & (torch.rand(3, 17, generator=torch.Generator().manual_seed(2)) > 0.4).to(DEVICE)
    mask[:, 0] = True
    check(make(3, 6, 17, 8, 8, 8, 9, torch.float32, bias=False), mask)


def test_values_default_to_keys_and_weights():
    q, k, _, wq, wk, v, b = make(2, 4, 6, 5, 5, 5, 7, torch.float32)
    out, w = additive_attention(q, k, w_q=wq, w_k=wk, v=v, bias=b, return_weights=True)
    want, want_w = ref.additive_attention(q, k, w_q=wq, w_k=wk, v=v, bias=b, return_weights=True)
    torch.testing.assert_close(out, want, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(w, want_w, atol=2e-6, rtol=1e-5)
    assert w.shape == (2, 4, 6) and torch.allclose(w.sum(-1), torch.ones(2, 4, device=DEVICE))


def test_non_contiguous_inputs():
    """Sequences stored feature-major (transposed views) and column-major weights, strided vectors."""
    args = make(2, 7, 9, 6, 6, 6, 5, torch.float32)
    layout = [t.transpose(1, 2).contiguous().transpose(1, 2) if t.ndim == 3 else strided(t) for t in args]
    assert not any(t.is_contiguous() for t in layout if t.numel() > 1)
    check(layout)


@given(B=st.integers(1, 3), Nq=st.integers(1, 20), Nk=st.integers(1, 20), D=st.integers(1, 12),
       A=st.integers(1, 20), masked=st.booleans(), seed=st.integers(0, 2**16))
def test_random_shapes(B, Nq, Nk, D, A, masked, seed):
    check(make(B, Nq, Nk, D, D + 1, D, A, torch.float32, seed), ragged(B, Nk, seed) if masked else None)


@pytest.mark.parametrize("score", ["dot", "general", "concat"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_luong_scores(score, dtype):
    q, k, val, *_ = make(2, 5, 9, 8, 8, 6, 1, dtype)
    g = torch.Generator().manual_seed(4)
    weight = {"dot": None, "general": torch.randn(8, 8, generator=g) * 8 ** -0.5,
              "concat": torch.randn(7, 16, generator=g) * 0.25}[score]
    v = torch.randn(7, generator=g) * 0.4 if score == "concat" else None
    extra = [t.to(DEVICE, dtype) for t in (weight, v) if t is not None]
    mask = ragged(2, 9)

    def split(extra):
        return (extra + [None, None])[:2] if score == "concat" else (extra[0] if extra else None, None)

    def ours(q, k, val, *extra):
        w, vv = split(list(extra))
        return luong_attention(q, k, val, score=score, weight=w, v=vv, mask=mask)

    def theirs(q, k, val, *extra):
        w, vv = split(list(extra))
        return ref.luong_attention(q, k, val, score=score, weight=w, v=vv, mask=mask)
    check_fn(ours, theirs, [q, k, val, *extra], 1)


def test_bad_input():
    q, k, val, wq, wk, v, b = make(2, 4, 6, 5, 5, 5, 7, torch.float32)
    kw = dict(w_q=wq, w_k=wk, v=v)
    cases = [
        (dict(mask=torch.ones(2, 5, dtype=torch.bool, device=DEVICE)), ValueError, "mask must have shape"),
        (dict(mask=torch.ones(2, 6, device=DEVICE)), TypeError, "mask must be a bool tensor"),
        (dict(mask=torch.zeros(2, 6, dtype=torch.bool, device=DEVICE)), ValueError,
         "every sequence must keep at least one key"),
        (dict(w_k=torch.randn(7, 4, device=DEVICE)), ValueError, "w_k must have shape"),
        (dict(v=torch.randn(8, device=DEVICE)), ValueError, "v must have shape"),
        (dict(bias=torch.randn(3, device=DEVICE)), ValueError, "bias must have shape"),
        (dict(w_q=torch.randn(7, 5, dtype=torch.float64, device=DEVICE)), TypeError, "w_q must be float16"),
    ]
    for over, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            additive_attention(q, k, val, **{**kw, **over})
    with pytest.raises(ValueError, match="values must have Nk = 6"):
        additive_attention(q, k, val[:, :5], **kw)
    with pytest.raises(ValueError, match="query must have rank 3"):
        additive_attention(q[0], k, val, **kw)
    with pytest.raises(ValueError, match="score must be one of"):
        luong_attention(q, k, score="bilinear")
    with pytest.raises(ValueError, match="needs weight \\(A, Dq \\+ Dk\\) and v"):
        luong_attention(q, k, score="concat")
    with pytest.raises(ValueError, match="weight must have shape \\(Dk, Dq\\)"):
        luong_attention(q, k, score="general", weight=torch.randn(5, 4, device=DEVICE))


def test_double_backward_raises():
    ours, _ = fns()
    with pytest.raises(RuntimeError, match="double backward"):
        double_backward(ours, *make(1, 3, 4, 4, 4, 4, 5, torch.float32))


# ------------------------------------------------------------------------ rough edges (issue 21)

@pytest.mark.parametrize("score", ["dot", "general", "concat"])
@pytest.mark.parametrize("values, exc, msg", [
    ("list", TypeError, "values must be a torch.Tensor"),
    ("rank2", ValueError, "values must have rank 3"),
    ("short", ValueError, "values must have Nk = 6"),
    ("batch", ValueError, "query, keys and values must share the batch"),
    ("fp16", TypeError, "values has dtype torch.float16"),
], ids=["list", "rank 2", "wrong Nk", "wrong batch", "wrong dtype"])
def test_luong_names_values(score, values, exc, msg):
    q, k, val, *_ = make(2, 4, 6, 5, 5, 5, 7, torch.float32)
    values = {"list": [[1.0]], "rank2": val[0], "short": val[:, :5], "batch": val[:1], "fp16": val.half()}[values]
    weight = {"dot": None, "general": torch.randn(5, 5, device=DEVICE), "concat": torch.randn(7, 10, device=DEVICE)}
    v = torch.randn(7, device=DEVICE) if score == "concat" else None
    with pytest.raises(exc, match=msg):
        luong_attention(q, k, values, score=score, weight=weight[score], v=v)


@pytest.mark.parametrize("score", ["general", "concat"])
def test_luong_names_a_weight_of_another_dtype(score):
    q, k, val, *_ = make(2, 4, 6, 5, 5, 5, 7, torch.float32)
    shape, v = ((5, 5), None) if score == "general" else ((7, 10), torch.randn(7, device=DEVICE))
    with pytest.raises(TypeError, match="weight has dtype torch.float16 but query has torch.float32"):
        luong_attention(q, k, val, score=score, weight=torch.randn(*shape, device=DEVICE).half(), v=v)
