"""The report's figures.

* hardware_argument.png, the headline: each row's tokens/s over the Transformer's against sequence length, one
  panel per batch, inference solid and training dashed, with its p20–p80 interval as error bars and the
  textbook's ratios as reference lines; below, NVML utilisation beside SM activity against length for the LSTM
  rows and the Transformer.
* tokens_per_s.png, tflops.png, utilisation.png: per workload and mode, every implementation against the
  workload's swept dimension (sequence length, or d for the scoring functions), one line per batch, with
  p20–p80 error bars.
* scores.png: time per query-key pair against d.
"""
from __future__ import annotations

import os

import pandas as pd

from bench.measure.roofline import gpu_spec
from bench.report.fmt import pyplot
from bench.report.tables import REFERENCE, ROWS, _per_pair, _rows, _usable, ratio_interval, stand_ins
from bench.report.textbook import IMPLIED, SCORING, textbook_ratio
from bench.workloads import WORKLOADS

COLORS = dict(zip(ROWS, ("tab:red", "tab:orange", "tab:green", "tab:blue", "tab:purple")))
MODES = (("fwd", "-", "inference"), ("fwd+bwd", "--", "training"))
STYLE = dict(dpi=110, bbox_inches="tight")


def _best_per_length(df: pd.DataFrame, pairs, mode: str, batch: int) -> pd.DataFrame:
    """A row's fastest usable point at each length of one batch."""
    d = _usable(_rows(df, pairs, mode))
    d = d[d.batch == batch]
    return d.sort_values("tokens_per_s").groupby("seq_len").tail(1).set_index("seq_len").sort_index()


def _errors(mid, lo, hi):
    """errorbar's yerr from bounds; at least 0 (a bound equal to the value can round a hair past it: one
    repetition gives p20 = p80 = the median, and v·ms/ms need not be v in floating point)."""
    return [[max(0.0, m - a) for m, a in zip(mid, lo)], [max(0.0, b - m) for m, b in zip(mid, hi)]]


def figure(df: pd.DataFrame, workloads, run_dir: str, device: str, cpu_only: bool) -> str | None:
    """hardware_argument.png (see the module's docstring); None when no row was measured."""
    plt = pyplot()
    pairs = stand_ins(workloads)
    every = pd.concat([_usable(_rows(df, [p for label in ROWS for p in pairs.get(label, [])], m)) for m, *_ in MODES])
    if every.empty:
        return None
    batches = sorted(int(b) for b in every.batch.dropna().unique())
    fig, axes = plt.subplots(2, len(batches), figsize=(4.6 * len(batches) + 1, 7.4), squeeze=False, sharex="col",
                             gridspec_kw={"height_ratios": (3, 1.7)})
    for col, batch in enumerate(batches):
        ax, util = axes[0][col], axes[1][col]
        ref = {m: _best_per_length(df, pairs.get(REFERENCE, []), m, batch) for m, *_ in MODES}
        for label in ROWS:
            if label == REFERENCE:
                continue
            for mode, style, _ in MODES:
                mine = _best_per_length(df, pairs.get(label, []), mode, batch)
                lengths = [t for t in mine.index if t in ref[mode].index]
                if not lengths:
                    continue
                iv = [ratio_interval(mine.loc[t], ref[mode].loc[t]) for t in lengths]
                ax.errorbar(lengths, [v[0] for v in iv], yerr=_errors(*zip(*iv)), fmt=style, marker="o", ms=4,
                            capsize=3, color=COLORS[label])
            if label not in IMPLIED:         # the fifth row is held to the sequential LSTM's line
                ax.axhline(textbook_ratio(label), color=COLORS[label], ls=":", lw=1.2)
        ax.axhline(1.0, color=COLORS[REFERENCE], ls=":", lw=1.2)
        ax.set(yscale="log", title=f"batch {batch}")
        ax.set_xscale("log", base=2)
        ax.grid(True, which="both", alpha=0.3)
        for label in ("LSTM (sequential)", "LSTM (optimized)", REFERENCE):
            for mode, style, _ in MODES:
                mine = _best_per_length(df, pairs.get(label, []), mode, batch)
                for key, mark in (("nvml_util_pct", "o"), ("gpm_sm_util_pct", "x")):
                    if key in mine and mine[key].notna().any():
                        util.plot(mine.index, mine[key], style, marker=mark, color=COLORS[label])
        if not any(line for line in util.get_lines()):
            util.text(0.5, 0.5, f"no NVML here\n({device})", ha="center", va="center", transform=util.transAxes)
        util.set(ylim=(0, 105), xlabel="sequence length")
        util.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("tokens/s ÷ the Transformer's\n(dotted: the textbook's ratio)")
    axes[1][0].set_ylabel("% (o NVML utilisation: any kernel running;\nx SM activity, GPM)")
    handles = [plt.Line2D([], [], color=COLORS[label], lw=2, label=label) for label in ROWS]
    handles += [plt.Line2D([], [], color="k", ls=style, label=name) for _, style, name in MODES]
    handles += [plt.Line2D([], [], color="k", ls=":", label="the textbook's ratio (the parallel scan is held to the "
                                                           "sequential LSTM's)")]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False, bbox_to_anchor=(0.5, -0.06))
    title = f"The hardware argument, measured: each row's speed relative to the Transformer's — {device}"
    if cpu_only:
        title += "\nCPU timings of the PyTorch implementations, not GPU numbers; the Triton rows are checked, not timed"
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.02, 1, 0.95))
    path = os.path.join(run_dir, "hardware_argument.png")
    fig.savefig(path, **STYLE)
    plt.close(fig)
    return path


def swept_key(w, d: pd.DataFrame) -> str:
    """The shape key a workload's rows vary most: its sequence length, or d for the scoring functions."""
    keys = [k for k in w.shape_keys if k != "B"]
    values = {k: d["shape"].map(lambda s, k=k: dict(p.split("=") for p in s.split()).get(k)).nunique() for k in keys}
    return max(keys, key=lambda k: (values[k], k == w.seq_key))


def make_plots(df: pd.DataFrame, run_dir: str, device: str) -> list[str]:
    """tokens_per_s.png, tflops.png and utilisation.png (see the module's docstring)."""
    plt = pyplot()
    ok = df[df.status == "ok"]
    names = [n for n in WORKLOADS if n in set(ok.workload)]
    out = []
    if not names:
        return out
    spec = gpu_spec(device)
    peak = spec.tflops["bf16"] if spec else None
    specs = [("tokens_per_s", "tokens/s", "tokens_per_s.png", True),
             ("tflops", "TFLOP/s", "tflops.png", True),
             ("nvml_util_pct", "% (NVML utilisation solid, SM activity dashed)", "utilisation.png", False)]
    for col, ylabel, fname, loglog in specs:
        fig, axes = plt.subplots(len(names), 2, figsize=(12, 3.6 * len(names)), squeeze=False)
        for row, name in zip(axes, names):
            w, d = WORKLOADS[name], ok[ok.workload == name]
            key = swept_key(w, d)
            d = d.assign(x=d["shape"].map(lambda s: int(dict(p.split("=") for p in s.split())[key])))
            for ax, (mode, _, mode_name) in zip(row, MODES):
                m = d[d["mode"] == mode]
                for (impl, batch), g in m.groupby(["impl", "batch"]):
                    g = g.sort_values("x")
                    label = f"{impl}, B={int(batch)}"
                    if col == "nvml_util_pct":
                        if g[col].notna().any():
                            ax.plot(g.x, g[col], marker="o", label=label)
                        if g["gpm_sm_util_pct"].notna().any():
                            ax.plot(g.x, g["gpm_sm_util_pct"], ls="--", marker="x", label=f"{label}, SM activity")
                        continue
                    # the p20/p80 times bound the value: throughput is inverse to time
                    lo, hi = g[col] * g.ms / g.ms_p80, g[col] * g.ms / g.ms_p20
                    ax.errorbar(g.x, g[col], yerr=_errors(g[col], lo, hi), marker="o", ms=4, capsize=3, label=label)
                if col == "tflops" and peak:
                    ax.axhline(peak, color="k", ls=":", label=f"dense 16-bit peak {peak} TFLOP/s ({spec.name})")
                if col == "nvml_util_pct" and not m[col].notna().any():
                    ax.text(0.5, 0.5, f"no NVML here\n({device})", ha="center", va="center", transform=ax.transAxes)
                ax.set_xscale("log", base=2)
                if loglog:
                    ax.set_yscale("log")
                ax.set_title(f"{name}, {mode_name}", fontsize=10)
                ax.set_xlabel(key if key != w.seq_key else f"{key} (sequence length)")
                ax.set_ylabel(ylabel)
                ax.grid(True, which="both", alpha=0.3)
                if ax.get_legend_handles_labels()[0]:
                    ax.legend(fontsize=6, ncol=2)
        fig.suptitle(f"seqbench: {ylabel}, p20–p80 error bars — {device}", fontsize=11)
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.9 / (3.6 * len(names))))      # 0.9 inch above the panels for the title
        path = os.path.join(run_dir, fname)
        fig.savefig(path, **STYLE)
        plt.close(fig)
        out.append(path)
    return out


def scoring_figure(df: pd.DataFrame, workloads, run_dir: str, device: str) -> str | None:
    """scores.png: time per query-key pair against d, every implementation of every score, per mode."""
    plt = pyplot()
    pairs = stand_ins(workloads)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    drew = False
    for ax, (mode, _, mode_name) in zip(axes, MODES):
        for label in SCORING:
            d = _per_pair(df, pairs.get(label, []), mode)
            for impl, g in d.groupby("impl"):
                g = g.sort_values("d")
                err = [g.ns_per_pair * (1 - g.ms_p20 / g.ms), g.ns_per_pair * (g.ms_p80 / g.ms - 1)]
                ax.errorbar(g.d, g.ns_per_pair, yerr=err, marker="o", ms=4, capsize=3, label=f"{label}: {impl}")
                drew = True
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("d (query, key, value and attention size)")
        ax.set_ylabel("ns per query-key pair")
        ax.set_title(mode_name)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if not drew:
        plt.close(fig)
        return None
    fig.suptitle(f"attention scores: time per pair against d, p20–p80 error bars — {device}", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    path = os.path.join(run_dir, "scores.png")
    fig.savefig(path, **STYLE)
    plt.close(fig)
    return path
