"""lstm_heads: a multi-head LSTM layer, FlashRNN's layout: NH heads of DH units, block-diagonal W_hh.

Counts as lstm_layer's with the recurrent matmul per head (2·B·4DH·DH per head per step); the
sequential floor multiplies NH matrices of 4·DH × DH per step.
"""
import math

from bench.workload import Check, Shapes, Workload, dtype_bytes, forward_backward, namespace, randn, uniform
from bench.workloads._rnn import check_args, double, uniform_tensors


def flops(s, mode):
    H = s["NH"] * s["DH"]
    f = s["T"] * 2 * s["B"] * 4 * (H * H + s["NH"] * s["DH"] ** 2)
    return f * (3 if mode == "fwd+bwd" else 1)


def min_bytes(s, dtype, mode):
    e = dtype_bytes(dtype)
    H = s["NH"] * s["DH"]
    weights = (4 * H * H + 4 * s["NH"] * s["DH"] ** 2 + 8 * H) * e
    io = 2 * s["T"] * s["B"] * H * e
    return weights + io if mode == "fwd" else 2 * weights + 3 * io


def inputs(s, dtype, device, grad):
    NH, DH = s["NH"], s["DH"]
    H = NH * DH
    w = tuple(uniform(*shape, bound=1 / math.sqrt(DH), dtype=dtype, device=device, requires_grad=grad)
              for shape in ((4 * H, H), (NH, 4 * DH, DH), (4 * H,), (4 * H,)))
    return namespace(x=randn(s["T"], s["B"], H, dtype=dtype, device=device, requires_grad=grad),
                     w_ih=w[0], w_hh=w[1], b_ih=w[2], b_hh=w[3], heads=NH)


def check_split_head(device):
    """One hidden state of 50 split over programs (the per-step form of the grid-barrier path), T=9."""
    from kernels.lstm_persistent import lstm_persistent
    from reference.lstm import lstm as ref
    x, W, U, b, _ = check_args(device, 4, steps=9)
    return lstm_persistent(x, None, W, U, b, b, _block_h=16)[0], ref(*double(x), None, *double(W, U, b, b))[0]


def check_gpu(heads, HID, dtype, B=16, T=64):
    """The persistent layer at a real shape, forward and backward, against float64.  heads=1 with HID=768
    splits the head over programs that meet at the grid barrier: the path only a GPU can run."""
    def run(device):
        import torch

        from kernels.lstm_persistent import lstm_persistent
        from reference.lstm_persistent import lstm_persistent as ref
        DH = HID // heads
        w_hh_shape = (heads, 4 * DH, DH) if heads > 1 else (4 * HID, HID)
        x, w_ih, w_hh, b = uniform_tensors(device, (T, B, HID), (4 * HID, HID), w_hh_shape, (4 * HID,),
                                           scale=DH ** -0.5)
        args = (x * DH ** 0.5, w_ih, w_hh, b, b)
        got = forward_backward(lambda x, *w: lstm_persistent(x, None, *w, heads=heads)[0], args, getattr(torch, dtype))
        want = forward_backward(lambda x, *w: ref(x, None, *w, heads=heads)[0], args, torch.float64)
        return got, want
    return run


lstm_heads = Workload(
    "lstm_heads", "multi-head LSTM layer, block-diagonal W_hh (FlashRNN's 12 x 64 layout)", ("B", "T", "NH", "DH"), "T",
    Shapes(cpu_quick=[dict(B=4, T=t, NH=2, DH=16) for t in (8, 32)],
           cpu_full=[dict(B=4, T=t, NH=2, DH=16) for t in (8, 32, 128)],
           gpu_quick=[dict(B=16, T=t, NH=12, DH=64) for t in (256, 1024)],
           gpu_full=[dict(B=16, T=t, NH=12, DH=64) for t in (128, 256, 512, 1024, 2048)]),
    flops, min_bytes, lambda s: s["B"] * s["T"], inputs,
    recurrent_params=lambda s: s["NH"] * 4 * s["DH"] ** 2,
    checks=(Check("persistent LSTM fwd, split head (T=9, hidden 50)", check_split_head),
            Check("persistent LSTM fwd+bwd, one 768 head over programs at the grid barrier, B=16 T=64, fp32",
                  check_gpu(1, 768, "float32"), 1e-4, gpu_only=True, first=True),
            Check("persistent LSTM fwd+bwd, one 768 head over programs at the grid barrier, B=16 T=64, fp16",
                  check_gpu(1, 768, "float16"), 3e-2, gpu_only=True, first=True),
            Check("persistent LSTM fwd+bwd, 12 heads of 64 (one program each), B=16 T=64, fp16",
                  check_gpu(12, 768, "float16"), 3e-2, gpu_only=True)))


@lstm_heads.impl(baseline=True, note="textbook loop with the block-diagonal matrix")
def torch_loop(inp):
    from reference.lstm_persistent import lstm_persistent
    return lambda: lstm_persistent(inp.x, None, inp.w_ih, inp.w_hh, inp.b_ih, inp.b_hh, heads=inp.heads)[0]


@lstm_heads.impl(triton=True, note="one program per head, all steps")
def triton_persistent(inp):
    from kernels.lstm_persistent import lstm_persistent
    return lambda: lstm_persistent(inp.x, None, inp.w_ih, inp.w_hh, inp.b_ih, inp.b_hh, heads=inp.heads)[0]


lstm_heads.compiled("torch_loop")


def _flashrnn(backend):
    def setup(inp):
        from bench.peers import flashrnn_lstm
        lstm = flashrnn_lstm(backend)
        return lambda: lstm(inp.x, inp.w_ih, inp.w_hh, inp.b_ih, inp.b_hh)
    return setup


lstm_heads.impl(name="flashrnn_vanilla", peer="FlashRNN", note="FlashRNN's vanilla backend (its torch loop)")(
    _flashrnn("vanilla"))
lstm_heads.impl(name="flashrnn_triton_fused", triton=True, peer="FlashRNN",
                note="FlashRNN's triton_fused backend (one fused Triton kernel over time)")(_flashrnn("triton_fused"))
lstm_heads.impl(name="flashrnn_cuda_fused", needs_cuda=True, compiles=True, peer="FlashRNN",
                note="FlashRNN's cuda_fused backend (CUDA, built with nvcc at its first call)")(_flashrnn("cuda_fused"))
