"""How every number and table of a report is written: one cell format, one table format, the run's
environment and the citation block."""
from __future__ import annotations

import math


def fmt(x, digits=3):
    """A table cell: empty for missing, thousands separators from 1,000, else ``digits`` significant digits."""
    if x is None or (isinstance(x, float) and (math.isnan(x))):
        return ""
    if isinstance(x, float):
        return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.{digits}g}"
    return str(x)


def fmt_interval(interval, digits=3) -> str:
    """'0.21 [0.19–0.23]' (a point interval without its brackets)."""
    if interval is None:
        return ""
    mid, lo, hi = interval
    return fmt(mid, digits) if lo == hi else f"{fmt(mid, digits)} [{fmt(lo, digits)}–{fmt(hi, digits)}]"


def _cell(x) -> str:
    return fmt(x).replace("|", "\\|").replace("\n", " ")


def table(headers, rows) -> list[str]:
    """A Markdown pipe table (its lines): every table of a report goes through here."""
    out = ["| " + " | ".join(_cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out


def frame(df, index: bool = False) -> list[str]:
    """A DataFrame as a table (its index as the first column with ``index``; column tuples joined by ' ')."""
    name = lambda c: " ".join(map(str, c)) if isinstance(c, tuple) else str(c)  # noqa: E731
    headers = ([df.index.name or ""] if index else []) + [name(c) for c in df.columns]
    rows = [([i] if index else []) + list(r) for i, r in zip(df.index, df.itertuples(index=False))]
    return table(headers, rows)


ENV_KEYS = ("device", "sm_count", "compute_capability", "gpu_memory_gib", "cuda", "cudnn", "torch", "triton",
            "seqbench_commit", "python", "cpu_threads", "host")


def environment_lines(env: dict, extra: dict | None = None) -> list[str]:
    """The run's environment as a two-column table: device, CUDA, versions, commit, NVML's static facts."""
    rows = [(k, env[k]) for k in ENV_KEYS if k in env]
    nvml = env.get("nvml") or {}
    if set(nvml) == {"nvml"}:              # only the reason NVML is not there
        rows.append(("NVML", nvml["nvml"]))
    else:
        rows += [(f"NVML {k.replace('_', ' ')}", v) for k, v in nvml.items()]
    rows += [(k, v) for k, v in (extra or {}).items() if v not in (None, "")]
    return table(("", ""), rows)


def citation_lines(env: dict, meta: dict, what: str = "seqbench run") -> list[str]:
    """How to cite a run: the software and version, commit, device, date and the versions that made the numbers."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        v = version("seqbench")
    except PackageNotFoundError:
        v = "unknown version"
    date = str(meta.get("finished") or meta.get("started") or "")[:10]
    soft = ", ".join(f"{k} {env[k]}" for k in ("torch", "triton", "cuda", "python") if env.get(k))
    driver = (env.get("nvml") or {}).get("driver")
    device = env.get("device", "unknown device") + (f", driver {driver}" if driver else "")
    commit = env.get("seqbench_commit", "unknown commit")
    return ["## How to cite", "",
            f"> seqbench {v}, commit {commit}: {what} on {device}, {date}; {soft}.", "",
            "```bibtex", "@software{seqbench,", "  title   = {seqbench: the textbook's RNN-versus-attention hardware "
            "argument, measured with custom Triton kernels},", f"  version = {{{v}}},",
            f"  note    = {{commit {commit}; {what} on {device}, {date}; {soft}}},", "}", "```", ""]


def pyplot():
    """matplotlib's pyplot on the Agg backend (files only, no display): every figure is drawn through it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt
