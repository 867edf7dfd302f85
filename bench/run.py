"""``seqbench run``: check the kernels, sweep the workloads, write rows as they finish.

Every (workload, impl, shape, mode) point becomes one row of results.csv, appended and flushed
as soon as it is measured, so an interrupted run keeps what it finished and ``--resume`` skips it.
A point that fails (out of memory, unsupported, compile error) is a row with its status and
reason; the sweep goes on.
"""
from __future__ import annotations

import os
import time

import torch

from bench import measure, roofline, schema
from bench.env import environment
from bench.workload import MODES, Point, shape_label
from bench.workloads import WORKLOADS
from kernels._common import forget_tuned_configs, tuned_configs

COLUMNS, KEY = schema.COLUMNS, schema.KEY


def _kernels_ran(fn) -> str:
    """Names of the GPU kernels one call launches, longest first (which SDPA/cuDNN path really ran)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    kernels = [e for e in prof.key_averages() if str(getattr(e, "device_type", "")).endswith("CUDA")]
    kernels.sort(key=lambda e: getattr(e, "device_time_total", 0), reverse=True)
    return "; ".join(e.key[:80] for e in kernels[:3])


def measure_point(workload, impl, shape, mode, dtype, device, sampler, cuda_graph=False, point=None) -> schema.Row:
    """One row: timing, derived throughput, telemetry and accuracy against the baseline, or a failure
    status with its reason.  ``point`` carries the inputs and baseline output shared with the other impls."""
    point = point or Point(workload, shape, mode, dtype, device)
    return schema.Row(**_measure(workload, impl, shape, mode, dtype, device, sampler, cuda_graph, point))


def _measure(workload, impl, shape, mode, dtype, device, sampler, cuda_graph, point) -> dict:
    row = {"workload": workload.name, "impl": impl.name, "mode": mode, "dtype": str(dtype).removeprefix("torch."),
           "shape": shape_label(workload, shape), "seq_len": shape[workload.seq_key], "batch": shape["B"],
           "tokens": workload.tokens(shape), "device": str(device)}
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
        fn()
        row["config"] = tuned_configs() or None
        t = measure.time_gpu(fn, cuda_graph) if gpu else measure.time_cpu(fn)
        row.update(t)
        if gpu:
            row["peak_mem_mib"] = torch.cuda.max_memory_allocated() / 2**20
            row.update(sampler.measure(fn, workload.tokens(shape)))
            row["kernels_ran"] = _kernels_ran(fn)
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
        return row | {"status": "error", "reason": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"}
    ms = row["ms"]
    flops = workload.flops(shape, mode)
    nbytes = workload.min_bytes(shape, dtype, mode)
    row.update(status="ok", reason="", tokens_per_s=workload.tokens(shape) / (ms / 1e3),
               tflops=flops / (ms / 1e3) / 1e12, gbps=nbytes / (ms / 1e3) / 1e9)
    if spec is not None:
        row["measured_over_floor"] = ms / row["floor_ms"]
        if gpu:
            row["pct_peak_flops"] = 100 * row["tflops"] / roofline.peak_tflops(spec, dtype)
            row["pct_peak_bw"] = 100 * row["gbps"] / 1e3 / spec.hbm_tbs
    return row


def run_checks(device) -> list[dict]:
    """Every workload's checks: its Triton kernels against float64 references at small fp32 shapes
    (through the interpreter on a CPU)."""
    checks, seen = [], set()
    for w in WORKLOADS.values():
        for c in w.checks:
            if c.name in seen:
                continue
            seen.add(c.name)
            t0 = time.perf_counter()
            try:
                got, want = c.run(device)
                err = (got.double() - want.double()).abs().max().item()
                checks.append({"kernel": c.name, "max_abs_err": err, "tolerance": c.tolerance, "ok": err <= c.tolerance,
                               "seconds": time.perf_counter() - t0, "reason": ""})
            except Exception as exc:
                checks.append({"kernel": c.name, "max_abs_err": None, "tolerance": c.tolerance, "ok": False,
                               "seconds": time.perf_counter() - t0, "reason": f"{type(exc).__name__}: {exc}"})
    return checks


def sweep(out_dir: str, workloads, dtype, quick: bool, seq_lens=None, batch=None, modes=MODES,
          resume: bool = False, cuda_graph: bool = False, progress=True, device=None, impls=None) -> dict:
    """Run every point into out_dir/results.csv and write run.json; returns the run's metadata."""
    os.makedirs(out_dir, exist_ok=True)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    csv_path = os.path.join(out_dir, "results.csv")
    # Nothing on disk changes until the kept rows are safely in the new file (RowWriter): an interruption
    # at any point of a resume loses no finished row.
    kept, dropped = schema.read_rows(csv_path) if resume else ([], 0)
    kept = [r for r in kept if r["status"] == "ok"]
    done = {schema.row_key(r) for r in kept}
    sampler = measure.NVMLSampler() if device.type == "cuda" else None
    meta = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "quick": quick, "dtype": str(dtype), "modes": list(modes),
            "workloads": [w.name for w in workloads],
            "environment": environment(sampler.static_info() if sampler else {"nvml": "no GPU on this machine"}),
            "cpu_only": device.type != "cuda"}
    if device.type != "cuda":
        meta["note"] = ("CPU-only machine: Triton kernels were checked through the interpreter, and the timings "
                        "are CPU timings of the PyTorch implementations at small sizes - not GPU numbers.")
    if resume:
        meta["resumed"] = {"kept_rows": len(kept), "dropped_incomplete_rows": dropped}
    json_path = os.path.join(out_dir, "run.json")
    if not (resume and os.path.exists(json_path)):
        schema.write_json(json_path, meta)
    meta["checks"] = run_checks(device)
    points = []
    for w in workloads:
        shapes = w.default_shapes(quick, device.type == "cuda")
        if seq_lens:
            shapes = [dict(shapes[0], **{w.seq_key: n}) for n in seq_lens]
        if batch:
            shapes = [dict(s, B=batch) for s in shapes]
        chosen = [i for i in w.impls.values() if not impls or i.name in impls]
        points += [(w, impl, s, mode) for s in shapes for mode in modes for impl in chosen]
    writer = schema.RowWriter(csv_path, kept)  # resume: finished points stay, failed ones are tried again
    schema.write_json(json_path, meta)
    bar = _progress(len(points), progress)
    point = None
    try:
        for w, impl, s, mode in points:
            key = (w.name, impl.name, mode, str(dtype).removeprefix("torch."), shape_label(w, s))
            bar(f"{w.name} {impl.name} {shape_label(w, s)} {mode}")
            if key in done:
                continue
            if point is None or (point.workload, point.shape, point.mode) != (w, s, mode):
                point = Point(w, s, mode, dtype, device)   # inputs and baseline shared by this shape's impls
            writer.write(measure_point(w, impl, s, mode, dtype, device, sampler, cuda_graph, point=point))
    finally:
        writer.close()
        bar(None)
    meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    schema.write_json(json_path, meta)
    return meta


def _progress(total: int, enabled: bool):
    """A callable advancing a tqdm bar (stderr) with a label; None closes it."""
    if not enabled:
        return lambda label: None
    from tqdm import tqdm
    bar = tqdm(total=total, unit="point", dynamic_ncols=True)

    def step(label):
        if label is None:
            bar.close()
            return
        bar.set_description_str(label[:60])
        bar.update(1)
    return step
