"""Timing and GPU telemetry.

On a GPU: ``triton.testing.do_bench`` (CUDA events, L2 flushed before every repetition, every repetition's
time back, so the quantiles and counts are ours); with ``--cuda-graph`` the call is captured once
(``capture_graph``) and the graph's replay is timed the same way (L2 flushed between replays).  Then an NVML sampler watches a
sustained window (>= 1 s) of back-to-back runs for utilisation, SM clock, power, energy, throttle reasons
and, on Hopper, GPM's SM activity, occupancy and tensor-core activity.  On a CPU: ``torch.utils.benchmark``
(``adaptive_autorange``: blocks of calls until the spread is small or the time budget is spent), and every
NVML field is empty with the reason.

Every timing carries its spread, (p80 − p20) / median.  A point over ``SPREAD_LIMIT`` for its device is
measured again later in the run, and is ``unstable`` if it still is (``bench.sweep.run``).
"""
from __future__ import annotations

import contextlib
import collections
import os
import signal
import statistics
import sys
import threading
import time

import torch


# do_bench repeats a point at least MIN_REPS times (see repetition_budget_ms).
MIN_REPS = 20

# The largest relative spread, (p80 − p20) / median, of a stable point, by device type: CUDA events on an
# idle GPU repeat within a few percent; a CPU shared with other work does not.
SPREAD_LIMIT = {"cuda": 0.10, "cpu": 0.25}

# CPU timing: torch.utils.benchmark's adaptive_autorange stops a window once IQR / median is below CPU_IQR,
# after at least CPU_MIN_S of calls, and by CPU_MAX_S in any case; a sweep times every point in CPU_PASSES
# windows, one per pass over all its points, because a shared machine's speed drifts over seconds.
CPU_IQR = 0.10



def _window(default: tuple = (0.1, 1.0)) -> tuple:
    """(CPU_MIN_S, CPU_MAX_S); SEQBENCH_CPU_WINDOW_S="MIN,MAX" overrides them (the tests' processes take
    short windows: they check what a point records, not how well it is timed)."""
    value = os.environ.get("SEQBENCH_CPU_WINDOW_S", "")
    try:
        lo, hi = (float(x) for x in value.split(","))
        if 0 < lo <= hi < float("inf"):
            return lo, hi
    except ValueError:
        pass
    if value:
        print(f"seqbench: SEQBENCH_CPU_WINDOW_S={value!r} is not 'MIN,MAX' seconds with 0 < MIN <= MAX; "
              f"{default[0]},{default[1]}", file=sys.stderr)
    return default


CPU_MIN_S, CPU_MAX_S = _window()

# SEQBENCH_CPU_PASSES overrides the number of passes (1: each point timed once, as the pipeline's tests do).
def _passes(default: int = 3) -> int:
    value = os.environ.get("SEQBENCH_CPU_PASSES", "")
    if value.isdigit() and int(value) >= 1:
        return int(value)
    if value:
        print(f"seqbench: SEQBENCH_CPU_PASSES={value!r} is not a whole number >= 1; {default} passes",
              file=sys.stderr)
    return default


CPU_PASSES = _passes()

# How long a torch.compile'd implementation's setup and first call (its compile) may take, by default, by
# device type: a Python loop over T is unrolled, and its compile grows with T (pytorch #97155: past 15 minutes at
# T = 1024).  On a 2-core CPU an LSTM loop's training graph took 16-40 s at T = 8 and over 60 s at T = 32-64,
# a Transformer block's 12 s: the CPU's budget keeps a quick run's compiles to minutes.
COMPILE_BUDGET_S = {"cuda": 120.0, "cpu": 30.0}


def compile_budget(device) -> float:
    return COMPILE_BUDGET_S["cuda" if torch.device(device).type == "cuda" else "cpu"]


class BudgetExceeded(Exception):
    """A point's first call ran past its compile budget."""


@contextlib.contextmanager
def budget(seconds: float | None):
    """Raise BudgetExceeded in the block once ``seconds`` of wall time have passed (SIGALRM).  The signal
    interrupts Python between bytecodes, so a compile (Dynamo's tracing and Inductor's codegen are Python; its
    C++ and Triton builds are waited on from Python) stops within moments.  An alarm that lands where Python
    swallows exceptions (a weakref callback or ``__del__`` during the compile's garbage collection) is followed
    by another every second until one stops the block; those swallowed are not reported.  No budget when
    ``seconds`` is None, off the main thread, or where the OS has no SIGALRM; an isolated worker's point timeout
    still applies."""
    if not seconds or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGALRM"):
        yield
        return
    armed, fired = [True], []
    message = f"ran past {seconds:g} s"

    def stop(*_):
        if armed:
            fired.append(True)
            raise BudgetExceeded(message)

    def unraisable(report, default=sys.unraisablehook):
        if not isinstance(report.exc_value, BudgetExceeded):
            default(report)
    old, old_hook = signal.signal(signal.SIGALRM, stop), sys.unraisablehook
    sys.unraisablehook = unraisable
    signal.setitimer(signal.ITIMER_REAL, seconds, 1.0)
    try:
        yield
    except Exception as exc:
        if fired and not isinstance(exc, BudgetExceeded):     # torch wrapped it in its own error
            raise BudgetExceeded(message) from None
        raise
    finally:
        armed.clear()                   # first: an alarm from here on is ignored
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        sys.unraisablehook = old_hook


def summarize(times_ms: list[float], timer: str, calls_per_rep: int = 1, reps: int | None = None) -> dict:
    """Median, p20 and p80 (ms) of the repetitions, how many there were (``reps``, default all of them), the
    calls each one averages, and the relative spread (p80 − p20) / median."""
    q = statistics.quantiles(times_ms, n=10, method="inclusive") if len(times_ms) > 1 else [times_ms[0]] * 9
    med = statistics.median(times_ms)
    return {"ms": med, "ms_p20": q[1], "ms_p80": q[7], "reps": len(times_ms) if reps is None else reps,
            "calls_per_rep": calls_per_rep, "spread": (q[7] - q[1]) / med if med > 0 else None, "timer": timer}


def equal_weights(windows: list[list[float]], points: int = 100) -> list[float]:
    """Timing windows pooled with equal weight: each window's ``points`` − 1 quantiles, together.  A window's
    repetition count follows the block size adaptive_autorange picked for it (one window of 3,000 single calls,
    the next of 5 blocks of 100), and pooling raw repetitions would let the first outvote the rest."""
    pooled = []
    for times in windows:
        pooled += (statistics.quantiles(times, n=points, method="inclusive") if len(times) > 1
                   else times * (points - 1))
    return pooled


def spread_limit(device) -> float:
    return SPREAD_LIMIT["cuda" if torch.device(device).type == "cuda" else "cpu"]


def is_unstable(timing: dict, device) -> bool:
    """Whether a timing's spread is over its device's limit (a point with no spread is not judged so)."""
    return timing.get("spread") is not None and timing["spread"] > spread_limit(device)


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask), which torch's thread count should match."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:          # not on Linux
        return os.cpu_count() or 1


def cpu_threads() -> int:
    """torch's threads for a CPU sweep: SEQBENCH_CPU_THREADS, else the usable cores less one (at least one),
    which leaves a core to the OS and to Python's own threads.  On the 2-core CI VM two threads made a small
    point's time depend on the process (nn.LSTM fwd+bwd at B 4, T 32: 1.65 ms in two processes, 0.83 ms in a
    third, each steady within itself), which no probe of the host followed; one thread did not."""
    value = os.environ.get("SEQBENCH_CPU_THREADS", "")
    if value.isdigit() and int(value) >= 1:
        return int(value)
    if value:
        print(f"seqbench: SEQBENCH_CPU_THREADS={value!r} is not a whole number >= 1; the usable cores less one",
              file=sys.stderr)
    return max(1, usable_cores() - 1)


# The host probe runs before a CPU window and after its blocks, at most every PROBE_EVERY_S of timed calls.
PROBE_EVERY_S = 0.005


def host_probe_ms(loops: int = 10_000) -> float:
    """The host's own speed now: one run of a fixed single-threaded Python loop (about 0.3 ms on the CI VM).  A
    VM's vCPU slows when the host's other tenants load it (a loop there alternated between 5.4 and 10 ms with
    nothing else running inside the VM), which no load average sees.  ``time_cpu`` takes the median of the
    probes through a window; ``seqbench compare`` divides each point's time by its probe's."""
    t0, acc = time.perf_counter(), 0
    for i in range(loops):
        acc += i
    return (time.perf_counter() - t0) * 1e3


# A CPU window starts when the host runs at its usual speed.  On the CI VM, with nothing else running, the probe
# spent phases of seconds at about twice its best time (the host's other tenants); a window timed in one was a
# point 2x slower, and two runs agreed on half their points.  So before each window the median of HOST_BURST
# probes must be within HOST_SLOW of the best such median of the last minute, waiting at most HOST_WAIT_S.
def _host_wait(default: float = 3.0) -> float:
    """HOST_WAIT_S; SEQBENCH_HOST_WAIT_S overrides it (0: never wait, as the tests' processes do)."""
    value = os.environ.get("SEQBENCH_HOST_WAIT_S", "")
    try:
        if value and float(value) >= 0:
            return float(value)
    except ValueError:
        pass
    if value:
        print(f"seqbench: SEQBENCH_HOST_WAIT_S={value!r} is not a number of seconds >= 0; {default}", file=sys.stderr)
    return default


HOST_BURST, HOST_SLOW, HOST_WAIT_S = 16, 1.3, _host_wait()
HOST_CALIBRATE_S = 0.25         # the first wait first looks this long for the host's best
HOST_RETRIES = 2              # a window the host slowed during is taken again so many times at most
HOST_WAITS = {"windows": 0, "waited_s": 0.0, "gave_up": 0, "retaken": 0, "best_ms": None}
# The best is the best burst of the last minute: a host slower than that for longer is the host as it is now
# (on 2026-12-04 the probe sat at 2.3x its best for over ten minutes, and waiting only stretched the run).
HOST_MEMORY_S = 60.0
_BURSTS: collections.deque = collections.deque()      # (perf_counter, burst median ms)


def _burst_ms() -> float:
    return statistics.median(host_probe_ms() for _ in range(HOST_BURST))


def _remember(burst: float) -> float:
    """The best burst of the last HOST_MEMORY_S, ``burst`` (just taken) included."""
    now = time.perf_counter()
    _BURSTS.append((now, burst))
    while _BURSTS[0][0] < now - HOST_MEMORY_S:
        _BURSTS.popleft()
    HOST_WAITS["best_ms"] = min(b for _, b in _BURSTS)
    return HOST_WAITS["best_ms"]


def wait_for_host(max_wait_s: float | None = None) -> tuple[float, bool]:
    """Wait until the host runs at its usual speed (see HOST_SLOW), at most ``max_wait_s`` (HOST_WAIT_S):
    (the seconds waited, whether it does).  HOST_WAITS counts the windows, the time waited, the waits given up
    and (in ``time_cpu``) the windows taken again."""
    max_wait_s = HOST_WAIT_S if max_wait_s is None else max_wait_s
    t0 = time.perf_counter()
    if not _BURSTS:                     # the first wait looks a while for the host's best
        _remember(_burst_ms())
        while time.perf_counter() - t0 < min(HOST_CALIBRATE_S, max_wait_s):
            _remember(_burst_ms())
        t0 = time.perf_counter()
    while True:
        now = _burst_ms()
        ok = now <= HOST_SLOW * _remember(now)
        waited = time.perf_counter() - t0
        if ok or waited >= max_wait_s:
            break
        time.sleep(0.02)
    HOST_WAITS["windows"] += 1
    HOST_WAITS["waited_s"] += waited
    HOST_WAITS["gave_up"] += not ok
    return waited, ok


def load_average() -> float | None:
    """The 1-minute load average (runnable processes), or None where the OS has none."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def time_cpu(fn, min_s: float | None = None, max_s: float | None = None) -> dict:
    """torch.utils.benchmark's adaptive_autorange on the host: blocks of calls (the block size it picks, after
    its own warm-up) until IQR / median < CPU_IQR past ``min_s``, or ``max_s`` (default CPU_MIN_S and CPU_MAX_S,
    read at the call); quantiles over the blocks' per-call times.  ``times_ms`` holds them (for pytest-benchmark),
    ``probe_ms`` the median host probe through the window (``host_probe_ms``: before it, and after blocks).

    The window starts once the host runs at its usual speed (``wait_for_host``).  A window whose probe says the
    host slowed during it anyway is taken again, up to HOST_RETRIES times, and the one with the fastest probe
    kept (HOST_WAITS["retaken"] counts them): dividing by the probe alone over-corrected such a window."""
    kept = None
    for _ in range(1 + (HOST_RETRIES if HOST_WAIT_S > 0 else 0)):
        out = _cpu_window(fn, CPU_MIN_S if min_s is None else min_s, CPU_MAX_S if max_s is None else max_s)
        host_ok = out.pop("host_ok", True)
        if kept is None or out["probe_ms"] < kept["probe_ms"]:
            kept = out
        if not host_ok or out["probe_ms"] <= HOST_SLOW * HOST_WAITS["best_ms"]:
            break                       # a wait given up: the host is slow now, and another window would be too
        HOST_WAITS["retaken"] += 1
    return kept


def _cpu_window(fn, min_s: float, max_s: float) -> dict:
    from torch.utils.benchmark import Timer
    _, host_ok = wait_for_host()
    probes, since = [host_probe_ms()], [0.0]

    def after_block(number, seconds):       # untimed: adaptive_autorange counts only the blocks' time
        since[0] += seconds
        if since[0] >= PROBE_EVERY_S:
            probes.append(host_probe_ms())
            since[0] = 0.0
    m = Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads()).adaptive_autorange(
        threshold=CPU_IQR, min_run_time=min_s, max_run_time=max_s, callback=after_block)
    probes.append(host_probe_ms())
    times = [t * 1e3 for t in m.times]
    out = summarize(times, f"torch.utils.benchmark adaptive_autorange ({m.number_per_run} calls per repetition, "
                           f"{torch.get_num_threads()} threads)", m.number_per_run)
    return out | {"times_ms": times, "probe_ms": statistics.median(probes), "host_ok": host_ok}


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
                         long_ms: float = 2_000.0, long_reps: int = 10, cap_ms: float = 10_000.0) -> float:
    """How long do_bench should repeat: at least ``min_reps`` calls (a 100 ms budget takes a single sample
    of a 100 ms call, so p20 = p80 = median) and at least ``floor_ms``; past ``long_ms`` of calls, ``long_reps``
    (a 0.45 s call took 9 s at 20 on the H200, for p20 and p80 that 10 give as well); past ``cap_ms``, three."""
    return max(floor_ms, min(min_reps * one_call_ms, max(long_ms, long_reps * one_call_ms),
                             max(cap_ms, 3 * one_call_ms)))


def capture_graph(fn):
    """``fn`` captured in a CUDA graph after warm-up calls on a side stream (PyTorch's recipe); returns the
    graph, whose ``replay`` reruns the captured kernels on the same buffers."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    torch.cuda.synchronize()
    return graph


def time_gpu(fn, graph: bool = False) -> dict:
    """Device-event timing through triton.testing.do_bench (L2 flushed before every repetition; every
    repetition's time comes back, so the quantiles and the repetition count are ours).  ``graph``: ``fn`` is
    a CUDA graph's replay (``capture_graph``), timed the same way: per-call times, launch gaps removed."""
    import triton.testing as tt
    rep = repetition_budget_ms(estimate_ms(fn))
    times = list(tt.do_bench(fn, warmup=25, rep=rep, return_mode="all"))
    return summarize(times, "cuda-graph replay, cuda-events, L2 flushed" if graph else "cuda-events, L2 flushed") | {
        "times_ms": times}
