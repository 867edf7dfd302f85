"""The report's figures: hardware_argument.png (the headline), tokens_per_s / tflops / utilisation.png per
workload, and scores.png."""
from __future__ import annotations

import os
import textwrap

import pandas as pd

from bench.measure.roofline import gpu_spec
from bench.report.tables import ROWS, _per_pair, _rows, _usable, stand_ins, table
from bench.report.textbook import SCORING
from bench.workloads import WORKLOADS


def figure(df: pd.DataFrame, workloads, run_dir: str, device: str, cpu_only: bool) -> str | None:
    """hardware_argument.png: tokens/s against length for the five rows (inference solid, training dashed)
    at the most measured batch; NVML utilisation beside SM activity; % of peak FLOP/s."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = stand_ins(workloads)
    all_pairs = [p for label in ROWS for p in pairs.get(label, [])]
    every = pd.concat([_usable(_rows(df, all_pairs, mode)) for mode in ("fwd", "fwd+bwd")])
    if every.empty:
        return None
    batch = int(every.batch.mode().iloc[0])
    colors = dict(zip(ROWS, ("tab:red", "tab:orange", "tab:green", "tab:blue", "tab:purple")))
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(18, 5))
    for label in ROWS:
        for mode, style in (("fwd", "-"), ("fwd+bwd", "--")):
            d = _usable(_rows(df, pairs.get(label, []), mode))
            d = d[d.batch == batch]
            if d.empty:
                continue
            top = d.sort_values("tokens_per_s").groupby("seq_len").tail(1).sort_values("seq_len")
            ax1.plot(top.seq_len, top.tokens_per_s, style, marker="o", color=colors[label],
                     label=f"{label}, {'inference' if mode == 'fwd' else 'training'}")
    ax1.set(xscale="log", yscale="log", xlabel="sequence length", ylabel="tokens/s (best implementation)",
            title=f"tokens/s at batch {batch}")
    ax1.set_xscale("log", base=2)
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=7)
    rows = [r for r in table(df, workloads, "fwd") if r["batch"] == batch]
    labels = [r["row"] for r in rows]
    util = [r["best"].get("nvml_util_pct") if r["best"] is not None else None for r in rows]
    sm = [r["best"].get("gpm_sm_util_pct") if r["best"] is not None else None for r in rows]
    peak = [r["best"].get("pct_peak_flops") if r["best"] is not None else None for r in rows]
    x = range(len(labels))
    if any(v is not None and v == v for v in util):
        ax2.bar([i - 0.2 for i in x], [v or 0 for v in util], 0.4, label="NVML utilisation (any kernel running)")
        ax2.bar([i + 0.2 for i in x], [v or 0 for v in sm], 0.4, label="SM activity (GPM)")
        ax2.legend(fontsize=7)
    else:
        ax2.text(0.5, 0.5, f"no NVML on this machine\n({device})", ha="center", va="center", transform=ax2.transAxes)
    ax2.set(xticks=list(x), ylabel="%", title="utilisation beside SM activity (inference)")
    ax2.set_xticklabels([textwrap.fill(label, 18) for label in labels], fontsize=7)
    if any(v is not None and v == v for v in peak):
        ax3.bar(list(x), [v or 0 for v in peak], color=[colors[label] for label in labels])
    else:
        ax3.text(0.5, 0.5, "% of peak needs a GPU's datasheet peak\n(no GPU on this machine)", ha="center",
                 va="center", transform=ax3.transAxes)
    ax3.set(xticks=list(x), ylabel="% of dense peak FLOP/s", title="% of peak (inference)")
    ax3.set_xticklabels([textwrap.fill(label, 18) for label in labels], fontsize=7)
    title = f"The hardware argument, measured — {device}"
    if cpu_only:
        title += "  (CPU timings, not GPU numbers; Triton rows interpreter-checked, not timed)"
    fig.suptitle(title)
    fig.tight_layout()
    path = os.path.join(run_dir, "hardware_argument.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

def scoring_figure(df: pd.DataFrame, workloads, run_dir: str, device: str) -> str | None:
    """scores.png: time per query-key pair against d, every implementation of every score, per mode."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    pairs = stand_ins(workloads)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    drew = False
    for ax, mode in zip(axes, ("fwd", "fwd+bwd")):
        for label in SCORING:
            d = _per_pair(df, pairs.get(label, []), mode)
            for impl, g in d.groupby("impl"):
                g = g.sort_values("d")
                ax.plot(g.d, g.ns_per_pair, marker="o", label=f"{label}: {impl}")
                drew = True
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("d (query, key, value and attention size)")
        ax.set_ylabel("ns per query-key pair")
        ax.set_title("inference" if mode == "fwd" else "training (forward + backward)")
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if not drew:
        plt.close(fig)
        return None
    fig.suptitle(f"attention scores: time per pair against d — {device}")
    fig.tight_layout()
    path = os.path.join(run_dir, "scores.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

def make_plots(df: pd.DataFrame, run_dir: str, device: str) -> list[str]:
    """tokens/s, utilisation and TFLOP/s against sequence length, one panel per workload."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = df[(df.status == "ok") & (df["mode"] == "fwd")]
    names = [n for n in WORKLOADS if n in set(ok.workload)]
    out = []
    if not names:
        return out
    spec = gpu_spec(device)
    peak = spec.tflops["bf16"] if spec else None
    specs = [("tokens_per_s", "tokens/s", "tokens_per_s.png", True),
             ("tflops", "TFLOP/s", "tflops.png", True),
             ("nvml_util_pct", "% (NVML util solid, GPM SM activity dashed)", "utilisation.png", False)]
    for col, ylabel, fname, loglog in specs:
        cols = min(2, len(names))
        rows = -(-len(names) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4 * rows), squeeze=False)
        for ax in axes.flat[len(names):]:
            ax.set_visible(False)
        for ax, name in zip(axes.flat, names):
            d = ok[ok.workload == name]
            d = d[d.batch == d.batch.mode().iloc[0]]     # against length at the most measured batch
            for impl, g in d.groupby("impl"):
                g = g.sort_values("seq_len")
                if col in g and g[col].notna().any():
                    ax.plot(g.seq_len, g[col], marker="o", label=impl)
                if col == "nvml_util_pct" and "gpm_sm_util_pct" in g and g["gpm_sm_util_pct"].notna().any():
                    ax.plot(g.seq_len, g["gpm_sm_util_pct"], ls="--", marker="x", label=f"{impl} SM activity")
            if col == "tflops" and peak:
                ax.axhline(peak, color="k", ls=":", label=f"dense 16-bit peak {peak} TFLOP/s ({spec.name})")
            if col == "nvml_util_pct" and not d["nvml_util_pct"].notna().any():
                ax.text(0.5, 0.5, "no NVML on this machine\n(" + device + ")", ha="center", va="center",
                        transform=ax.transAxes)
            ax.set_xscale("log", base=2)
            if loglog:
                ax.set_yscale("log")
            ax.set_title(f"{name} (batch {int(d.batch.iloc[0])})")
            ax.set_xlabel(WORKLOADS[name].seq_key + " (sequence length)")
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        fig.suptitle(f"seqbench, forward — {device}")
        fig.tight_layout()
        path = os.path.join(run_dir, fname)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        out.append(path)
    return out
