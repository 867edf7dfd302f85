"""Tables, plots and comparisons from a run folder (results.csv + run.json)."""
from __future__ import annotations

import os

import pandas as pd

from bench import schema
from bench.report import figures, tables, training, translation
from bench.report.fmt import citation_lines, environment_lines, frame
from bench.report.fmt import table as fmt_table
from bench.workloads import WORKLOADS


def load(run_dir: str) -> tuple[pd.DataFrame, dict]:
    """results.csv as a typed DataFrame (whole rows only) and run.json; RunFolderError if unreadable."""
    csv_path = os.path.join(run_dir, "results.csv")
    if not os.path.exists(csv_path):
        raise FileNotFoundError(f"{run_dir} has no results.csv (is it a seqbench run folder?)")
    rows, _ = schema.read_rows(csv_path)
    df = pd.DataFrame(rows, columns=list(dict.fromkeys([*schema.COLUMNS, *(rows[0] if rows else ())])))
    for c in schema.NUMERIC:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    for c in df.columns.difference(schema.NUMERIC):
        df[c] = df[c].where(df[c] != "", None)
    # a timed row without the numbers every measured point has, with numbers no measurement gives (a hand-edited or
    # foreign file), or with a shape that is not its workload's, is reported as incomplete, with why, instead of
    # breaking the tables and plots
    df["reason"] = df["reason"].astype(object)
    timed = df.status.isin(["ok", "unstable"])
    for mask, why in _implausible(df):
        mask = mask & timed & (df.status != "incomplete")
        df.loc[mask, "reason"] = why if isinstance(why, str) else why[mask]
        df.loc[mask, "status"] = "incomplete"
    return df, schema.read_json(os.path.join(run_dir, "run.json"))


def _shape_ok(workload: str, shape) -> bool:
    """Whether a row's shape label is 'K=int …' with (at least) its workload's keys (any, for one not known here)."""
    try:
        parts = dict(p.split("=") for p in str(shape).split())
        values = [int(v) for v in parts.values()]
    except ValueError:
        return False
    w = WORKLOADS.get(workload)
    return bool(values) and all(v >= 1 for v in values) and (w is None or set(w.shape_keys) <= set(parts))


def _implausible(df: pd.DataFrame):
    """(mask, why) of the rows a report cannot use: numbers missing, not finite or not positive, quantiles out
    of order, or a malformed shape."""
    import numpy as np
    lacking = df[list(MEASURED)].isna()
    yield lacking.any(axis=1), lacking.apply(lambda r: "an ok row without " + ", ".join(r.index[r]), axis=1)
    values = df[list(MEASURED)]
    yield (~(np.isfinite(values) & (values > 0)).all(axis=1),
           "a number that no measurement gives (not finite or not > 0)")
    p20, p80 = df.ms_p20.fillna(df.ms), df.ms_p80.fillna(df.ms)
    yield (p20 > df.ms) | (df.ms > p80) | (p20 <= 0), "ms_p20 ≤ ms ≤ ms_p80 does not hold"
    yield ~pd.Series([_shape_ok(w, s) for w, s in zip(df.workload, df["shape"])], index=df.index, dtype=bool), \
        "a shape that is not its workload's (K=positive integer for each of its keys)"


# what every measured (ok) row carries
MEASURED = ("seq_len", "batch", "tokens", "ms", "tokens_per_s")


def stability_line(df: pd.DataFrame, meta: dict) -> str:
    """How steady the machine was, from the rows: the unstable points (spread over the device's limit twice),
    the load averages seen and the cores, and the host probe's range where it varied by more than 15%, in one
    sentence for the terminal and REPORT.md."""
    st = meta.get("stability") or {}
    limit = st.get("spread_limit")
    timed = df[df.status.isin(["ok", "unstable"])]
    loads = pd.concat([timed.get("load_start", pd.Series(dtype=float)),
                       timed.get("load_end", pd.Series(dtype=float))]).dropna()
    cores = f" on {st['cores']} cores" if st.get("cores") else ""
    seen = (f"load average {loads.min():g}–{loads.max():g}{cores}" if not loads.empty
            else "no load average recorded")
    probes = timed.get("host_probe_ms", pd.Series(dtype=float)).dropna()
    if not probes.empty and probes.max() > 1.15 * probes.min():     # the host's tenants, which no load average sees
        seen += (f"; the host's own speed varied {probes.max() / probes.min():.2f}x: a fixed single-thread loop "
                 f"took {probes.min():.3g}–{probes.max():.3g} ms")
    shaky = int((timed.status == "unstable").sum())
    rule = f"spread (p80 − p20) / median over {limit:g}" if limit is not None else "spread over the device's limit"
    if shaky:
        again = int(timed[timed.status == "unstable"].reason.fillna("").str.contains("measured again").sum())
        how = ("measured twice" if again == shaky else
               f"{again} of them measured twice, {shaky - again} not measured again before the run stopped")
        return (f"**The machine was busy**: {shaky} of {len(timed)} timed points stayed unstable ({rule}, {how}); "
                f"they are flagged `unstable` and decide no verdict ({seen}).")
    return f"All {len(timed)} timed points were stable (none with a {rule}; {seen})."


def workload_table(df: pd.DataFrame, workload: str, mode: str, value: str = "tokens_per_s") -> pd.DataFrame:
    """impl × (batch, sequence length), one value per cell (ok rows only)."""
    d = df[(df.workload == workload) & (df["mode"] == mode) & (df.status == "ok")]
    if d.empty:
        return d
    return d.pivot_table(index="impl", columns=["batch", "seq_len"], values=value, aggfunc="first")


def write_report(run_dir: str) -> str:
    """Rebuild REPORT.md and the PNG plots of a run folder (a sweep, a training run or both); returns the
    report's path.  It opens with the answer: the textbook's table beside ours, with verdicts."""
    if not os.path.exists(os.path.join(run_dir, "results.csv")):
        if os.path.exists(os.path.join(run_dir, "train.csv")):
            return training.training_report(run_dir)
        if os.path.exists(os.path.join(run_dir, "translate.csv")):
            return translation.translation_report(run_dir)
    df, meta = load(run_dir)
    env = meta.get("environment", {})
    cpu_only = bool(meta.get("cpu_only"))
    device = env.get("device", "")
    lines = [f"# seqbench report — {device or 'unknown device'}", ""]
    if cpu_only:
        lines += [f"> **{meta.get('note', 'CPU timings only.')}**", ""]
    lines += [f"> {stability_line(df, meta)}", ""]
    lines += ["## The textbook table, with our measurements", "",
              "Textbook: V100, claimed, no public source.  History: what was measured, with its source.  Ours: "
              "each row's best accurate implementation at each batch, at the longest length the Transformer row "
              "measured there.  NVML utilisation is the share of time any kernel ran; SM activity (GPM) and % of "
              "peak FLOP/s say how much of the GPU that kernel used.", ""]
    lines += tables.markdown(df, WORKLOADS, cpu_only)
    figure = figures.figure(df, WORKLOADS, run_dir, device, cpu_only)
    if figure:
        lines += [f"![the hardware argument]({os.path.basename(figure)})", ""]
    lines += tables.guide_markdown(df, WORKLOADS, cpu_only)
    lines += tables.recurrence_markdown(df, WORKLOADS, cpu_only)
    lines += tables.scoring_markdown(df, WORKLOADS, cpu_only)
    scores = figures.scoring_figure(df, WORKLOADS, run_dir, device)
    if scores:
        lines += [f"![time per query-key pair against d]({os.path.basename(scores)})", ""]
    if os.path.exists(os.path.join(run_dir, "train.csv")):     # the table's training-time column, measured
        training.plot(training.load_rows(run_dir), run_dir, f"seqbench train — {device}")
        lines += training.report_lines(run_dir)
    if os.path.exists(os.path.join(run_dir, "translate.csv")):  # the same column in translation's terms
        lines += translation.report_lines(run_dir)

    stable = meta.get("stability") or {}
    lines += ["## The run", ""] + environment_lines(env, {
        "dtype": meta.get("dtype"), "started": meta.get("started"), "finished": meta.get("finished"),
        "spread limit": stable.get("spread_limit"), "timed points": stable.get("timed"),
        "unstable points": stable.get("unstable"), "timing windows per point": stable.get("passes")}) + [""]
    if meta.get("checks"):
        where = "through the Triton interpreter" if cpu_only else "on the GPU"
        lines += [f"## Kernel checks ({where}, against float64 PyTorch references)", "",
                  "Error: max|kernel − reference| / max(1, max|reference|), over the forward output and, where "
                  "named, the gradients.", ""]
        lines += fmt_table(("kernel", "error", "tolerance", "ok", "seconds"),
                           [(c["kernel"], c.get("error", c.get("max_abs_err")), c.get("tolerance"),
                             "yes" if c["ok"] else f"NO {c.get('reason') or ''}", f"{c['seconds']:.1f}")
                            for c in meta["checks"]]) + [""]

    for name, w in WORKLOADS.items():
        if name not in set(df.workload):
            continue
        lines += [f"## {name}: {w.description}", ""]
        for mode in ("fwd", "fwd+bwd"):
            t = workload_table(df, name, mode)
            if t.empty:
                continue
            lines += [f"**tokens/s, {mode}** (columns: batch, {w.seq_key})", ""] + frame(t, index=True) + [""]
            lines += [f"**TFLOP/s, {mode}**", ""] + frame(workload_table(df, name, mode, "tflops"), index=True) + [""]
        failed = df[(df.workload == name) & ~df.status.isin(["ok"])]
        if not failed.empty:
            lines += ["Points not measured or not stable:", ""] + frame(
                failed[["impl", "mode", "shape", "status", "reason"]].drop_duplicates(["impl", "status", "reason"])) + [""]
    ok = df[df.status == "ok"]
    wrong = ok[tables.disagrees(ok)]
    if not wrong.empty:
        lines += ["## Outputs that disagree with the baseline", "",
                  "These implementations ran, but their output (or gradients) differ from the baseline's on the same "
                  "inputs by more than the dtype's tolerance: their speed is not comparable.", ""]
        lines += frame(wrong[["workload", "impl", "mode", "shape", "baseline", "max_abs_err", "tolerance"]]) + [""]
    timed = df[df.status.isin(["ok", "unstable"])]
    cols = [c for c in ("workload", "impl", "mode", "shape", "status", "ms", "ms_p20", "ms_p80", "compile_s", "spread",
                        "reps",
                        "tokens_per_s", "tflops", "pct_peak_flops", "floor_ms", "floor_bound", "measured_over_floor",
                        "max_abs_err", "accurate", "nvml_util_pct", "gpm_sm_util_pct", "power_w", "joules_per_token",
                        "config", "kernels_ran") if c in timed.columns and timed[c].notna().any()]
    model = ok["roofline_gpu"].dropna().iloc[0] if "roofline_gpu" in ok and ok["roofline_gpu"].notna().any() else "none"
    lines += ["## All measured points", "",
              f"Roofline: floor_ms = max(FLOPs / peak, minimum bytes / HBM bandwidth), or T dependent steps for a "
              f"recurrence when that is longer; measured_over_floor = ms / floor_ms. Roofline GPU: {model}. "
              f"spread = (p80 − p20) / median; max_abs_err: the largest difference from the baseline's output (and, "
              f"for fwd+bwd, input gradients) on the same inputs; accurate: within the dtype's tolerance; "
              f"compile_s: the setup and first call, before any warm-up (torch.compile, Triton's compile and autotune "
              f"included; Inductor's and Triton's on-disk caches, warm after a first run, included too).", ""]
    lines += frame(timed[cols]) + [""]
    plots = figures.make_plots(df, run_dir, device)
    lines += ["## Plots", ""] + [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in plots] + [""]
    lines += citation_lines(env, meta)
    path = os.path.join(run_dir, "REPORT.md")
    schema.atomic_write(path, lambda f: f.write("\n".join(lines)))
    return path
