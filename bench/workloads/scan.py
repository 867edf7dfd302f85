"""Beyond the textbook: recurrences that are linear in h run as a parallel scan.

recurrence: at one batch, hidden size H (= input size) and length T, every recurrence in this project —
the Elman RNN, GRU and LSTM step kernels and cuDNN (nn.RNN/GRU/LSTM), against minGRU and minLSTM on the
Triton scan, on a scan in plain torch ops (doubling) and as the sequential torch loop.  Five functions, so
each group has its own baseline and its own counts (``group_counts``):
    RNN / GRU / LSTM (g = 1, 3, 4 gate blocks): 2·B·g·H·2H FLOPs per step, the weights plus x in and h out;
        a sequential floor of T dependent (B × H)·(H × g·H) products (``roofline``);
    minGRU / minLSTM (p = 2, 3 projections): one GEMM, 2·B·T·p·H·H FLOPs, plus the scan's 2·B·T·H; the same
        bytes; no sequential floor: the scan's O(T) work is the floor, so the roofline's compute or memory
        bound applies.
Training ×3.

model_mingru: one minGRU layer at d_model on the model shapes (``models.SHAPES``), the fifth row of the
hardware-argument table: "beyond the textbook: parallel-scan RNN".
"""
import math

import torch

from bench.workload import Check, Workload, dtype_bytes, forward_backward, namespace, randn, uniform
from bench.workloads import models
from bench.workloads._rnn import LAYER_SHAPES, layer_bytes, layer_flops

BEYOND = "beyond the textbook: parallel-scan RNN"


def scan_flops(parts):
    def flops(s, mode):
        B, T = s["B"], s["T"]
        H = s.get("H", s.get("d"))
        return (2 * B * T * parts * H * H + 2 * B * T * H) * (3 if mode == "fwd+bwd" else 1)
    return flops


def scan_bytes(parts):
    def min_bytes(s, dtype, mode):
        e = dtype_bytes(dtype)
        H = s.get("H", s.get("d"))
        weights = (parts * H * H + parts * H) * e
        io = 2 * s["B"] * s["T"] * H * e
        return weights + io if mode == "fwd" else 2 * weights + 3 * io
    return min_bytes


def _counts(kind, n):
    if kind == "scan":
        return {"flops": scan_flops(n), "min_bytes": scan_bytes(n), "recurrent_params": None}
    return {"flops": layer_flops(n), "min_bytes": layer_bytes(n), "recurrent_params": lambda s: n * s["H"] * s["H"]}


GROUPS = {"rnn": _counts("step", 1), "gru": _counts("step", 3), "lstm": _counts("step", 4),
          "mingru": _counts("scan", 2), "minlstm": _counts("scan", 3)}


def _weights(rows, H, dtype, device, grad):
    """(w_ih, w_hh, b_ih, b_hh)-like tensors: nn.RNN-style U(±1/√H) init of (rows·H, H) and (rows·H,)."""
    bound = 1 / math.sqrt(H)
    return [uniform(*shape, bound=bound, dtype=dtype, device=device, requires_grad=grad)
            for shape in ((rows * H, H), (rows * H, H), (rows * H,), (rows * H,))]


def inputs(s, dtype, device, grad):
    """x (T, B, H) shared by all; each group's weights: rnn/gru/lstm (w_ih, w_hh, b_ih, b_hh) and mingru/minlstm
    (the stacked projection weight and bias)."""
    H = s["H"]
    inp = namespace(x=randn(s["T"], s["B"], H, dtype=dtype, device=device, requires_grad=grad))
    for name, gates in (("rnn", 1), ("gru", 3), ("lstm", 4)):
        setattr(inp, name, _weights(gates, H, dtype, device, grad))
    for name, parts in (("mingru", 2), ("minlstm", 3)):
        w, _, b, _ = _weights(parts, H, dtype, device, grad)
        setattr(inp, f"{name}_w", w)
        setattr(inp, f"{name}_b", b)
    return inp


def _module(cls, weights, x):
    H = weights[1].shape[1]
    m = cls(H, H, device=x.device, dtype=x.dtype)
    with torch.no_grad():
        for p, src in zip((m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0), weights):
            p.copy_(src)
    return m


def _min_args(inp, name, parts):
    """x batch-first and the per-gate weight and bias views of the group's stacked ones (the impls hand the
    output back time-major, as the step kernels give it, so one output gradient serves every group)."""
    return (inp.x.transpose(0, 1), *getattr(inp, f"{name}_w").chunk(parts), *getattr(inp, f"{name}_b").chunk(parts))


def _fla(inp, fn, name, parts, kind):
    """minGRU / minLSTM's gate math in torch, then flash-linear-attention's HGRN recurrence on the same a, b."""
    import reference.scan as r
    from bench.peers import fla_hgrn
    scan = fla_hgrn(kind)
    return lambda: getattr(r, fn)(*_min_args(inp, name, parts), scan=scan).transpose(0, 1)


# ----------------------------------------------------------------------------------------------- checks

def _small(device, T=37, D=19):
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, T, D, generator=g).to(device)
    b, h0 = torch.randn(2, T, D, generator=g).to(device), torch.randn(2, D, generator=g).to(device)
    return a, b, h0


def check_scan(device):
    """The scan at T=37 (past several chunks), D=19, with h0, forward, against float64."""
    from kernels.scan import linear_scan
    from reference.scan import linear_scan as ref
    a, b, h0 = _small(device)
    return linear_scan(a, b, h0), ref(a.double(), b.double(), h0.double())


def check_min(fn_name, parts):
    """minGRU / minLSTM at T=23, input 13, hidden 21, forward, against float64."""
    def run(device):
        import kernels.scan as k
        import reference.scan as r
        g = torch.Generator().manual_seed(1)
        x = torch.randn(2, 23, 13, generator=g).to(device)
        ws = [(torch.randn(21, 13, generator=g) * 13 ** -0.5).to(device) for _ in range(parts)]
        bs = [torch.randn(21, generator=g).to(device) for _ in range(parts)]
        return getattr(k, fn_name)(x, *ws, *bs), getattr(r, fn_name)(x.double(), *[t.double() for t in ws + bs])
    return run


def check_gpu(device, B=16, T=2048, D=1024, dtype=torch.bfloat16):
    """The scan at a real shape, forward and backward, against float64."""
    from kernels.scan import linear_scan
    from reference.scan import linear_scan_doubling
    g = torch.Generator().manual_seed(2)
    a, b, h0 = torch.rand(B, T, D, generator=g), torch.randn(B, T, D, generator=g), torch.randn(B, D, generator=g)
    args = (a.to(device), b.to(device), h0.to(device))
    return forward_backward(linear_scan, args, dtype), forward_backward(linear_scan_doubling, args, torch.float64)


recurrence = Workload(
    "recurrence", "every recurrence at equal B, H and T: RNN/GRU/LSTM steps and cuDNN vs minGRU/minLSTM scans",
    ("B", "T", "H"), "T", LAYER_SHAPES, layer_flops(4), layer_bytes(4), lambda s: s["B"] * s["T"], inputs,
    group_counts=GROUPS,
    checks=(Check("linear scan fwd (T=37 over chunks of 16, D=19, h0)", check_scan),
            Check("minGRU fwd (T=23, input 13, hidden 21)", check_min("min_gru", 2)),
            Check("minLSTM fwd (T=23, input 13, hidden 21)", check_min("min_lstm", 3)),
            Check("linear scan fwd+bwd, B=16 T=2048 D=1024, bf16", check_gpu, 3e-2, gpu_only=True)))


for _name, _cls, _kernel in (("rnn", torch.nn.RNN, "rnn"), ("gru", torch.nn.GRU, "gru"), ("lstm", torch.nn.LSTM, "lstm")):
    def _nn(inp, cls=_cls, name=_name):
        m = _module(cls, getattr(inp, name), inp.x)
        return lambda: m(inp.x)[0]

    def _triton(inp, name=_name):
        import importlib
        layer = getattr(importlib.import_module(f"kernels.{name}"), name)
        return lambda: layer(inp.x, None, *getattr(inp, name))[0]

    recurrence.impl(name=f"nn_{_name}", baseline=True, group=_name,
                    note="cuDNN on a GPU, ATen's CPU kernel otherwise")(_nn)
    recurrence.impl(name=f"{_name}_triton_step", triton=True, group=_name,
                    note="input GEMM + one fused Triton step per time step")(_triton)


for _name, _parts in (("mingru", 2), ("minlstm", 3)):
    _fn = "min_gru" if _name == "mingru" else "min_lstm"

    def _loop(inp, fn=_fn, name=_name, parts=_parts):
        import reference.scan as r
        return lambda: getattr(r, fn)(*_min_args(inp, name, parts)).transpose(0, 1)

    def _doubling(inp, fn=_fn, name=_name, parts=_parts):
        import reference.scan as r
        return lambda: getattr(r, fn)(*_min_args(inp, name, parts), scan=r.linear_scan_doubling).transpose(0, 1)

    def _scan(inp, fn=_fn, name=_name, parts=_parts):
        import kernels.scan as k
        return lambda: getattr(k, fn)(*_min_args(inp, name, parts)).transpose(0, 1)

    recurrence.impl(name=f"{_name}_torch_loop", baseline=True, group=_name,
                    note="one GEMM, then the recurrence as a sequential loop of torch ops")(_loop)
    recurrence.impl(name=f"{_name}_torch_scan", group=_name,
                    note="one GEMM, then a doubling scan in torch ops (log2 T rounds)")(_doubling)
    recurrence.impl(name=f"{_name}_triton_scan", triton=True, group=_name,
                    note="one GEMM, then the Triton scan with the gates inside (sequential or chunked plan)")(_scan)
    recurrence.compiled(f"{_name}_torch_loop")
    for _kind in ("fused_recurrent", "chunk"):
        recurrence.impl(name=f"{_name}_fla_{_kind}", triton=True, group=_name, peer="flash-linear-attention",
                        note=f"one GEMM, then fla's {_kind}_hgrn (g = log a, x = b)")(
            lambda inp, fn=_fn, name=_name, parts=_parts, kind=_kind: _fla(inp, fn, name, parts, kind))


# ------------------------------------------------------------------------- the table's fifth row

def mingru_inputs(s, dtype, device, grad):
    d = s["d"]
    w, _, b, _ = _weights(2, d, dtype, device, grad)
    return namespace(x=randn(s["B"], s["T"], d, dtype=dtype, device=device, requires_grad=grad), w=w, b=b)


def check_model_gpu(device, B=16, T=2048, d=1024, dtype=torch.bfloat16):
    """minGRU (GEMM + Triton scan) at a real shape, forward and backward, against float64."""
    from kernels.scan import min_gru
    from reference.scan import linear_scan_doubling, min_gru as ref
    g = torch.Generator().manual_seed(3)
    x, w = torch.randn(B, T, d, generator=g), torch.randn(2 * d, d, generator=g) * d ** -0.5
    b = torch.randn(2 * d, generator=g)
    args = tuple(t.to(device) for t in (x, w, b))

    def fn(impl, **kw):
        return lambda x, w, b: impl(x, *w.chunk(2), *b.chunk(2), **kw)
    return (forward_backward(fn(min_gru), args, dtype),
            forward_backward(fn(ref, scan=linear_scan_doubling), args, torch.float64))


model_mingru = Workload(
    "model_mingru", "one minGRU layer at d_model (beyond the textbook: a recurrence as a parallel scan)",
    ("B", "T", "d"), "T", models.SHAPES, scan_flops(2), scan_bytes(2), lambda s: s["B"] * s["T"], mingru_inputs,
    checks=(Check("minGRU fwd+bwd, B=16 T=2048 d=1024, bf16", check_model_gpu, 3e-2, gpu_only=True),))


@model_mingru.impl(baseline=True, note="one GEMM, then the recurrence as a sequential loop of torch ops")
def mingru_torch_loop(inp):
    from reference.scan import min_gru
    return lambda: min_gru(inp.x, *inp.w.chunk(2), *inp.b.chunk(2))


@model_mingru.impl(textbook=BEYOND, note="one GEMM, then a doubling scan in torch ops")
def mingru_torch_scan(inp):
    from reference.scan import linear_scan_doubling, min_gru
    return lambda: min_gru(inp.x, *inp.w.chunk(2), *inp.b.chunk(2), scan=linear_scan_doubling)


@model_mingru.impl(triton=True, textbook=BEYOND,
                   note="one GEMM, then the Triton scan with the gates inside (sequential or chunked plan by shape)")
def mingru_triton(inp):
    from kernels.scan import min_gru
    return lambda: min_gru(inp.x, *inp.w.chunk(2), *inp.b.chunk(2))


@model_mingru.impl(triton=True, note="the earlier kernel, kept to time beside the new plans: one GEMM, gates in "
                                     "torch ops, then tl.associative_scan over chunks of T")
def mingru_triton_associative(inp):
    from kernels.scan import min_gru
    return lambda: min_gru(inp.x, *inp.w.chunk(2), *inp.b.chunk(2), _plan="associative")


model_mingru.compiled("mingru_torch_loop")
model_mingru.compiled("mingru_torch_scan")


for _kind in ("fused_recurrent", "chunk"):
    def _fla_model(inp, kind=_kind):
        from bench.peers import fla_hgrn
        from reference.scan import min_gru
        scan = fla_hgrn(kind)
        return lambda: min_gru(inp.x, *inp.w.chunk(2), *inp.b.chunk(2), scan=scan)

    model_mingru.impl(name=f"mingru_fla_{_kind}", triton=True, textbook=BEYOND, peer="flash-linear-attention",
                      note=f"one GEMM, then fla's {_kind}_hgrn (g = log a, x = b)")(_fla_model)
