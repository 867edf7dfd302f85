"""kernels.attention against float64 attention, with FlashAttention's rule: the kernel's error is at
most twice PyTorch's own error in the same dtype (plus the dtype's rounding step)."""
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kernels.attention import attention
from reference.attention import causal_mask, naive_attention, sdpa
from tests.helpers import DEVICE
from tests.tolerance import assert_within_2x

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def gradient_term_scales(q, k, v, do, causal, scale, key_mask=None):
    """Largest sum of |terms| behind each gradient, in float64.

    dV = Pᵀ dO, dQ = scale·dS K and dK = scale·dSᵀ Q with dS = P∘(dP − δ): a rounding error in
    any term (dS rounded to the dtype before its matmul, δ taken as rowsum(dO∘O)) is bounded by
    eps × these sums, which do not cancel the way the gradients themselves can (a one-hot softmax
    has dS = 0 exactly in float64).  The backward also recomputes P from fp32 logits in another
    summation order than the forward, so P carries a relative error of fp32 eps × max|S|: the
    returned ``rel`` folds that in beside the dtype's eps."""
    q, k, v, do = (t.detach().double() for t in (q, k, v, do))
    group = q.shape[1] // k.shape[1]
    kr, vr = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = q @ kr.transpose(-1, -2) * scale
    if causal:
        s = s.masked_fill(~causal_mask(q.shape[2], k.shape[2]), float("-inf"))
    if key_mask is not None:
        s = s.masked_fill(~key_mask.cpu()[:, None, None, :], float("-inf"))
    p = torch.nan_to_num(torch.softmax(s, -1))
    dp = do @ vr.transpose(-1, -2)
    delta = (p * dp).sum(-1, keepdim=True)
    ds_terms = p * (dp.abs() + delta.abs())

    def per_kv_head(x):
        return x.unflatten(1, (k.shape[1], group)).sum(2)

    finite = s[torch.isfinite(s)]
    rel = torch.finfo(torch.float32).eps * finite.abs().max().item() if finite.numel() else 0.0
    return rel, {
        "q": (scale * ds_terms @ kr.abs()).max().item(),
        "k": per_kv_head(scale * ds_terms.transpose(-1, -2) @ q.abs()).max().item(),
        "v": per_kv_head(p.transpose(-1, -2) @ do.abs()).max().item(),
    }


def make_qkv(B, H, Hkv, Nq, Nk, D, dtype, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, Nq, D, generator=g) * scale
    k = torch.randn(B, Hkv, Nk, D, generator=g) * scale
    v = torch.randn(B, Hkv, Nk, D, generator=g)
    return [t.to(device=DEVICE, dtype=dtype) for t in (q, k, v)]


def check_against_reference(q, k, v, causal=False, scale=None, grads=True, key_mask=None):
    """Forward (and gradients) of the kernel vs float64, bounded by 2x the error of naive PyTorch in q's dtype."""
    leaves = [t.detach().clone().requires_grad_(grads) for t in (q, k, v)]
    ref_leaves = [t.detach().double().requires_grad_(grads) for t in (q, k, v)]
    pt_leaves = [t.detach().clone().requires_grad_(grads) for t in (q, k, v)]

    out = attention(*leaves, causal=causal, scale=scale, key_mask=key_mask)
    ref = naive_attention(*ref_leaves, causal=causal, scale=scale, key_mask=key_mask)
    pt = naive_attention(*pt_leaves, causal=causal, scale=scale, key_mask=key_mask)
    assert_within_2x("output", out, ref, pt)
    if not grads:
        return
    do = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out)
    out.backward(do)
    ref.backward(do.double())
    pt.backward(do)
    rel, terms = gradient_term_scales(q.cpu(), k.cpu(), v.cpu(), do.cpu(), causal, scale, key_mask)
    eps = torch.finfo(q.dtype).eps + rel
    for name, a, r, p in zip("qkv", leaves, ref_leaves, pt_leaves):
        assert_within_2x(f"d{name}", a.grad, r.grad, p.grad, extra_atol=2 * eps * terms[name])


# (B, H, Hkv, Nq, Nk, D): each row breaks a naive tiling somewhere.
SHAPES = [
    (1, 1, 1, 1, 1, 16),     # one token
    (2, 2, 2, 17, 17, 32),   # ragged tail, smaller than a block
    (1, 2, 1, 37, 53, 40),   # Nq != Nk, D = 40, GQA 2:1
    (1, 4, 2, 53, 37, 96),   # Nk < Nq (causal rows past Nk see every key), D = 96
    (1, 1, 1, 64, 64, 64),   # exact multiples of the blocks, B·H = 1
    (1, 6, 2, 33, 70, 8),    # GQA 3:1, tiny head dim
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_reference(shape, causal, dtype):
    B, H, Hkv, Nq, Nk, D = shape
    check_against_reference(*make_qkv(B, H, Hkv, Nq, Nk, D, dtype), causal=causal)


@pytest.mark.parametrize("D", [1, 3, 24, 128, 200, 256])
def test_head_dims(D):
    check_against_reference(*make_qkv(1, 2, 2, 19, 21, D, torch.float16), causal=True)


def test_explicit_scale_and_sdpa_semantics():
    q, k, v = make_qkv(2, 4, 2, 23, 31, 48, torch.float32)
    for causal in (False, True):
        out = attention(q, k, v, causal=causal, scale=0.3)
        ref = sdpa(q, k, v, causal=causal, scale=0.3, backend="math")
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    check_against_reference(q, k, v, causal=True, scale=0.3)


def test_non_contiguous_inputs():
    """(B, N, H, D) storage viewed as (B, H, N, D), and a strided head dim."""
    g = torch.Generator().manual_seed(3)
    q = torch.randn(2, 29, 4, 32, generator=g).to(DEVICE, torch.float16).transpose(1, 2)
    k = torch.randn(2, 35, 2, 64, generator=g).to(DEVICE, torch.float16).transpose(1, 2)[..., ::2]
    v = torch.randn(2, 2, 32, 35, generator=g).to(DEVICE, torch.float16).transpose(2, 3)
    assert not (q.is_contiguous() or k.is_contiguous() or v.is_contiguous())
    check_against_reference(q, k, v, causal=True)


def test_no_grad_path_returns_same_values():
    q, k, v = make_qkv(1, 2, 2, 20, 20, 16, torch.float32)
    with torch.no_grad():
        a = attention(q, k, v, causal=True)
    b = attention(q.requires_grad_(), k, v, causal=True)
    assert b.requires_grad and not a.requires_grad
    torch.testing.assert_close(a, b.detach(), atol=0, rtol=0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_huge_logits_are_stable(dtype):
    """Logits of magnitude ~1e4: no overflow, the reference's answer."""
    q, k, v = make_qkv(1, 2, 2, 24, 40, 16, dtype, scale=25.0)
    logits = (q.double() @ k.double().transpose(-1, -2))
    assert logits.abs().max() > 5e3
    out = attention(q, k, v, scale=1.0)
    assert torch.isfinite(out).all()
    check_against_reference(q, k, v, scale=1.0, causal=True)
    check_against_reference(q, k, v, scale=1.0)


@pytest.mark.parametrize("where", ["q", "k", "v"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_nan_propagates_like_reference(where, causal):
    """A NaN poisons exactly the outputs it poisons in PyTorch. For causal masks the NaN sits in
    key 0, which every query sees, since SDPA backends disagree on NaNs behind the mask."""
    q, k, v = make_qkv(1, 2, 2, 20, 20, 16, torch.float32)
    t = {"q": q, "k": k, "v": v}[where]
    t[0, 1, 0 if causal or where != "q" else 7, 5] = float("nan")
    out = attention(q, k, v, causal=causal)
    ref = naive_attention(q, k, v, causal=causal)
    assert torch.isnan(ref).any()
    assert torch.equal(torch.isnan(out), torch.isnan(ref))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5, equal_nan=True)


@given(
    B=st.integers(1, 2), Hkv=st.integers(1, 2), group=st.integers(1, 3),
    Nq=st.integers(1, 48), Nk=st.integers(1, 48), D=st.integers(1, 80),
    causal=st.booleans(), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16),
)
def test_random_shapes(B, Hkv, group, Nq, Nk, D, causal, dtype, seed):
    check_against_reference(*make_qkv(B, Hkv * group, Hkv, Nq, Nk, D, dtype, seed=seed), causal=causal)


# --------------------------------------------------------------------------------------- bad input

def _ok(**over):
    args = dict(q=torch.randn(1, 4, 8, 16), k=torch.randn(1, 2, 8, 16), v=torch.randn(1, 2, 8, 16))
    args.update(over)
    return args


BAD_INPUTS = {
    "q rank 3": (_ok(q=torch.randn(4, 8, 16)), ValueError, "q must have rank 4"),
    "k rank 5": (_ok(k=torch.randn(1, 1, 2, 8, 16)), ValueError, "k must have rank 4"),
    "batch mismatch": (_ok(k=torch.randn(2, 2, 8, 16), v=torch.randn(2, 2, 8, 16)), ValueError, "batch"),
    "head dim mismatch": (_ok(k=torch.randn(1, 2, 8, 32), v=torch.randn(1, 2, 8, 32)), ValueError, "head dim"),
    "k v mismatch": (_ok(v=torch.randn(1, 2, 9, 16)), ValueError, "k and v must have the same shape"),
    "H not multiple": (_ok(k=torch.randn(1, 3, 8, 16), v=torch.randn(1, 3, 8, 16)), ValueError, "not a multiple"),
    "D > 256": (_ok(q=torch.randn(1, 2, 4, 257), k=torch.randn(1, 2, 4, 257), v=torch.randn(1, 2, 4, 257)),
                ValueError, "between 1 and 256"),
    "empty sequence": (_ok(k=torch.randn(1, 2, 0, 16), v=torch.randn(1, 2, 0, 16)), ValueError, ">= 1"),
    "integer dtype": (_ok(q=torch.ones(1, 4, 8, 16, dtype=torch.int32)), TypeError, "q must be float16"),
    "float64": (_ok(v=torch.randn(1, 2, 8, 16, dtype=torch.float64)), TypeError, "v must be float16"),
    "mixed dtypes": (_ok(k=torch.randn(1, 2, 8, 16).half()), TypeError, "k has dtype torch.float16"),
    "not a tensor": (_ok(q=[[1.0]]), TypeError, "q must be a torch.Tensor"),
    "meta device": (_ok(v=torch.randn(1, 2, 8, 16, device="meta")), ValueError, "v is on meta"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input(case):
    args, exc, msg = BAD_INPUTS[case]
    args = {n: t.to(DEVICE) if isinstance(t, torch.Tensor) and t.device.type == "cpu" else t for n, t in args.items()}
    with pytest.raises(exc, match=msg):
        attention(**args)


@pytest.mark.parametrize("kwargs, exc", [({"causal": 1}, TypeError), ({"scale": "0.1"}, TypeError),
                                         ({"scale": math.inf}, ValueError), ({"scale": True}, TypeError)])
def test_bad_options(kwargs, exc):
    q, k, v = make_qkv(1, 1, 1, 4, 4, 16, torch.float32)
    with pytest.raises(exc):
        attention(q, k, v, **kwargs)


@pytest.mark.skipif(DEVICE != "cuda", reason="mixed devices need a GPU")
def test_mixed_devices():
    q, k, v = make_qkv(1, 1, 1, 4, 4, 16, torch.float32)
    with pytest.raises(ValueError, match="same device"):
        attention(q, k.cpu(), v)


@pytest.mark.skipif(DEVICE == "cuda", reason="only meaningful without a GPU")
def test_cpu_tensor_without_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    q, k, v = make_qkv(1, 1, 1, 4, 4, 16, torch.float32)
    with pytest.raises(ValueError, match="expected a CUDA tensor"):
        attention(q, k, v)


def test_fp32_dots_are_exact_unless_tf32_is_allowed():
    from kernels._common import dot_options
    cuda = torch.device("cuda")
    previous = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert dot_options(torch.float32, cuda)["PREC"] == "ieee"
        torch.set_float32_matmul_precision("high")
        assert dot_options(torch.float32, cuda)["PREC"] == "tf32"
    finally:
        torch.set_float32_matmul_precision(previous)
    # the interpreter workarounds no longer ride on an argument: a module-level constexpr (kernels/_tl.py)
    from kernels._tl import INTERPRETING
    assert bool(INTERPRETING) is (DEVICE == "cpu")
    assert set(dot_options(torch.bfloat16, cuda)) == {"PREC"}


def test_double_backward_raises():
    """Issue 10: create_graph=True returned a detached gradient (a gradient penalty silently added nothing)."""
    q, k, v = (t.requires_grad_() for t in make_qkv(1, 2, 2, 8, 8, 16, torch.float32))
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(attention(q, k, v).pow(2).sum(), q, create_graph=True)
    (dq,) = torch.autograd.grad(attention(q, k, v).pow(2).sum(), q)      # first order is unaffected
    assert dq.shape == q.shape and not dq.requires_grad


@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16], ids=str)
def test_autocast_follows_sdpa(low):
    """Inside autocast, mixed float32/16-bit inputs are cast to the autocast dtype as SDPA does."""
    q, k, v = make_qkv(1, 2, 1, 12, 20, 16, torch.float32)
    k = k.to(low)
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    with torch.autocast(DEVICE, dtype=low):
        out = attention(*leaves, causal=True)
        want = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    assert out.dtype == want.dtype == low
    torch.testing.assert_close(out, want, atol=2e-2, rtol=2e-2)
    out.float().sum().backward()
    assert [t.grad.dtype for t in leaves] == [torch.float32, low, torch.float32]


def test_batch_beyond_the_grid_limit_is_launched_in_slices(monkeypatch):
    """Issue 11: B·H on grid axis 1 is capped at 65,535 by CUDA.  Bigger batches run in batch slices; here
    the limit is lowered to 5 so that B=4, H=2 (8 > 5) takes two slices, forward and backward."""
    import kernels.attention as ka
    assert ka.batch_slices(70_000, 16) == [slice(0, 4095), *ka.batch_slices(70_000, 16)[1:]]
    assert sum(len(range(70_000)[s]) for s in ka.batch_slices(70_000, 16)) == 70_000
    monkeypatch.setattr(ka, "MAX_GRID_Y", 5)
    assert len(ka.batch_slices(4, 2)) == 2 and ka.batch_slices(4, 2)[0] == slice(0, 2)
    check_against_reference(*make_qkv(4, 2, 1, 19, 23, 16, torch.float32), causal=True)
    with pytest.raises(ValueError, match="heads"):
        ka.batch_slices(1, 6)


@pytest.mark.parametrize("scale", [-0.3, 0.0, 0.3])
def test_scale_sign_and_zero(scale):
    """The scale rides in exp2's FFMA and only the row max is scaled: a negative scale needs the row min."""
    q, k, v = make_qkv(1, 2, 2, 40, 70, 16, torch.float32)
    for causal in (False, True):
        torch.testing.assert_close(attention(q, k, v, causal=causal, scale=scale),
                                   naive_attention(q, k, v, causal=causal, scale=scale), atol=1e-5, rtol=1e-5)
    check_against_reference(q, k, v, causal=True, scale=scale)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_tma_forward_path(monkeypatch, dtype):
    """The tensor-descriptor (TMA) forward, run by the interpreter: ragged
    Nq/Nk tiles (zero-filled loads, clipped stores), causal, GQA, a padded head dim and a (B, N, H, D) layout."""
    import kernels.attention as ka
    monkeypatch.setattr(ka, "INTERPRETER_TMA", True)
    calls = []
    real = ka._launcher
    monkeypatch.setattr(ka, "_launcher", lambda *a, **k: calls.append(real(*a, **k)[1]) or real(*a, **k))
    q, k, v = make_qkv(2, 4, 2, 37, 53, 40, dtype)
    check_against_reference(q, k, v, causal=True, grads=False)
    assert calls[-1].get("USE_TMA") is True
    g = torch.Generator().manual_seed(4)
    qt = torch.randn(1, 29, 4, 32, generator=g).to(DEVICE, dtype).transpose(1, 2)     # strides (., 32, 128, 1)
    kt, vt = (torch.randn(1, 31, 2, 32, generator=g).to(DEVICE, dtype).transpose(1, 2) for _ in range(2))
    check_against_reference(qt, kt, vt, causal=False, grads=False)
    assert calls[-1].get("USE_TMA") is True
    check_against_reference(*make_qkv(1, 2, 2, 20, 20, 20, dtype), grads=False)     # 40-byte rows: pointer path
    assert "USE_TMA" not in calls[-1] or dtype == torch.float32


def test_tma_is_taken_whenever_the_layout_allows():
    """#26: where TMA applies (the forward, sm90, 16-bit, no key mask) the candidates are the TMA configs only;
    everywhere else (sm80, fp32, the backward, a key mask) the pointer configs, which are also the forward's
    fallback for layouts TMA cannot move (tma=False)."""
    from kernels.attention import CONFIGS, configs_for
    for d in (16, 64, 128, 256):
        for dtype in (torch.float16, torch.bfloat16):
            assert all(c.kwargs.get("USE_TMA") for c in configs_for("fwd", "sm90", d, dtype, tma=True))
            assert configs_for("fwd", "sm90", d, dtype) == CONFIGS["fwd"]["sm90"][d]
            assert not any(c.kwargs.get("USE_TMA") for c in configs_for("fwd", "sm90", d, dtype, tma=True, masked=True))
            assert configs_for("fwd", "sm80", d, dtype, tma=True) == CONFIGS["fwd"]["sm80"][d]
            for kernel in ("dkdv", "dq"):
                assert configs_for(kernel, "sm90", d, dtype, tma=True) == CONFIGS[kernel]["sm90"][d]
        assert not any(c.kwargs.get("USE_TMA") for c in configs_for("fwd", "sm90", d, torch.float32, tma=True))


def test_device_mismatch_is_reported_before_the_device_is_judged():
    """Issue 11: on a GPU, a CPU k among CUDA tensors was reported as "expected a CUDA tensor"; the devices are
    now compared first, so the error names the mismatch (here: a meta k beside a CPU or CUDA q)."""
    q, k, v = make_qkv(1, 1, 1, 4, 4, 16, torch.float32)
    with pytest.raises(ValueError, match="k is on meta but q is on .*expected the same device"):
        attention(q, k.to("meta"), v)


# ------------------------------------------------------------------------------ key-padding mask (issue 15)

def ragged_mask(B, Nk, seed=0, interior=False):
    """Per-sequence kept prefixes of random length >= 1 (key padding); ``interior``: random holes too."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, Nk + 1, (B,), generator=g)
    m = torch.arange(Nk)[None, :] < lengths[:, None]
    if interior:
        m &= torch.rand(B, Nk, generator=g) > 0.3
        m[torch.arange(B), lengths - 1] = True
    return m.to(DEVICE)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("shape", [(3, 2, 2, 17, 45, 32), (2, 4, 2, 37, 70, 40), (2, 1, 1, 1, 33, 16),
                                   (2, 2, 1, 5, 1, 8)], ids=lambda s: "x".join(map(str, s)))
def test_key_mask_matches_reference(shape, causal, dtype):
    B, H, Hkv, Nq, Nk, D = shape
    for interior in (False, True):
        check_against_reference(*make_qkv(B, H, Hkv, Nq, Nk, D, dtype), causal=causal,
                                key_mask=ragged_mask(B, Nk, interior=interior))


def test_key_mask_equals_sdpa_attn_mask():
    """The same result as SDPA with attn_mask = key_mask[:, None, None, :], causal included (queries left
    with no key get zeros in both)."""
    q, k, v = make_qkv(2, 2, 2, 40, 40, 16, torch.float32)
    m = ragged_mask(2, 40)
    m[1, :25] = False
    for causal in (False, True):
        full = m[:, None, None, :] & (causal_mask(40, 40, DEVICE) if causal else True)
        want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=full)
        torch.testing.assert_close(attention(q, k, v, causal=causal, key_mask=m), want, atol=2e-6, rtol=1e-5)


@given(B=st.integers(1, 3), Nq=st.integers(1, 40), Nk=st.integers(1, 40), D=st.sampled_from([8, 16, 24]),
       causal=st.booleans(), interior=st.booleans(), seed=st.integers(0, 2**16))
def test_key_mask_random(B, Nq, Nk, D, causal, interior, seed):
    check_against_reference(*make_qkv(B, 2, 1, Nq, Nk, D, torch.float32, seed=seed), causal=causal,
                            key_mask=ragged_mask(B, Nk, seed, interior))


@pytest.mark.parametrize("mask, exc, msg", [
    (torch.ones(2, 9, dtype=torch.bool), ValueError, "key_mask must have shape \\(B, Nk\\) = \\(2, 8\\)"),
    (torch.ones(2, 8), TypeError, "key_mask must be a bool tensor"),
    ([[True] * 8] * 2, TypeError, "key_mask must be a torch.Tensor"),
    (torch.tensor([[True] * 8, [False] * 8]), ValueError, "every sequence must keep at least one key; batch rows \\[1\\]"),
], ids=["shape", "dtype", "type", "empty row"])
def test_key_mask_bad_input(mask, exc, msg):
    q, k, v = make_qkv(2, 2, 2, 4, 8, 16, torch.float32)
    with pytest.raises(exc, match=msg):
        attention(q, k, v, key_mask=mask.to(DEVICE) if isinstance(mask, torch.Tensor) else mask)
