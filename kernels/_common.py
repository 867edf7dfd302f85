"""Helpers shared by the kernel launchers: input checks, interpreter detection, arch lookup, stride
arguments, the autotuner registry (which config ran) and the once-differentiable guard."""
from __future__ import annotations

import functools
import os

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def interpreting() -> bool:
    """True when Triton runs kernels through its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def check_tensor(name: str, t, ndim: int, layout: str) -> None:
    """Raise TypeError/ValueError unless ``t`` is a float tensor of rank ``ndim`` (devices: ``check_same``)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.ndim != ndim:
        raise ValueError(f"{name} must have rank {ndim} {layout}, got shape {tuple(t.shape)}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16 or float32, got {t.dtype}")


def check_same(names: tuple[str, ...], tensors: tuple[torch.Tensor, ...]) -> None:
    """All tensors share the first one's dtype and device, and that device can run the kernels.

    Devices are compared before either is judged, so a CPU tensor among CUDA ones is reported as a
    device mismatch, not as a CPU tensor."""
    first_name, first = names[0], tensors[0]
    for name, t in zip(names[1:], tensors[1:]):
        if t.dtype != first.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but {first_name} has {first.dtype}; expected the same dtype")
        if t.device != first.device:
            raise ValueError(f"{name} is on {t.device} but {first_name} is on {first.device}; expected the same device")
    check_device(first_name, first)


def check_device(name: str, t: torch.Tensor) -> None:
    if t.device.type == "cuda" or (t.device.type == "cpu" and interpreting()):
        return
    raise ValueError(
        f"{name} is on {t.device}; expected a CUDA tensor "
        "(CPU tensors run only through the Triton interpreter, TRITON_INTERPRET=1)"
    )


def wide_offsets(*tensors) -> bool:
    """Whether some element of these tensors lies 2³¹ or more elements from its start: a kernel must then form
    its offsets in 64 bits (a constexpr, so smaller problems keep 32-bit arithmetic and its registers)."""
    return any(t is not None and sum((n - 1) * abs(s) for n, s in zip(t.shape, t.stride()) if n) >= 2**31
               for t in tensors)


def capturing(device: torch.device) -> bool:
    """True while a CUDA graph is being captured on the current stream: host reads of device values (.item(),
    bool(t)) are not allowed then, so input checks that need them run on the eager call before capture."""
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


_DEFERRED: list = []


def register_deferred_check(check) -> None:
    """A kernel family's ``check()`` for errors its launches flag on the device and read later, without a sync
    on the hot path (the persistent LSTM's grid-barrier timeout); ``deferred_checks`` runs them all."""
    if check not in _DEFERRED:
        _DEFERRED.append(check)


def deferred_checks() -> None:
    """Wait for the device flags of every launch so far and raise what any family found (after a timed region)."""
    for check in _DEFERRED:
        check()


def cuda_arch(device: torch.device) -> int:
    """Compute capability as an int (90 for sm_90); 0 when interpreting on the CPU."""
    if device.type != "cuda":
        return 0
    major, minor = torch.cuda.get_device_capability(device)
    return 10 * major + minor


def fp32_dot_precision() -> str:
    """'ieee' unless the caller allowed TF32 through torch's matmul precision setting."""
    allow = torch.get_float32_matmul_precision() != "highest" or torch.backends.cuda.matmul.allow_tf32
    return "tf32" if allow else "ieee"


def dot_options(dtype: torch.dtype, device: torch.device) -> dict:
    """The PREC constexpr every kernel with a dot takes: exact fp32 unless TF32 is allowed (ignored for 16 bits)."""
    return {"PREC": fp32_dot_precision() if dtype == torch.float32 else "tf32"}


def once_differentiable(backward):
    """Decorate a Function's backward that is not itself differentiable.

    Its gradients come from Triton kernels, so a graph through them (``create_graph=True``: gradient
    penalties, Hessian-vector products) would be silently wrong; it raises instead, before any work.
    """
    @functools.wraps(backward)
    def wrapper(ctx, *grads):
        if torch.is_grad_enabled():
            raise RuntimeError(
                f"{backward.__qualname__.split('.')[0].lstrip('_')}: double backward (create_graph=True) is not "
                "supported by seqbench's Triton kernels; use the PyTorch reference for higher-order gradients")
        return backward(ctx, *grads)
    return wrapper


_AUTOTUNERS: list[tuple[str, object]] = []


def size_bucket(v):
    """The power of two at or above a positive int size (1, 2, 4, ... ); anything else (bools, dtypes) as is."""
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        return v
    return 1 << (v - 1).bit_length()


class BucketedKeys(dict):
    """An autotuner's cache keyed on each size's power-of-two bucket, not the size itself.

    Triton tunes again at every new value of a key argument: a packed batch (B shrinks step by step), a
    translation batch of new lengths or greedy decoding (N_K grows by one) then spends its time benchmarking
    configs, seconds per new size on a GPU.  A config is valid at every size (every kernel masks its edges), so
    one tuned per bucket is reused across it."""

    @staticmethod
    def _key(key):
        return tuple(size_bucket(v) for v in key) if isinstance(key, tuple) else key

    def __contains__(self, key):
        return super().__contains__(self._key(key))

    def __getitem__(self, key):
        return super().__getitem__(self._key(key))

    def __setitem__(self, key, value):
        super().__setitem__(self._key(key), value)

    def get(self, key, default=None):
        return super().get(self._key(key), default)


def autotune(fn, configs, key: list[str], label: str, restore_value: list[str] | None = None):
    """``triton.autotune`` that remembers the tuner, so a benchmark row can record the config it chose, and
    tunes once per power-of-two bucket of its size keys (BucketedKeys).
    ``restore_value``: buffers a kernel accumulates into, restored after every benchmarking run."""
    import triton
    tuner = triton.autotune(configs=configs, key=key, restore_value=restore_value)(fn)
    if isinstance(getattr(tuner, "cache", None), dict):     # Triton 3.6-3.9; another keeps its per-size tuning
        tuner.cache = BucketedKeys(tuner.cache)
    _AUTOTUNERS.append((label, tuner))
    return tuner


def forget_tuned_configs() -> None:
    for _, tuner in _AUTOTUNERS:
        tuner.best_config = None


def tuned_configs() -> str:
    """The config each autotuned kernel ran with since ``forget_tuned_configs``: 'label BLOCK_M=128 ... w8 s3; ...'."""
    out = []
    for label, tuner in _AUTOTUNERS:
        c = getattr(tuner, "best_config", None)
        if c is not None:
            params = " ".join(f"{k}={v}" for k, v in c.kwargs.items())
            out.append(f"{label} {params} warps={c.num_warps} stages={c.num_stages}")
    return "; ".join(dict.fromkeys(out))


def strides(name: str, t: torch.Tensor | None, dims: str) -> dict:
    """The kernel arguments ``stride_{name}{dim}`` of ``t``, one per letter of ``dims`` (zeros for None).

    One convention in every kernel file, the tutorial's: q's strides are stride_qb, stride_qh, stride_qm,
    stride_qd, so grepping a kernel parameter finds the launcher line that fills it."""
    values = t.stride() if t is not None else (0,) * len(dims)
    if len(values) != len(dims):
        raise ValueError(f"strides of {name}: {len(dims)} dims '{dims}' for a rank-{len(values)} tensor")
    return {f"stride_{name}{d}": s for d, s in zip(dims, values)}


# ------------------------------------------------------------------ recurrent steps (LSTM, GRU)

def check_rnn_step(x, h, c, w_ih, w_hh, b_ih, b_hh, n_gates: int, heads: int = 1):
    """Shapes, dtypes and devices of a step's arguments; ``heads > 1`` means w_hh is (heads, n·DH, DH)."""
    check_tensor("x", x, 2, "(B, input_size)")
    check_tensor("w_ih", w_ih, 2, f"({n_gates}*hidden_size, input_size)")
    B, IN = x.shape
    if heads == 1:
        check_tensor("w_hh", w_hh, 2, f"({n_gates}*hidden_size, hidden_size)")
        HID = w_hh.shape[1]
        if w_hh.shape[0] != n_gates * HID:
            raise ValueError(f"w_hh must have shape ({n_gates}*hidden_size, hidden_size), got {tuple(w_hh.shape)}")
    else:
        check_tensor("w_hh", w_hh, 3, f"(heads, {n_gates}*head_size, head_size)")
        if w_hh.shape[0] != heads or w_hh.shape[1] != n_gates * w_hh.shape[2]:
            raise ValueError(f"w_hh must have shape ({heads}, {n_gates}*head_size, head_size), got {tuple(w_hh.shape)}")
        HID = heads * w_hh.shape[2]
    if w_ih.shape != (n_gates * HID, IN):
        raise ValueError(f"w_ih must have shape ({n_gates * HID}, {IN}) to match x and w_hh, got {tuple(w_ih.shape)}")
    named = [("x", x), ("w_ih", w_ih), ("w_hh", w_hh)]
    for name, t, shape in (("h", h, (B, HID)), ("c", c, (B, HID)),
                           ("b_ih", b_ih, (n_gates * HID,)), ("b_hh", b_hh, (n_gates * HID,))):
        if t is None:
            continue
        check_tensor(name, t, len(shape), str(shape))
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
        named.append((name, t))
    check_same(tuple(n for n, _ in named), tuple(t for _, t in named))
    if IN < 1 or HID < 1:     # an empty batch (B = 0) is fine, as for nn.LSTM: empty outputs, no launch
        raise ValueError(f"input_size and hidden_size must be >= 1, got x {tuple(x.shape)}, "
                         f"w_hh {tuple(w_hh.shape)}")
    return HID


def check_batching(x, states) -> bool:
    """True for an unbatched step (1-D x); the states must then be 1-D too, as nn.LSTMCell/GRUCell require."""
    unbatched = isinstance(x, torch.Tensor) and x.ndim == 1
    want = 1 if unbatched else 2
    for name, t in states:
        if isinstance(t, torch.Tensor) and x.ndim in (1, 2) and t.ndim != want:
            raise ValueError(f"{name} must have rank {want} like x ({'unbatched' if unbatched else 'batched'} "
                             f"step), got shape {tuple(t.shape)}")
    return unbatched
