"""``pytest --benchmark`` (or ``--benchmark-only``): the first two quick shapes of every workload, measured
through ``bench.measure`` (via bench.sweep.point) exactly as ``seqbench run`` measures them (do_bench on a GPU, torch.utils.benchmark
on a CPU; the median with p20/p80, the spread rule, the accuracy check against the baseline).

Each point's row goes to a run folder in seqbench's schema (conftest.py), so ``seqbench report`` and
``seqbench compare`` read it; pytest-benchmark's table and JSON get the same repetitions (its timer replays
them), grouped by workload, shape and mode so its relative columns compare the implementations of one point.
On a CPU the GPU-only implementations are skipped with the reason.  ``SEQBENCH_BENCHMARK=representative``
keeps a handful of points (the first quick shape of each workload, forward, every impl), which the GPU job
runs so its JSON gets written.
"""
import dataclasses
import os

import pytest
import torch

from bench.workload import shape_label
from bench.workloads import WORKLOADS

GPU = torch.cuda.is_available()
REPRESENTATIVE = os.environ.get("SEQBENCH_BENCHMARK") == "representative"
POINTS = [pytest.param(w, impl, s, mode, id=f"{w.name}-{impl.name}-{shape_label(w, s).replace(' ', '_')}-{mode}")
          for w in WORKLOADS.values() for s in w.default_shapes(True, GPU)[:1 if REPRESENTATIVE else 2]
          for impl in w.impls.values() for mode in (("fwd",) if REPRESENTATIVE else ("fwd", "fwd+bwd"))]


class ReplayClock:
    """A pytest-benchmark timer that replays repetitions measured elsewhere: each (start, end) pair of calls
    is one repetition's duration, so its statistics are bench.measure's."""

    def __init__(self):
        self.now, self.queue, self.started = 0.0, [], False

    def load(self, seconds: list[float]) -> None:
        self.queue, self.started = list(seconds), False

    def __call__(self) -> float:
        if self.started and self.queue:
            self.now += self.queue.pop(0)
        self.started = not self.started
        return self.now

    def __repr__(self):
        return "bench.measure (replayed)"


CLOCK = ReplayClock()


@pytest.mark.benchmark_gpu
@pytest.mark.benchmark(timer=CLOCK)
@pytest.mark.parametrize("workload, impl, shape, mode", POINTS)
def test_benchmark(benchmark, run_folder, workload, impl, shape, mode):
    row, times = run_folder.measure(workload, impl, shape, mode)
    benchmark.group = f"{workload.name} {row.shape} {mode}"
    benchmark.extra_info.update({k: v for k, v in dataclasses.asdict(row).items() if v not in (None, "")})
    if row.status in ("skipped", "unsupported"):
        pytest.skip(row.reason)
    assert row.status in ("ok", "unstable"), f"{row.status}: {row.reason}"
    assert row.accurate is not False, f"output differs from {row.baseline}: {row.max_abs_err} > {row.tolerance}"
    per_call = [t / 1e3 for t in times]
    CLOCK.load(per_call)
    benchmark.pedantic(lambda: None, rounds=len(per_call), iterations=1)
