"""The run folder that ``pytest --benchmark`` writes: results.csv, run.json, REPORT.md and the plots, in the
schema ``seqbench run`` writes (``SEQBENCH_BENCHMARK_OUT``, default runs/<date>-<device>-pytest)."""
import os
import time

import pytest
import torch

from bench import schema
from bench.measure import nvml, timing
from bench.sweep.point import measure_point_times
from bench.sweep.run import run_meta, settle, stability
from bench.workload import MODES, Point
from bench.workloads import WORKLOADS


class RunFolder:
    """Measures points as ``seqbench run`` does (bench.sweep.point.measure_point_times: the same timer, statistic and
    accuracy check), sharing inputs between a shape's impls, and writes each row as it finishes.  A row pools
    its CPU windows with equal weights; pytest-benchmark's own table gets every repetition as timed."""

    def __init__(self, out: str, device: torch.device, dtype: torch.dtype):
        self.out, self.device, self.dtype, self.point, self.rows = out, device, dtype, None, []
        os.makedirs(out, exist_ok=True)
        self.sampler = nvml.NVMLSampler(device.index or 0) if device.type == "cuda" else None
        self.meta = run_meta(device, dtype, True, MODES, WORKLOADS.values(), self.sampler) | {
            "source": "pytest --benchmark (tests/benchmarks)"}
        schema.write_json(os.path.join(out, "run.json"), self.meta)
        self.writer = schema.RowWriter(os.path.join(out, "results.csv"))

    def measure(self, w, impl, shape, mode):
        """(row, repetition times in ms): on a CPU in CPU_PASSES windows one after another, pooled; an unstable
        point is measured once more at once (bench.sweep.run.settle)."""
        if self.point is None or (self.point.workload, self.point.shape, self.point.mode) != (w, shape, mode):
            self.point = Point(w, shape, mode, self.dtype, self.device)
        windows = timing.CPU_PASSES if self.device.type == "cpu" else 1
        row, times = measure_point_times(w, impl, shape, mode, self.dtype, self.device, self.sampler, point=self.point,
                                         windows=windows)
        if row.status == "unstable":
            again, again_times = measure_point_times(w, impl, shape, mode, self.dtype, self.device, self.sampler,
                                                     point=self.point, windows=windows)
            kept = settle(row, again, self.device)
            row, times = kept, (again_times if kept is again else times)
        self.rows.append(row)
        self.writer.write(row)
        return row, times

    def close(self):
        from bench.report.report import write_report
        self.writer.close()
        self.meta.update(finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), stability=stability(self.rows, self.device))
        schema.write_json(os.path.join(self.out, "run.json"), self.meta)
        if self.rows:
            write_report(self.out)


@pytest.fixture(scope="session")
def run_folder():
    from bench.measure.env import device_slug
    gpu = torch.cuda.is_available()
    out = os.environ.get("SEQBENCH_BENCHMARK_OUT") or os.path.join(
        "runs", f"{time.strftime('%Y-%m-%d')}-{device_slug()}-pytest")
    folder = RunFolder(out, torch.device("cuda" if gpu else "cpu"), torch.bfloat16 if gpu else torch.float32)
    yield folder
    folder.close()
    print(f"\nseqbench run folder: {out} (results.csv, run.json, REPORT.md)")
