"""The libraries a user would pick instead of this project's kernels, where torch does not ship them:
flash-linear-attention's HGRN recurrence kernels (``pip install -e ".[peers]"``).  torch.compile and
FlexAttention come with torch (``bench.workload.compiled_setup``, ``reference.attention.flex``).

Each adapter maps our problem onto the library's API.  A library that is not installed raises
``PeerMissing`` at setup, which a sweep records as a ``skipped`` row naming the install command.
"""
from __future__ import annotations

import importlib

import torch

INSTALL = 'pip install -e ".[peers]"'


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


def version(package: str) -> str | None:
    """The installed version of a peer's distribution, or None."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as v
    try:
        return v(package)
    except PackageNotFoundError:
        return None
