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
from bench.registry import MODES, shape_label

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


def measure_point(workload, impl, shape, mode, dtype, device, sampler, cuda_graph=False) -> schema.Row:
    """One row: timing, derived throughput and telemetry, or a failure status with its reason."""
    return schema.Row(**_measure(workload, impl, shape, mode, dtype, device, sampler, cuda_graph))


def _measure(workload, impl, shape, mode, dtype, device, sampler, cuda_graph) -> dict:
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
        fn = impl.build(shape, dtype, device, mode)
        fn()
        t = measure.time_gpu(fn, cuda_graph) if gpu else measure.time_cpu(fn)
        row.update(t)
        if gpu:
            row["peak_mem_mib"] = torch.cuda.max_memory_allocated() / 2**20
            row.update(sampler.measure(fn, workload.tokens(shape)))
            row["kernels_ran"] = _kernels_ran(fn)
        else:
            row["nvml_reason"] = "no GPU on this machine"
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
    """Every Triton kernel against its PyTorch reference at small fp32 shapes (the interpreter on a CPU)."""
    from kernels.attention import attention
    from kernels.gru import gru_cell
    from kernels.lstm import lstm
    from kernels.lstm_persistent import lstm_persistent
    from reference.attention import naive_attention
    from reference.gru import gru_cell as ref_gru
    from reference.lstm import lstm as ref_lstm

    g = torch.Generator().manual_seed(0)
    r = lambda *s: (torch.rand(*s, generator=g) * 2 - 1).to(device)  # noqa: E731
    checks = []

    def check(name, fn, ref, args, tol):
        t0 = time.perf_counter()
        try:
            got = fn(*args)
            want = ref(*[a.double() if isinstance(a, torch.Tensor) else a for a in args])
            got = got[0] if isinstance(got, tuple) else got
            want = want[0] if isinstance(want, tuple) else want
            err = (got.double() - want).abs().max().item()
            checks.append({"kernel": name, "max_abs_err": err, "tolerance": tol, "ok": err <= tol,
                           "seconds": time.perf_counter() - t0, "reason": ""})
        except Exception as exc:
            checks.append({"kernel": name, "max_abs_err": None, "tolerance": tol, "ok": False,
                           "seconds": time.perf_counter() - t0, "reason": f"{type(exc).__name__}: {exc}"})

    q, k, v = r(1, 4, 37, 40), r(1, 2, 53, 40), r(1, 2, 53, 40)
    check("attention fwd (GQA, Nq != Nk, D=40)", lambda *a: attention(*a, causal=True),
          lambda *a: naive_attention(*a, causal=True), (q, k, v), 1e-5)
    x, W, U, b = r(9, 3, 24), r(200, 24) * 0.3, r(200, 50) * 0.3, r(200)
    check("LSTM layer fwd (T=9, hidden 50)", lambda *a: lstm(a[0], None, *a[1:]),
          lambda *a: ref_lstm(a[0], None, *a[1:]), (x, W, U, b, b), 1e-5)
    check("persistent LSTM fwd, split head (T=9, hidden 50)",
          lambda *a: lstm_persistent(a[0], None, *a[1:], _block_h=16), lambda *a: ref_lstm(a[0], None, *a[1:]),
          (x, W, U, b, b), 1e-5)
    xg, Wg, Ug, bg, hg = r(3, 24), r(150, 24) * 0.3, r(150, 50) * 0.3, r(150), r(3, 50)
    check("GRU cell fwd (hidden 50)", gru_cell, ref_gru, (xg, hg, Wg, Ug, bg, bg), 1e-5)
    return checks


def sweep(out_dir: str, workloads, dtype, quick: bool, seq_lens=None, batch=None, modes=MODES,
          resume: bool = False, cuda_graph: bool = False, progress=True, device=None) -> dict:
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
        points += [(w, impl, s, mode) for s in shapes for mode in modes for impl in w.impls.values()]
    writer = schema.RowWriter(csv_path, kept)  # resume: finished points stay, failed ones are tried again
    schema.write_json(json_path, meta)
    bar = _progress(len(points), progress)
    try:
        for w, impl, s, mode in points:
            key = (w.name, impl.name, mode, str(dtype).removeprefix("torch."), shape_label(w, s))
            bar(f"{w.name} {impl.name} {shape_label(w, s)} {mode}")
            if key in done:
                continue
            writer.write(measure_point(w, impl, s, mode, dtype, device, sampler, cuda_graph))
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
