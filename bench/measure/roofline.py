"""Roofline model: how fast a workload could possibly run on a given GPU.

floor = max(FLOPs / peak FLOP/s, minimum bytes / HBM bandwidth), with FLOPs and bytes from the
workload declarations and dense datasheet peaks (docs/sources.md).  A recurrence (a
workload with ``recurrent_params``) also has a sequential floor: its T steps depend on each other,
and one step can take no less than its recurrent matmul (2·B·4H·H FLOPs for an LSTM) at peak,
plus, when W_hh does not fit on chip (registers + shared memory of all SMs), a re-read of W_hh
from HBM.  A CPU run is modelled on the H100 SXM.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.workload import Workload, dtype_bytes


@dataclass(frozen=True)
class GPUSpec:
    name: str
    tflops: dict          # dense peak by math: bf16/fp16 tensor cores, tf32 tensor cores, fp32 CUDA cores
    hbm_tbs: float
    sms: int
    l2_mb: int
    onchip_kib_per_sm: int = 256 + 228   # register file + shared memory (Hopper); Ampere set below


GPUS = {
    "H100 SXM": GPUSpec("H100 SXM", {"bf16": 989, "fp16": 989, "tf32": 495, "fp32": 67}, 3.35, 132, 50),
    "H100 PCIe": GPUSpec("H100 PCIe", {"bf16": 756, "fp16": 756, "tf32": 378, "fp32": 51}, 2.0, 114, 50),
    "H200": GPUSpec("H200", {"bf16": 989, "fp16": 989, "tf32": 495, "fp32": 67}, 4.8, 132, 50),
    "A100 80GB SXM": GPUSpec("A100 80GB SXM", {"bf16": 312, "fp16": 312, "tf32": 156, "fp32": 19.5}, 2.04, 108, 40,
                             256 + 164),
}
MODEL_GPU = "H100 SXM"


def gpu_spec(device_name: str) -> GPUSpec | None:
    """The spec for a CUDA device name ('NVIDIA H100 80GB HBM3' -> H100 SXM); None if unknown."""
    n = device_name.upper()
    if "H200" in n:
        return GPUS["H200"]
    if "H100" in n:
        return GPUS["H100 PCIe"] if "PCIE" in n else GPUS["H100 SXM"]
    if "A100" in n:
        return GPUS["A100 80GB SXM"]
    return None


def peak_tflops(spec: GPUSpec, dtype: torch.dtype, tf32: bool = False) -> float:
    if dtype == torch.float32:
        return spec.tflops["tf32" if tf32 else "fp32"]
    return spec.tflops["bf16" if dtype == torch.bfloat16 else "fp16"]


def floor_ms(w: Workload, shape: dict, mode: str, dtype: torch.dtype, spec: GPUSpec) -> dict:
    """Roofline floor (ms), its bound, and the peak tokens/s; for LSTMs the sequential floor when longer."""
    compute = w.flops(shape, mode) / (peak_tflops(spec, dtype) * 1e12) * 1e3
    memory = w.min_bytes(shape, dtype, mode) / (spec.hbm_tbs * 1e12) * 1e3
    out = {"floor_ms": max(compute, memory), "floor_bound": "compute" if compute >= memory else "memory"}
    seq = sequential_floor_ms(w, shape, mode, dtype, spec)
    if seq is not None and seq > out["floor_ms"]:
        out.update(floor_ms=seq, floor_bound="sequential")
    out["peak_tokens_per_s"] = w.tokens(shape) / (out["floor_ms"] / 1e3)
    return out


def sequential_floor_ms(w: Workload, shape: dict, mode: str, dtype: torch.dtype, spec: GPUSpec):
    """T × the least time of one dependent step, for a workload that declares ``recurrent_params``; else None."""
    if w.recurrent_params is None:
        return None
    B, T = shape["B"], shape[w.seq_key]
    recurrent = w.recurrent_params(shape)
    step = 2 * B * recurrent / (peak_tflops(spec, dtype) * 1e12)
    w_hh = recurrent * dtype_bytes(dtype)
    if w_hh > spec.sms * spec.onchip_kib_per_sm * 1024:
        step = max(step, w_hh / (spec.hbm_tbs * 1e12))
    steps = T * (2 if mode == "fwd+bwd" else 1)   # the backward recurrence is sequential too
    return steps * step * 1e3
