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

from bench import schema
from bench.measure import nvml, timing
from bench.measure.env import environment
from bench.sweep import point
from bench.sweep.checks import run_checks
from bench.sweep.shards import _shard_files, merge_shards
from bench.sweep.worker import POINT_TIMEOUT_S, _InProcess, _Isolated
from bench.workload import MODES, shape_label

COLUMNS, KEY = schema.COLUMNS, schema.KEY


def _as_list(v) -> list:
    """--seq-len / --batch as a list: an int, a list, or nothing."""
    return [v] if isinstance(v, int) else list(v or [])


def grid_shapes(w, defaults: list[dict], seq_lens=None, batch=None) -> list[dict]:
    """A workload's shapes: its defaults, or the grid of ``seq_lens`` × ``batch`` (each an int or a list) over its
    first default shape, every batch at a length before the next length (a run cut short has both batches'
    verdicts at the short length); the same shape once (--batch can make two defaults one)."""
    shapes = defaults
    if seq_lens:
        shapes = [dict(shapes[0], **{w.seq_key: n}) for n in _as_list(seq_lens)]
    if batch:
        shapes = [dict(s, B=b) for s in shapes for b in _as_list(batch)]
    return list({shape_label(w, s): s for s in shapes}.values())


def run_meta(device, dtype, quick: bool, modes, workloads, sampler) -> dict:
    """run.json's opening fields for a run on ``device`` (torch's CPU threads set first, ``timing.cpu_threads``,
    as every timed row records them)."""
    if device.type == "cpu":
        torch.set_num_threads(timing.cpu_threads())
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
          shard: tuple[int, int] = (0, 1), barrier=None, order: str = "workload",
          compile_budget_s: float | None = None) -> dict:
    """Run every point into out_dir/results.csv and write run.json; returns the run's metadata.

    ``seq_lens`` and ``batch`` (ints or lists) replace the default shapes with their grid.  ``order="shape"``
    measures every workload's points at one (shape, mode) before the next, so a run cut short still has every
    row of the table at its first shapes (the GPU job's headline); the default goes workload by workload.

    ``isolate`` measures the points in a worker process (tritonbench's --isolate): a point that kills it,
    leaves a sticky CUDA error (an illegal address poisons every later launch in that process) is an error
    row, one that runs past ``point_timeout_s`` a ``timeout`` row, each with its reason, and a fresh worker
    takes the rest.  A torch.compile'd implementation's setup and first call get ``compile_budget_s``; past it
    the point is a ``timeout`` row and that implementation's longer lengths (same workload and mode) are
    ``skipped`` rows with the reason, not tried.  ``resume`` keeps the ok rows and skips them, measures the
    failed points again, and the timed-out ones last, after every other point; it keeps the kernel checks
    run.json already has.

    ``shard=(rank, world)`` (torchrun): this rank measures every world-th (workload, shape, mode) group of
    points into results.rank<r>.csv,
    rank 0 alone runs the checks and writes run.json, and after ``barrier()`` rank 0 merges every rank's
    rows into results.csv (merge_shards)."""
    rank, world = shard
    os.makedirs(out_dir, exist_ok=True)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    compile_budget_s = compile_budget_s or timing.compile_budget(device)
    main = rank == 0
    csv_path = os.path.join(out_dir, "results.csv" if world == 1 else f"results.rank{rank}.csv")
    # Nothing on disk changes until the kept rows are safely in the new file (RowWriter): an interruption
    # at any point of a resume loses no finished row.
    json_path = os.path.join(out_dir, "run.json")
    try:
        earlier = schema.read_json(json_path) if resume else {}
    except schema.RunFolderError:     # a run.json cut short: the rows are what a resume needs; it is rewritten
        earlier = {}
    from bench.measure.env import device_name
    was, now = (earlier.get("environment") or {}).get("device"), device_name()
    if resume and was and was != now and any(
            schema.read_rows(p)[0] for p in [os.path.join(out_dir, "results.csv"), *_shard_files(out_dir)]):
        raise schema.RunFolderError(f"--resume: {out_dir} was measured on {was}, not on this machine's {now}")
    if world == 1 and resume:
        merge_shards(out_dir)         # rows a sharded run measured but did not merge before it stopped
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
    planned = {key_of(p) for p in points}
    sampler = nvml.NVMLSampler(device.index or 0) if device.type == "cuda" else None
    meta = run_meta(device, dtype, quick, modes, workloads, sampler)
    meta["plan"] = {"impls": sorted(impls) if impls else None, "seq_lens": _as_list(seq_lens) or None,
                    "batch": _as_list(batch) or None}
    kept, dropped = schema.read_rows(csv_path) if resume else ([], 0)
    # Rows of points this run does not plan (another run's shapes or implementations, resumed into the same
    # folder: the GPU job's sweep after its headline) stay exactly as they are, whatever their status.
    other = [r for r in kept if schema.row_key(r) not in planned]
    kept = [r for r in kept if schema.row_key(r) in planned]
    hung = {schema.row_key(r) for r in kept if r["status"] == "timeout"}     # tried again last
    kept = [r for r in kept if r["status"] == "ok"]
    retimed = 0
    if device.type == "cpu" and kept:     # rows timed otherwise (other threads, no host probe) are timed again
        same = [r for r in kept if r.get("threads") == str(timing.cpu_threads()) and r.get("host_probe_ms")]
        retimed, kept = len(kept) - len(same), same
    done = {schema.row_key(r) for r in kept}
    if resume and world > 1:          # points merged before, or measured by another rank's shard
        for path in [os.path.join(out_dir, "results.csv"), *_shard_files(out_dir)]:
            done |= {schema.row_key(r) for r in schema.read_rows(path)[0] if r["status"] == "ok"}
    if resume:
        meta["resumed"] = {"kept_rows": len(kept), "dropped_incomplete_rows": dropped}
        if other:
            meta["resumed"]["other_rows"] = f"{len(other)} row(s) of points this run does not plan, kept as they were"
            first = {k: earlier[k] for k in ("started", "finished", "quick", "workloads", "plan", "stability")
                     if k in earlier}
            runs = earlier.get("earlier_runs", [])
            same_plan = all(earlier.get(k) == meta.get(k) for k in ("quick", "workloads", "modes", "dtype", "plan"))
            meta["earlier_runs"] = runs + ([first] if first and not same_plan else [])
        if retimed:
            meta["resumed"]["timed_again"] = (f"{retimed} row(s) timed with other CPU threads or without the host "
                                              f"probe")
    if world > 1:
        meta["shards"] = world
    if main and not (resume and os.path.exists(json_path)):
        schema.write_json(json_path, meta)
    if earlier.get("checks"):             # a resumed run does not check the kernels again
        meta["checks"] = earlier["checks"]
    else:
        meta["checks"] = run_checks(device, isolate=isolate) if checks and main else []
    meta["isolated"] = isolate
    meta["compile_budget_s"] = compile_budget_s
    points.sort(key=lambda p: key_of(p) in hung)           # a point that hung last time goes last (stable sort)
    writer = schema.RowWriter(csv_path, other + kept)  # resume: finished points stay, failed ones are tried again
    if main:
        schema.write_json(json_path, meta)
    runner = (_Isolated(device, dtype, cuda_graph, point_timeout_s, compile_budget_s) if isolate
              else _InProcess(device, dtype, sampler, cuda_graph, compile_budget_s))
    # A CPU's speed drifts over seconds (other tenants of the host, clocks): each point is timed in `passes`
    # windows, one per pass over all points, and its statistics pool them, so its spread shows the drift.
    passes = timing.CPU_PASSES if device.type == "cpu" and not isolate else 1
    todo = {key_of(p): p for p in points if key_of(p) not in done}
    rewrite = lambda rows: writer.rewrite(other + kept + [dataclasses.asdict(r) for r in rows.values()])  # noqa: E731
    try:
        written = _time(runner, todo, passes, progress, None, on_row=writer.write, on_pass=rewrite)
        again = [k for k, r in written.items() if r.status == "unstable"]
        if again:                           # later in the run: whatever disturbed them may have passed
            runner.close()
            retry = _time(runner, {k: todo[k] for k in again}, passes, progress, "again")
            written.update({k: settle(written[k], retry[k], device) for k in again})
            rewrite(written)
    finally:
        runner.close()
        writer.close()
    meta["stability"] = stability(kept + list(written.values()), device) | {"passes": passes}
    if world > 1:
        barrier()
        if main:
            merge_shards(out_dir)
    meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if main:
        schema.write_json(json_path, meta)
    return meta


def _time(runner, todo: dict, passes: int, progress: bool, label: str | None, on_row=None, on_pass=None) -> dict:
    """Measure each point of ``todo`` (key -> (workload, impl, shape, mode)); then, on a CPU, ``passes`` − 1 more
    passes over them all, each pooling one more window into every timed point's row.  ``on_row(row)`` as each
    point's first measurement finishes, ``on_pass(rows)`` after each later pass.  Returns key -> row."""
    rows, timed, over = {}, {}, {}      # over: (workload, impl, mode) -> the length whose compile ran past budget
    bar = _progress(len(todo), progress, label)
    try:
        for key, args in todo.items():
            bar(" ".join(key))
            w, impl, s, mode = args
            limit = over.get((w.name, impl.name, mode))
            if limit is not None and s[w.seq_key] >= limit[0]:
                rows[key], timed[key] = point.skipped(*args, runner.dtype, runner.device, limit[1]), None
            else:
                rows[key], timed[key] = runner.measure(*args, keep=passes > 1)
                if point.over_budget(rows[key]):
                    over[(w.name, impl.name, mode)] = (s[w.seq_key], f"{rows[key].reason} at {w.seq_key}="
                                                       f"{s[w.seq_key]}; this length and longer not tried")
            if on_row:
                on_row(rows[key])
    finally:
        bar(None)
    timed = {k: t for k, t in timed.items() if t is not None}
    for n in range(2, passes + 1):
        bar = _progress(len(timed), progress, f"{label + ': ' if label else ''}pass {n}/{passes}")
        try:
            for key, t in timed.items():
                bar(" ".join(key))
                rows[key] = t.window(rows[key])
        finally:
            bar(None)
        if on_pass:
            on_pass(rows)
    return rows


def settle(first: schema.Row, second: schema.Row, device) -> schema.Row:
    """A point measured again after it was unstable: the second row if it is stable now; else the steadier of
    the two, ``unstable``, with both spreads and the load averages seen; the first if the second failed."""
    limit = timing.spread_limit(device)
    if second.status == "ok":
        return second
    if second.status != "unstable":
        first.reason += f"; measured again: {second.status} ({second.reason})"
        return first
    keep = min(first, second, key=lambda r: r.spread)
    loads = [v for r in (first, second) for v in (r.load_start, r.load_end) if v is not None]
    seen = f" (load average {min(loads):g}–{max(loads):g} on {timing.usable_cores()} cores)" if loads else ""
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
    probes = [v for r in timed if (v := get(r, "host_probe_ms")) is not None]
    waits = {k: round(v, 3) if isinstance(v, float) else v for k, v in timing.HOST_WAITS.items()}
    return {"spread_limit": timing.spread_limit(device), "timed": len(timed),
            "host_waits": waits if torch.device(device).type == "cpu" else None,
            "host_probe_ms": [min(probes), max(probes)] if probes else None,
            "unstable": sum(get(r, "status") == "unstable" for r in timed), "cores": timing.usable_cores(),
            "threads": torch.get_num_threads(), "load_average": [min(loads), max(loads)] if loads else None}


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
