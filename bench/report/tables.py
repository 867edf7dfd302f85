"""The textbook's table, measured: its four rows and a fifth beyond it (a recurrence run as a parallel
scan), the claim, the measured history, ours, ratios to the Transformer row, and a verdict computed from the
numbers; and ``hardware_argument.png``.

Which implementations stand for a row is declared with them (``@workload.impl(textbook="...")``):
LSTM (sequential) = the torch loop, eager and compiled, and the fused step kernel; LSTM (optimized) = cuDNN and
the persistent kernel; ConvSeq2Seq = the conv block, eager, compiled and ours; Transformer = the attention block
on SDPA, FlexAttention, torch.compile and ours; the parallel-scan RNN = a minGRU layer on the Triton scan or a
torch scan, eager or compiled; all at the same d_model.  A row's number at a (mode, batch) is its best accurate,
stable implementation there, whoever wrote it; the row also gives ours ÷ the best of the others.
"""
from __future__ import annotations

import math

import pandas as pd

from bench.report.fmt import fmt, fmt_interval
from bench.report.fmt import table as fmt_table
from bench.report.textbook import (BEYOND, GUIDE_CLAIM, HISTORY, IMPLIED, NOT_JUDGED, RECURRENCE_CLAIM,  # noqa: F401
                                   RECURRENCES, REFERENCE, ROWS, RULE, SCORING, SCORING_CLAIM, SOURCES, TEXTBOOK,
                                   textbook_ratio)


def _missing(v) -> bool:
    return v is None or v != v


def ratio_interval(num, den) -> tuple[float, float, float] | None:
    """(ratio, low, high) of ``num``'s tokens/s over ``den``'s (two result rows): the medians' ratio, and the
    p20/p80 bounds, num's slowest repetitions (p80 time) against den's fastest (p20) and the reverse.  A
    row without its times gives a point interval; None when either row is missing."""
    if num is None or den is None:
        return None
    mid = num["tokens_per_s"] / den["tokens_per_s"]
    if any(_missing(r.get("ms")) for r in (num, den)):
        return mid, mid, mid

    def rel(r, k):           # a quantile's time over the median's (1 where the row has none)
        return 1.0 if _missing(r.get(k)) else r[k] / r["ms"]
    return mid, mid * rel(den, "ms_p20") / rel(num, "ms_p80"), mid * rel(den, "ms_p80") / rel(num, "ms_p20")


def side(interval, threshold: float) -> str:
    """Where an interval (ratio, low, high) lies against a threshold: 'below' (all at or under), 'above'
    (all over) or 'across'."""
    _, lo, hi = interval
    return "below" if hi <= threshold else ("above" if lo > threshold else "across")


def verdict(label: str, interval, cpu_only: bool = False) -> str:
    """The rule above, for one row; ``interval`` is ratio_interval's (ratio, low, high) or None."""
    if label == REFERENCE:
        return "reference"
    if interval is None or not all(math.isfinite(v) for v in interval):
        return "not measured"
    if cpu_only:
        return NOT_JUDGED
    return {"below": "holds", "above": "does not hold", "across": "inconclusive"}[
        side(interval, 2 * textbook_ratio(label))]


def stand_ins(workloads) -> dict[str, list[tuple[str, str]]]:
    """Row -> the (workload, impl) pairs standing for it."""
    out = {label: [] for label in ROWS}
    for w in workloads.values():
        for i in w.impls.values():
            if i.textbook:
                out.setdefault(i.textbook, []).append((w.name, i.name))
    return out


def split_ours(workloads, pairs) -> tuple[list, list]:
    """(this project's kernels, everything a user would pick instead: PyTorch eager, cuDNN, SDPA, the peers)
    among a row's (workload, impl) pairs."""
    def ours(p):
        w = workloads.get(p[0])
        return w is not None and p[1] in w.impls and w.impls[p[1]].triton and not w.impls[p[1]].peer
    return [p for p in pairs if ours(p)], [p for p in pairs if not ours(p)]


def _rows(df: pd.DataFrame, pairs, mode: str) -> pd.DataFrame:
    keep = pd.Series(False, index=df.index)
    for wl, impl in pairs:
        keep |= (df.workload == wl) & (df.impl == impl)
    return df[keep & (df["mode"] == mode)]


def disagrees(d: pd.DataFrame) -> pd.Series:
    """Rows whose output (or gradients) differed from the baseline's by more than the tolerance."""
    return d["accurate"].astype(str).str.lower() == "false"


def _usable(d: pd.DataFrame) -> pd.DataFrame:
    """Measured rows whose output agreed with the baseline (a fast wrong kernel does not count)."""
    return d[(d.status == "ok") & ~disagrees(d)]


def best(df: pd.DataFrame, pairs, mode: str, batch: int, seq_len: int):
    """The fastest usable row of these implementations at (mode, batch, seq_len), or None."""
    d = _usable(_rows(df, pairs, mode))
    d = d[(d.batch == batch) & (d.seq_len == seq_len)]
    return None if d.empty else d.sort_values("tokens_per_s").iloc[-1]


def unstable_at(df: pd.DataFrame, pairs, mode: str, batch: int, seq_len: int) -> list[str]:
    """The implementations of these pairs whose point at (mode, batch, seq_len) is unstable (decides nothing)."""
    d = _rows(df, pairs, mode)
    d = d[(d.status == "unstable") & (d.batch == batch) & (d.seq_len == seq_len)]
    return sorted(set(d.impl))


def table(df: pd.DataFrame, workloads, mode: str, cpu_only: bool = False) -> list[dict]:
    """One dict per (batch, row): at each batch the longest length the Transformer row measured."""
    pairs = stand_ins(workloads)
    all_pairs = [p for label in ROWS for p in pairs.get(label, [])]
    measured = _usable(_rows(df, all_pairs, mode))
    out = []
    reference = _usable(_rows(df, pairs.get(REFERENCE, []), mode))
    for batch in sorted(measured.batch.dropna().unique()):
        ref_rows = reference[reference.batch == batch]
        lens = ref_rows.seq_len if not ref_rows.empty else measured[measured.batch == batch].seq_len
        seq_len = int(lens.max())
        ref = best(df, pairs.get(REFERENCE, []), mode, batch, seq_len)
        for label in ROWS:
            r = best(df, pairs.get(label, []), mode, batch, seq_len)
            interval = (1.0, 1.0, 1.0) if label == REFERENCE and r is not None else ratio_interval(r, ref)
            skipped = _rows(df, pairs.get(label, []), mode)
            skipped = skipped[skipped.status == "skipped"]
            needs_gpu = sorted(set(skipped[skipped.get("reason", pd.Series("", index=skipped.index)).fillna("").str.startswith(
                "needs a CUDA GPU")].impl))
            skipped = sorted(set(skipped.impl) - set(needs_gpu))
            shaky = unstable_at(df, pairs.get(label, []), mode, batch, seq_len)
            ruling = verdict(label, interval, cpu_only)
            if ruling == "not measured" and (shaky or (ref is None and unstable_at(
                    df, pairs.get(REFERENCE, []), mode, batch, seq_len))):
                ruling = "unstable: not judged"
            ours, library = split_ours(workloads, pairs.get(label, []))
            mine, lib = best(df, ours, mode, batch, seq_len), best(df, library, mode, batch, seq_len)
            out.append(dict(batch=int(batch), seq_len=seq_len, row=label, best=r,
                            ratio=interval[0] if interval else None, interval=interval,
                            verdict=ruling, not_timed=skipped, needs_gpu=needs_gpu, unstable=shaky, library=lib,
                            ours_vs_library=ratio_interval(mine, lib)))
    return out


def markdown(df: pd.DataFrame, workloads, cpu_only: bool) -> list[str]:
    """The five-row table per mode and batch, the rule and the history's sources."""
    lines = []
    head = ("batch", "model", "textbook util", "textbook tokens/s", "textbook ratio", "history", "history ratio",
            "best implementation (the row's number)", "NVML util %", "SM activity %", "% peak FLOP/s", "tokens/s",
            "our ratio [p20–p80]", "verdict", "best library", "ours ÷ best library [p20–p80]")
    for mode, name in (("fwd", "inference (forward)"), ("fwd+bwd", "training (forward + backward)")):
        body = []
        for r in table(df, workloads, mode, cpu_only):
            util, _, toks = TEXTBOOK[r["row"]]
            hist, hist_ratio = HISTORY[r["row"]]
            b = r["best"]
            ours = f"{b.workload}/{b.impl} ({b['shape']})" if b is not None else (
                "no stable point" if r["unstable"] else "not measured")
            if r["not_timed"]:
                ours += f"; {', '.join(r['not_timed'])}: {'interpreter-checked, not timed' if cpu_only else 'not timed'}"
            if r["needs_gpu"]:
                ours += f"; {', '.join(r['needs_gpu'])}: need a CUDA GPU, not timed"
            if r["unstable"]:
                ours += f"; {', '.join(r['unstable'])}: unstable, not judged"
            get = (lambda k: b.get(k) if b is not None else None)  # noqa: E731
            implied = " (implied)" if r["row"] in IMPLIED else ""
            body.append((r["batch"], r["row"], util, toks, f"{textbook_ratio(r['row']):.2f}{implied}", hist, hist_ratio,
                         ours, get("nvml_util_pct"), get("gpm_sm_util_pct"), get("pct_peak_flops"), get("tokens_per_s"),
                         fmt_interval(r["interval"]), r["verdict"],
                         r["library"].impl if r["library"] is not None else "not measured",
                         fmt_interval(r["ours_vs_library"]) if r["ours_vs_library"] else "not measured"))
        lines += [f"**{name}**", ""] + fmt_table(head, body or [("", "", "", "", "", "", "", "not measured")
                                                             + ("",) * 8]) + [""]
    lines += [RULE, "", "Ratios are to the Transformer row at the same shape; they compare across GPUs where "
              "absolute tokens/s cannot.  Each row's number is its fastest accurate, stable implementation among this "
              "project's kernels and what a user would pick instead (PyTorch eager, cuDNN, SDPA, torch.compile, fla, "
              "FlexAttention); 'ours ÷ best library' is this project's best kernel against the best of the others "
              "(above 1: ours is faster).", "", SOURCES, ""]
    return lines


def headline(df: pd.DataFrame, workloads, cpu_only: bool) -> list[str]:
    """The table's answer in a few lines for the terminal: per mode and batch, each row's best implementation,
    its tokens/s, its ratio to the Transformer with the interval, and the verdict."""
    lines = []
    for mode, name in (("fwd", "inference"), ("fwd+bwd", "training")):
        body = [(r["batch"], r["row"], r["best"].impl if r["best"] is not None else (
                     f"unstable: {', '.join(r['unstable'])}" if r["unstable"] else "not measured"),
                 r["best"].tokens_per_s if r["best"] is not None else None, fmt_interval(r["interval"]),
                 f"{textbook_ratio(r['row']):.2f}", r["verdict"],
                 fmt_interval(r["ours_vs_library"]) if r["ours_vs_library"] else "")
                for r in table(df, workloads, mode, cpu_only)]
        if body:
            lines += [f"{name}:"] + fmt_table(("batch", "row", "best", "tokens/s", "÷ Transformer [p20–p80]",
                                              "textbook", "verdict", "ours ÷ best library"), body) + [""]
    return lines


def guide(df: pd.DataFrame, workloads) -> list[dict]:
    """One row per (implementation kind, mode): the LSTM and GRU impls tagged ``guide`` with that kind, at
    the largest shape both measured (same label: equal batch, length and hidden size), with parameters,
    tokens/s and GRU ÷ LSTM; ``ratios`` over every shared shape.  Kinds where either side was not
    measured come back with the reason."""
    tagged = {}
    for w in workloads.values():
        for i in w.impls.values():
            if i.guide:
                tagged.setdefault(i.guide[1], {})[i.guide[0]] = (w, i)
    out = []
    for kind, sides in tagged.items():
        if set(sides) != {"LSTM", "GRU"}:
            continue
        for mode in ("fwd", "fwd+bwd"):
            got = {}
            for arch, (w, i) in sides.items():
                d = _usable(df[(df.workload == w.name) & (df.impl == i.name) & (df["mode"] == mode)])
                got[arch] = d.set_index("shape")
            row = {"kind": kind, "mode": mode}
            shared = [s for s in got["LSTM"].index if s in got["GRU"].index]
            if not shared:
                why = []
                for a in ("LSTM", "GRU"):
                    if got[a].empty:
                        w, i = sides[a]
                        r = df[(df.workload == w.name) & (df.impl == i.name) & (df["mode"] == mode)].reason.dropna()
                        why.append(f"{a} {i.name}: {r.iloc[0] if len(r) else 'not in this run'}")
                out.append(row | {"reason": "; ".join(why) or "no shape measured by both"})
                continue
            ratios = [got["GRU"].tokens_per_s[s] / got["LSTM"].tokens_per_s[s] for s in shared]
            s = max(shared, key=lambda s: got["LSTM"].tokens[s])
            interval = ratio_interval(got["GRU"].loc[s], got["LSTM"].loc[s])
            shape = {k: int(v) for k, v in (p.split("=") for p in s.split())}
            lw, gw = sides["LSTM"][0], sides["GRU"][0]
            row.update(shape=s, lstm_impl=sides["LSTM"][1].name, gru_impl=sides["GRU"][1].name,
                       lstm_params=lw.params(shape) if lw.params else None,
                       gru_params=gw.params(shape) if gw.params else None,
                       lstm_tokens_per_s=got["LSTM"].tokens_per_s[s], gru_tokens_per_s=got["GRU"].tokens_per_s[s],
                       ratio=ratios[shared.index(s)], interval=interval, ratios=ratios, reason="")
            out.append(row)
    return out


def guide_verdict(interval) -> str:
    """GRU ÷ LSTM (ratio, low, high): faster or the same (within 5%) only when the whole interval says so."""
    _, lo, hi = interval
    if lo > 1.05:
        return "GRU faster"
    if hi < 1 / 1.05:
        return "LSTM faster"
    if lo >= 1 / 1.05 and hi <= 1.05:
        return "the same (within 5%)"
    return "inconclusive"


def guide_markdown(df: pd.DataFrame, workloads, cpu_only: bool) -> list[str]:
    rows = guide(df, workloads)
    if not rows:
        return []
    lines = ["## The textbook's LSTM-vs-GRU guide, measured", "", GUIDE_CLAIM + "  Ours: the same implementation "
             "kind of each at equal batch, length and hidden size (input = hidden), the largest shape both "
             "measured; GRU ÷ LSTM over every shared shape in the last column.  Verdict: GRU or LSTM faster (by "
             "more than 5%), or the same within 5%, only when the whole p20–p80 interval of the ratio says so; "
             "otherwise inconclusive.", ""]
    if cpu_only:
        lines += ["> CPU-only run: PyTorch implementations timed on the CPU; the Triton rows are checked through "
                  "the interpreter and timed on a GPU only.", ""]
    body = []
    for r in rows:
        if r["reason"]:
            body.append((r["kind"], r["mode"], "", "", "", "", "", f"not measured: {r['reason']}", ""))
            continue
        p = (f"{r['lstm_params']:,} / {r['gru_params']:,} ({r['gru_params'] / r['lstm_params']:.2f})"
             if r["lstm_params"] and r["gru_params"] else "")
        n = len(r["ratios"])
        spread = f"{min(r['ratios']):.2f}–{max(r['ratios']):.2f} ({n} shape{'s' if n > 1 else ''})"
        body.append((r["kind"], r["mode"], r["shape"], p, r["lstm_tokens_per_s"], r["gru_tokens_per_s"],
                     fmt_interval(r["interval"], 2), guide_verdict(r["interval"]), spread))
    return lines + fmt_table(("implementation", "mode", "shape", "params LSTM / GRU (GRU ÷ LSTM)", "tokens/s LSTM",
                              "tokens/s GRU", "GRU ÷ LSTM [p20–p80]", "verdict", "GRU ÷ LSTM, all shapes"), body) + [""]


def _d(shape: str) -> int:
    return int(dict(p.split("=") for p in shape.split())["d"])


def _per_pair(df: pd.DataFrame, pairs, mode: str) -> pd.DataFrame:
    """A score's usable rows at the largest N measured, with their d and ns per query-key pair."""
    d = _usable(_rows(df, pairs, mode)).copy()
    if d.empty:
        return d
    d["d"] = d["shape"].map(_d)
    d["ns_per_pair"] = d.ms * 1e6 / (d.batch * d.seq_len * d.seq_len)
    return d[d.seq_len == d.seq_len.max()]


def scoring(df: pd.DataFrame, workloads) -> list[dict]:
    """Per (score, mode): the fastest usable impl at the largest d measured (and, there, the largest N), its
    time per query-key pair, and how that time grew from the smallest d measured."""
    pairs = stand_ins(workloads)
    out = []
    for mode in ("fwd", "fwd+bwd"):
        for label in SCORING:
            d = _per_pair(df, pairs.get(label, []), mode)
            row = {"score": label, "mode": mode, "formula": SCORING[label][0], "textbook": SCORING[label][1]}
            skipped = _rows(df, pairs.get(label, []), mode)
            row["not_timed"] = sorted(set(skipped[skipped.status != "ok"].impl))
            if d.empty:
                out.append(row)
                continue
            n = d.seq_len.max()
            best = d.sort_values("ns_per_pair").groupby("d").first()
            row.update(N=int(n), d_max=int(best.index.max()), d_min=int(best.index.min()),
                       impl=best.impl.iloc[-1], ns_per_pair=best.ns_per_pair.iloc[-1],
                       growth=best.ns_per_pair.iloc[-1] / best.ns_per_pair.iloc[0], by_d=best.ns_per_pair.to_dict())
            out.append(row)
    dots = {r["mode"]: r for r in out if r["score"] == "Luong dot" and "ns_per_pair" in r}
    for r in out:
        ref = dots.get(r["mode"])
        if "ns_per_pair" in r and ref and r["d_max"] in ref["by_d"]:
            r["vs_dot"] = r["by_d"][r["d_max"]] / ref["by_d"][r["d_max"]]
    return out


def scoring_markdown(df: pd.DataFrame, workloads, cpu_only: bool) -> list[str]:
    rows = scoring(df, workloads)
    if not any("ns_per_pair" in r for r in rows):
        return []
    lines = ["## The textbook's scoring functions, measured", "", SCORING_CLAIM + "  Ours: the fastest accurate "
             "implementation of each score (PyTorch with the scores materialised, or this project's kernels) at the "
             "largest d measured, in ns per query-key pair; the growth column is the time per pair at that d over "
             "the time at the smallest d (O(d) work grows with d, O(d²) with d², until the GPU is saturated).  FLOPs "
             "count a tanh as one (`bench/workloads/additive_attention.py`).", ""]
    if cpu_only:
        lines += ["> CPU-only run: the PyTorch implementations timed on the CPU; the Triton kernels checked through "
                  "the interpreter and timed on a GPU only.", ""]
    body = []
    for r in rows:
        if "ns_per_pair" not in r:
            body.append((r["score"], r["formula"], r["textbook"], r["mode"], "not measured", "", "", "", "",
                         ", ".join(r["not_timed"])))
            continue
        vs = f"{r['vs_dot']:.2f}" if r.get("vs_dot") is not None else ""
        body.append((r["score"], r["formula"], r["textbook"], r["mode"], r["impl"], r["d_max"], r["ns_per_pair"], vs,
                     f"×{r['growth']:.2f} for d ×{r['d_max'] / r['d_min']:g}", ", ".join(r["not_timed"])))
    return lines + fmt_table(("score", "formula", "textbook cost per pair", "mode", "fastest (ours)", "d", "ns per pair",
                              "× dot", "growth from the smallest d", "not timed here"), body) + [""]


def recurrence(df: pd.DataFrame, workloads) -> list[dict]:
    """Per (mode, batch, length) of the ``recurrence`` workload: each architecture's fastest accurate impl
    and its tokens/s, and the scans' speed over their gated counterparts (minGRU ÷ GRU, minLSTM ÷ LSTM)."""
    w = workloads.get("recurrence")
    d = _usable(df[df.workload == "recurrence"]) if w is not None and not df.empty else pd.DataFrame()
    if d.empty:
        return []
    d = d.assign(group=d.impl.map({i.name: i.group for i in w.impls.values()}))
    out = []
    for (mode, batch, seq_len), g in d.groupby(["mode", "batch", "seq_len"]):
        row = {"mode": mode, "batch": int(batch), "seq_len": int(seq_len)}
        tops = {}
        for group, _ in RECURRENCES:
            x = g[g.group == group]
            if not x.empty:
                tops[group] = x.sort_values("tokens_per_s").iloc[-1]
                row[group] = (tops[group].impl, float(tops[group].tokens_per_s))
        for scan, gated in (("mingru", "gru"), ("minlstm", "lstm")):
            if scan in row and gated in row:
                row[f"{scan}_over_{gated}"] = ratio_interval(tops[scan], tops[gated])
        out.append(row)
    return out


def recurrence_markdown(df: pd.DataFrame, workloads, cpu_only: bool) -> list[str]:
    rows = recurrence(df, workloads)
    if not rows:
        return []
    lines = ["## Beyond the textbook: every recurrence, sequential and scanned", "", RECURRENCE_CLAIM + "  Ours: the "
             "`recurrence` workload, every architecture at equal batch, hidden size (= input size) and length; "
             "each cell is the fastest implementation whose output agreed with its own baseline.", ""]
    if cpu_only:
        lines += ["> CPU-only run: PyTorch implementations timed on the CPU (cuDNN's place taken by ATen's CPU "
                  "kernels); the Triton step kernels and scans checked through the interpreter, timed on a GPU "
                  "only.", ""]
    head = ("mode", "batch", "T", *(f"{label} tokens/s (impl)" for _, label in RECURRENCES),
            "minGRU ÷ GRU [p20–p80]", "minLSTM ÷ LSTM [p20–p80]")
    body = [(r["mode"], r["batch"], r["seq_len"],
             *(f"{fmt(r[g][1])} ({r[g][0]})" if g in r else "not measured" for g, _ in RECURRENCES),
             *(fmt_interval(r.get(k)) for k in ("mingru_over_gru", "minlstm_over_lstm"))) for r in rows]
    return lines + fmt_table(head, body) + [""]


