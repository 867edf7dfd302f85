"""Timing and GPU telemetry.

On a GPU: ``triton.testing.do_bench`` (CUDA events, L2 flushed before every repetition, quantiles)
or ``do_bench_cudagraph``; then an NVML sampler watches a sustained window (>= 1 s) of back-to-back
runs for utilisation, SM clock, power, energy, throttle reasons and, on Hopper, GPM's SM activity,
occupancy and tensor-core activity.  On a CPU: a host timer, and every NVML field is empty with
the reason.
"""
from __future__ import annotations

import statistics
import threading
import time

import torch

from bench.schema import NVML_FIELDS

# do_bench repeats a point at least MIN_REPS times (see repetition_budget_ms).
MIN_REPS = 20
# Utilisation samples in the first SETTLE_S of an NVML window are dropped (see NVMLSampler.measure).
SETTLE_S = 0.5


def summarize(times_ms: list[float], timer: str) -> dict:
    """Median, p20 and p80 (ms) of the repetitions, and how many there were."""
    q = statistics.quantiles(times_ms, n=10, method="inclusive") if len(times_ms) > 1 else [times_ms[0]] * 9
    return {"ms": statistics.median(times_ms), "ms_p20": q[1], "ms_p80": q[7], "reps": len(times_ms), "timer": timer}


def time_cpu(fn, warmup_s: float = 0.2, reps: int = 10, max_seconds: float = 5.0) -> dict:
    """Host-timer median and p20/p80 (ms) after >= 3 warm-up calls and warmup_s; stops early past max_seconds."""
    t0, n = time.perf_counter(), 0
    while n < 3 or (time.perf_counter() - t0 < warmup_s and n < 50):
        fn()
        n += 1
    times, start = [], time.perf_counter()
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
        if time.perf_counter() - start > max_seconds and len(times) >= 3:
            break
    return summarize(times, "host")


def estimate_ms(fn, calls: int = 3) -> float:
    """Device time of one call, from events around a few calls (after the caller's warm-up)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(calls):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / calls


def repetition_budget_ms(one_call_ms: float, min_reps: int = MIN_REPS, floor_ms: float = 100.0,
                         cap_ms: float = 10_000.0) -> float:
    """How long do_bench should repeat: at least ``min_reps`` calls (a 100 ms budget takes a single sample
    of a 100 ms call, so p20 = p80 = median), at least ``floor_ms``, and no more than ``cap_ms`` unless
    that leaves fewer than three calls."""
    return min(max(floor_ms, min_reps * one_call_ms), max(cap_ms, 3 * one_call_ms))


def time_gpu(fn, cuda_graph: bool = False) -> dict:
    """Device-event timing through triton.testing (L2 flushed between repetitions unless graphs): every
    repetition's time comes back, so the quantiles and the repetition count are ours."""
    import triton.testing as tt
    rep = repetition_budget_ms(estimate_ms(fn))
    if cuda_graph:
        stream = torch.cuda.Stream()
        with torch.cuda.stream(stream):
            times = tt.do_bench_cudagraph(fn, rep=rep, return_mode="all")
        return summarize(list(times), "cuda-graph (no L2 flush)")
    times = tt.do_bench(fn, warmup=25, rep=rep, return_mode="all")
    return summarize(list(times), "cuda-events, L2 flushed")


class NVMLSampler:
    """Samples one GPU through NVML in a background thread; ``reason`` says why a field is empty."""

    def __init__(self, device_index: int = 0, interval_s: float = 0.02):
        self.interval, self.reason, self.handle, self.nvml, self.gpm = interval_s, "", None, None, False
        try:
            import pynvml
            pynvml.nvmlInit()
            self.nvml = pynvml
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
        except Exception as exc:  # missing library, no driver, refused
            self.reason = f"NVML unavailable: {type(exc).__name__}: {exc}"
            return
        try:
            self.gpm = bool(pynvml.nvmlGpmQueryDeviceSupport(self.handle).isSupportedDevice)
        except Exception:
            self.gpm = False

    @property
    def ok(self) -> bool:
        return self.handle is not None

    def static_info(self) -> dict:
        if not self.ok:
            return {"nvml": self.reason}
        n, h = self.nvml, self.handle
        info = {}
        for key, call in (("driver", lambda: n.nvmlSystemGetDriverVersion()),
                          ("max_sm_clock_mhz", lambda: n.nvmlDeviceGetMaxClockInfo(h, n.NVML_CLOCK_SM)),
                          ("max_mem_clock_mhz", lambda: n.nvmlDeviceGetMaxClockInfo(h, n.NVML_CLOCK_MEM)),
                          ("power_limit_w", lambda: n.nvmlDeviceGetEnforcedPowerLimit(h) / 1e3),
                          ("gpm_supported", lambda: self.gpm)):
            try:
                info[key] = call()
            except Exception as exc:
                info[key] = f"unavailable: {exc}"
        return info

    def window(self) -> "Window":
        """Start watching: polling, the energy counter and GPM begin now (``Window.finish`` reads them)."""
        return Window(self)

    def measure(self, fn, tokens_per_call: int, min_seconds: float = 1.0, settle_s: float = SETTLE_S) -> dict:
        """Run fn back to back for settle_s + min_seconds while sampling; NVML_FIELDS and the window.

        Utilisation and clock samples from the first ``settle_s`` are dropped: NVML's utilisation looks
        back one sample period, which then still covers the idle time before the window."""
        if not self.ok:
            return {k: None for k in NVML_FIELDS} | {"nvml_reason": self.reason}
        w = Window(self, gpm=False)
        calls, t0 = 0, time.perf_counter()
        settled = None
        while True:
            fn()
            calls += 1
            if calls % 8 == 0:
                torch.cuda.synchronize()
                now = time.perf_counter()
                if settled is None and now - t0 >= settle_s:
                    settled = now
                    w.settle()
                if settled is not None and now - settled >= min_seconds:
                    break
        torch.cuda.synchronize()
        return w.finish(calls * tokens_per_call, min_power_s=min_seconds)

    def _energy_mj(self):
        try:
            return self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
        except Exception:
            return None

    def _throttle_names(self, mask: int) -> str:
        names = [name.removeprefix("nvmlClocksEventReason").removeprefix("nvmlClocksThrottleReason")
                 for name in dir(self.nvml)
                 if name.startswith(("nvmlClocksEventReason", "nvmlClocksThrottleReason")) and not name.endswith("All")
                 and isinstance(getattr(self.nvml, name), int) and getattr(self.nvml, name) and mask & getattr(self.nvml, name)]
        return "|".join(sorted(set(names))) or "none"

    def _gpm_start(self):
        if not self.gpm:
            return None
        try:
            s = self.nvml.nvmlGpmSampleAlloc()
            self.nvml.nvmlGpmSampleGet(self.handle, s)
            return s
        except Exception:
            return None

    def _gpm_finish(self, first, reasons) -> dict:
        out = {}
        if first is None:
            reasons.append("GPM unsupported" if not self.gpm else "GPM sample failed")
            return out
        n = self.nvml
        try:
            second = n.nvmlGpmSampleAlloc()
            n.nvmlGpmSampleGet(self.handle, second)
            ids = {"gpm_sm_util_pct": n.NVML_GPM_METRIC_SM_UTIL, "gpm_sm_occupancy_pct": n.NVML_GPM_METRIC_SM_OCCUPANCY,
                   "gpm_tensor_util_pct": n.NVML_GPM_METRIC_ANY_TENSOR_UTIL,
                   "gpm_dram_bw_util_pct": n.NVML_GPM_METRIC_DRAM_BW_UTIL}
            m = n.c_nvmlGpmMetricsGet_t()
            m.version = n.NVML_GPM_METRICS_GET_VERSION
            m.numMetrics = len(ids)
            m.sample1, m.sample2 = first, second
            for i, metric in enumerate(ids.values()):
                m.metrics[i].metricId = metric
            n.nvmlGpmMetricsGet(m)
            for i, key in enumerate(ids):
                code = m.metrics[i].nvmlReturn
                if code == getattr(n, "NVML_SUCCESS", 0):
                    out[key] = m.metrics[i].value
                else:
                    reasons.append(f"GPM {key} failed (NVML return code {code})")
            n.nvmlGpmSampleFree(second)
        except Exception as exc:
            reasons.append(f"GPM metrics failed: {exc}")
        finally:
            try:
                n.nvmlGpmSampleFree(first)
            except Exception:
                pass
        return out


class Window:
    """An interval of GPU work watched by an NVMLSampler: utilisation and clock sampled in a thread,
    throttle reasons OR-ed over every sample, GPM metrics between ``settle()`` and ``finish()``.

    Power and energy come from the energy counter's difference over the whole window (NVML's power
    reading is a 1 s average, half of it from before the window); a window shorter than ``min_power_s``
    gets none, with the reason."""

    def __init__(self, sampler: NVMLSampler, gpm: bool = True, interval_s: float | None = None):
        self.s, self.samples, self.masks, self.stop = sampler, [], [], threading.Event()
        self.interval = interval_s or sampler.interval
        self.t0 = self.settled = time.perf_counter()
        self.gpm = None
        if not sampler.ok:
            return
        self.e0 = sampler._energy_mj()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        if gpm:
            self.gpm = sampler._gpm_start()

    def _poll(self):
        n, h = self.s.nvml, self.s.handle
        while not self.stop.is_set():
            try:
                u = n.nvmlDeviceGetUtilizationRates(h)
                clock = n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM)
                self.samples.append((time.perf_counter(), u.gpu, u.memory, clock))
            except Exception:
                pass
            try:
                self.masks.append(n.nvmlDeviceGetCurrentClocksEventReasons(h))
            except Exception:
                pass
            self.stop.wait(self.interval)

    def settle(self) -> None:
        """Drop the utilisation samples taken so far and start GPM here."""
        self.settled = time.perf_counter()
        if self.s.ok and self.gpm is None:
            self.gpm = self.s._gpm_start()

    def finish(self, tokens: int, min_power_s: float = 1.0) -> dict:
        """NVML_FIELDS over the window (the caller has synchronised the device), ``nvml_window_s`` and
        ``nvml_reason``; ``tokens`` is the work done in it, for joules per token."""
        row = {k: None for k in NVML_FIELDS}
        if not self.s.ok:
            return row | {"nvml_reason": self.s.reason}
        reasons = []
        row.update(self.s._gpm_finish(self.gpm, reasons))
        self.stop.set()
        self.thread.join()
        e1 = self.s._energy_mj()
        elapsed = time.perf_counter() - self.t0
        kept = [s for s in self.samples if s[0] >= self.settled]
        if kept:
            row["nvml_util_pct"] = statistics.mean(s[1] for s in kept)
            row["nvml_mem_util_pct"] = statistics.mean(s[2] for s in kept)
            row["sm_clock_mhz"] = statistics.mean(s[3] for s in kept)
        else:
            reasons.append("no NVML samples after the settling time")
        if self.e0 is None or e1 is None:
            reasons.append("energy counter unavailable: no power or energy")
        elif elapsed < min_power_s:
            reasons.append(f"window of {elapsed:.2f} s is shorter than {min_power_s:g} s: no power or energy")
        else:
            row["energy_j"] = (e1 - self.e0) / 1e3
            row["power_w"] = row["energy_j"] / elapsed
            row["joules_per_token"] = row["energy_j"] / tokens if tokens else None
        if self.masks:
            acc = 0
            for m in self.masks:
                acc |= m
            row["throttle_reasons"] = self.s._throttle_names(acc)
        else:
            reasons.append("throttle reasons unavailable")
        row["nvml_window_s"] = elapsed
        row["nvml_reason"] = "; ".join(reasons)
        return row
