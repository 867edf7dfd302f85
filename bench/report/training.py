"""A training run's report: time to quality, train.png and the REPORT.md section (``seqbench train``)."""
from __future__ import annotations

import os

from bench import schema
from bench.report.fmt import citation_lines, environment_lines, pyplot, table


def load_rows(out: str):
    """train.csv as a typed DataFrame (whole rows only)."""
    import pandas as pd
    rows, _ = schema.read_rows(os.path.join(out, "train.csv"), schema.TrainRow)
    df = pd.DataFrame(rows, columns=schema.TRAIN_COLUMNS)
    for c in schema._numeric(schema.TrainRow):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    # an ok row without the numbers every evaluation has (a hand-edited file) is kept as incomplete, with why
    import numpy as np
    needed = ["step", "tokens_seen", "train_seconds", "params", "d_model"]
    bad = (df.status == "ok") & ~np.isfinite(df[needed]).all(axis=1)
    df["reason"] = df["reason"].astype(object)
    df.loc[bad, "reason"] = "an ok row without finite " + ", ".join(needed)
    df.loc[bad, "status"] = "incomplete"
    return df


def time_to_quality(df, target: float | None = None) -> tuple[float | None, list[dict]]:
    """(target, one dict per model run): the first evaluation at or below the target bits/byte, with its
    training wall time and tokens.  The default target is the best validation bits/byte every run reached
    (the largest of the runs' minima)."""
    ok = df[(df.status == "ok") & df.val_bpb.notna()]
    runs = list(dict.fromkeys(zip(ok.model, ok.impl)))
    if not runs:
        return target, []
    best = {r: ok[(ok.model == r[0]) & (ok.impl == r[1])].val_bpb.min() for r in runs}
    if target is None:
        target = max(best.values())
    out = []
    for (m, i) in runs:
        g = ok[(ok.model == m) & (ok.impl == i)].sort_values("step")
        hit = g[g.val_bpb <= target + 1e-12]
        last = g.iloc[-1]
        first = hit.iloc[0] if len(hit) else None
        trained = g[g.step > 0]
        out.append({"model": m, "impl": i, "params": last.params, "d_model": last.d_model,
                    "reached": first is not None,
                    "seconds": None if first is None else float(first.train_seconds),
                    "tokens": None if first is None else int(first.tokens_seen),
                    "best_bpb": float(best[(m, i)]), "final_bpb": float(last.val_bpb),
                    "trained_seconds": float(last.train_seconds), "trained_tokens": int(last.tokens_seen),
                    "tokens_per_s": float(trained.tokens_per_s.median()) if len(trained) else None,
                    "nvml_util_pct": _mean(trained.nvml_util_pct), "gpm_sm_util_pct": _mean(trained.gpm_sm_util_pct),
                    "joules_per_token": _mean(trained.joules_per_token)})
    return target, out


def _mean(s):
    s = s.dropna()
    return float(s.mean()) if len(s) else None


def plot(df, out: str, title: str = "") -> str | None:
    """train.png: validation bits/byte against training wall time and against tokens, one line per model."""
    plt = pyplot()
    ok = df[(df.status == "ok") & df.val_bpb.notna()]
    if ok.empty:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for (m, i), g in ok.groupby(["model", "impl"], sort=False):
        g = g.sort_values("step")
        for ax, x in zip(axes, ("train_seconds", "tokens_seen")):
            ax.plot(g[x], g.val_bpb, marker=".", label=f"{m} ({i})")
    axes[0].set_xlabel("training wall time (s, evaluation excluded)")
    axes[1].set_xlabel("tokens seen")
    axes[0].set_ylabel("validation bits/byte")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend()
    fig.suptitle(title or "seqbench train")
    fig.tight_layout()
    path = os.path.join(out, "train.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def report_lines(out: str) -> list[str]:
    """The "Time to quality" section of REPORT.md, from train.csv and train.json."""
    df = load_rows(out)
    meta = schema.read_json(os.path.join(out, "train.json"))
    cfg = meta.get("config", {})
    target, runs = time_to_quality(df, cfg.get("target_bpb"))
    lines = ["## Time to quality (seqbench train)", ""]
    c = meta.get("corpus", {})
    lines += [f"Byte-level language models, {cfg.get('layers')} layers each, sequence length {cfg.get('seq_len')}, "
              f"global batch {cfg.get('batch')}, world size {meta.get('world_size', 1)}, sizes matched by "
              f"{cfg.get('match')}; corpus {c.get('source', '?')} ({c.get('train_bytes', 0):,} training bytes, "
              f"{c.get('val_bytes', 0):,} validation bytes, sha1 {c.get('sha1', '?')}); validation on "
              f"{meta.get('val_windows', '?')} fixed windows.  Wall time is training only (evaluation excluded).", ""]
    if meta.get("cpu_only"):
        lines += ["> **CPU-only machine: tiny models and CPU timings of the PyTorch implementations — not GPU "
                  "numbers.**", ""]
    failed = [f"{f.model} ({f.impl}) failed: {f.status}: {f.reason}" for f in df[df.status != "ok"].itertuples()]
    if not runs:
        return lines + ["No model finished an evaluation.", ""] + [f"- {f}" for f in failed] + [""]
    how = "given with --target-bpb" if cfg.get("target_bpb") is not None else "the best every model reached"
    body = [(r["model"], r["impl"], f"{int(r['params']):,}", int(r["d_model"]),
             f"{r['seconds']:.1f}" if r["reached"] else f"not reached in {r['trained_seconds']:.0f} s",
             f"{r['tokens']:,}" if r["reached"] else f"not reached in {r['trained_tokens']:,}", f"{r['best_bpb']:.3f}",
             r["tokens_per_s"], r["nvml_util_pct"], r["gpm_sm_util_pct"], r["joules_per_token"]) for r in runs]
    lines += [f"Target: **{target:.3f} bits/byte** ({how}).", ""] + table(
        ("model", "impl", "params", "d_model", "time to target (s)", "tokens to target", "best bits/byte",
         "tokens/s (median)", "NVML util %", "SM activity %", "J/token"), body)
    lines += ([""] + [f"- {f}" for f in failed]) if failed else []
    if not any(r["reached"] for r in runs):
        lines += ["", f"No model reached {target:.3f} bits/byte."]
    if os.path.exists(os.path.join(out, "train.png")):
        lines += ["", "![validation bits/byte against wall time and tokens](train.png)"]
    return lines + [""]


def training_report(out: str) -> str:
    """train.png, and REPORT.md of a folder that holds a training run alone (``bench.report.report.write_report``
    chooses: a folder with a sweep too gets the whole run report, this section in it)."""
    meta = schema.read_json(os.path.join(out, "train.json"))
    env = meta.get("environment", {})
    plot(load_rows(out), out, f"seqbench train — {env.get('device', '')}")
    lines = [f"# seqbench train — {env.get('device', 'unknown device')}", ""] + report_lines(out)
    lines += ["## Run", ""] + environment_lines(env, {"started": meta.get("started"), "finished": meta.get("finished")})
    lines += [""] + citation_lines(env, meta, "seqbench train")
    path = os.path.join(out, "REPORT.md")
    schema.atomic_write(path, lambda f: f.write("\n".join(lines)))
    return path


