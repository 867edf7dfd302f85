"""attention: softmax(Q Kᵀ/√D) V for B sequences of N tokens, H heads of dim D, non-causal.

FLOPs 4·B·H·N²·D forward, 2.5× that more backward (FlashAttention's convention).  Minimum bytes:
q, k, v in and o out; the backward also reads o, dO and writes dq, dk, dv.
"""
from bench.workload import (Check, Shapes, Workload, compile_settings, dtype_bytes, forward_backward, namespace,
                            randn)


def flops(s, mode):
    f = 4 * s["B"] * s["H"] * s["N"] ** 2 * s["D"]
    return f * (3.5 if mode == "fwd+bwd" else 1)


def min_bytes(s, dtype, mode):
    one = s["B"] * s["H"] * s["N"] * s["D"] * dtype_bytes(dtype)
    return 4 * one if mode == "fwd" else 4 * one + 8 * one


def inputs(s, dtype, device, grad):
    q, k, v = (randn(s["B"], s["H"], s["N"], s["D"], dtype=dtype, device=device, requires_grad=grad) for _ in range(3))
    return namespace(q=q, k=k, v=v)


def check_forward(device):
    """GQA, causal, Nq != Nk and D=40 (a padded head dim) against float64."""
    import torch

    from kernels.attention import attention
    from reference.attention import naive_attention
    g = torch.Generator().manual_seed(0)
    q, k, v = ((torch.rand(*s, generator=g) * 2 - 1).to(device)
               for s in ((1, 4, 37, 40), (1, 2, 53, 40), (1, 2, 53, 40)))
    return attention(q, k, v, causal=True), naive_attention(q.double(), k.double(), v.double(), causal=True)


def check_gpu(B, H, HKV, N, D, dtype, causal):
    """Forward and backward (δ, dK/dV, dQ kernels) at a real shape against float64."""
    def run(device):
        import torch

        from kernels.attention import attention
        from reference.attention import naive_attention
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(*s, generator=g).to(device) for s in ((B, H, N, D), (B, HKV, N, D), (B, HKV, N, D)))
        got = forward_backward(lambda *a: attention(*a, causal=causal), (q, k, v), getattr(torch, dtype))
        want = forward_backward(lambda *a: naive_attention(*a, causal=causal), (q, k, v), torch.float64)
        return got, want
    return run


def _lens(*ns):
    return [dict(B=max(1, 16384 // n), H=16, N=n, D=128) for n in ns]


attention = Workload(
    "attention", "scaled dot-product attention core, non-causal", ("B", "H", "N", "D"), "N",
    Shapes(cpu_quick=[dict(B=1, H=2, N=n, D=32) for n in (64, 256)],
           cpu_full=[dict(B=1, H=2, N=n, D=32) for n in (64, 256, 1024)],
           gpu_quick=_lens(512, 2048, 8192), gpu_full=_lens(256, 512, 1024, 2048, 4096, 8192, 16384)),
    flops, min_bytes, lambda s: s["B"] * s["N"], inputs,
    checks=(Check("attention fwd (GQA, Nq != Nk, D=40)", check_forward),
            Check("attention fwd+bwd, B=2 H=16 N=2048 D=128, causal, bf16",
                  check_gpu(2, 16, 16, 2048, 128, "bfloat16", True), 3e-2, gpu_only=True),
            Check("attention fwd+bwd, GQA 16/4 heads, N=1024 D=64, fp16",
                  check_gpu(2, 16, 4, 1024, 64, "float16", False), 3e-2, gpu_only=True)))


@attention.impl(baseline=True, note="materialises the N×N matrix")
def naive(inp):
    from reference.attention import naive_attention
    return lambda: naive_attention(inp.q, inp.k, inp.v)


def _sdpa(backend):
    def setup(inp):
        from reference.attention import sdpa
        sdpa(inp.q, inp.k, inp.v, backend=backend)  # raises here if this backend cannot take these inputs
        return lambda: sdpa(inp.q, inp.k, inp.v, backend=backend)
    return setup


@attention.impl()
def sdpa_math(inp):
    return _sdpa("math")(inp)


@attention.impl(needs_cuda=True)
def sdpa_flash(inp):
    return _sdpa("flash")(inp)


@attention.impl(needs_cuda=True)
def sdpa_efficient(inp):
    return _sdpa("efficient")(inp)


@attention.impl(needs_cuda=True)
def sdpa_cudnn(inp):
    return _sdpa("cudnn")(inp)


@attention.impl(triton=True, note="kernels.attention, flash-style")
def triton(inp):
    from kernels.attention import attention
    return lambda: attention(inp.q, inp.k, inp.v)


attention.compiled("naive")


@attention.impl(compiles=True, peer="FlexAttention", note="torch.nn.attention.flex_attention, compiled")
def flex_attention(inp):
    from reference.attention import flex
    compile_settings()
    return lambda: flex(inp.q, inp.k, inp.v)
