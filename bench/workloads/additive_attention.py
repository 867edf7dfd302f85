"""attention_scores: the textbook's §1.7 scoring functions at one B, N (= Nq = Nk) and d (= Dq = Dk = Dv = A):
Luong's dot, Luong's general and Bahdanau's additive, each in PyTorch (the scores materialised) and on this
project's kernels.  Three functions in one workload: each impl is compared with its own score's baseline
(``group``), and the report sets time per query-key pair against the textbook's cost column.

FLOP convention (per query-key pair, forward): dot 2d for the score; general the same plus the query
projection (2·N·d² per sequence); additive 4·A (one add, one tanh counted as one FLOP — a single MUFU
instruction on NVIDIA GPUs — and one multiply-add) plus both projections (2·2·N·d·A per sequence); every
score adds 2·Dv for α·values.  Training: 3× the forward (the additive backward recomputes the tanh tile
and does about twice its work again).
"""
import torch

from bench.workload import Check, Shapes, Workload, dtype_bytes, forward_backward, namespace, randn

SHAPES = Shapes(cpu_quick=[dict(B=2, N=64, d=d) for d in (16, 32, 64)],
                cpu_full=[dict(B=2, N=128, d=d) for d in (16, 32, 64, 128)],
                gpu_quick=[dict(B=16, N=1024, d=d) for d in (64, 128, 256)],
                gpu_full=[dict(B=16, N=n, d=d) for n in (512, 2048) for d in (32, 64, 128, 256)])


def pairs(s) -> int:
    return s["B"] * s["N"] * s["N"]


def flops(s, mode):
    """Per score group, the convention above; the workload counts the additive score (its most costly)."""
    B, N, d = s["B"], s["N"], s["d"]
    f = pairs(s) * (4 * d + 2 * d) + 2 * 2 * B * N * d * d
    return f * (3 if mode == "fwd+bwd" else 1)


def min_bytes(s, dtype, mode):
    e = dtype_bytes(dtype)
    B, N, d = s["B"], s["N"], s["d"]
    io = 4 * B * N * d * e                     # query, keys, values in; context out
    return io + 3 * d * d * e if mode == "fwd" else 2 * io + 6 * d * d * e


def inputs(s, dtype, device, grad):
    B, N, d = s["B"], s["N"], s["d"]
    r = lambda *shape, scale=1.0: randn(*shape, dtype=dtype, device=device, requires_grad=grad,  # noqa: E731
                                        scale=scale)
    # queries and keys at d^-1/4: the dot score (scale 1) then has unit variance, as with SDPA's 1/√d
    return namespace(query=r(B, N, d, scale=d ** -0.25), keys=r(B, N, d, scale=d ** -0.25), values=r(B, N, d),
                     w_q=r(d, d, scale=d ** -0.5),
                     w_k=r(d, d, scale=d ** -0.5), v=r(d, scale=d ** -0.5), bias=r(d), general=r(d, d, scale=d ** -0.5))


def check_additive(device):
    """The additive kernel at odd sizes with a ragged mask, forward, against float64."""
    from kernels.additive_attention import additive_attention
    from reference.additive_attention import additive_attention as ref
    g = torch.Generator().manual_seed(0)
    t = lambda *shape: (torch.randn(*shape, generator=g) * 0.5).to(device)  # noqa: E731
    q, k, val, wq, wk, v, b = t(2, 7, 12), t(2, 19, 10), t(2, 19, 9), t(13, 12), t(13, 10), t(13), t(13)
    mask = (torch.arange(19)[None, :] < torch.tensor([[19], [6]])).to(device)
    got = additive_attention(q, k, val, w_q=wq, w_k=wk, v=v, bias=b, mask=mask)
    want = ref(*[x.double() for x in (q, k, val)], w_q=wq.double(), w_k=wk.double(), v=v.double(), bias=b.double(),
               mask=mask)
    return got, want


def check_key_mask(device):
    """The flash kernel with a key-padding mask (causal), forward, against float64."""
    from kernels.attention import attention
    from reference.attention import naive_attention
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 2, 21, 16, generator=g).to(device) for _ in range(3))
    mask = (torch.arange(21)[None, :] < torch.tensor([[21], [9]])).to(device)
    return attention(q, k, v, causal=True, key_mask=mask), naive_attention(q.double(), k.double(), v.double(),
                                                                           causal=True, key_mask=mask)


def check_gpu(device, B=16, N=512, d=128, dtype=torch.float16):
    """The additive kernel at a real shape, forward and backward, against float64."""
    from kernels.additive_attention import additive_attention
    from reference.additive_attention import additive_attention as ref
    g = torch.Generator().manual_seed(2)
    t = lambda *shape, scale=1.0: (torch.randn(*shape, generator=g) * scale).to(device)  # noqa: E731
    args = (t(B, N, d), t(B, N, d), t(B, N, d), t(d, d, scale=d ** -0.5), t(d, d, scale=d ** -0.5),
            t(d, scale=d ** -0.5))

    def fn(impl):
        return lambda q, k, val, wq, wk, v: impl(q, k, val, w_q=wq, w_k=wk, v=v)
    return forward_backward(fn(additive_attention), args, dtype), forward_backward(fn(ref), args, torch.float64)


attention_scores = Workload(
    "attention_scores", "Luong dot / general and Bahdanau additive scores at equal B, N and d (time per pair)",
    ("B", "N", "d"), "N", SHAPES, flops, min_bytes, lambda s: s["B"] * s["N"], inputs,
    checks=(Check("additive attention fwd (ragged mask, odd sizes)", check_additive),
            Check("flash attention with a key mask, causal, fwd", check_key_mask),
            Check("additive attention fwd+bwd, B=16 N=512 d=128, fp16", check_gpu, 3e-2, gpu_only=True)))


def _luong(score, inp, fn):
    w = inp.general if score == "general" else None
    return lambda: fn(inp.query, inp.keys, inp.values, score=score, weight=w)


@attention_scores.impl(baseline=True, group="dot", textbook="Luong dot",
                       note="softmax(Q Kᵀ) V in torch ops, the N×N scores materialised")
def dot_torch(inp):
    from reference.additive_attention import luong_attention
    return _luong("dot", inp, luong_attention)


@attention_scores.impl(group="dot", textbook="Luong dot",
                       note="F.scaled_dot_product_attention, scale 1 (PyTorch's pick of backend)")
def dot_sdpa(inp):
    import torch.nn.functional as F
    return lambda: F.scaled_dot_product_attention(inp.query, inp.keys, inp.values, scale=1.0)


@attention_scores.impl(triton=True, group="dot", textbook="Luong dot",
                       note="luong_attention(score='dot'): kernels.attention, scale 1")
def dot_triton(inp):
    from kernels.additive_attention import luong_attention
    return _luong("dot", inp, luong_attention)


@attention_scores.impl(baseline=True, group="general", textbook="Luong general",
                       note="(Q Wᵀ) Kᵀ in torch ops, the N×N scores materialised")
def general_torch(inp):
    from reference.additive_attention import luong_attention
    return _luong("general", inp, luong_attention)


@attention_scores.impl(triton=True, group="general", textbook="Luong general",
                       note="luong_attention(score='general'): a GEMM, then the flash kernel")
def general_triton(inp):
    from kernels.additive_attention import luong_attention
    return _luong("general", inp, luong_attention)


def _additive(inp, fn):
    return lambda: fn(inp.query, inp.keys, inp.values, w_q=inp.w_q, w_k=inp.w_k, v=inp.v, bias=inp.bias)


@attention_scores.impl(baseline=True, group="additive", textbook="Bahdanau (additive)",
                       note="vᵀ tanh(W₁h + W₂s) in torch ops: the (B, N, N, d) tanh tensor materialised")
def additive_torch(inp):
    from reference.additive_attention import additive_attention
    return _additive(inp, additive_attention)


@attention_scores.impl(triton=True, group="additive", textbook="Bahdanau (additive)",
                       note="kernels.additive_attention: the tanh tile never leaves chip")
def additive_triton(inp):
    from kernels.additive_attention import additive_attention
    return _additive(inp, additive_attention)
