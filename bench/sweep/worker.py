"""The runners that measure a sweep's points: in this process (sharing a shape's inputs between its
implementations), or in a worker process restarted after a crash, a sticky CUDA error or a hang."""
from __future__ import annotations

import dataclasses
import os
import time

import torch

from bench import schema
from bench.measure import nvml, timing
from bench.sweep import point
from bench.workload import Point
from bench.workloads import WORKLOADS


# An isolated sweep gives up on a point after this long (a deadlocked kernel) and restarts its worker; the GPU
# job sets a shorter one, below its steps' budgets.  An isolated check gets CHECK_TIMEOUT_S.
POINT_TIMEOUT_S = 300.0


class _InProcess:
    """Measures points in this process, sharing inputs and the baseline's output between a shape's impls."""

    def __init__(self, device, dtype, sampler, cuda_graph, compile_budget_s=None):
        self.device, self.dtype, self.sampler, self.cuda_graph, self.point = device, dtype, sampler, cuda_graph, None
        self.compile_budget_s = compile_budget_s

    def measure(self, w, impl, s, mode, keep: bool = False):
        """(row, the Timed point when ``keep`` and it was timed, else None)."""
        if self.point is None or (self.point.workload, self.point.shape, self.point.mode) != (w, s, mode):
            self.point = Point(w, s, mode, self.dtype, self.device)
        row, timed = point.measure_timed(w, impl, s, mode, self.dtype, self.device, self.sampler, self.cuda_graph,
                                         self.point, self.compile_budget_s)
        return row, (timed if keep else None)

    def close(self):
        self.point = None


def _find_workload(name: str, module: str):
    if name in WORKLOADS:
        return WORKLOADS[name]
    import importlib

    from bench.workload import Workload
    mod = importlib.import_module(module)
    return next(v for v in vars(mod).values() if isinstance(v, Workload) and v.name == name)


def sticky_cuda_error(device) -> str:
    """The error a synchronize raises after a kernel fault ('' when the device is healthy or not CUDA)."""
    if device.type != "cuda":
        return ""
    try:
        torch.cuda.synchronize(device)
        torch.empty(1, device=device).add_(1).item()
        return ""
    except Exception as exc:  # the CUDA context is unusable from here on
        return schema.describe(exc, 200)


def _worker(*args) -> None:
    """The worker process: an interruption (Ctrl-C, the GPU job's SIGINT to the process group) ends it quietly;
    the parent says what was kept."""
    try:
        _serve(*args)
    except KeyboardInterrupt:
        os._exit(130)


def _serve(conn, device: str, dtype: str, cuda_graph: bool, spread_limit: dict,
           compile_budget_s: float | None, threads: int) -> None:
    """Worker loop: (workload, module, impl, shape, mode) in, a Row's fields out; exits after a sticky error.
    ``spread_limit`` and ``threads``: the parent's (the run's, not the fresh process's defaults)."""
    timing.SPREAD_LIMIT.update(spread_limit)
    torch.set_num_threads(threads)
    device, dtype = torch.device(device), getattr(torch, dtype)
    runner = _InProcess(device, dtype, nvml.NVMLSampler(device.index or 0) if device.type == "cuda" else None,
                        cuda_graph, compile_budget_s)
    while True:
        msg = conn.recv()
        if msg is None:
            return
        name, module, impl, shape, mode = msg
        w = _find_workload(name, module)
        row, _ = runner.measure(w, w.impls[impl], shape, mode)
        sticky = sticky_cuda_error(device)
        if sticky:
            row.status, row.reason = "error", f"sticky CUDA error after this point ({sticky}); worker restarted"
        conn.send(dataclasses.asdict(row))
        if sticky:
            os._exit(3)


class _Isolated:
    """Sends points to a worker process and restarts it when it dies, faults or hangs."""

    def __init__(self, device, dtype, cuda_graph, timeout_s, compile_budget_s=None):
        import multiprocessing
        self.ctx = multiprocessing.get_context("spawn")
        self.args = (str(device), str(dtype).removeprefix("torch."), cuda_graph, dict(timing.SPREAD_LIMIT),
                     compile_budget_s, torch.get_num_threads())
        self.timeout_s, self.proc, self.conn = timeout_s, None, None
        self.device, self.dtype = device, dtype

    def _start(self):
        self.conn, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_worker, args=(child, *self.args), daemon=True)
        self.proc.start()
        child.close()

    def measure(self, w, impl, s, mode, keep: bool = False):
        """(row, None): an isolated point is timed in one window."""
        if self.proc is None or not self.proc.is_alive():
            self._start()
        failed, t0 = None, time.perf_counter()
        try:
            self.conn.send((w.name, w.module, impl.name, s, mode))
            if self.conn.poll(self.timeout_s):
                return schema.Row(**self.conn.recv()), None
            status, failed = "timeout", f"timed out after {self.timeout_s:.0f} s; worker killed and restarted"
            self.proc.kill()
        except (EOFError, OSError, BrokenPipeError):
            self.proc.join(5)
            status, failed = "error", f"worker process died (exit code {self.proc.exitcode}); restarted for the next point"
        self.close()
        return schema.Row(**point._identity(w, impl, s, mode, self.dtype, self.device), status=status, reason=failed,
                          point_s=time.perf_counter() - t0), None

    def close(self):
        if self.proc is not None:
            if self.proc.is_alive():
                try:
                    self.conn.send(None)
                except OSError:
                    pass
                self.proc.join(10)
                if self.proc.is_alive():
                    self.proc.kill()
            self.proc = self.conn = None
