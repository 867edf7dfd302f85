"""``seqbench gradients``: the textbook's vanishing-gradient experiment (§1.3), for every architecture.

The chapter builds ``nn.RNN(input_size=1, hidden_size=64, batch_first=True)`` with ``nn.Linear(64, 1)`` on
the last output, feeds one sequence x of shape (1, 100, 1), calls ``output.sum().backward()`` and plots
|∂L/∂x_t| for every position t on a log scale.  Here the same probe runs for the Elman RNN, the LSTM, the
GRU, the minGRU and a one-block causal Transformer, through this project's kernels (``impl="kernels"``) or
the PyTorch references (``impl="torch"``), at PyTorch's default initialisation, over several seeds.  With a
checkpoint of ``seqbench train`` it probes a trained byte-level LM instead: the loss is the last position's
next-byte cross-entropy and x_t is the embedding at position t.

Outputs: gradients.csv (one row per position), gradients.png (median over seeds, min–max band, log scale),
GRADIENTS.md (the ratio of the last position's gradient to the first's, per model) and gradients.json.
No claim about which model decays faster is built in: the numbers are what the models do.
"""
from __future__ import annotations

import math
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from bench import schema

MODELS = ("rnn", "lstm", "gru", "mingru", "transformer")
IMPLS = ("kernels", "torch")


class GradientError(ValueError):
    """A user error: an unknown model, an unreadable checkpoint, a sequence too short."""


class Probe(nn.Module):
    """The chapter's demo for one architecture: input_size → the model (one layer, ``hidden`` wide) →
    ``nn.Linear(hidden, 1)`` on the last position.  PyTorch's default initialisation throughout; the
    Transformer block adds a Linear input projection and sinusoidal positions (it has no order otherwise)."""

    def __init__(self, model: str, hidden: int = 64, input_size: int = 1):
        super().__init__()
        if model not in MODELS:
            raise GradientError(f"unknown model {model!r}; expected one of {list(MODELS)}")
        self.model = model
        if model in ("rnn", "lstm", "gru"):
            self.core = getattr(nn, model.upper())(input_size, hidden, batch_first=True)
        elif model == "mingru":
            from kernels.scan import MinGRU
            self.core = MinGRU(input_size, hidden)
        else:
            from bench.workloads.models import TransformerBlock
            self.inp = nn.Linear(input_size, hidden)
            self.core = TransformerBlock(hidden, None, None)
        self.head = nn.Linear(hidden, 1)

    def _weights(self):
        return [getattr(self.core, f"{n}_l0") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]

    def mix(self, x: torch.Tensor, impl: str) -> torch.Tensor:
        """(B, T, input_size) -> (B, T, hidden) through the model's kernels or its PyTorch reference."""
        m = self.model
        if m in ("rnn", "lstm", "gru"):
            import importlib
            fn = getattr(importlib.import_module(f"{'kernels' if impl == 'kernels' else 'reference'}.{m}"), m)
            return fn(x, None, *self._weights(), batch_first=True)[0]
        if m == "mingru":
            if impl == "kernels":
                return self.core(x)[0]
            from reference.scan import min_gru
            return min_gru(x, *self.core.weights())
        from bench.train.lm import sinusoids
        h = self.inp(x) + sinusoids(x.shape[1], self.head.in_features, x.device).to(x.dtype)
        if impl == "kernels":
            from kernels.attention import attention
            return self.core(h, lambda q, k, v: attention(q, k, v, causal=True))
        return self.core(h, lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True))

    def forward(self, x: torch.Tensor, impl: str = "kernels") -> torch.Tensor:
        return self.head(self.mix(x, impl)[:, -1]).squeeze(-1)


def position_grads(model: str, seq_len: int, seed: int, impl: str = "kernels", hidden: int = 64, device="cpu",
                   dtype=torch.float32) -> torch.Tensor:
    """‖∂L/∂x_t‖ for t = 0 … seq_len − 1 (a float64 vector): the probe built from ``seed`` on one standard
    normal sequence from ``seed``, L = the output at the last position (the chapter's ``output.sum()``)."""
    torch.manual_seed(seed)
    probe = Probe(model, hidden).to(device, dtype)
    g = torch.Generator().manual_seed(10_000 + seed)
    x = torch.randn(1, seq_len, 1, generator=g).to(device, dtype).requires_grad_()
    probe(x, impl).sum().backward()
    return x.grad[0].double().norm(dim=-1).cpu()


# ----------------------------------------------------------------------------------- trained checkpoints

def load_checkpoint(path: str, impl: str, device):
    """(ByteLM with the checkpoint's weights, its model name, its training config, the description of the corpus it
    trained on or None) from ``seqbench train``."""
    from bench.train import lm
    if not os.path.isfile(path):
        raise GradientError(f"--checkpoint {path} is not a file")
    try:
        state = torch.load(path, map_location=device, weights_only=False)
        weights, cfg = state["model"], state["config"]
        if not isinstance(weights, dict) or not isinstance(cfg, dict):
            raise TypeError("its 'model' and 'config' are not dicts")
        for key, kinds in (("model_name", (str, type(None))), ("impl", (str, type(None))),
                           ("corpus", (dict, type(None)))):
            if not isinstance(state.get(key), kinds):
                raise TypeError(f"its {key!r} is a {type(state.get(key)).__name__}")
        if not isinstance(cfg.get("corpus"), (str, type(None))):
            raise TypeError(f"its config's corpus is a {type(cfg.get('corpus')).__name__}, not a path")
    except Exception as exc:  # any unreadable file is the user's to fix
        raise GradientError(f"--checkpoint {path} is not a seqbench train checkpoint ({schema.describe(exc)})") from None
    name = state.get("model_name") or os.path.basename(path).split("-")[0]
    if name not in lm.MODELS:
        raise GradientError(f"--checkpoint {path}: unknown model {name!r}; expected one of {sorted(lm.MODELS)}")
    spec = lm.MODELS[name]
    trained_impl = state.get("impl") or os.path.basename(path).rsplit(".", 1)[0].split("-", 1)[-1]
    run = "torch" if impl == "torch" else (trained_impl if trained_impl in spec.impls[:-1] else spec.impls[0])
    try:
        model = lm.ByteLM(name, weights["embed.weight"].shape[1], cfg["layers"], run).to(device)
        model.load_state_dict(weights)
    except Exception as exc:  # missing or mismatched weights: not the model the checkpoint names
        raise GradientError(f"--checkpoint {path}: its weights do not fit a {name!r} model "
                            f"({schema.describe(exc, 160)})") from None
    return model, name, cfg, state.get("corpus")


def checkpoint_corpus(path: str, cfg: dict, trained_on: dict | None):
    """The validation bytes of the corpus a checkpoint trained on; GradientError when it cannot be read or its
    bytes have changed since (the probe would run on other data)."""
    from bench.train.train import TrainError, load_corpus
    try:
        _, val, now = load_corpus(cfg.get("corpus"))
    except TrainError as exc:
        raise GradientError(f"--checkpoint {path}: cannot read the corpus it trained on ({exc})") from None
    was = (trained_on or {}).get("sha1")
    if was and was != now["sha1"]:
        raise GradientError(f"--checkpoint {path}: the corpus {now['source']} has changed since it trained (sha1 "
                            f"{now['sha1']}, was {was})")
    return val


def checkpoint_grads(model, val: torch.Tensor, seq_len: int, seed: int) -> torch.Tensor:
    """‖∂L/∂e_t‖ per position of a window of the validation bytes ``val`` chosen by ``seed``: e the embeddings,
    L the cross-entropy of the byte after the window, predicted at the last position."""
    start = int(torch.randint(0, len(val) - seq_len - 1, (1,), generator=torch.Generator().manual_seed(seed)))
    window = val[start:start + seq_len + 1].long().to(model.embed.weight.device)
    e = model.embed(window[None, :-1]).detach().requires_grad_()
    logits = F.linear(model.norm(model.mixer(e)), model.embed.weight)
    F.cross_entropy(logits[:, -1], window[None, -1]).backward()
    return e.grad[0].double().norm(dim=-1).cpu()


# ---------------------------------------------------------------------------------------------- the run

def run(out: str, models=MODELS, seq_len: int = 1000, seeds: int = 5, hidden: int = 64, impl: str = "kernels",
        checkpoint: str | None = None, device=None, progress: bool = True) -> dict:
    """Every (model, seed) into out/gradients.csv, rows on disk as each finishes; a failed one is a row with
    its reason and the run goes on.  Then the plot, GRADIENTS.md and gradients.json."""
    from bench.measure.env import environment
    if seq_len < 2:
        raise GradientError(f"--seq-len must be at least 2 (the ratio needs a first and a last position), got {seq_len}")
    if impl not in IMPLS:
        raise GradientError(f"impl must be one of {list(IMPLS)}, got {impl!r}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if checkpoint:
        trained, name, cfg, trained_on = load_checkpoint(checkpoint, impl, device)
        val = checkpoint_corpus(checkpoint, cfg, trained_on)     # the checkpoint's validation split, read once
        if len(val) <= seq_len + 1:
            raise GradientError(f"--seq-len {seq_len} is longer than the corpus' validation split ({len(val)} bytes)")
        jobs, source = [name], checkpoint
    else:
        unknown = [m for m in models if m not in MODELS]
        if unknown or not models:
            raise GradientError(f"unknown model(s) {unknown}; expected some of {list(MODELS)}")
        jobs, source = list(models), "default init"
    os.makedirs(out, exist_ok=True)
    meta = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "models": jobs, "seq_len": seq_len, "seeds": seeds,
            "hidden": None if checkpoint else hidden, "impl": impl, "source": source, "device": str(device),
            "environment": environment({"nvml": "not sampled"})}
    writer = schema.RowWriter(os.path.join(out, "gradients.csv"), columns=schema.GRADIENT_COLUMNS)
    from tqdm import tqdm
    bar = tqdm(total=len(jobs) * seeds, desc="gradients", disable=not progress)
    try:
        for m in jobs:
            for seed in range(seeds):
                base = dict(model=m, impl=impl, seed=seed, source=source, seq_len=seq_len, device=str(device),
                            hidden=None if checkpoint else hidden)
                try:
                    g = (checkpoint_grads(trained, val, seq_len, seed) if checkpoint else
                         position_grads(m, seq_len, seed, impl, hidden, device))
                except torch.cuda.OutOfMemoryError as exc:
                    writer.write(schema.GradientRow(**base, status="oom", reason=schema.describe(exc)))
                except (RuntimeError, ValueError, TypeError) as exc:
                    writer.write(schema.GradientRow(**base, status="error", reason=schema.describe(exc)))
                else:
                    writer.write_many(schema.GradientRow(**base, position=t, grad_norm=v) for t, v in enumerate(g.tolist()))
                bar.update(1)
    finally:
        writer.close()
        bar.close()
    meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    schema.write_json(os.path.join(out, "gradients.json"), meta)
    write_report(out)
    return meta


def load(out: str):
    import pandas as pd
    rows, _ = schema.read_rows(os.path.join(out, "gradients.csv"), schema.GradientRow)
    df = pd.DataFrame(rows, columns=schema.GRADIENT_COLUMNS)
    for c in ("seed", "seq_len", "position", "grad_norm"):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    return df


# A position "reached" by the gradient: within this fraction of the last position's gradient.
HORIZON = 1e-6
# The per-step factor is measured down to this fraction of the last gradient (fp32 underflows near 1e-38).
FACTOR_RANGE = 1e-30


def ratios(df) -> list[dict]:
    """Per (model, impl, source): ‖g_last‖ / ‖g_first‖ per seed, its median, min and max; the per-step factor
    (‖g_k‖ / ‖g_last‖)^(1/(T−1−k)), k the earliest position with ‖g_k‖ ≥ FACTOR_RANGE·‖g_last‖ (the whole
    sequence unless the gradient underflows; below 1, gradients shrink going back in time); the horizon,
    the steps back from the last position before ‖g_t‖ < HORIZON·‖g_last‖; and the positions whose
    gradient is exactly 0 (underflow).  Medians over seeds."""
    out = []
    for (model, impl, source), d in df.groupby(["model", "impl", "source"], sort=False):
        good, failed = d[d.status == "ok"], d[d.status != "ok"]
        row = {"model": model, "impl": impl, "source": source, "seeds": int(good.seed.nunique()),
               "failed": [f"seed {int(r.seed)}: {r.reason}" for r in failed.itertuples()]}
        per_seed, factors, horizons, zeros = [], [], [], []
        for _, s in good.groupby("seed"):
            g = s.sort_values("position").grad_norm.to_numpy()
            per_seed.append(g[-1] / g[0] if g[0] > 0 else math.inf)
            k = int((g >= FACTOR_RANGE * g[-1]).argmax())     # the earliest position still far above underflow
            factors.append((g[k] / g[-1]) ** (1 / (len(g) - 1 - k)) if k < len(g) - 1 else math.nan)
            below = (g < HORIZON * g[-1])[::-1]          # from the last position back
            horizons.append(int(below.argmax()) if below.any() else len(g))
            zeros.append(int((g == 0).sum()))
        if per_seed:
            T = int(good.seq_len.iloc[0])
            row.update(seq_len=T, ratio=statistics.median(per_seed), ratio_min=min(per_seed), ratio_max=max(per_seed),
                       per_step=statistics.median(factors),
                       horizon=statistics.median(horizons), zeros=statistics.median(zeros))
        out.append(row)
    return out


def _fmt(x: float) -> str:
    if x == math.inf:
        return "inf (first is 0)"
    return f"{x:.3g}"


def report_lines(out: str, df=None) -> list[str]:
    import json
    df = load(out) if df is None else df
    meta = json.load(open(os.path.join(out, "gradients.json"))) if os.path.exists(os.path.join(out, "gradients.json")) else {}
    env = meta.get("environment", {})
    lines = ["# The vanishing-gradient experiment (textbook §1.3)", "",
             "The chapter's demo: one layer, default initialisation, `Linear(hidden, 1)` on the last position, "
             "L = that output; ‖∂L/∂x_t‖ per input position t.  Here for every architecture"
             + (f", through {'this project’s kernels' if meta.get('impl') == 'kernels' else 'the PyTorch references'}"
                if meta else "") + (f", on {meta['device']}" if meta else "") + ".", ""]
    if meta.get("source", "default init") != "default init":
        lines += [f"Source: the trained checkpoint `{meta['source']}`: x_t is the embedding at position t and L the "
                  "cross-entropy of the next byte, predicted at the last position.", ""]
    lines += ["| model | impl | source | T | seeds | ‖g_last‖ ÷ ‖g_first‖ (median) | min – max over seeds | "
              "per-step factor | horizon (steps) | zero gradients | failed |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in ratios(df):
        if "ratio" not in r:
            lines.append(f"| {r['model']} | {r['impl']} | {r['source']} | | 0 | not measured | | | | | "
                         f"{'; '.join(r['failed'])} |")
            continue
        lines.append(f"| {r['model']} | {r['impl']} | {r['source']} | {r['seq_len']} | {r['seeds']} | {_fmt(r['ratio'])} | "
                     f"{_fmt(r['ratio_min'])} – {_fmt(r['ratio_max'])} | {r['per_step']:.4f} | {r['horizon']:g} | "
                     f"{r['zeros']:g} | {'; '.join(r['failed'])} |")
    lines += ["", "A ratio above 1: the first position's gradient is smaller than the last's (it vanished going back "
              "in time); the per-step factor is the geometric mean change per step going back, (‖g_k‖ / ‖g_last‖)^(1/(T−1−k)) "
              "from the earliest position k still above 10⁻³⁰ of the last (position 0 unless the gradient underflows; "
              "the chapter's 0.9⁵⁰ ≈ 0.005 is a factor 0.9).  Horizon: the steps back from the last position "
              "before the gradient falls below 10⁻⁶ of the last's; zero gradients: positions where it underflowed "
              "to exactly 0 in the run's dtype (then the ratio is infinite).  Medians over seeds.", "",
              "![gradients](gradients.png)", ""]
    if env:
        lines += [f"torch {env.get('torch', '')}, triton {env.get('triton', '')}, commit {env.get('seqbench_commit', '')}.", ""]
    return lines


def plot(out: str, df=None) -> str | None:
    from bench.report.fmt import pyplot
    plt = pyplot()
    df = load(out) if df is None else df
    ok = df[(df.status == "ok") & (df.grad_norm > 0)]
    if ok.empty:
        return None
    fig, ax = plt.subplots(figsize=(9, 5))
    for (model, impl, source), d in ok.groupby(["model", "impl", "source"], sort=False):
        q = d.groupby("position").grad_norm
        med, lo, hi = q.median(), q.min(), q.max()
        line, = ax.plot(med.index, med.values, label=f"{model} ({impl})" + ("" if source == "default init" else
                                                                           " trained"))
        ax.fill_between(med.index, lo.values, hi.values, color=line.get_color(), alpha=0.15)
    seeds, T = ok.groupby("model").seed.nunique().max(), int(ok.seq_len.max())
    ax.set(yscale="log", xlabel="input position t", ylabel="‖∂L/∂x_t‖ (median over seeds; band: min–max)",
           title=f"gradient of the last position's output w.r.t. each input: T={T}, {seeds} seeds, "
                 f"{ok.source.iloc[0]} — {ok.device.iloc[0]}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(out, "gradients.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(out: str) -> str:
    """gradients.png and GRADIENTS.md from gradients.csv (read once); the report's path."""
    df = load(out)
    plot(out, df)
    path = os.path.join(out, "GRADIENTS.md")
    lines = report_lines(out, df)
    schema.atomic_write(path, lambda f: f.write("\n".join(lines)))
    return path
