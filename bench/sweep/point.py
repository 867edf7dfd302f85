"""One point's measurement: its timing (pooled over windows on a CPU), throughput, telemetry, roofline and
accuracy against the baseline, or a failure status with its reason: one row of results.csv."""
from __future__ import annotations

import dataclasses
import os
import statistics
import time

import torch

from bench import schema
from bench.measure import roofline, timing
from bench.peers import PeerMissing
from bench.workload import Point, shape_label
from kernels._common import deferred_checks, forget_tuned_configs, tuned_configs


def _kernels_ran(fn) -> str:
    """Names of the GPU kernels one call launches, longest first (which SDPA/cuDNN path really ran).

    Runs after the point's timing and telemetry, and asks Kineto to detach CUPTI when it stops, so the
    profiler's callbacks do not slow the launches of every later point."""
    os.environ["TEARDOWN_CUPTI"] = "1"
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    kernels = [e for e in prof.key_averages() if str(getattr(e, "device_type", "")).endswith("CUDA")]
    kernels.sort(key=lambda e: getattr(e, "device_time_total", 0), reverse=True)
    return "; ".join(e.key[:80] for e in kernels[:3])


def measure_point(workload, impl, shape, mode, dtype, device, sampler, cuda_graph=False, point=None,
                  compile_budget_s=None) -> schema.Row:
    """One row: timing, derived throughput, telemetry and accuracy against the baseline, or a failure
    status with its reason.  ``point`` carries the inputs and baseline output shared with the other impls.
    A timing whose spread is over the device's limit has status ``unstable`` (``sweep`` measures it again)."""
    return measure_timed(workload, impl, shape, mode, dtype, device, sampler, cuda_graph, point, compile_budget_s)[0]


def measure_timed(workload, impl, shape, mode, dtype, device, sampler, cuda_graph=False, point=None,
                  compile_budget_s=None):
    """(``measure_point``'s row, the Timed point to pool more windows into, or None when it was not timed)."""
    point = point or Point(workload, shape, mode, dtype, device)
    timed: dict = {}
    t0 = time.perf_counter()
    fields = _measure(workload, impl, shape, mode, dtype, device, sampler, cuda_graph, point, timed, compile_budget_s)
    row = schema.Row(**fields, point_s=time.perf_counter() - t0)
    return row, timed.get("point")


def measure_point_times(workload, impl, shape, mode, dtype, device, sampler, cuda_graph=False, point=None,
                        windows: int = 1):
    """``measure_point``'s row and every timed repetition's time (ms; [] when not timed), for pytest-benchmark.
    ``windows`` > 1 (a CPU) times the point in that many windows, one after another, pooled."""
    row, timed = measure_timed(workload, impl, shape, mode, dtype, device, sampler, cuda_graph, point)
    for _ in range(windows - 1 if timed else 0):
        row = timed.window(row)
    return row, timed.times if timed else []


@dataclasses.dataclass
class Timed:
    """A point being timed: its callable and counts, kept so that later timing windows (a CPU sweep's passes,
    spread over the run) pool their repetitions with the first one's."""
    fn: object
    workload: object           # counted for the impl (its group's FLOPs and bytes)
    shape: dict
    mode: str
    dtype: torch.dtype
    device: torch.device
    spec: object               # the roofline GPU, or None
    times: list                # every repetition's time (ms), all windows (pytest-benchmark's)
    calls_per_rep: int
    timer: str
    per_window: list = dataclasses.field(default_factory=list)      # the repetitions of each window
    probes: list = dataclasses.field(default_factory=list)          # each CPU window's host probe (ms)

    def __post_init__(self):
        self.per_window = self.per_window or [list(self.times)]

    @property
    def windows(self) -> int:
        return len(self.per_window)

    def window(self, row: schema.Row) -> schema.Row:
        """One more CPU timing window, pooled with the earlier ones: the row's timing, throughput and status
        recomputed over every window so far, each weighted equally (load_start stays the first window's,
        load_end is this one's)."""
        t = timing.time_cpu(self.fn)
        self.times += t["times_ms"]
        self.per_window.append(t["times_ms"])
        self.probes += [t["probe_ms"]] if "probe_ms" in t else []
        fields = dataclasses.asdict(row) | self.pooled() | {"load_end": timing.load_average()}
        return schema.Row(**fields | derived(fields, self))

    def pooled(self) -> dict:
        return timing.summarize(self.pooled_times(),
                                f"{self.timer}; {self.windows} windows spread over the run, pooled with equal "
                                f"weights", self.calls_per_rep, reps=len(self.times)) | self.host()

    def host(self) -> dict:
        """The row's host_probe_ms (none on a GPU): the probe that the median time is so many of, with each
        window's times divided by its own window's probe first, so the host's speed in each window is taken out
        (``seqbench compare`` divides by it: on the CI VM, with one thread, three processes timing 20 points
        then agreed within 15% on all 20, raw on 7-14)."""
        if not self.probes or len(self.probes) != len(self.per_window):
            return {"host_probe_ms": None}
        per_probe = timing.equal_weights([[t / p for t in w] for w, p in zip(self.per_window, self.probes)])
        return {"host_probe_ms": statistics.median(self.pooled_times()) / statistics.median(per_probe)}

    def pooled_times(self) -> list:
        return timing.equal_weights(self.per_window)


# A compiled point's reason when its compile ran past the budget; the sweep then skips that implementation's
# longer lengths (compile time grows with T).
BUDGET_REASON = "compile budget"


def over_budget(row) -> bool:
    return row.status == "timeout" and (row.reason or "").startswith(BUDGET_REASON)


def skipped(workload, impl, shape, mode, dtype, device, reason: str) -> schema.Row:
    """The row of a point not measured, with why."""
    return schema.Row(**_identity(workload, impl, shape, mode, dtype, device), status="skipped", reason=reason)


def _identity(workload, impl, shape, mode, dtype, device) -> dict:
    """The fields that say which point a row is."""
    return {"workload": workload.name, "impl": impl.name, "mode": mode, "dtype": str(dtype).removeprefix("torch."),
            "shape": shape_label(workload, shape), "seq_len": shape[workload.seq_key], "batch": shape["B"],
            "tokens": workload.tokens(shape), "device": str(device)}


def _measure(workload, impl, shape, mode, dtype, device, sampler, cuda_graph, point, timed: dict,
             compile_budget_s=None) -> dict:
    """A row's fields; ``timed["point"]`` is then the Timed point (when it was timed), for more windows."""
    row = _identity(workload, impl, shape, mode, dtype, device)
    workload = workload.counted(impl)
    gpu = device.type == "cuda"
    spec = roofline.gpu_spec(torch.cuda.get_device_name(device)) if gpu else roofline.GPUS[roofline.MODEL_GPU]
    if spec is not None:
        row["roofline_gpu"] = spec.name + ("" if gpu else " (model: no GPU here)")
        row.update(roofline.floor_ms(workload, shape, mode, dtype, spec))
    if impl.needs_cuda and not gpu:
        return row | {"status": "skipped", "reason": "needs a CUDA GPU"}
    if impl.triton and not gpu:
        return row | {"status": "skipped", "reason": "Triton kernel: timed on a GPU only (checked on the CPU through the interpreter)"}
    try:
        if gpu:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        forget_tuned_configs()
        t0 = time.perf_counter()
        with timing.budget((compile_budget_s or timing.compile_budget(device)) if impl.compiles else None):
            fn = point.runner(impl)            # a fwd+bwd runner calls the forward once (compiles it)
            fn()                               # compiles and autotunes
            if gpu:
                torch.cuda.synchronize()
        row["compile_s"] = time.perf_counter() - t0
        row["config"] = tuned_configs() or None
        if gpu:                                # the peak of one call, before do_bench allocates its L2 flush buffer
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            fn()
            torch.cuda.synchronize()
            row["peak_mem_mib"] = torch.cuda.max_memory_allocated() / 2**20
        if gpu and cuda_graph:
            fn = timing.capture_graph(fn).replay      # timed, and watched by NVML, as graph replays
        row.update(threads=torch.get_num_threads(), load_start=timing.load_average())
        t = timing.time_gpu(fn, cuda_graph) if gpu else timing.time_cpu(fn)
        row["load_end"] = timing.load_average()
        timed["point"] = Timed(fn, workload, shape, mode, dtype, device, spec, t.pop("times_ms"), t["calls_per_rep"],
                               t["timer"], probes=[t.pop("probe_ms")] if "probe_ms" in t else [])
        row.update(t | timed["point"].host())
        if gpu:
            row.update(sampler.measure(fn, workload.tokens(shape)))
            deferred_checks()          # errors the kernels flagged on the device, read outside the timed region
            row["kernels_ran"] = _kernels_ran(fn) if not cuda_graph else "not profiled with --cuda-graph"
        else:
            row["nvml_reason"] = "no GPU on this machine"
        row.update(point.accuracy(impl))
    except PeerMissing as exc:
        return row | {"status": "skipped", "reason": str(exc)}
    except timing.BudgetExceeded as exc:
        return row | {"status": "timeout", "reason": f"{BUDGET_REASON}: setup and first call {exc}"}
    except torch.cuda.OutOfMemoryError as exc:
        return row | {"status": "oom", "reason": str(exc).splitlines()[0][:300]}
    except (RuntimeError, ValueError, TypeError, NotImplementedError) as exc:
        msg = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        status = ("unsupported" if "No available kernel" in str(exc)
                  or isinstance(exc, (ValueError, TypeError, NotImplementedError)) else "error")
        return row | {"status": status, "reason": f"{type(exc).__name__}: {msg}"}
    except Exception as exc:  # a Triton compile error or anything else: recorded, the sweep goes on
        return row | {"status": "error", "reason": schema.describe(exc)}
    return row | derived(row, timed["point"])


def derived(row: dict, t: Timed) -> dict:
    """What follows from a row's median time: tokens/s, TFLOP/s, GB/s, % of peak, the roofline ratio, and the
    status by the spread rule (``unstable`` past the device's limit; ``sweep`` measures it again)."""
    ms, gpu = row["ms"], t.device.type == "cuda"
    limit = timing.spread_limit(t.device)
    status, reason = "ok", ""
    if timing.is_unstable(row, t.device):
        status, reason = "unstable", f"spread {row['spread']:.2f} over the {t.device.type.upper()} limit {limit:g}"
    out = dict(status=status, reason=reason, tokens_per_s=t.workload.tokens(t.shape) / (ms / 1e3),
               tflops=t.workload.flops(t.shape, t.mode) / (ms / 1e3) / 1e12,
               gbps=t.workload.min_bytes(t.shape, t.dtype, t.mode) / (ms / 1e3) / 1e9)
    if t.spec is not None:
        out["measured_over_floor"] = ms / row["floor_ms"]
        if gpu:
            out["pct_peak_flops"] = 100 * out["tflops"] / roofline.peak_tflops(t.spec, t.dtype)
            out["pct_peak_bw"] = 100 * out["gbps"] / 1e3 / t.spec.hbm_tbs
    return out
