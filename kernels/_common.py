"""Helpers shared by the kernel launchers: input checks, interpreter detection, arch lookup."""
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
    """The PREC and INTERP constexprs every kernel with a dot takes (see kernels/_tl.py)."""
    return {"PREC": fp32_dot_precision() if dtype == torch.float32 else "tf32",
            "INTERP": device.type != "cuda" and dtype != torch.float32}


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
