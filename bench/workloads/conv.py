"""model_convs2s: one ConvS2S block at d_model (the textbook's ConvSeq2Seq row): a causal gated
convolution of width 3 (d → 2d channels, GLU back to d) with the residual, ×√0.5.

FLOPs: the conv GEMM, 2·B·T·(2d)·(d·K), the GLU and residual O(B·T·d) left out; training ×3.
Minimum bytes: the weights once, x in, out.  No sequential floor: every step is independent.
"""
import math

import torch

from bench.workload import Check, Workload, dtype_bytes, forward_backward, namespace, randn
from bench.workloads.models import SHAPES

WIDTH = 3   # ConvS2S's kernel width on WMT'14 En-De (Gehring et al. 2017)


def flops(s, mode):
    f = 2 * s["B"] * s["T"] * 2 * s["d"] * s["d"] * WIDTH
    return f * (3 if mode == "fwd+bwd" else 1)


def min_bytes(s, dtype, mode):
    e = dtype_bytes(dtype)
    weights = (2 * s["d"] * s["d"] * WIDTH + 2 * s["d"]) * e
    io = 2 * s["B"] * s["T"] * s["d"] * e
    return weights + io if mode == "fwd" else 2 * weights + 3 * io


def inputs(s, dtype, device, grad):
    conv = torch.nn.Conv1d(s["d"], 2 * s["d"], WIDTH, device=device, dtype=dtype)
    return namespace(x=randn(s["B"], s["T"], s["d"], dtype=dtype, device=device, requires_grad=grad), conv=conv)


def check_small(device):
    """Causal, T=11 < a few tiles, C_in 20 → C_out 12, K=3, forward against float64."""
    from kernels.conv import glu_conv1d
    from reference.conv import glu_conv1d as ref
    g = torch.Generator().manual_seed(0)
    x, w, b = ((torch.rand(*s, generator=g) * 2 - 1).to(device) for s in ((2, 11, 20), (24, 20, 3), (24,)))
    w = w * 0.3
    return glu_conv1d(x, w, b), ref(x.double(), w.double(), b.double())


def check_gpu(B, T, C, dtype, causal):
    """The conv kernels (forward, ∂pre, dx, dW and dbias) at a real shape against float64."""
    def run(device):
        from kernels.conv import glu_conv1d
        from reference.conv import glu_conv1d as ref
        g = torch.Generator().manual_seed(0)
        bound = 1 / math.sqrt(C * WIDTH)
        x, w, b = ((torch.rand(*s, generator=g) * 2 - 1).to(device)
                   for s in ((B, T, C), (2 * C, C, WIDTH), (2 * C,)))
        args = (x, w * bound, b * bound)
        got = forward_backward(lambda *a: glu_conv1d(*a, causal=causal), args, getattr(torch, dtype))
        return got, forward_backward(lambda *a: ref(*a, causal=causal), args, torch.float64)
    return run


model_convs2s = Workload(
    "model_convs2s", "one ConvS2S block at d_model, kernel width 3 (the textbook's ConvSeq2Seq side)",
    ("B", "T", "d"), "T", SHAPES, flops, min_bytes, lambda s: s["B"] * s["T"], inputs,
    checks=(Check("GLU conv fwd (causal, T=11, C 20 -> 12, K=3)", check_small),
            Check("GLU conv fwd+bwd, B=8 T=1024 C=1024 K=3, causal, bf16",
                  check_gpu(8, 1024, 1024, "bfloat16", True), 3e-2, gpu_only=True),
            Check("GLU conv fwd+bwd, B=4 T=257 C=520 K=3, same padding, fp16",
                  check_gpu(4, 257, 520, "float16", False), 3e-2, gpu_only=True)))


@model_convs2s.impl(baseline=True, textbook="ConvSeq2Seq", note="F.conv1d + F.glu (cuDNN on a GPU)")
def convs2s_torch(inp):
    from reference.conv import convs2s_block
    return lambda: convs2s_block(inp.x, inp.conv.weight, inp.conv.bias)


@model_convs2s.impl(triton=True, textbook="ConvSeq2Seq",
                    note="ConvS2SBlock: one implicit-GEMM kernel, GLU in its epilogue")
def convs2s_triton(inp):
    from kernels.conv import ConvS2SBlock
    block = ConvS2SBlock.from_torch(inp.conv)
    return lambda: block(inp.x)


model_convs2s.compiled("convs2s_torch")
