"""GPU telemetry through NVML: a sampler that watches a sustained window (>= 1 s) of back-to-back runs for
utilisation, SM clock, power, energy, throttle reasons and, on Hopper, GPM's SM activity, occupancy and
tensor-core activity.  Without NVML (or on a CPU) every field is empty, with the reason."""
from __future__ import annotations

import os
import statistics
import threading
import time

import torch

from bench.schema import NVML_FIELDS


# Utilisation samples in the first SETTLE_S of an NVML window are dropped (see NVMLSampler.measure).
SETTLE_S = 0.5
CHECK_S = 0.05     # measure() synchronizes about this often, to see the window's end


def pci_bus_id(device_index: int) -> str | None:
    """The PCI bus id NVML names the GPU torch calls ``cuda:<device_index>`` by ("00000000:1A:00.0"), or None
    where torch does not report it."""
    try:
        p = torch.cuda.get_device_properties(device_index)
        return f"{p.pci_domain_id:08X}:{p.pci_bus_id:02X}:{p.pci_device_id:02X}.0"
    except (AttributeError, RuntimeError, AssertionError):
        return None


def nvml_handle(nvml, device_index: int):
    """(NVML handle, how it was matched) of the GPU torch uses as ``cuda:<device_index>``.  NVML numbers every
    GPU of the host while torch numbers only CUDA_VISIBLE_DEVICES', so the index is the last resort: the PCI bus
    id first, then the UUID (the device is the same physical GPU by either)."""
    bus = pci_bus_id(device_index)
    if bus is not None:
        try:
            return nvml.nvmlDeviceGetHandleByPciBusId_v2(bus), f"PCI bus id {bus}"
        except Exception:  # an older pynvml, or a bus id NVML spells otherwise: try the UUID
            pass
    try:
        uuid = str(torch.cuda.get_device_properties(device_index).uuid)
        uuid = uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
        return nvml.nvmlDeviceGetHandleByUUID(uuid), f"UUID {uuid}"
    except Exception:
        pass
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    index = int(visible[device_index]) if device_index < len(visible) and visible[device_index].isdigit() \
        else device_index
    return nvml.nvmlDeviceGetHandleByIndex(index), f"NVML index {index} (no PCI bus id or UUID from torch)"


class NVMLSampler:
    """Samples one GPU through NVML in a background thread; ``reason`` says why a field is empty."""

    def __init__(self, device_index: int = 0, interval_s: float = 0.02):
        self.interval, self.reason, self.handle, self.nvml, self.gpm = interval_s, "", None, None, False
        self.matched = ""
        try:
            import pynvml
            pynvml.nvmlInit()
            self.nvml = pynvml
            self.handle, self.matched = nvml_handle(pynvml, device_index)
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
                          ("gpm_supported", lambda: self.gpm), ("device_matched", lambda: self.matched)):
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
        settled, batch = None, 1
        while True:
            for _ in range(batch):      # calls between synchronizes: about CHECK_S of work, one for a long call
                fn()
            calls += batch
            torch.cuda.synchronize()
            now = time.perf_counter()
            if calls == 1:              # a fixed 8 made a 0.45 s call run 16 times (7 s) for a 1.5 s window
                batch = max(1, min(64, int(CHECK_S / max(now - t0, 1e-6))))
            if settled is None and now - t0 >= settle_s:
                settled = now
                w.settle()
            if settled is not None and now - settled >= min_seconds:
                break
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
