"""The libraries a user would pick instead of this project's kernels, where torch does not ship them:
flash-linear-attention's HGRN recurrence kernels and FlashRNN's LSTM (``pip install -e ".[peers]"``).  torch.compile and
FlexAttention come with torch (``bench.workload.compiled_setup``, ``reference.attention.flex``).

Each adapter maps our problem onto the library's API.  A library that is not installed raises
``PeerMissing`` at setup, which a sweep records as a ``skipped`` row naming the install command.
"""
from __future__ import annotations

import importlib
import os

import torch

INSTALL = 'pip install -e ".[peers]"'
# FlashRNN's fused Triton forward holds one head's recurrent matrix on chip.  Compiled for sm_90a (triton 3.6,
# fp16, its one shipped config: 16 batch rows, 4 warps), DH = 64 takes 110 registers and 36 KB of shared memory,
# 128 takes 179 and 134 KB, and 256 needs 524 KB, over the 227 KB a block may have (bench.tools.kernel_inspect).
TRITON_FUSED_MAX_DH = 128


class PeerMissing(ImportError):
    """A peer library is not installed here."""


def _one_config_when_interpreting(module) -> None:
    """Triton's interpreter has no benchmarker for an autotuner to time its configs with: each of the module's
    autotuned kernels keeps its first config there (the check is of the arithmetic, not of the speed)."""
    from triton.runtime.autotuner import Autotuner

    from kernels._common import interpreting
    if not interpreting():
        return
    for obj in vars(module).values():
        while obj is not None:                  # heuristics wrap the autotuner, which wraps the kernel
            if isinstance(obj, Autotuner):
                obj.configs = obj.configs[:1]
            obj = getattr(obj, "fn", None)


def fla_hgrn(kind: str):
    """A ``scan(a, b, h0)`` for ``reference.scan.min_gru``/``min_lstm`` on flash-linear-attention's HGRN kernels,
    h_t = exp(g_t)·h_{t−1} + x_t, with g = log a and x = b: the same a_t, b_t as ``kernels.scan.linear_scan``.
    ``kind``: ``fused_recurrent`` (each thread walks T for its lanes) or ``chunk`` (chunks, then their carries)."""
    try:
        module = importlib.import_module(f"fla.ops.hgrn.{kind}")
    except ImportError as exc:
        raise PeerMissing(f"flash-linear-attention is not installed ({INSTALL}; {exc})") from None
    _one_config_when_interpreting(module)
    fn = getattr(module, f"{kind}_hgrn")

    def scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
        return fn(b, torch.log(a), initial_state=h0)[0]
    return scan


def flashrnn_lstm(backend: str):
    """A multi-head LSTM layer ``lstm(x, w_ih, w_hh, b_ih, b_hh, dtype)`` on FlashRNN (``backend``: vanilla, its
    torch loop; triton_fused, its fused Triton kernels; cuda_fused, its CUDA kernels, built with nvcc at the
    first call), in ``reference.lstm_persistent``'s layout: x (T, B, NH·DH), w_hh (NH, 4·DH, DH), gates i, f, g, o.
    FlashRNN takes the input projection Wx (B, T, 4, NH, DH), R (4, NH, DH, DH) with R[g, n, d, p] = w_hh[n,
    g·DH + d, p], and b (4, NH, DH); its gate order i, f, z, o is torch's."""
    try:
        from flashrnn import flashrnn
    except ImportError as exc:
        raise PeerMissing(f"FlashRNN is not installed ({INSTALL}; {exc})") from None
    if backend == "cuda_fused":
        missing = [tool for tool in ("nvcc", "ninja") if not _found(tool)]
        if missing:
            raise NotImplementedError(f"FlashRNN's cuda_fused backend is built with nvcc and ninja at its first "
                                      f"call: {' and '.join(missing)} not found here")

    def lstm(x, w_ih, w_hh, b_ih, b_hh):
        T, B, H = x.shape
        NH, DH = w_hh.shape[0], w_hh.shape[2]
        if backend == "triton_fused" and (DH > TRITON_FUSED_MAX_DH or DH & (DH - 1)):
            raise NotImplementedError(
                f"FlashRNN's triton_fused keeps a head's R (4·DH·DH) on chip: its head size is a power of 2 up to "
                f"{TRITON_FUSED_MAX_DH} (fp16, sm_90a: DH=128 takes 134 KB of shared memory, DH=256 would take "
                f"524 KB); here DH={DH}")
        Wx = (x @ w_ih.t() + b_ih).view(T, B, 4, NH, DH).transpose(0, 1)
        R = w_hh.view(NH, 4, DH, DH).permute(1, 0, 2, 3)
        h, _ = flashrnn(Wx, R, b_hh.view(4, NH, DH), function="lstm", backend=backend,
                        dtype=str(x.dtype).removeprefix("torch."))
        return h[0].reshape(B, T, H).transpose(0, 1)
    return lstm


def _found(tool: str) -> bool:
    """Whether ``tool`` is on PATH or in CUDA_HOME's bin (where torch's extension builder looks for nvcc)."""
    import shutil

    from torch.utils.cpp_extension import CUDA_HOME
    return bool(shutil.which(tool) or (CUDA_HOME and os.path.exists(os.path.join(CUDA_HOME, "bin", tool))))


def version(package: str) -> str | None:
    """The installed version of a peer's distribution, or None."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as v
    try:
        return v(package)
    except PackageNotFoundError:
        return None
