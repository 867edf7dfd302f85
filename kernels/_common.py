"""Helpers shared by the kernel launchers: input checks, interpreter detection, arch lookup."""
from __future__ import annotations

import os

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def interpreting() -> bool:
    """True when Triton runs kernels through its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def check_tensor(name: str, t, ndim: int, layout: str) -> None:
    """Raise TypeError/ValueError unless ``t`` is a float tensor of rank ``ndim`` on a usable device."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.ndim != ndim:
        raise ValueError(f"{name} must have rank {ndim} {layout}, got shape {tuple(t.shape)}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16 or float32, got {t.dtype}")
    if t.device.type == "cuda":
        return
    if t.device.type == "cpu" and interpreting():
        return
    raise ValueError(
        f"{name} is on {t.device}; expected a CUDA tensor "
        "(CPU tensors run only through the Triton interpreter, TRITON_INTERPRET=1)"
    )


def check_same(names: tuple[str, ...], tensors: tuple[torch.Tensor, ...]) -> None:
    """All tensors share the first one's dtype and device."""
    first_name, first = names[0], tensors[0]
    for name, t in zip(names[1:], tensors[1:]):
        if t.dtype != first.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but {first_name} has {first.dtype}; expected the same dtype")
        if t.device != first.device:
            raise ValueError(f"{name} is on {t.device} but {first_name} is on {first.device}; expected the same device")


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
