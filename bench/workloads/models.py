"""The textbook comparison at equal d_model and tokens: one LSTM layer (d → d) against one pre-norm
Transformer block (QKV, attention with d/64 heads, output projection, 4d MLP); the ConvS2S block is in
``conv.py``, beside its kernel.

FLOPs: LSTM 16·B·T·d²; block 24·B·T·d² + 4·B·T²·d; training ×3 (attention ×3.5 for its part).
Each pair shares its weights: the LSTM impls copy one ``nn.LSTM``, the Transformer impls run one
block with a different attention function.
"""
import torch

from bench.workload import Shapes, Workload, compile_settings, dtype_bytes, namespace, randn


def flops(arch):
    def count(s, mode):
        B, T, d = s["B"], s["T"], s["d"]
        if arch == "lstm":
            return 16 * B * T * d * d * (3 if mode == "fwd+bwd" else 1)
        dense, attn = 24 * B * T * d * d, 4 * B * T * T * d
        return dense * 3 + attn * 3.5 if mode == "fwd+bwd" else dense + attn
    return count


def min_bytes(arch):
    def count(s, dtype, mode):
        e = dtype_bytes(dtype)
        B, T, d = s["B"], s["T"], s["d"]
        weights = (8 * d * d if arch == "lstm" else 12 * d * d) * e
        io = 2 * B * T * d * e
        return weights + io if mode == "fwd" else 2 * weights + 3 * io
    return count


def _grid(batch, lens, batches, at, d):
    """Sequence lengths at the default batch, then the batch axis at one length (shapes listed once)."""
    shapes = [dict(B=batch, T=t, d=d) for t in lens] + [dict(B=b, T=t, d=d) for t in at for b in batches]
    return [dict(s) for s in {tuple(s.items()): s for s in shapes}.values()]


# The textbook's argument turns on batch: at 16 a recurrence cannot fill an H100, at 512 cuDNN may.  On a
# GPU the model rows sweep length at batch 16 and batch (1, 16, 128, 512) at T=512 (and 2048 in full);
# points that do not fit in memory become "oom" rows.
SHAPES = Shapes(cpu_quick=_grid(2, (16, 64), (8,), (64,), 64),
                cpu_full=_grid(2, (16, 64, 256), (8,), (64,), 64),
                gpu_quick=_grid(16, (128, 512, 2048), (1, 128, 512), (512,), 1024),
                gpu_full=_grid(16, (128, 256, 512, 1024, 2048), (1, 128, 512), (512, 2048), 1024))


class TransformerBlock(torch.nn.Module):
    """Pre-norm block: x + Attn(LN(x)), then + MLP(LN(x)); ``attn`` is sdpa-like (q, k, v) -> o."""

    def __init__(self, d, device, dtype):
        super().__init__()
        f = dict(device=device, dtype=dtype)
        self.heads = max(1, d // 64)
        self.ln1, self.ln2 = torch.nn.LayerNorm(d, **f), torch.nn.LayerNorm(d, **f)
        self.qkv, self.proj = torch.nn.Linear(d, 3 * d, **f), torch.nn.Linear(d, d, **f)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(d, 4 * d, **f), torch.nn.GELU(), torch.nn.Linear(4 * d, d, **f))

    def forward(self, x, attn):  # x: (B, T, d)
        B, T, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        x = x + self.proj(attn(q, k, v).transpose(1, 2).reshape(B, T, d))
        return x + self.mlp(self.ln2(x))


def lstm_inputs(s, dtype, device, grad):
    return namespace(x=randn(s["B"], s["T"], s["d"], dtype=dtype, device=device, requires_grad=grad),
                     lstm=torch.nn.LSTM(s["d"], s["d"], batch_first=True, device=device, dtype=dtype))


def block_inputs(s, dtype, device, grad):
    return namespace(x=randn(s["B"], s["T"], s["d"], dtype=dtype, device=device, requires_grad=grad),
                     block=TransformerBlock(s["d"], device, dtype))


model_lstm = Workload(
    "model_lstm", "one LSTM layer at d_model (the textbook's LSTM side)", ("B", "T", "d"), "T", SHAPES,
    flops("lstm"), min_bytes("lstm"), lambda s: s["B"] * s["T"], lstm_inputs,
    recurrent_params=lambda s: 4 * s["d"] * s["d"])


@model_lstm.impl(baseline=True, textbook="LSTM (optimized)", note="nn.LSTM (cuDNN on a GPU)")
def lstm_torch(inp):
    return lambda: inp.lstm(inp.x)[0]


@model_lstm.impl(textbook="LSTM (sequential)", note="the textbook equations, one torch op per gate per step")
def lstm_torch_loop(inp):
    from reference.lstm import lstm
    m = inp.lstm
    return lambda: lstm(inp.x, None, m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0, batch_first=True)[0]


@model_lstm.impl(triton=True, textbook="LSTM (sequential)", note="FusedLSTM, fused step kernel")
def lstm_triton(inp):
    from kernels.lstm import FusedLSTM
    m = FusedLSTM.from_torch(inp.lstm)
    return lambda: m(inp.x)[0]


@model_lstm.impl(triton=True, textbook="LSTM (optimized)", note="FusedLSTM(kernel='persistent')")
def lstm_triton_persistent(inp):
    from kernels.lstm import FusedLSTM
    m = FusedLSTM.from_torch(inp.lstm, kernel="persistent")
    return lambda: m(inp.x)[0]


model_lstm.compiled("lstm_torch_loop")


def _flashrnn(backend):
    """FlashRNN's LSTM as one head of d units: the same dense layer as nn.LSTM's (bench.peers.flashrnn_lstm)."""
    def setup(inp):
        from bench.peers import flashrnn_lstm
        lstm, m, d = flashrnn_lstm(backend), inp.lstm, inp.lstm.hidden_size
        w_hh = m.weight_hh_l0.view(1, 4 * d, d)
        return lambda: lstm(inp.x.transpose(0, 1), m.weight_ih_l0, w_hh, m.bias_ih_l0, m.bias_hh_l0).transpose(0, 1)
    return setup


model_lstm.impl(name="lstm_flashrnn_vanilla", peer="FlashRNN", textbook="LSTM (sequential)",
                note="FlashRNN's vanilla backend (its torch loop), one head of d")(_flashrnn("vanilla"))
model_lstm.impl(name="lstm_flashrnn_triton_fused", triton=True, peer="FlashRNN", textbook="LSTM (optimized)",
                note="FlashRNN's triton_fused backend, one head of d (head size ≤ 128)")(_flashrnn("triton_fused"))
model_lstm.impl(name="lstm_flashrnn_cuda_fused", needs_cuda=True, compiles=True, peer="FlashRNN",
                textbook="LSTM (optimized)", note="FlashRNN's cuda_fused backend (built with nvcc at its first call), "
                                                  "one head of d")(_flashrnn("cuda_fused"))

model_transformer = Workload(
    "model_transformer", "one Transformer block at d_model (the textbook's Transformer side)", ("B", "T", "d"), "T",
    SHAPES, flops("transformer"), min_bytes("transformer"), lambda s: s["B"] * s["T"], block_inputs)


@model_transformer.impl(baseline=True, textbook="Transformer", note="SDPA, PyTorch's pick of backend")
def transformer_torch(inp):
    from reference.attention import sdpa
    return lambda: inp.block(inp.x, sdpa)


@model_transformer.impl(triton=True, textbook="Transformer", note="attention through kernels.attention")
def transformer_triton(inp):
    from kernels.attention import attention
    return lambda: inp.block(inp.x, attention)


model_transformer.compiled("transformer_torch")


@model_transformer.impl(compiles=True, peer="FlexAttention", textbook="Transformer",
                        note="attention through FlexAttention (compiled), the rest eager")
def transformer_flex(inp):
    from reference.attention import flex
    compile_settings()
    return lambda: inp.block(inp.x, flex)
