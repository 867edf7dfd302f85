"""kernels.conv (ConvS2S's gated convolution) against F.conv1d + F.glu in float64 with FlashAttention's 2x
rule per dtype (tests/tolerance.py), for the output and every gradient; odd K, C and T; T < K; both
paddings; odd layouts; the residual block; bad input."""
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from kernels.conv import ConvS2SBlock, glu_conv1d
from reference import conv as ref
from tests.helpers import DEVICE, DTYPES, check_fn, double_backward, odd_bias, strided


def make(B, T, CI, CO, K, dtype, seed=0, bias=True):
    """x (B, T, CI), weight (2·CO, CI, K) and bias, uniform and scaled like nn.Conv1d's initialisation."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: (torch.rand(*s, generator=g) * 2 - 1).to(DEVICE, dtype)  # noqa: E731
    bound = 1 / math.sqrt(CI * K)
    return r(B, T, CI), r(2 * CO, CI, K) * bound * 2, (r(2 * CO) * bound if bias else None)


def _ours(causal):
    return lambda x, w, b: glu_conv1d(x, w, b, causal=causal)


def _ref(causal):
    return lambda x, w, b: ref.glu_conv1d(x, w, b, causal=causal)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "same"])
@pytest.mark.parametrize("B, T, CI, CO, K", [(2, 19, 21, 23, 3), (1, 5, 8, 8, 4), (3, 37, 16, 5, 1), (2, 2, 5, 6, 5)],
                         ids=["odd", "even-K", "K=1", "T<K"])
def test_matches_reference(B, T, CI, CO, K, causal, dtype):
    check_fn(_ours(causal), _ref(causal), make(B, T, CI, CO, K, dtype), 1)


def test_no_bias_and_wide_channels():
    check_fn(_ours(True), _ref(True), make(2, 33, 70, 40, 3, torch.float32, bias=False), 1)


def test_odd_layouts():
    """x as a (B, C, T) tensor viewed channels-last, a column-major weight and a strided bias."""
    x, w, b = make(2, 17, 12, 9, 3, torch.float32)
    xt = x.transpose(1, 2).contiguous().transpose(1, 2)
    wt = w.permute(2, 1, 0).contiguous().permute(2, 1, 0)
    args = (xt, wt, odd_bias(b, "strided"))
    assert not any(t.is_contiguous() for t in args)
    check_fn(_ours(False), _ref(False), args, 1)
    check_fn(_ours(True), _ref(True), (strided(x[0]).unsqueeze(0), w, odd_bias(b, "stride0")), 1)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_same_padding_equals_torch():
    """padding="same" as nn.Conv1d computes it, even kernel width included."""
    x, w, b = make(2, 11, 6, 4, 4, torch.float32)
    want = nn.functional.glu(nn.functional.conv1d(x.transpose(1, 2), w, b, padding="same"), dim=1).transpose(1, 2)
    torch.testing.assert_close(glu_conv1d(x, w, b, causal=False), want, atol=1e-5, rtol=1e-5)


def test_block_and_from_torch():
    torch.manual_seed(0)
    conv = nn.Conv1d(12, 24, 3, device=DEVICE).eval()
    blk = ConvS2SBlock.from_torch(conv)
    assert not blk.training and "kernel_size=3" in repr(blk)
    x = torch.randn(2, 9, 12, device=DEVICE)
    torch.testing.assert_close(blk(x), ref.convs2s_block(x, conv.weight, conv.bias), atol=1e-5, rtol=1e-5)
    blk(x).sum().backward()
    assert blk.weight.grad.shape == conv.weight.shape and blk.bias.grad.shape == conv.bias.shape
    fresh = ConvS2SBlock(8, 5, causal=False, dtype=torch.bfloat16, device=DEVICE)
    assert fresh(torch.randn(1, 4, 8, device=DEVICE, dtype=torch.bfloat16)).shape == (1, 4, 8)


def test_double_backward_raises():
    x, w, b = make(1, 6, 4, 4, 3, torch.float32)
    with pytest.raises(RuntimeError, match="double backward"):
        double_backward(lambda x, w, b: glu_conv1d(x, w, b), x, w, b)


@given(B=st.integers(1, 3), T=st.integers(1, 40), CI=st.integers(1, 24), CO=st.integers(1, 24), K=st.integers(1, 6),
       causal=st.booleans(), bias=st.booleans(), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_random_shapes(B, T, CI, CO, K, causal, bias, dtype, seed):
    check_fn(_ours(causal), _ref(causal), make(B, T, CI, CO, K, dtype, seed, bias), 1)


BAD = {
    "x rank 2": (dict(x=torch.randn(5, 4)), ValueError, "x must have rank 3"),
    "odd weight rows": (dict(weight=torch.randn(7, 4, 3)), ValueError, "weight must have an even first dim"),
    "C_in mismatch": (dict(weight=torch.randn(8, 5, 3)), ValueError, "weight has C_in 5 but x has 4"),
    "bias size": (dict(bias=torch.randn(6)), ValueError, "bias must have shape"),
    "integer x": (dict(x=torch.ones(2, 5, 4, dtype=torch.int64)), TypeError, "x must be float16"),
    "dtype mismatch": (dict(weight=torch.randn(8, 4, 3).half()), TypeError, "weight has dtype torch.float16"),
    "meta weight": (dict(weight=torch.randn(8, 4, 3, device="meta")), ValueError, "weight is on meta"),
    "not a tensor": (dict(weight="w"), TypeError, "weight must be a torch.Tensor"),
    "causal not bool": (dict(causal=1), TypeError, "causal must be a bool"),
    "empty T": (dict(x=torch.randn(2, 0, 4)), ValueError, "must be >= 1"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input(case):
    over, exc, msg = BAD[case]
    x, w, b = make(2, 5, 4, 4, 3, torch.float32)
    args = dict(x=x, weight=w, bias=b, causal=True)
    args.update({k: (v.to(DEVICE) if isinstance(v, torch.Tensor) and v.device.type == "cpu" else v)
                 for k, v in over.items()})
    causal = args.pop("causal")
    with pytest.raises(exc, match=msg):
        glu_conv1d(**args, causal=causal)


def test_bad_module_input():
    with pytest.raises(ValueError, match="channels must be a positive int"):
        ConvS2SBlock(0, 3)
    with pytest.raises(TypeError, match="nn.Conv1d"):
        ConvS2SBlock.from_torch(nn.Linear(3, 6))
    with pytest.raises(ValueError, match="out_channels = 2"):
        ConvS2SBlock.from_torch(nn.Conv1d(4, 6, 3))
