"""``seqbench translate``: encoder–decoder translation models trained and scored by source length.

Each model of ``bench.translate.models`` trains on the same sentence pairs with teacher forcing, as
``seqbench train`` trains its LMs and with its pieces: AdamW, linear warm-up and cosine decay
(``bench.train.train.lr_at``), clipping, bf16 autocast on a GPU, a fixed seed, batches drawn from
(seed, step) alone, DDP under torchrun, a checkpoint at every evaluation and ``--resume``.

At every evaluation the model decodes the fixed held-out set greedily, and ``sacrebleu`` scores it,
overall and per source-length bucket; one row goes to translate.csv as it is made.  At the end each
attention model's weights over one long held-out sentence go to ``alignment/<model>.json`` (the figure).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from bench import schema
from bench.train import train as tr
from bench.train.dist import Dist, init_distributed
from bench.translate import data as D
from bench.translate import models as M


class TranslateError(tr.TrainError):
    """A user error: bad arguments, an unusable corpus, a resume that does not fit."""


@dataclass
class TranslateConfig:
    models: list = field(default_factory=lambda: list(M.MODELS))
    impl: str = "kernels"          # kernels | torch
    d_model: int = 192             # the transformer's width; the others match its parameters
    layers: int = 2
    pairs: int = 200_000           # training pairs (synthetic: generated; a corpus: the first N)
    max_len: int = 60              # source words at most (synthetic); longer corpus pairs are dropped
    vocab: int = 4000              # synthetic source words (the target has about as many); a corpus' pieces
    batch: int = 128               # sentence pairs per step, global
    tokens: int | None = None      # budget per model: source + target tokens seen
    seconds: float | None = None   # budget per model: training wall time
    lr: float = 1e-3
    warmup: int = 200
    weight_decay: float = 0.01
    clip: float = 1.0
    eval_every: int = 500
    test_per_bucket: int = 100     # held-out pairs per length bucket
    seed: int = 0
    corpus: list | None = None     # [source file, target file]
    target_bleu: float | None = None


def defaults(quick: bool, gpu: bool) -> dict:
    """On a GPU the kernels at d_model 192 (the LSTM models' matched widths, about 230, stay within the
    attention kernels' 256); on a CPU the references, small, a closed vocabulary of 200
    words: --quick trains each model for 30 s (about three minutes in all)."""
    if gpu:
        return dict(d_model=192, layers=2, pairs=50_000 if quick else 200_000, vocab=4000, batch=128,
                    seconds=60.0 if quick else 900.0, eval_every=200 if quick else 500, impl="kernels",
                    test_per_bucket=50 if quick else 100)
    return dict(d_model=64, layers=1, pairs=20_000, vocab=200, batch=32, seconds=30.0 if quick else 300.0,
                eval_every=150, impl="torch", test_per_bucket=25, lr=3e-3, warmup=50)


MAX_VOCAB = 8000       # the synthetic lexicon's syllable words run out past about 9,800


def validate(cfg: TranslateConfig, world: int) -> None:
    unknown = [m for m in cfg.models if m not in M.MODELS]
    if len(set(cfg.models)) != len(cfg.models):
        raise TranslateError(f"--models names a model twice: {cfg.models}")
    if unknown or not cfg.models:
        raise TranslateError(f"unknown model(s) {unknown or cfg.models}; expected some of {list(M.MODELS)}")
    if cfg.impl not in M.IMPLS:
        raise TranslateError(f"--impl must be 'kernels' or 'torch', got {cfg.impl!r}")
    if cfg.batch % world:
        raise TranslateError(f"--batch {cfg.batch} is not divisible by the world size {world}")
    if cfg.tokens is None and cfg.seconds is None:
        raise TranslateError("give a budget: --tokens or --seconds")
    if cfg.max_len < 1 or cfg.pairs < 1:
        raise TranslateError("--max-len and --pairs must be positive")
    if not cfg.corpus and not 40 <= cfg.vocab <= MAX_VOCAB:
        raise TranslateError(f"--vocab must be 40 to {MAX_VOCAB} words for the synthetic pair, got {cfg.vocab}")
    if not 0 <= cfg.seed < 2 ** 40:
        raise TranslateError(f"--seed must be in 0 .. 2^40, got {cfg.seed}")


def check_widths(widths: dict, impl: str) -> None:
    """The kernels' limits: an attention model's memory (its width) is the additive kernel's values and
    Luong's head dim, at most 256 each; TranslateError before anything is written."""
    from kernels.additive_attention import MAX_DV
    from kernels.attention import MAX_HEAD_DIM
    most = min(MAX_DV, MAX_HEAD_DIM)
    wide = {m: w for m, w in widths.items() if m in ("bahdanau", "luong") and w > most}
    if impl == "kernels" and wide:
        raise TranslateError(f"matched widths {wide} are past the attention kernels' {most}; give a smaller --d-model "
                             f"(the others' widths come out about 1.2x the transformer's)")


# --------------------------------------------------------------------------------------------- data

@dataclass
class Corpus:
    train: list            # [(source ids, target ids)]
    test: list             # [(source ids, target ids, source text, target text)]
    src_vocab: object
    tgt_vocab: object
    info: dict


def prepare(cfg: TranslateConfig) -> Corpus:
    """The training pairs and the held-out set, tokenised; a TranslateError for unusable text."""
    try:
        if cfg.corpus:
            pairs = [p for p in D.load_corpus(*cfg.corpus) if len(p[0].split()) <= cfg.max_len]
            if len(pairs) < 20:
                raise D.DataError(f"--corpus: {len(pairs)} pairs of at most --max-len {cfg.max_len} source words; "
                                  f"at least 20 are needed")
            train, test = D.split_corpus(pairs, cfg.test_per_bucket * len(D.BUCKETS))
            train = train[:cfg.pairs]
            src_v = D.SentencePieceVocab([s for s, _ in train], cfg.vocab)
            tgt_v = D.SentencePieceVocab([t for _, t in train], cfg.vocab)
            source = f"{cfg.corpus[0]} / {cfg.corpus[1]} (sentencepiece, {len(src_v)} / {len(tgt_v)} pieces)"
        else:
            test = D.test_pairs(cfg.seed, cfg.test_per_bucket, cfg.max_len, cfg.vocab)
            held = {s for s, _ in test}
            train = [p for p in D.synthetic_pairs(cfg.seed, cfg.pairs, cfg.max_len, cfg.vocab, "train")
                     if p[0] not in held]                  # no held-out sentence is trained on
            src_v, tgt_v = D.WordVocab([s for s, _ in train + test]), D.WordVocab([t for _, t in train + test])
            source = f"synthetic pair (seed {cfg.seed}, {cfg.vocab} source words, 1-{cfg.max_len} words a sentence)"
    except D.DataError as exc:
        raise TranslateError(str(exc)) from None
    enc = lambda v, s: v.encode(s) + [D.EOS]  # noqa: E731
    train_ids = [(src_v.encode(s), enc(tgt_v, t)) for s, t in train]
    train_ids = [(s, t) for s, t in train_ids if 1 <= len(s) <= 4 * cfg.max_len and len(t) <= 4 * cfg.max_len]
    test_ids = [(src_v.encode(s), enc(tgt_v, t), s, t) for s, t in test if src_v.encode(s)]
    if not train_ids or not test_ids:
        raise TranslateError(f"no usable pairs in {source} (training {len(train_ids)}, held out {len(test_ids)})")
    info = {"source": source, "train_pairs": len(train_ids), "test_pairs": len(test_ids),
            "src_vocab": len(src_v), "tgt_vocab": len(tgt_v), "sha1": D.digest(train + test)}
    return Corpus(train_ids, test_ids, src_v, tgt_v, info)


def pad(seqs, device, bos: bool = False) -> torch.Tensor:
    rows = [([D.BOS] if bos else []) + list(s) for s in seqs]
    T = max(len(r) for r in rows)
    return torch.tensor([r + [D.PAD] * (T - len(r)) for r in rows], dtype=torch.long, device=device)


def batch_at(pairs: list, step: int, seed: int, batch: int, rank: int = 0, world: int = 1):
    """Rank ``rank``'s share of step ``step``'s global batch, drawn from (seed, step) alone:
    (src (B, S), src_len (B,), tgt_in (B, T) with BOS first, tgt_out (B, T) ending in EOS, PAD after)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    idx = torch.randint(0, len(pairs), (batch,), generator=g).tolist()
    per = batch // world
    mine = [pairs[i] for i in idx[rank * per:(rank + 1) * per]]
    src = pad([s for s, _ in mine], "cpu")
    src_len = torch.tensor([len(s) for s, _ in mine])
    tgt_out = pad([t for _, t in mine], "cpu")
    tgt_in = pad([t[:-1] for _, t in mine], "cpu", bos=True)
    return src, src_len, tgt_in, tgt_out


def tokens_of(src_len, tgt_out) -> int:
    return int(src_len.sum()) + int((tgt_out != D.PAD).sum())


# --------------------------------------------------------------------------------------------- evaluation

def evaluate(model, corpus: Corpus, device, autocast, batch: int = 64) -> dict:
    """Greedy decoding of the held-out set (up to 1.5× the source's length + 10 words): BLEU overall and per
    source-length bucket (``bleu_scores``), and the teacher-forced loss (nats per target token)."""
    model.eval()
    order = sorted(range(len(corpus.test)), key=lambda i: len(corpus.test[i][0]))
    hyps = [""] * len(corpus.test)
    loss_sum, n_tok = 0.0, 0
    with torch.no_grad(), autocast():
        for k in range(0, len(order), batch):
            part = [corpus.test[i] for i in order[k:k + batch]]
            src = pad([p[0] for p in part], device)
            src_len = torch.tensor([len(p[0]) for p in part], device=device)
            tgt_out = pad([p[1] for p in part], device)
            tgt_in = pad([p[1][:-1] for p in part], device, bos=True)
            logits = model(src, src_len, tgt_in).float()
            loss_sum += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1),
                                        ignore_index=D.PAD, reduction="sum").item()
            n_tok += int((tgt_out != D.PAD).sum())
            toks, _ = M.greedy(model, src, src_len, max_len=int(src_len.max()) * 3 // 2 + 10)
            for i, row in zip(order[k:k + batch], toks.tolist()):
                ids = row[:row.index(D.EOS)] if D.EOS in row else row
                hyps[i] = corpus.tgt_vocab.decode(ids)
    model.train()
    scores = bleu_scores(hyps, [p[3] for p in corpus.test], [len(p[2].split()) for p in corpus.test])
    return scores | {"val_loss": loss_sum / max(1, n_tok)}


def bleu_scores(hyps: list[str], refs: list[str], src_words: list[int]) -> dict:
    """sacrebleu's corpus BLEU of the hypotheses, overall (``bleu``) and per source-length bucket
    (``bleu_5_10``, ...; a bucket with no sentence has no key)."""
    import sacrebleu
    out = {"bleu": sacrebleu.corpus_bleu(hyps, [refs]).score}
    for lo, hi in D.BUCKETS:
        mine = [i for i, n in enumerate(src_words) if lo <= n <= hi]
        if mine:
            out[D.bleu_column(D.bucket_name(lo, hi))] = sacrebleu.corpus_bleu([hyps[i] for i in mine],
                                                                            [[refs[i] for i in mine]]).score
    return out


def alignment(model, corpus: Corpus, device) -> dict | None:
    """One long held-out sentence decoded greedily with the attention weights of every step, or None
    (``encdec`` has none)."""
    longest = max(corpus.test, key=lambda p: len(p[0]))
    src = torch.tensor([longest[0]], device=device)
    model.eval()
    toks, weights = M.greedy(model, src, torch.tensor([len(longest[0])], device=device), len(longest[0]) * 3 // 2 + 10,
                             weights=True)
    model.train()
    if weights is None:
        return None
    row = toks[0].tolist()
    n = row.index(D.EOS) + 1 if D.EOS in row else len(row)
    return {"source": corpus.src_vocab.pieces(longest[0]), "reference": longest[3].split(),
            "output": corpus.tgt_vocab.pieces(row[:n]), "weights": weights[0, :n, :len(longest[0])].tolist()}


# --------------------------------------------------------------------------------------------- training

def train_one(cfg: TranslateConfig, name: str, width: int, corpus: Corpus, d: Dist, writer, sampler, out: str,
              evals_done: list, progress: bool, resume_state: dict | None) -> None:
    """Train one model to its budget (``seqbench train``'s loop), writing a row and a checkpoint at every
    evaluation."""
    torch.manual_seed(cfg.seed)
    model = M.build(name, corpus.info["src_vocab"], corpus.info["tgt_vocab"], width, cfg.layers, cfg.impl).to(d.device)
    params = sum(p.numel() for p in model.parameters())
    opt = tr.adamw(model, cfg.lr, cfg.weight_decay, (0.9, 0.98), d.device)
    p, wall0 = tr.Progress(), time.perf_counter()
    if resume_state:
        model.load_state_dict(resume_state["model"])
        opt.load_state_dict(resume_state["optimizer"])
        p = tr.Progress(resume_state["step"], resume_state["tokens"], resume_state["train_seconds"])
        wall0 -= resume_state.get("wall_seconds", p.train_s)
    net = model
    if d.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP
        net = DDP(model, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    gpu = d.device.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if gpu else contextlib.nullcontext
    base = dict(model=name, impl=cfg.impl, params=params, d_model=width, world_size=d.world,
                dtype="bfloat16 autocast" if gpu else "float32")
    bar = tr._bar(cfg, f"{name} ({cfg.impl})", d.main and progress, p.tokens, p.train_s)

    def train_step(step: int):
        batch = batch_at(corpus.train, step, cfg.seed, cfg.batch, d.rank, d.world)
        n = d.all_reduce(torch.tensor([tokens_of(batch[1], batch[3])], device=d.device)).item()  # counted on the host
        src, src_len, tgt_in, tgt_out = (t.to(d.device, non_blocking=True) for t in batch)
        with autocast():
            logits = net(src, src_len, tgt_in)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tgt_out.reshape(-1), ignore_index=D.PAD)
        return loss, int(n)

    def record(interval: dict, final: bool):
        scores = evaluate(model, corpus, d.device, autocast)
        if d.main:
            row = schema.TranslateRow(**base, step=p.step, tokens_seen=p.tokens, train_seconds=p.train_s,
                                      wall_seconds=time.perf_counter() - wall0, final=final,
                                      lr=opt.param_groups[0]["lr"], **scores, **interval)
            writer.write(row)
            if final:
                with autocast():
                    a = alignment(model, corpus, d.device)
                if a:
                    os.makedirs(os.path.join(out, "alignment"), exist_ok=True)
                    schema.write_json(alignment_path(out, name, cfg.impl), a)
            tr._save_checkpoint(tr.checkpoint_path(out, name, cfg.impl),
                                {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": p.step,
                                 "model_name": name, "impl": cfg.impl, "tokens": p.tokens, "train_seconds": p.train_s,
                                 "wall_seconds": time.perf_counter() - wall0, "corpus": corpus.info["sha1"],
                                 "config": dataclasses.asdict(cfg)})
            bar.set_postfix(bleu=f"{scores['bleu']:.1f}")
        evals_done.append(1)
        d.barrier()
        tr.stop_after_evals(evals_done, final)

    tr.run_intervals(cfg, p, model, opt, d, sampler, bar, train_step, record, resumed=resume_state is not None)


def translate(cfg: TranslateConfig, out: str, resume: bool = False, progress: bool = True,
              dist_: Dist | None = None) -> dict:
    """Train and score every model of ``cfg`` into ``out`` (translate.csv, translate.json, checkpoints/,
    alignment/); returns the metadata.  Rank 0 alone writes."""
    d = dist_ or init_distributed()
    validate(cfg, d.world)
    if cfg.corpus:
        cfg = dataclasses.replace(cfg, corpus=[os.path.abspath(p) for p in cfg.corpus])
    corpus = prepare(cfg)
    try:
        widths = M.match_widths(cfg.models, corpus.info["src_vocab"], corpus.info["tgt_vocab"], cfg.d_model, cfg.layers)
    except ValueError as exc:
        raise TranslateError(str(exc)) from None
    check_widths(widths, cfg.impl)
    csv_path, json_path = os.path.join(out, "translate.csv"), os.path.join(out, "translate.json")
    kept, states = [], {}
    if resume:
        tr.check_resume(schema.read_json(json_path), cfg, out, corpus.info["sha1"],
                        f"the pairs ({corpus.info['source']})", TranslateError)
        rows, _ = schema.read_rows(csv_path, schema.TranslateRow)
        for m in cfg.models:
            path = tr.checkpoint_path(out, m, cfg.impl)
            mine = [r for r in rows if (r["model"], r["impl"], r["status"]) == (m, cfg.impl, "ok")]
            if any(r["final"] == "True" for r in mine):
                kept += mine
                states[m] = "finished"
            elif os.path.exists(path):
                try:
                    state = tr._load_checkpoint(path, d.device, "seqbench translate")
                except tr.TrainError as exc:
                    raise TranslateError(str(exc)) from None
                if state.get("config") != dataclasses.asdict(cfg) or state.get("corpus") != corpus.info["sha1"]:
                    raise TranslateError(f"--resume: {path} was written by a run with other settings or data than "
                                         f"{out}'s; delete it to train {m} again from the start")
                kept += [r for r in mine if int(r["step"]) <= state["step"]]
                states[m] = state
    from bench.measure.env import environment
    sampler = None
    if d.device.type == "cuda":
        from bench.measure.nvml import NVMLSampler
        sampler = NVMLSampler(device_index=d.device.index or 0)
    meta = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "config": dataclasses.asdict(cfg), "widths": widths,
            "params": {m: M.count_params(m, corpus.info["src_vocab"], corpus.info["tgt_vocab"], w, cfg.layers)
                       for m, w in widths.items()},
            "corpus": corpus.info, "world_size": d.world, "cpu_only": d.device.type != "cuda",
            "buckets": [D.bucket_name(lo, hi) for lo, hi in D.BUCKETS],
            "environment": environment(sampler.static_info() if sampler else {"nvml": "no GPU on this machine"})}
    writer = None
    if d.main:
        os.makedirs(out, exist_ok=True)
        if not resume:         # a new run: an earlier run's checkpoints and alignments here are not its own
            for m in cfg.models:
                for stale in (tr.checkpoint_path(out, m, cfg.impl), alignment_path(out, m, cfg.impl)):
                    if os.path.exists(stale):
                        os.remove(stale)
        for side, vocab in (("source", corpus.src_vocab), ("target", corpus.tgt_vocab)):
            if hasattr(vocab, "save"):
                vocab.save(os.path.join(out, side + ".model"))
        schema.write_json(json_path, meta)
        writer = schema.RowWriter(csv_path, kept, schema.TRANSLATE_COLUMNS)
    evals: list = []
    try:
        for m in cfg.models:
            state = states.get(m)
            if state == "finished":
                continue
            try:
                train_one(cfg, m, widths[m], corpus, d, writer, sampler, out, evals, progress, state)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # a model that fails (OOM, a Triton compile error, ...) is a row
                if d.world > 1:
                    raise          # a rank alone cannot go on: the others wait in its collectives
                oom = isinstance(exc, torch.cuda.OutOfMemoryError)
                tr.failed(writer, schema.TranslateRow, m, cfg.impl, widths[m], d, "oom" if oom else "error",
                          schema.describe(exc))
    finally:
        if writer:
            writer.close()
    meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if d.main:
        schema.write_json(json_path, meta)
    return meta


def alignment_path(out: str, model: str, impl: str) -> str:
    return os.path.join(out, "alignment", f"{model}-{impl}.json")


def read_alignments(out: str) -> dict:
    """"model-impl" -> the alignment record its final evaluation wrote, for this run's models."""
    cfg = schema.read_json(os.path.join(out, "translate.json")).get("config", {})
    found = {}
    for m in cfg.get("models", []):
        path = alignment_path(out, m, cfg.get("impl"))
        if os.path.exists(path):
            with open(path) as fh:
                found[f"{m}-{cfg.get('impl')}"] = json.load(fh)
    return found

