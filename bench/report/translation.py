"""A translation run's report (``seqbench translate``): BLEU by source length beside the chapter's table,
the time each model took to a BLEU target, bleu_by_length.png and alignment.png."""
from __future__ import annotations

import os

from bench import schema
from bench.report.fmt import citation_lines, environment_lines, pyplot, table
from bench.translate.data import BUCKETS, bucket_name
from bench.translate.data import bleu_column as column

# §1.6's table: BLEU of a plain encoder-decoder by source length (words), as the chapter states it.
CHAPTER_BLEU = {"5-10": (35.0, 40.0), "15-20": (28.0, 32.0), "25-30": (20.0, 25.0), "40+": (0.0, 15.0)}
NAMES = [bucket_name(lo, hi) for lo, hi in BUCKETS]


def load_rows(out: str):
    """translate.csv as a typed DataFrame (whole rows only)."""
    import pandas as pd
    rows, _ = schema.read_rows(os.path.join(out, "translate.csv"), schema.TranslateRow)
    df = pd.DataFrame(rows, columns=schema.TRANSLATE_COLUMNS)
    for c in schema._numeric(schema.TranslateRow):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    return df


def finals(df):
    """Each model run's last evaluation (``final`` False: a run stopped short of its budget)."""
    ok = df[(df.status == "ok") & df.bleu.notna()]
    return ok.sort_values("step", kind="stable").groupby(["model", "impl"], sort=False).tail(1)


# A default target below this BLEU would be met by untrained models' noise.
MIN_DEFAULT_TARGET = 1.0


def time_to_bleu(df, target: float | None = None) -> tuple[float | None, list[dict]]:
    """(target, one dict per model run): the first evaluation after training began at or above the target
    BLEU, with its training wall time and tokens.  The default target is the lowest of the runs' best BLEU
    (one every run reached), leaving out runs whose best is under MIN_DEFAULT_TARGET (those did not learn:
    they show "not reached")."""
    ok = df[(df.status == "ok") & df.bleu.notna() & (df.step > 0)]
    runs = list(dict.fromkeys(zip(ok.model, ok.impl)))
    if not runs:
        return target, []
    best = {r: ok[(ok.model == r[0]) & (ok.impl == r[1])].bleu.max() for r in runs}
    if target is None:
        learned = [b for b in best.values() if b >= MIN_DEFAULT_TARGET]
        target = min(learned) if learned else MIN_DEFAULT_TARGET
    out = []
    for m, i in runs:
        g = ok[(ok.model == m) & (ok.impl == i)].sort_values("step")
        hit = g[g.bleu >= target - 1e-9]
        first = hit.iloc[0] if len(hit) else None
        last, trained = g.iloc[-1], g[g.step > 0]
        out.append({"model": m, "impl": i, "params": last.params, "d_model": last.d_model,
                    "reached": first is not None, "best_bleu": float(best[(m, i)]),
                    "seconds": None if first is None else float(first.train_seconds),
                    "tokens": None if first is None else int(first.tokens_seen),
                    "trained_seconds": float(last.train_seconds), "trained_tokens": int(last.tokens_seen),
                    "tokens_per_s": float(trained.tokens_per_s.median()) if len(trained) else None,
                    "nvml_util_pct": _mean(trained.nvml_util_pct), "gpm_sm_util_pct": _mean(trained.gpm_sm_util_pct)})
    return target, out


def _mean(s):
    s = s.dropna()
    return float(s.mean()) if len(s) else None


def length_drop(row) -> float | None:
    """BLEU at 5-10 words minus BLEU at 40+ (the chapter's fall with length), or None without both."""
    a, b = row.get(column("5-10")), row.get(column("40+"))
    if a is None or b is None or a != a or b != b:
        return None
    return float(a - b)


def bleu_figure(df, out: str, title: str = "") -> str | None:
    """bleu_by_length.png: the final BLEU per source-length bucket, one line per model, and the chapter's
    ranges for a plain encoder-decoder as bars."""
    plt = pyplot()
    last = finals(df)
    if last.empty:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    x = range(len(NAMES))
    for r in last.to_dict("records"):
        ys = [r.get(column(b)) for b in NAMES]
        ax.plot([i for i, y in zip(x, ys) if y == y and y is not None], [y for y in ys if y == y and y is not None],
                marker="o", label=f"{r['model']} ({r['impl']})")
    for b, (lo, hi) in CHAPTER_BLEU.items():
        i = NAMES.index(b)
        ax.bar(i, hi - lo, bottom=lo, width=0.5, color="grey", alpha=0.3,
               label="the chapter: plain encoder-decoder" if b == "5-10" else None)
    ax.set_xticks(list(x), NAMES)
    ax.set_xlabel("source length (words)")
    ax.set_ylabel("BLEU (sacrebleu, greedy)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "BLEU by source length")
    fig.tight_layout()
    path = os.path.join(out, "bleu_by_length.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def alignment_figure(alignments: dict, out: str) -> str | None:
    """alignment.png: each attention model's weights over one long held-out sentence (rows: output words,
    columns: source words)."""
    if not alignments:
        return None
    plt = pyplot()
    n = len(alignments)
    fig, axes = plt.subplots(1, n, figsize=(6 * n, 6), squeeze=False)
    for ax, (name, a) in zip(axes[0], alignments.items()):
        ax.imshow(a["weights"], cmap="Greys", aspect="auto", vmin=0)
        ax.set_title(name)
        ax.set_xticks(range(len(a["source"])), a["source"], rotation=90, fontsize=6)
        ax.set_yticks(range(len(a["output"])), a["output"], fontsize=6)
        ax.set_xlabel("source")
    fig.tight_layout()
    path = os.path.join(out, "alignment.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def report_lines(out: str) -> list[str]:
    """The translation section of REPORT.md."""
    from bench.translate.run import read_alignments
    df = load_rows(out)
    meta = schema.read_json(os.path.join(out, "translate.json"))
    cfg, c = meta.get("config", {}), meta.get("corpus", {})
    env = meta.get("environment", {})
    bleu_figure(df, out, f"seqbench translate — {env.get('device', '')}")
    alignment_figure(read_alignments(out), out)
    lines = ["## Translation: the bottleneck and what attention fixed (seqbench translate)", "",
             f"{c.get('source', '?')}: {c.get('train_pairs', 0):,} training pairs, {c.get('test_pairs', 0):,} held out "
             f"(sha1 {c.get('sha1', '?')}); {cfg.get('layers')} layers, the transformer at d_model "
             f"{cfg.get('d_model')} and the others matched to its parameters; global batch {cfg.get('batch')} "
             f"pairs, world size {meta.get('world_size', 1)}, impl {cfg.get('impl')}.  BLEU: sacrebleu's corpus "
             f"BLEU of greedy decodings of the held-out set, per source-length bucket.", ""]
    if meta.get("cpu_only"):
        lines += ["> **CPU-only machine: tiny models trained for seconds, CPU timings of the PyTorch "
                  "implementations — not GPU numbers, and BLEU far below what the models reach with training.**", ""]
    failed = [f"{f.model} ({f.impl}) failed: {f.status}: {f.reason}" for f in df[df.status != "ok"].itertuples()]
    last = finals(df)
    if last.empty:
        return lines + ["No model finished an evaluation.", ""] + [f"- {f}" for f in failed] + [""]
    head = ["source words", "the chapter (plain enc-dec)"] + [
        f"{r.model} ({r.impl})" + ("" if str(r.final) == "True" else ", unfinished") for r in last.itertuples()]
    body = []
    for b in NAMES:
        ch = CHAPTER_BLEU.get(b)
        chapter = "" if ch is None else (f"< {ch[1]:.0f}" if ch[0] == 0 else f"{ch[0]:.0f}-{ch[1]:.0f}")
        body.append([b, chapter] + [getattr(r, column(b)) for r in last.itertuples()])
    body.append(["all", ""] + [r.bleu for r in last.itertuples()])
    body.append(["5-10 minus 40+", "> 20"] + [length_drop(r._asdict()) for r in last.itertuples()])
    lines += table(head, body) + [""]
    target, runs = time_to_bleu(df, cfg.get("target_bleu"))
    if not runs:
        lines += ["No model has trained past its first evaluation: no time to a BLEU target yet."]
        lines += ([""] + [f"- {f}" for f in failed]) if failed else []
        return lines + [""]
    how = ("given with --target-bleu" if cfg.get("target_bleu") is not None else
           f"the lowest best BLEU of the models that reached {MIN_DEFAULT_TARGET:.0f}")
    lines += [f"Time to **BLEU {target:.1f}** ({how}), training wall time (evaluation excluded); tokens are "
              f"source + target.", ""]
    lines += table(("model", "impl", "params", "d_model", "time to target (s)", "tokens to target", "best BLEU",
                    "tokens/s (median)", "NVML util %", "SM activity %"),
                   [(r["model"], r["impl"], f"{int(r['params']):,}", int(r["d_model"]),
                     f"{r['seconds']:.1f}" if r["reached"] else f"not reached in {r['trained_seconds']:.0f} s",
                     f"{r['tokens']:,}" if r["reached"] else "", f"{r['best_bleu']:.1f}", r["tokens_per_s"],
                     r["nvml_util_pct"], r["gpm_sm_util_pct"]) for r in runs])
    lines += ([""] + [f"- {f}" for f in failed]) if failed else []
    for name, alt in (("bleu_by_length.png", "BLEU by source length"), ("alignment.png", "attention weights")):
        if os.path.exists(os.path.join(out, name)):
            lines += ["", f"![{alt}]({name})"]
    return lines + [""]


def translation_report(out: str) -> str:
    """REPORT.md of a folder that holds a translation run alone."""
    meta = schema.read_json(os.path.join(out, "translate.json"))
    env = meta.get("environment", {})
    lines = [f"# seqbench translate — {env.get('device', 'unknown device')}", ""] + report_lines(out)
    lines += ["## Run", ""] + environment_lines(env, {"started": meta.get("started"), "finished": meta.get("finished")})
    lines += [""] + citation_lines(env, meta, "seqbench translate")
    path = os.path.join(out, "REPORT.md")
    schema.atomic_write(path, lambda f: f.write("\n".join(lines)))
    return path
