"""``seqbench run``: check the kernels, sweep the workloads, write rows as they finish.

Every (workload, impl, shape, mode) point becomes one row of results.csv, appended and flushed
as soon as it is measured, so an interrupted run keeps what it finished and ``--resume`` skips it.
A point that fails (out of memory, unsupported, compile error) is a row with its status and
reason; the sweep goes on.
"""
from __future__ import annotations

import dataclasses
import os
import time

import torch

from bench import measure, roofline, schema
from bench.env import environment
from bench.workload import MODES, Point, shape_label
from bench.workloads import WORKLOADS
from kernels._common import deferred_checks, forget_tuned_configs, tuned_configs

COLUMNS, KEY = schema.COLUMNS, schema.KEY
# An isolated sweep gives up on a point after this long (a deadlocked kernel) and restarts its worker; the GPU
# job sets a shorter one, below its steps' budgets.  An isolated check gets CHECK_TIMEOUT_S.
POINT_TIMEOUT_S = 300.0
CHECK_TIMEOUT_S = 120.0


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


def measure_point(workload, impl, shape, mode, dtype, device, sampler, cuda_graph=False, point=None) -> schema.Row:
    """One row: timing, derived throughput, telemetry and accuracy against the baseline, or a failure
    status with its reason.  ``point`` carries the inputs and baseline output shared with the other impls.
    A timing whose spread is over the device's limit has status ``unstable`` (``sweep`` measures it again)."""
    return measure_timed(workload, impl, shape, mode, dtype, device, sampler, cuda_graph, point)[0]


def measure_timed(workload, impl, shape, mode, dtype, device, sampler, cuda_graph=False, point=None):
    """(``measure_point``'s row, the Timed point to pool more windows into, or None when it was not timed)."""
    point = point or Point(workload, shape, mode, dtype, device)
    timed: dict = {}
    row = schema.Row(**_measure(workload, impl, shape, mode, dtype, device, sampler, cuda_graph, point, timed))
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
    times: list
    calls_per_rep: int
    timer: str
    windows: int = 1

    def window(self, row: schema.Row) -> schema.Row:
        """One more CPU timing window, pooled with the earlier ones: the row's timing, throughput and status
        recomputed over every repetition so far (load_start stays the first window's, load_end is this one's)."""
        self.times += measure.time_cpu(self.fn)["times_ms"]
        self.windows += 1
        fields = dataclasses.asdict(row) | self.pooled() | {"load_end": measure.load_average()}
        return schema.Row(**fields | derived(fields, self))

    def pooled(self) -> dict:
        return measure.summarize(self.times, f"{self.timer}; {self.windows} windows spread over the run, pooled",
                                 self.calls_per_rep)


def _identity(workload, impl, shape, mode, dtype, device) -> dict:
    """The fields that say which point a row is."""
    return {"workload": workload.name, "impl": impl.name, "mode": mode, "dtype": str(dtype).removeprefix("torch."),
            "shape": shape_label(workload, shape), "seq_len": shape[workload.seq_key], "batch": shape["B"],
            "tokens": workload.tokens(shape), "device": str(device)}


def _measure(workload, impl, shape, mode, dtype, device, sampler, cuda_graph, point, timed: dict) -> dict:
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
        fn = point.runner(impl)
        t0 = time.perf_counter()
        fn()                                   # compiles and autotunes
        if gpu:
            torch.cuda.synchronize()
        row["first_call_s"] = time.perf_counter() - t0
        row["config"] = tuned_configs() or None
        if gpu:                                # the peak of one call, before do_bench allocates its L2 flush buffer
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            fn()
            torch.cuda.synchronize()
            row["peak_mem_mib"] = torch.cuda.max_memory_allocated() / 2**20
        if gpu and cuda_graph:
            fn = measure.capture_graph(fn).replay      # timed, and watched by NVML, as graph replays
        row.update(threads=torch.get_num_threads(), load_start=measure.load_average())
        t = measure.time_gpu(fn, cuda_graph) if gpu else measure.time_cpu(fn)
        row["load_end"] = measure.load_average()
        timed["point"] = Timed(fn, workload, shape, mode, dtype, device, spec, t.pop("times_ms"), t["calls_per_rep"],
                               t["timer"])
        row.update(t)
        if gpu:
            row.update(sampler.measure(fn, workload.tokens(shape)))
            deferred_checks()          # errors the kernels flagged on the device, read outside the timed region
            row["kernels_ran"] = _kernels_ran(fn) if not cuda_graph else "not profiled with --cuda-graph"
        else:
            row["nvml_reason"] = "no GPU on this machine"
        row.update(point.accuracy(impl))
    except torch.cuda.OutOfMemoryError as exc:
        return row | {"status": "oom", "reason": str(exc).splitlines()[0][:300]}
    except (RuntimeError, ValueError, TypeError, NotImplementedError) as exc:
        msg = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        status = "unsupported" if "No available kernel" in str(exc) or isinstance(exc, (ValueError, TypeError)) else "error"
        return row | {"status": status, "reason": f"{type(exc).__name__}: {msg}"}
    except Exception as exc:  # a Triton compile error or anything else: recorded, the sweep goes on
        return row | {"status": "error", "reason": schema.describe(exc)}
    return row | derived(row, timed["point"])


def derived(row: dict, t: Timed) -> dict:
    """What follows from a row's median time: tokens/s, TFLOP/s, GB/s, % of peak, the roofline ratio, and the
    status by the spread rule (``unstable`` past the device's limit; ``sweep`` measures it again)."""
    ms, gpu = row["ms"], t.device.type == "cuda"
    limit = measure.spread_limit(t.device)
    status, reason = "ok", ""
    if measure.is_unstable(row, t.device):
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


def grid_shapes(w, defaults: list[dict], seq_lens=None, batch=None) -> list[dict]:
    """A workload's shapes: its defaults, or the grid of ``seq_lens`` × ``batch`` (each an int or a list) over its
    first default shape; the same shape once (--batch can make two defaults one)."""
    as_list = lambda v: [v] if isinstance(v, int) else list(v or [])  # noqa: E731
    shapes = defaults
    if seq_lens:
        shapes = [dict(shapes[0], **{w.seq_key: n}) for n in as_list(seq_lens)]
    if batch:
        shapes = [dict(s, B=b) for b in as_list(batch) for s in shapes]
    return list({shape_label(w, s): s for s in shapes}.values())


def run_meta(device, dtype, quick: bool, modes, workloads, sampler) -> dict:
    """run.json's opening fields for a run on ``device`` (torch's CPU threads set to the usable cores first, as
    every timed row records them)."""
    if device.type == "cpu":
        torch.set_num_threads(measure.usable_cores())
    meta = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "quick": quick, "dtype": str(dtype), "modes": list(modes),
            "workloads": [w.name for w in workloads],
            "environment": environment(sampler.static_info() if sampler else {"nvml": "no GPU on this machine"}),
            "cpu_only": device.type != "cuda"}
    if device.type != "cuda":
        meta["note"] = ("CPU-only machine: Triton kernels were checked through the interpreter, and the timings "
                        "are CPU timings of the PyTorch implementations at small sizes - not GPU numbers.")
    return meta


def sweep(out_dir: str, workloads, dtype, quick: bool, seq_lens=None, batch=None, modes=MODES,
          resume: bool = False, cuda_graph: bool = False, progress=True, device=None, impls=None,
          checks: bool = True, isolate: bool = False, point_timeout_s: float = POINT_TIMEOUT_S,
          shard: tuple[int, int] = (0, 1), barrier=None, order: str = "workload") -> dict:
    """Run every point into out_dir/results.csv and write run.json; returns the run's metadata.

    ``seq_lens`` and ``batch`` (ints or lists) replace the default shapes with their grid.  ``order="shape"``
    measures every workload's points at one (shape, mode) before the next, so a run cut short still has every
    row of the table at its first shapes (the GPU job's headline); the default goes workload by workload.

    ``isolate`` measures the points in a worker process (tritonbench's --isolate): a point that kills it,
    leaves a sticky CUDA error (an illegal address poisons every later launch in that process) is an error
    row, one that runs past ``point_timeout_s`` a ``timeout`` row, each with its reason, and a fresh worker
    takes the rest.  ``resume`` keeps the ok rows and skips them, measures the failed points again, and the
    timed-out ones last, after every other point; it keeps the kernel checks run.json already has.

    ``shard=(rank, world)`` (torchrun): this rank measures every world-th (workload, shape, mode) group of
    points into results.rank<r>.csv,
    rank 0 alone runs the checks and writes run.json, and after ``barrier()`` rank 0 merges every rank's
    rows into results.csv (merge_shards)."""
    rank, world = shard
    os.makedirs(out_dir, exist_ok=True)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    main = rank == 0
    csv_path = os.path.join(out_dir, "results.csv" if world == 1 else f"results.rank{rank}.csv")
    # Nothing on disk changes until the kept rows are safely in the new file (RowWriter): an interruption
    # at any point of a resume loses no finished row.
    if world == 1 and resume:
        merge_shards(out_dir)         # rows a sharded run measured but did not merge before it stopped
    kept, dropped = schema.read_rows(csv_path) if resume else ([], 0)
    hung = {schema.row_key(r) for r in kept if r["status"] == "timeout"}     # tried again last
    kept = [r for r in kept if r["status"] == "ok"]
    done = {schema.row_key(r) for r in kept}
    if resume and world > 1:          # points merged before, or measured by another rank's shard
        for path in [os.path.join(out_dir, "results.csv"), *_shard_files(out_dir)]:
            done |= {schema.row_key(r) for r in schema.read_rows(path)[0] if r["status"] == "ok"}
    sampler = measure.NVMLSampler(device.index or 0) if device.type == "cuda" else None
    meta = run_meta(device, dtype, quick, modes, workloads, sampler)
    if resume:
        meta["resumed"] = {"kept_rows": len(kept), "dropped_incomplete_rows": dropped}
    if world > 1:
        meta["shards"] = world
    json_path = os.path.join(out_dir, "run.json")
    try:
        earlier = schema.read_json(json_path) if resume else {}
    except schema.RunFolderError:     # a run.json cut short: the rows are what a resume needs; it is rewritten
        earlier = {}
    if main and not (resume and os.path.exists(json_path)):
        schema.write_json(json_path, meta)
    if earlier.get("checks"):             # a resumed run does not check the kernels again
        meta["checks"] = earlier["checks"]
    else:
        meta["checks"] = run_checks(device, isolate=isolate) if checks and main else []
    meta["isolated"] = isolate
    groups = []
    for w in workloads:
        shapes = grid_shapes(w, w.default_shapes(quick, device.type == "cuda"), seq_lens, batch)
        chosen = [i for i in w.impls.values() if not impls or i.name in impls]
        groups += [(shape_label(w, s), m, [(w, impl, s, m) for impl in chosen]) for s in shapes for m in modes]
    if order == "shape":                  # every workload at a (shape, mode) before the next
        rank_of = {}
        for label, m, _ in groups:
            rank_of.setdefault((label, m), len(rank_of))
        groups.sort(key=lambda g: rank_of[(g[0], g[1])])
    # a shard takes whole (workload, shape, mode) groups: their impls share inputs and the baseline's output
    points = [p for _, _, group in groups[rank::world] for p in group]
    key_of = lambda p: (p[0].name, p[1].name, p[3], str(dtype).removeprefix("torch."), shape_label(p[0], p[2]))  # noqa: E731
    points.sort(key=lambda p: key_of(p) in hung)           # a point that hung last time goes last (stable sort)
    writer = schema.RowWriter(csv_path, kept)  # resume: finished points stay, failed ones are tried again
    if main:
        schema.write_json(json_path, meta)
    bar = _progress(len(points), progress)
    runner = _Isolated(device, dtype, cuda_graph, point_timeout_s) if isolate else _InProcess(device, dtype, sampler,
                                                                                             cuda_graph)
    # A CPU's speed drifts over seconds (other tenants of the host, clocks): each point is timed in `passes`
    # windows, one per pass over all points, and its statistics pool them, so its spread shows the drift.
    passes = measure.CPU_PASSES if device.type == "cpu" and not isolate else 1
    written, todo = {}, {}
    try:
        for w, impl, s, mode in points:
            key = key_of((w, impl, s, mode))
            bar(f"{w.name} {impl.name} {shape_label(w, s)} {mode}")
            if key in done:
                continue
            written[key], timed = runner.measure(w, impl, s, mode, keep=passes > 1)
            writer.write(written[key])
            todo[key] = ((w, impl, s, mode), timed)
        bar(None)
        timed = {k: t for k, (_, t) in todo.items() if t is not None}
        bar = _windows(written, timed, passes, progress, writer, kept, "pass")
        again = [k for k, r in written.items() if r.status == "unstable"]
        if again:                                   # later in the run: whatever disturbed them may have passed
            runner.close()
            first = {k: written[k] for k in again}
            retry, timed = {}, {}
            bar(None)
            bar = _progress(len(again), progress, "again")
            for k in again:
                bar(" ".join(k))
                retry[k], timed[k] = runner.measure(*todo[k][0], keep=passes > 1)
            bar(None)
            bar = _windows(retry, {k: t for k, t in timed.items() if t is not None}, passes, progress, None, kept,
                           "again")
            written.update({k: settle(first[k], retry[k], device) for k in again})
            writer.rewrite(kept + [dataclasses.asdict(r) for r in written.values()])
    finally:
        runner.close()
        writer.close()
        bar(None)
    meta["stability"] = stability(kept + list(written.values()), device)
    if world > 1:
        barrier()
        if main:
            merge_shards(out_dir)
    meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if main:
        schema.write_json(json_path, meta)
    return meta


def _windows(rows: dict, timed: dict, passes: int, progress: bool, writer, kept: list, label: str):
    """Passes 2 … ``passes`` over the timed points: one more window each per pass, pooled into its row (in
    place in ``rows``); results.csv rewritten after each pass when a ``writer`` is given.  Returns the
    progress callable (to close)."""
    bar = lambda text: None  # noqa: E731
    for n in range(2, passes + 1):
        bar(None)
        bar = _progress(len(timed), progress, f"{label} {n}/{passes}")
        for key, t in timed.items():
            bar(" ".join(key))
            rows[key] = t.window(rows[key])
        if writer is not None:
            writer.rewrite(kept + [dataclasses.asdict(r) for r in rows.values()])
    return bar


def settle(first: schema.Row, second: schema.Row, device) -> schema.Row:
    """A point measured again after it was unstable: the second row if it is stable now; else the steadier of
    the two, ``unstable``, with both spreads and the load averages seen; the first if the second failed."""
    limit = measure.spread_limit(device)
    if second.status == "ok":
        return second
    if second.status != "unstable":
        first.reason += f"; measured again: {second.status} ({second.reason})"
        return first
    keep = min(first, second, key=lambda r: r.spread)
    loads = [v for r in (first, second) for v in (r.load_start, r.load_end) if v is not None]
    seen = f" (load average {min(loads):g}–{max(loads):g} on {measure.usable_cores()} cores)" if loads else ""
    keep.reason = (f"spread {first.spread:.2f}, then {second.spread:.2f} measured again: over the "
                   f"{torch.device(device).type.upper()} limit {limit:g} twice{seen}")
    return keep


def stability(rows, device) -> dict:
    """What run.json and the report say about how steady the machine was: the limit, the points timed and
    unstable, and the load averages seen.  ``rows``: Rows or results.csv records."""
    def get(r, k):
        v = r.get(k) if isinstance(r, dict) else getattr(r, k)
        return None if v in (None, "") else (float(v) if k != "status" else v)
    timed = [r for r in rows if get(r, "status") in ("ok", "unstable")]
    loads = [v for r in timed for v in (get(r, "load_start"), get(r, "load_end")) if v is not None]
    return {"spread_limit": measure.spread_limit(device), "timed": len(timed),
            "unstable": sum(get(r, "status") == "unstable" for r in timed), "cores": measure.usable_cores(),
            "threads": torch.get_num_threads(), "load_average": [min(loads), max(loads)] if loads else None}


def _shard_files(out_dir: str) -> list[str]:
    import glob
    return sorted(glob.glob(os.path.join(out_dir, "results.rank*.csv")))


def merge_shards(out_dir: str) -> int:
    """Fold every results.rank<r>.csv into results.csv (a point measured twice keeps its last ok row) and
    remove them; returns the number of rows merged.  results.csv is replaced atomically first."""
    files = _shard_files(out_dir)
    if not files:
        return 0
    csv_path = os.path.join(out_dir, "results.csv")
    rows = {}
    for path in [csv_path, *files]:
        for r in schema.read_rows(path)[0]:
            key = schema.row_key(r)
            if r["status"] == "ok" or rows.get(key, {}).get("status") != "ok":
                rows[key] = r
    writer = schema.RowWriter(csv_path, list(rows.values()))
    writer.close()
    for path in files:
        os.remove(path)
    return len(rows)


class _InProcess:
    """Measures points in this process, sharing inputs and the baseline's output between a shape's impls."""

    def __init__(self, device, dtype, sampler, cuda_graph):
        self.device, self.dtype, self.sampler, self.cuda_graph, self.point = device, dtype, sampler, cuda_graph, None

    def measure(self, w, impl, s, mode, keep: bool = False):
        """(row, the Timed point when ``keep`` and it was timed, else None)."""
        if self.point is None or (self.point.workload, self.point.shape, self.point.mode) != (w, s, mode):
            self.point = Point(w, s, mode, self.dtype, self.device)
        row, timed = measure_timed(w, impl, s, mode, self.dtype, self.device, self.sampler, self.cuda_graph, self.point)
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


def _worker(conn, device: str, dtype: str, cuda_graph: bool, spread_limit: dict) -> None:
    """Worker loop: (workload, module, impl, shape, mode) in, a Row's fields out; exits after a sticky error.
    ``spread_limit``: the parent's limits (the spread rule is the run's, not the fresh process's defaults)."""
    measure.SPREAD_LIMIT.update(spread_limit)
    device, dtype = torch.device(device), getattr(torch, dtype)
    runner = _InProcess(device, dtype, measure.NVMLSampler(device.index or 0) if device.type == "cuda" else None,
                        cuda_graph)
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

    def __init__(self, device, dtype, cuda_graph, timeout_s):
        import multiprocessing
        self.ctx = multiprocessing.get_context("spawn")
        self.args = (str(device), str(dtype).removeprefix("torch."), cuda_graph, dict(measure.SPREAD_LIMIT))
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
        failed = None
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
        return schema.Row(**_identity(w, impl, s, mode, self.dtype, self.device), status=status, reason=failed), None

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


def _progress(total: int, enabled: bool, desc: str | None = None):
    """A callable advancing a tqdm bar (stderr) with a label; None closes it."""
    if not enabled:
        return lambda label: None
    from tqdm import tqdm
    bar = tqdm(total=total, unit="point", dynamic_ncols=True, desc=desc)

    def step(label):
        if label is None:
            bar.close()
            return
        bar.set_description_str(label[:60])
        bar.update(1)
    return step
