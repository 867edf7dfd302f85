"""The kernel checks: every Triton kernel against its float64 reference, in this process or each in a worker
process restarted after a sticky CUDA error, a crash or a hang."""
from __future__ import annotations

import os
import time

import torch

from bench.sweep.worker import sticky_cuda_error
from bench.workloads import WORKLOADS


CHECK_TIMEOUT_S = 120.0


def _chosen_checks(device, gpu_only: bool) -> list:
    """The checks a run makes on ``device``, each once, the ``first`` ones (the grid barrier) first."""
    todo = [c for w in WORKLOADS.values() for c in w.checks
            if (device.type == "cuda" or not c.gpu_only) and (c.gpu_only or not gpu_only)]
    return list({c.name: c for c in sorted(todo, key=lambda c: not c.first)}.values())


def run_check(c, device) -> dict:
    """One check against its float64 reference: the error, max|got − want| / max(1, max|want|), and ok."""
    t0 = time.perf_counter()
    try:
        got, want = c.run(device)
        want = want.double()
        scale = max(1.0, want.abs().max().item()) if want.numel() else 1.0
        err = (got.double() - want).abs().max().item() / scale
        return {"kernel": c.name, "error": err, "tolerance": c.tolerance, "ok": err <= c.tolerance,
                "seconds": time.perf_counter() - t0, "reason": ""}
    except Exception as exc:
        return {"kernel": c.name, "error": None, "tolerance": c.tolerance, "ok": False,
                "seconds": time.perf_counter() - t0, "reason": f"{type(exc).__name__}: {exc}"[:500]}


def run_checks(device, gpu_only: bool = False, on_result=None, isolate: bool = False,
               timeout_s: float = CHECK_TIMEOUT_S) -> list[dict]:
    """Every workload's checks: its Triton kernels against float64 references, at small fp32 shapes
    (through the interpreter on a CPU) and, on a GPU, at real shapes too (``gpu_only``: only those).

    ``isolate`` runs them in a worker process: one that leaves a sticky CUDA error (which poisons every later
    launch in that process), dies or runs past ``timeout_s`` fails alone, with its reason, and a fresh worker
    takes the next check."""
    checks, worker = [], _CheckWorker(device, timeout_s) if isolate else None
    try:
        for c in _chosen_checks(device, gpu_only):
            checks.append(worker.run(c) if worker else run_check(c, device))
            if on_result:
                on_result(checks[-1])
    finally:
        if worker:
            worker.close()
    return checks


def _check_worker(conn, device: str) -> None:
    """Check worker loop: a check's name in, its result out; exits after a sticky CUDA error."""
    device = torch.device(device)
    checks = {c.name: c for c in _chosen_checks(device, gpu_only=False)}
    while True:
        name = conn.recv()
        if name is None:
            return
        result = run_check(checks[name], device)
        sticky = sticky_cuda_error(device)
        if sticky:
            result.update(ok=False, reason=f"{result['reason'] or 'ran'}; then a sticky CUDA error ({sticky}): worker "
                                           f"restarted for the next check")
        conn.send(result)
        if sticky:
            os._exit(3)


class _CheckWorker:
    """Runs checks in a spawned process, restarted after a crash, a sticky CUDA error or a hang."""

    def __init__(self, device, timeout_s: float):
        import multiprocessing
        self.ctx, self.device, self.timeout_s, self.proc, self.conn = (multiprocessing.get_context("spawn"),
                                                                       device, timeout_s, None, None)

    def run(self, c) -> dict:
        if self.proc is None or not self.proc.is_alive():
            self.conn, child = self.ctx.Pipe()
            self.proc = self.ctx.Process(target=_check_worker, args=(child, str(self.device)), daemon=True)
            self.proc.start()
            child.close()
        t0 = time.perf_counter()
        try:
            self.conn.send(c.name)
            if self.conn.poll(self.timeout_s):
                return self.conn.recv()
            reason = f"timed out after {self.timeout_s:.0f} s; worker killed and restarted"
            self.proc.kill()
        except (EOFError, OSError, BrokenPipeError):
            self.proc.join(5)
            reason = f"worker process died (exit code {self.proc.exitcode}); restarted for the next check"
        self.close()
        return {"kernel": c.name, "error": None, "tolerance": c.tolerance, "ok": False,
                "seconds": time.perf_counter() - t0, "reason": reason}

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
