"""Roofline arithmetic against hand-computed values (H100 SXM: 989 TFLOP/s bf16/fp16, 3.35 TB/s)."""
import pytest
import torch

from bench.measure import roofline
from bench.workloads import WORKLOADS

H100 = roofline.GPUS["H100 SXM"]


def test_attention_is_compute_bound():
    s = dict(B=8, H=16, N=8192, D=128)
    f = roofline.floor_ms(WORKLOADS["attention"], s, "fwd", torch.bfloat16, H100)
    # 4·8·16·8192²·128 = 4.398e12 FLOP / 989e12 = 4.447 ms; bytes 268 MB / 3.35 TB/s = 0.080 ms
    assert f["floor_bound"] == "compute"
    assert f["floor_ms"] == pytest.approx(4.3980465e12 / 989e12 * 1e3, rel=1e-6)
    assert f["peak_tokens_per_s"] == pytest.approx(8 * 8192 / (f["floor_ms"] / 1e3))


def test_lstm_small_hidden_is_compute_bound():
    s = dict(B=16, T=1024, H=1024)
    f = roofline.floor_ms(WORKLOADS["lstm_layer"], s, "fwd", torch.float16, H100)
    # 1024 steps × 2 matmuls × 2·16·4096·1024 = 2.749e11 FLOP -> 0.278 ms; W_hh (8 MiB) fits on chip, so one
    # dependent step is 2·16·4096·1024 / 989e12 = 0.136 us and the sequential floor (0.139 ms) is shorter.
    assert f["floor_bound"] == "compute"
    assert f["floor_ms"] == pytest.approx(2.74877907e11 / 989e12 * 1e3, rel=1e-6)
    seq = roofline.sequential_floor_ms(WORKLOADS["lstm_layer"], s, "fwd", torch.float16, H100)
    assert seq == pytest.approx(1024 * 134217728 / 989e12 * 1e3, rel=1e-9)


def test_lstm_big_hidden_is_sequential():
    s = dict(B=16, T=16, H=4096)
    f = roofline.floor_ms(WORKLOADS["lstm_layer"], s, "fwd", torch.float16, H100)
    # W_hh = 16384·4096·2 B = 134 MB > 132 SMs × 484 KiB on chip: every step re-reads it from HBM,
    # 134217728 B / 3.35e12 B/s = 40.06 us per step, × 16 steps.
    assert f["floor_bound"] == "sequential"
    assert f["floor_ms"] == pytest.approx(16 * 134217728 / 3.35e12 * 1e3, rel=1e-9)
    assert roofline.sequential_floor_ms(WORKLOADS["lstm_layer"], s, "fwd+bwd", torch.float16, H100) == pytest.approx(2 * f["floor_ms"])


def test_non_lstm_has_no_sequential_floor():
    assert roofline.sequential_floor_ms(WORKLOADS["attention"], dict(B=1, T=1, H=1), "fwd", torch.float16, H100) is None


@pytest.mark.parametrize("name, expected", [("NVIDIA H100 80GB HBM3", "H100 SXM"), ("NVIDIA H100 PCIe", "H100 PCIe"),
                                            ("NVIDIA H200", "H200"), ("NVIDIA A100-SXM4-80GB", "A100 80GB SXM"),
                                            ("NVIDIA GeForce RTX 4090", None)])
def test_gpu_lookup(name, expected):
    spec = roofline.gpu_spec(name)
    assert (spec.name if spec else None) == expected


def test_fp32_peaks():
    assert roofline.peak_tflops(H100, torch.float32) == 67
    assert roofline.peak_tflops(H100, torch.float32, tf32=True) == 495
    assert roofline.peak_tflops(roofline.GPUS["A100 80GB SXM"], torch.bfloat16) == 312


def test_multi_head_sequential_floor():
    s = dict(B=16, T=1024, NH=12, DH=64)
    # 12 heads × 4·64·64 recurrent weights: 2·16·196608 FLOPs per step at 989e12
    assert roofline.sequential_floor_ms(WORKLOADS["lstm_heads"], s, "fwd", torch.float16, H100) == pytest.approx(
        1024 * 2 * 16 * 196608 / 989e12 * 1e3, rel=1e-9)
