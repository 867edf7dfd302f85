"""``seqbench train``: whole byte-level language models trained to a quality target (the textbook's
"training time" column at a scale one GPU can run).

Each model of ``bench.train.lm`` trains on the same bytes with AdamW (linear warm-up, cosine decay to a
tenth), gradient clipping (its pre-clip norm logged), bf16 autocast on a GPU and a fixed seed, for a
token or time budget.  Every ``eval_every`` steps it is evaluated on a fixed validation slice, and one
row goes to train.csv (flushed), with NVML telemetry over the training steps since the last one, and a
checkpoint is written: ``--resume`` continues from it.  Batches are a function of (seed, step) alone,
so a resumed run sees the data an uninterrupted one would.

Under ``torchrun`` it trains with DistributedDataParallel (NCCL on GPUs, gloo on CPUs): the global
batch is split across ranks, tokens/s counts every rank, and rank 0 alone writes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
import sysconfig
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from bench import schema
from bench.train import lm
from bench.train.dist import Dist, init_distributed

LN2 = math.log(2.0)


class TrainError(ValueError):
    """A user error: bad arguments, an unusable corpus, a resume that does not fit."""


@dataclass
class TrainConfig:
    models: list = field(default_factory=lambda: ["lstm", "convs2s", "transformer", "mingru"])
    impl: str = "kernels"          # kernels (each model's first impl) | torch (the references)
    lstm_kernel: str = "step"      # step | persistent
    d_model: int = 512             # the transformer's width; the others match its parameters (match="params")
    layers: int = 4
    match: str = "params"
    seq_len: int = 256
    batch: int = 32                # global: split across ranks
    tokens: int | None = None      # budget per model (tokens seen)
    seconds: float | None = None   # budget per model (training wall time)
    lr: float = 2e-3
    warmup: int = 50
    weight_decay: float = 0.1
    clip: float = 1.0
    eval_every: int = 100
    val_tokens: int = 65536
    seed: int = 0
    corpus: str | None = None
    target_bpb: float | None = None

    def impl_for(self, model: str) -> str:
        impls = lm.MODELS[model].impls
        if self.impl == "torch":
            return "torch"
        return self.lstm_kernel if model == "lstm" else impls[0]


def defaults(quick: bool, gpu: bool) -> dict:
    """Sizes and budgets: --quick on a CPU trains the four models for 15 s each; on a GPU the
    quick run fits the GPU job's train stage (see README)."""
    if gpu:
        return dict(d_model=512, layers=4, seq_len=256, batch=32, seconds=60.0 if quick else 600.0, eval_every=100,
                    impl="kernels", val_tokens=65536)
    return dict(d_model=64, layers=2, seq_len=64, batch=16, seconds=15.0 if quick else 120.0,
                eval_every=50, impl="torch", val_tokens=16384, lr=3e-3, warmup=20)


# ------------------------------------------------------------------------------------------------- data

def _files(root: str) -> list[str]:
    if os.path.isfile(root):
        return [root]
    if not os.path.isdir(root):
        raise TrainError(f"--corpus {root} does not exist")
    # os.walk does not follow links to folders: a link to a parent would walk forever, a link to itself repeat it
    found = sorted(os.path.join(folder, f) for folder, _, files in os.walk(root) for f in files
                   if os.path.isfile(os.path.join(folder, f)))
    return [f for f in found if "site-packages" not in f and "dist-packages" not in f and "__pycache__" not in f]


def load_corpus(path: str | None, max_bytes: int = 64 << 20) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(train bytes, validation bytes, description) as uint8 tensors.

    The default is the Python standard library's ``.py`` files, read as bytes.  Files are sorted by path;
    with ten or more, every tenth goes to validation; a single file (or fewer than ten) gives its last
    tenth of bytes.  At most ``max_bytes`` are read."""
    if path is None:
        root = sysconfig.get_paths()["stdlib"]
        files = [f for f in _files(root) if f.endswith(".py")]
        source = f"Python {sysconfig.get_python_version()} standard library (*.py under {root})"
    else:
        files = _files(path)
        source = path
    train, val, total = [], [], 0
    for i, f in enumerate(files):
        if total >= max_bytes:
            break
        try:
            with open(f, "rb") as fh:
                data = fh.read(max_bytes - total)
        except OSError as exc:
            raise TrainError(f"cannot read {f}: {exc.strerror or exc}") from None
        total += len(data)
        (val if len(files) >= 10 and i % 10 == 9 else train).append(data)
    if total == 0:
        raise TrainError(f"the corpus {source} is empty (no bytes in {len(files)} file(s))")
    train_b, val_b = b"".join(train), b"".join(val)
    if not val_b:
        cut = len(train_b) - max(1, len(train_b) // 10)
        train_b, val_b = train_b[:cut], train_b[cut:]
    digest = hashlib.sha1(train_b + val_b).hexdigest()[:12]
    return _bytes_tensor(train_b), _bytes_tensor(val_b), {"source": source, "files": len(files),
                                                          "train_bytes": len(train_b), "val_bytes": len(val_b),
                                                          "sha1": digest}


def _bytes_tensor(b: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(b), dtype=torch.uint8) if b else torch.empty(0, dtype=torch.uint8)


def batch_at(data: torch.Tensor, step: int, seed: int, batch: int, seq_len: int, rank: int = 0, world: int = 1):
    """Rank ``rank``'s share of step ``step``'s global batch: random windows of seq_len + 1 bytes drawn
    from (seed, step) alone.  Returns (inputs, targets), int64 (B/world, seq_len)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    starts = torch.randint(0, len(data) - seq_len, (batch,), generator=g)
    per = batch // world
    starts = starts[rank * per:(rank + 1) * per]
    chunk = data[starts[:, None] + torch.arange(seq_len + 1)].long()
    return chunk[:, :-1], chunk[:, 1:]


def val_windows(val: torch.Tensor, seq_len: int, val_tokens: int) -> torch.Tensor:
    """The fixed validation slice: non-overlapping windows of seq_len + 1 bytes from the start, (n, seq_len + 1)."""
    n = max(1, min(val_tokens // seq_len, (len(val) - 1) // seq_len))
    return torch.stack([val[i * seq_len:i * seq_len + seq_len + 1] for i in range(n)]).long()


# --------------------------------------------------------------------------------------------- training

def lr_at(cfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to a tenth of the peak as progress goes 0 → 1."""
    warm = min(1.0, (step + 1) / max(1, cfg.warmup))
    return cfg.lr * warm * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, progress))))


def evaluate(model, windows: torch.Tensor, d: Dist, micro_batch: int, autocast) -> float:
    """Bits per byte over the validation windows (each rank takes every world-th window)."""
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=d.device)
    mine = windows[d.rank::d.world]
    with torch.no_grad(), autocast():
        for i in range(0, len(mine), micro_batch):
            w = mine[i:i + micro_batch].to(d.device)
            logits = model(w[:, :-1])
            loss = F.cross_entropy(logits.float().reshape(-1, lm.VOCAB), w[:, 1:].reshape(-1), reduction="sum")
            total += torch.stack([loss.double(), torch.tensor(w[:, 1:].numel(), dtype=torch.float64,
                                                              device=d.device)])
    d.all_reduce(total)
    model.train()
    return (total[0] / total[1]).item() / LN2


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def checkpoint_path(out: str, model: str, impl: str) -> str:
    return os.path.join(out, "checkpoints", f"{model}-{impl}.pt")


def _save_checkpoint(path: str, state: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    schema.atomic_write(path, lambda f: torch.save(state, f), binary=True)


# what a checkpoint holds, and the type of each (the resume reads them all)
CHECKPOINT_KEYS = {"model": dict, "optimizer": dict, "step": int, "tokens": int, "train_seconds": (int, float)}


def _load_checkpoint(path: str, device, command: str = "seqbench train") -> dict:
    """A checkpoint to resume from; TrainError naming it when it is damaged (a run killed mid-write by an old
    version, a full disk, a copy cut short) or not one of ours."""
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as exc:  # any unreadable file: the user's to remove
        raise TrainError(f"--resume: the checkpoint {path} is damaged ({schema.describe(exc, 120)}); delete it to "
                         f"train that model again from the start") from None
    wrong = [k for k, kind in CHECKPOINT_KEYS.items() if not isinstance(state, dict) or not isinstance(state.get(k), kind)
             or isinstance(state.get(k), bool)]
    if not wrong and not all(k in state["optimizer"] for k in ("state", "param_groups")):
        wrong = ["optimizer"]
    if wrong:
        raise TrainError(f"--resume: {path} is not a {command} checkpoint (its {wrong} missing or malformed); "
                         f"delete it to train that model again from the start")
    return state


# Tests set this to interrupt a run after that many evaluations in total (a Ctrl-C there).
STOP_AFTER_EVALS_ENV = "SEQBENCH_TRAIN_STOP_AFTER_EVALS"


def adamw(model, lr: float, weight_decay: float, betas: tuple, device) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices only (not biases or norms), fused on a GPU."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=betas,
                             fused=device.type == "cuda")


@dataclass
class Progress:
    """Where one model's training stands: steps taken, tokens seen, training wall time (s)."""
    step: int = 0
    tokens: int = 0
    train_s: float = 0.0


def run_intervals(cfg, p: Progress, model, opt, d: Dist, sampler, bar, train_step, record, resumed: bool) -> None:
    """The training loop of ``seqbench train`` and ``seqbench translate``, to the budget of ``cfg`` (tokens or
    seconds): ``eval_every`` steps, then ``record(interval, final)``, which evaluates and writes the row.

    A step sets the learning rate (``lr_at``), calls ``train_step(step) -> (loss, tokens)`` (the forward and
    loss of that step's batch, and the tokens it holds across every rank), then backward, clipping and the
    optimizer's step.  An interval's fields: NVML's window over its steps, the mean loss and pre-clip gradient
    norm, and tokens/s.  Under DDP with a time budget, each step takes the slowest rank's time, so every rank
    stops at the same step.  A fresh model is evaluated before training; a resumed one at its budget only has
    its final evaluation left."""
    gpu = d.device.type == "cuda"

    def done() -> bool:
        return ((cfg.tokens is not None and p.tokens >= cfg.tokens)
                or (cfg.seconds is not None and p.train_s >= cfg.seconds))

    if not resumed:
        record({"nvml_reason": "initial evaluation (no training yet)"}, final=False)
    elif done():               # stopped after its last training step, before the final evaluation
        record({"nvml_reason": "resumed at its budget: the final evaluation only"}, final=True)
    warmup_s = warm_up(train_step, p.step, opt, d) if not done() else None
    while not done():
        losses, norms, t_start, tok_start = [], [], p.train_s, p.tokens
        window = sampler.window() if sampler else None
        for _ in range(cfg.eval_every):
            if done():
                break
            t0 = time.perf_counter()
            frac = max(p.tokens / cfg.tokens if cfg.tokens else 0.0, p.train_s / cfg.seconds if cfg.seconds else 0.0)
            for g in opt.param_groups:
                g["lr"] = lr_at(cfg, p.step, frac)
            loss, n = train_step(p.step)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.detach())
            norms.append(norm.detach())
            p.step += 1
            p.tokens += n
            _sync(d.device)
            dt = time.perf_counter() - t0
            if d.world > 1 and cfg.seconds is not None:   # every rank stops at the same step
                dt = d.all_reduce(torch.tensor([dt], device=d.device), _max_op()).item()
            p.train_s += dt
            bar.update(n if cfg.tokens else min(dt, max(0.0, bar.total - bar.n)))
        _sync(d.device)
        interval = window.finish(p.tokens - tok_start) if window else {
            "nvml_reason": "no GPU on this machine" if not gpu else "NVML unavailable"}
        loss_t = d.all_reduce(torch.stack(losses).mean().reshape(1)) / d.world
        interval.update(train_loss=loss_t.item(), grad_norm=torch.stack(norms).float().mean().item(),
                        tokens_per_s=(p.tokens - tok_start) / max(p.train_s - t_start, 1e-9), warmup_s=warmup_s)
        warmup_s = None
        record(interval, final=done())
    bar.close()


def warm_up(train_step, step: int, opt, d: Dist) -> float:
    """One forward and backward of the next step's batch, outside the clock, its gradients dropped and the RNG
    as before (a resumed run draws what an unbroken one does): every kernel compiles and autotunes here, so
    the budget and tokens/s are training.  On the first H200 run the Transformer's first step, Triton's
    compiles and autotuning inside it, took 8.2 s of a 7 s budget.  Returns its seconds."""
    t0 = time.perf_counter()
    devices = [d.device.index or 0] if d.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        loss, _ = train_step(step)
        loss.backward()
    opt.zero_grad(set_to_none=True)
    _sync(d.device)
    return time.perf_counter() - t0


def stop_after_evals(evals_done: list, final: bool) -> None:
    """The tests' interruption: a KeyboardInterrupt once STOP_AFTER_EVALS_ENV evaluations are done."""
    stop_after = int(os.environ.get(STOP_AFTER_EVALS_ENV, "0"))
    if stop_after and len(evals_done) >= stop_after and not final:
        raise KeyboardInterrupt(f"{STOP_AFTER_EVALS_ENV}={stop_after}")


def train_one(cfg: TrainConfig, model_name: str, width: int, data, windows, d: Dist, writer, sampler, out: str,
              evals_done: list, progress: bool = True, resume_state: dict | None = None,
              corpus: dict | None = None) -> None:
    """Train one model to its budget, writing a row (and a checkpoint, naming ``corpus``) at every evaluation."""
    impl = cfg.impl_for(model_name)
    torch.manual_seed(cfg.seed)
    model = lm.ByteLM(model_name, width, cfg.layers, impl).to(d.device)
    params = sum(p.numel() for p in model.parameters())
    opt = adamw(model, cfg.lr, cfg.weight_decay, (0.9, 0.95), d.device)
    p = Progress()
    if resume_state:
        model.load_state_dict(resume_state["model"])
        opt.load_state_dict(resume_state["optimizer"])
        p = Progress(resume_state["step"], resume_state["tokens"], resume_state["train_seconds"])
    net = model
    if d.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP
        net = DDP(model, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    gpu = d.device.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if gpu else contextlib.nullcontext
    tokens_per_step = cfg.batch * cfg.seq_len
    base = dict(model=model_name, impl=impl, params=params, d_model=width, world_size=d.world,
                dtype="bfloat16 autocast" if gpu else "float32")
    bar = _bar(cfg, f"{model_name} ({impl})", d.main and progress, p.tokens, p.train_s)
    micro = max(1, cfg.batch // d.world)

    def train_step(step: int):
        x, y = batch_at(data, step, cfg.seed, cfg.batch, cfg.seq_len, d.rank, d.world)
        x, y = x.to(d.device, non_blocking=True), y.to(d.device, non_blocking=True)
        with autocast():
            logits = net(x)
        return F.cross_entropy(logits.float().reshape(-1, lm.VOCAB), y.reshape(-1)), tokens_per_step

    def record(interval: dict, final: bool):
        val = evaluate(model, windows, d, micro, autocast)
        if d.main:
            row = schema.TrainRow(**base, step=p.step, tokens_seen=p.tokens, train_seconds=p.train_s, val_bpb=val,
                                  final=final, lr=opt.param_groups[0]["lr"], **interval)
            writer.write(row)      # then the checkpoint: a crash between them redoes this interval on --resume
            _save_checkpoint(checkpoint_path(out, model_name, impl),
                             {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": p.step,
                              "model_name": model_name, "impl": impl, "corpus": corpus,
                              "tokens": p.tokens, "train_seconds": p.train_s, "config": dataclasses.asdict(cfg)})
            bar.set_postfix(val_bpb=f"{val:.3f}")
        evals_done.append(1)
        d.barrier()
        stop_after_evals(evals_done, final)

    run_intervals(cfg, p, model, opt, d, sampler, bar, train_step, record, resumed=resume_state is not None)


def _max_op():
    import torch.distributed as dist
    return dist.ReduceOp.MAX


def _bar(cfg, label, enabled, tokens, seconds):
    """A tqdm bar over the token or time budget (silent unless ``enabled``: rank 0, --no-progress off)."""
    from tqdm import tqdm
    if cfg.tokens:
        return tqdm(total=cfg.tokens, initial=tokens, unit="tok", unit_scale=True, desc=label, dynamic_ncols=True,
                    disable=not enabled)
    return tqdm(total=round(cfg.seconds, 1), initial=round(seconds, 1), unit="s", desc=label, dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s {postfix}", disable=not enabled)


# ---------------------------------------------------------------------------------------------- the run

def validate(cfg: TrainConfig, world: int) -> None:
    """Raise TrainError for settings that cannot run (before any work)."""
    unknown = [m for m in cfg.models if m not in lm.MODELS]
    if unknown or not cfg.models:
        raise TrainError(f"unknown model(s) {unknown or cfg.models}; expected some of {sorted(lm.MODELS)}")
    if cfg.impl not in ("kernels", "torch"):
        raise TrainError(f"--impl must be 'kernels' or 'torch', got {cfg.impl!r}")
    if cfg.lstm_kernel not in ("step", "persistent"):
        raise TrainError(f"--lstm-kernel must be 'step' or 'persistent', got {cfg.lstm_kernel!r}")
    if cfg.batch % world:
        raise TrainError(f"--batch {cfg.batch} is not divisible by the world size {world}")
    if cfg.tokens is None and cfg.seconds is None:
        raise TrainError("give a budget: --tokens or --seconds")
    if cfg.match not in ("params", "d_model"):
        raise TrainError(f"--match must be 'params' or 'd_model', got {cfg.match!r}")


def check_resume(old: dict, cfg, out: str, sha1: str, data: str, error=TrainError) -> None:
    """``error`` (one line) when a resume of the run whose metadata is ``old`` has other settings than ``cfg``,
    or other data: ``data`` (named so) hashes to ``sha1`` now."""
    if old.get("config") and old["config"] != dataclasses.asdict(cfg):
        changed = sorted(k for k, v in dataclasses.asdict(cfg).items() if old["config"].get(k) != v)
        raise error(f"--resume with different settings ({', '.join(changed)}) than the run in {out}")
    was = (old.get("corpus") or {}).get("sha1")
    if was and was != sha1:
        raise error(f"--resume onto other data: the hash of {data} is now {sha1}, but the run in {out} trained on "
                    f"{was}; restore that data, or start a new run without --resume")


def train(cfg: TrainConfig, out: str, resume: bool = False, progress: bool = True, dist_: Dist | None = None) -> dict:
    """Train every model of ``cfg`` into ``out`` (train.csv, train.json, checkpoints/); returns the metadata.
    Rank 0 alone writes; other ranks return the same metadata."""
    d = dist_ or init_distributed()
    validate(cfg, d.world)
    if cfg.corpus:      # checkpoints and train.json name it absolutely: `seqbench gradients` may run elsewhere
        cfg = dataclasses.replace(cfg, corpus=os.path.abspath(cfg.corpus))
    try:
        widths = lm.match_widths(cfg.models, cfg.d_model, cfg.layers, cfg.match)
        for m, w in widths.items():
            lm.MODELS[m].check_width(w)
    except ValueError as exc:
        raise TrainError(str(exc)) from None
    data, val, corpus = load_corpus(cfg.corpus)
    for name, part in (("training", data), ("validation", val)):
        if len(part) <= cfg.seq_len:
            raise TrainError(f"--seq-len {cfg.seq_len} is longer than the corpus' {name} split ({len(part)} bytes)")
    windows = val_windows(val, cfg.seq_len, cfg.val_tokens)
    csv_path, json_path = os.path.join(out, "train.csv"), os.path.join(out, "train.json")
    kept, resume_states = [], {}
    if resume:
        check_resume(schema.read_json(json_path), cfg, out, corpus["sha1"], f"the corpus {corpus['source']}")
        rows, _ = schema.read_rows(csv_path, schema.TrainRow)
        for m in cfg.models:
            impl = cfg.impl_for(m)
            path = checkpoint_path(out, m, impl)
            mine = [r for r in rows if (r["model"], r["impl"], r["status"]) == (m, impl, "ok")]
            if any(r["final"] == "True" for r in mine):
                kept += mine
                resume_states[m] = "finished"
            elif os.path.exists(path):
                state = _load_checkpoint(path, d.device)
                kept += [r for r in mine if int(r["step"]) <= state["step"]]
                resume_states[m] = state
    from bench.measure.env import environment
    sampler = None
    if d.device.type == "cuda":
        from bench.measure.nvml import NVMLSampler
        sampler = NVMLSampler(device_index=d.device.index or 0)
    meta = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "config": dataclasses.asdict(cfg),
            "widths": widths, "params": {m: lm.count_params(m, w, cfg.layers) for m, w in widths.items()},
            "impls": {m: cfg.impl_for(m) for m in cfg.models}, "corpus": corpus, "world_size": d.world,
            "val_windows": len(windows), "cpu_only": d.device.type != "cuda",
            "environment": environment(sampler.static_info() if sampler else {"nvml": "no GPU on this machine"})}
    writer = None
    if d.main:
        os.makedirs(out, exist_ok=True)
        schema.write_json(json_path, meta)
        writer = schema.RowWriter(csv_path, kept, schema.TRAIN_COLUMNS)
    evals: list = []
    try:
        for m in cfg.models:
            state = resume_states.get(m)
            if state == "finished":
                continue
            try:
                train_one(cfg, m, widths[m], data, windows, d, writer, sampler, out, evals, progress, state,
                          corpus=corpus)
            except torch.cuda.OutOfMemoryError as exc:
                failed(writer, schema.TrainRow, m, cfg.impl_for(m), widths[m], d, "oom", schema.describe(exc))
            except (RuntimeError, ValueError, TypeError) as exc:
                if d.world > 1:
                    raise          # a rank alone cannot go on: the others wait in its collectives
                failed(writer, schema.TrainRow, m, cfg.impl_for(m), widths[m], d, "error", schema.describe(exc))
    finally:
        if writer:
            writer.close()
    meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if d.main:
        schema.write_json(json_path, meta)
    return meta


def failed(writer, row_cls, model: str, impl: str, width: int, d: Dist, status: str, reason: str) -> None:
    """The row of a model that could not train (``row_cls``: TrainRow or TranslateRow), and its memory freed."""
    if writer:
        writer.write(row_cls(model=model, impl=impl, step=0, tokens_seen=0, train_seconds=0.0, d_model=width,
                             world_size=d.world, final=True, status=status, reason=reason))
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------- time to quality











