"""``pytest --benchmark``: the first two quick shapes of every workload through pytest-benchmark.

Pedantic mode, the device synchronised inside the timed call and L2 flushed in setup on a GPU;
tokens/s, TFLOP/s, accuracy against the baseline and (on a GPU) NVML utilisation go to
``extra_info``.  Without ``--benchmark`` these are skipped; on a CPU the GPU-only implementations are
skipped with the reason.  ``SEQBENCH_BENCHMARK=representative`` keeps a handful of points (the first
quick shape of each workload, forward, every impl), which the GPU job runs so its JSON gets written.
"""
import os

import pytest
import torch

from bench import measure
from bench.workload import Point, shape_label
from bench.workloads import WORKLOADS

GPU = torch.cuda.is_available()
DTYPE = torch.bfloat16 if GPU else torch.float32
REPRESENTATIVE = os.environ.get("SEQBENCH_BENCHMARK") == "representative"
POINTS = [pytest.param(w, impl, s, mode, id=f"{w.name}-{impl.name}-{shape_label(w, s).replace(' ', '_')}-{mode}")
          for w in WORKLOADS.values() for s in w.default_shapes(True, GPU)[:1 if REPRESENTATIVE else 2]
          for impl in w.impls.values() for mode in (("fwd",) if REPRESENTATIVE else ("fwd", "fwd+bwd"))]

_FLUSH = {}


def _flush_l2():
    buf = _FLUSH.setdefault("buf", torch.empty(256 * 2**20, dtype=torch.int8, device="cuda"))
    buf.zero_()
    torch.cuda.synchronize()
    return (), {}


@pytest.mark.benchmark_gpu
@pytest.mark.parametrize("workload, impl, shape, mode", POINTS)
def test_benchmark(benchmark, workload, impl, shape, mode):
    if (impl.triton or impl.needs_cuda) and not GPU:
        pytest.skip("needs a CUDA GPU (Triton kernels run only through the interpreter here, far too slow to time)")
    device = torch.device("cuda" if GPU else "cpu")
    point = Point(workload, shape, mode, DTYPE, device)
    try:
        fn = point.runner(impl)
    except RuntimeError as exc:
        pytest.skip(f"{impl.name} cannot run this shape here: {str(exc).splitlines()[0]}")

    def target():
        fn()
        if GPU:
            torch.cuda.synchronize()

    fn()
    benchmark.pedantic(target, setup=_flush_l2 if GPU else None, rounds=20 if GPU else 5, warmup_rounds=3)
    median_s = benchmark.stats.stats.median
    tokens = workload.tokens(shape)
    counts = workload.counted(impl)          # a group's own FLOPs and bytes (the recurrence workload)
    benchmark.extra_info.update(
        shape=shape_label(workload, shape), mode=mode, dtype=str(DTYPE), tokens=tokens,
        tokens_per_s=tokens / median_s, tflops=counts.flops(shape, mode) / median_s / 1e12,
        gbps=counts.min_bytes(shape, DTYPE, mode) / median_s / 1e9, **point.accuracy(impl))
    if GPU:
        sampler = measure.NVMLSampler()
        benchmark.extra_info.update({k: v for k, v in sampler.measure(fn, tokens).items() if v is not None})
