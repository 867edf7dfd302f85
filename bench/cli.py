"""The ``seqbench`` command: run, train, translate, gradients, check, list, report, compare, inspect."""
from __future__ import annotations

import argparse
import os
import sys
import time

from bench.schema import writable_folder

DTYPES = ("bfloat16", "float16", "float32")


def _positive_ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return values


def _positive_int(text: str) -> int:
    values = _positive_ints(text)
    if len(values) != 1:
        raise argparse.ArgumentTypeError(f"expected one positive integer, got {text!r}")
    return values[0]


class _Parser(argparse.ArgumentParser):
    """Bad arguments get one line on stderr (no usage dump) and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _fail(cmd: str, message) -> int:
    """One line on stderr, exit code 2: how every user error and unreadable run folder ends."""
    print(f"seqbench {cmd}: {message}", file=sys.stderr)
    return 2


def _os_error(exc: OSError) -> str:
    """An OSError as one line naming the file (a rename's target rather than its temporary source)."""
    name = getattr(exc, "filename2", None) or exc.filename
    return f"cannot write {name}: {exc.strerror or exc}" if name else str(exc)


def _path(text: str) -> str:
    """A file or folder argument: an empty one is a mistake, not the default."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: give a path, or leave the flag out for the default")
    return text


def _names(text: str) -> list[str]:
    """A comma list of names (workloads, implementations, models); one that names nothing is an error."""
    names = [x.strip() for x in text.split(",") if x.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"names nothing (got {text!r}; expected a comma-separated list)")
    return names


def cmd_run(a) -> int:
    import torch

    from bench.workload import MODES
    from bench.workloads import WORKLOADS
    from bench.report.report import write_report
    from bench.sweep.run import sweep
    from bench.schema import RunFolderError

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
    from bench.measure.env import device_slug
    unknown = [w for w in a.workload if w not in WORKLOADS]
    if unknown:
        return _fail("run", f"unknown workload(s) {unknown}; expected some of {sorted(WORKLOADS)}")
    impls = _chosen_impls(a, [WORKLOADS[w] for w in a.workload])
    if isinstance(impls, str):
        return _fail("run", impls)
    out = a.out or os.path.join("runs", f"{time.strftime('%Y-%m-%d')}-{device_slug()}")
    problem = writable_folder(out)
    if problem:
        return _fail("run", problem)
    gpu = torch.cuda.is_available()
    from bench.train.dist import DistError, close_distributed, init_distributed
    try:
        d = init_distributed()
    except DistError as exc:
        return _fail("run", exc)
    if d.main:
        print(f"seqbench run -> {out}" + (f" (sharded over {d.world} ranks)" if d.world > 1 else ""))
    if not gpu and d.main:
        print("No CUDA GPU here: the Triton kernels are checked through the interpreter, and the timings below are "
              "CPU timings of the PyTorch implementations at small sizes (not GPU numbers).")
    if gpu and d.main:
        from bench.measure.nvml import NVMLSampler
        nvml = NVMLSampler(d.device.index or 0)
        if not nvml.ok:
            print(f"{nvml.reason}: the utilisation, SM activity, power and energy columns will be empty "
                  "(pip install nvidia-ml-py; it needs the NVIDIA driver's libnvidia-ml).")
    modes = MODES if a.mode == "both" else (a.mode,)
    try:
        meta = sweep(out, [WORKLOADS[w] for w in a.workload], getattr(torch, a.dtype), a.quick, a.seq_lens, a.batch,
                     modes, a.resume, a.cuda_graph, progress=not a.no_progress and d.main, impls=impls,
                     checks=not a.no_checks, isolate=gpu if a.isolate is None else a.isolate, device=d.device,
                     shard=(d.rank, d.world), barrier=d.barrier, order=a.order, point_timeout_s=a.point_timeout,
                     compile_budget_s=a.compile_budget)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished rows are in {out}/results.csv; rerun with --resume to go on", file=sys.stderr)
        return 130
    except RunFolderError as exc:
        return _fail("run", f"{exc}; move it away or run without --resume")
    except OSError as exc:
        return _fail("run", _os_error(exc))
    finally:
        close_distributed(d)
    if not d.main:
        return 0
    try:
        report = write_report(out)
    except OSError as exc:
        return _fail("run", _os_error(exc))
    bad = [c for c in meta.get("checks", []) if not c["ok"]]
    for c in meta.get("checks", []):
        print(f"  check {'ok  ' if c['ok'] else 'FAIL'} {c['kernel']}: error {c['error']}")
    from bench.report.report import load, stability_line
    from bench.report.tables import headline
    df, run_meta = load(out)
    print("\nThe hardware argument: each row's best implementation, its tokens/s over the Transformer's and the "
          "verdict (REPORT.md has the rest)\n")
    print("\n".join(headline(df, WORKLOADS, bool(run_meta.get("cpu_only")))))
    print(stability_line(df, run_meta).replace("**", ""))
    print(f"wrote {out}/results.csv, run.json, {os.path.basename(report)} and plots")
    return 1 if bad else 0


def _version() -> str:
    """The installed package's version and this checkout's commit."""
    from importlib.metadata import PackageNotFoundError, version

    from bench.measure.env import git_commit
    try:
        v = version("seqbench")
    except PackageNotFoundError:
        v = "(not installed)"
    return f"{v} (commit {git_commit()})"


def cmd_translate(a) -> int:
    """Train the encoder-decoder models on a language pair and score them by source length."""
    import dataclasses

    import torch
    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
    from bench.measure.env import device_slug
    from bench.report import translation
    from bench.schema import RunFolderError
    from bench.train.dist import DistError, close_distributed, init_distributed
    from bench.translate import run as tl
    from bench.translate.data import DataError, load_corpus
    gpu = torch.cuda.is_available()
    chosen = tl.defaults(a.quick, gpu)
    if a.tokens is not None or a.seconds is not None:
        chosen.update(tokens=a.tokens, seconds=a.seconds)
    for f in dataclasses.fields(tl.TranslateConfig):
        if f.name not in ("tokens", "seconds") and getattr(a, f.name, None) is not None:
            chosen[f.name] = getattr(a, f.name)
    cfg = tl.TranslateConfig(**chosen)
    try:
        d = init_distributed()
    except DistError as exc:
        return _fail("translate", exc)
    try:
        try:
            tl.validate(cfg, d.world)
            if cfg.corpus:                 # a corpus that cannot be used is refused before anything is written
                load_corpus(*cfg.corpus)
        except (tl.TranslateError, DataError) as exc:
            return _fail("translate", exc)
        out = a.out or os.path.join("runs", f"{time.strftime('%Y-%m-%d')}-{device_slug()}-translate")
        problem = writable_folder(out) if d.main else None
        if problem:
            return _fail("translate", problem)
        if d.main:
            print(f"seqbench translate -> {out} (world size {d.world})")
            if not gpu:
                print("No CUDA GPU here: tiny models trained for seconds, CPU timings"
                      + (" of the PyTorch implementations (--impl torch)" if cfg.impl == "torch" else
                         ", Triton kernels through the interpreter") + " - not GPU numbers.")
        try:
            tl.translate(cfg, out, resume=a.resume, progress=not a.no_progress, dist_=d)
        except (tl.TranslateError, DataError) as exc:
            return _fail("translate", exc)
        except RunFolderError as exc:
            return _fail("translate", f"{exc}; move it away or run without --resume")
        except KeyboardInterrupt:
            print(f"\ninterrupted: finished evaluations are in {out}/translate.csv; rerun with --resume to go on",
                  file=sys.stderr)
            if d.main and os.path.exists(os.path.join(out, "translate.csv")):
                translation.translation_report(out)
            return 130
        if not d.main:
            return 0
        report = translation.translation_report(out)
        df = translation.load_rows(out)
        for f in df[df.status != "ok"].itertuples():
            print(f"  {f.model} ({f.impl}) failed: {f.status}: {f.reason}", file=sys.stderr)
        last = translation.finals(df)
        if not last.empty:
            print(f"{'model':<12} {'impl':<8} {'BLEU':>6} " + " ".join(f"{b:>6}" for b in translation.NAMES))
            for r in last.to_dict("records"):
                cells = " ".join(f"{r[translation.column(b)]:6.1f}" if r[translation.column(b)] == r[translation.column(b)]
                                 else f"{'':>6}" for b in translation.NAMES)
                print(f"{r['model']:<12} {r['impl']:<8} {r['bleu']:6.1f} {cells}")
        print(f"wrote {out}/translate.csv, bleu_by_length.png, alignment.png and {os.path.basename(report)}")
        return 1 if last.empty and not df.empty else 0        # every model failed: the run did not work
    finally:
        close_distributed(d)


def _translate_impl(text: str) -> str:
    """--impl of translate: kernels (this project's; 'triton' also) or torch."""
    if text in ("triton", "kernels"):
        return "kernels"
    if text == "torch":
        return "torch"
    raise argparse.ArgumentTypeError(f"expected kernels or torch, got {text!r}")


def _old_name(parser, flag: str, dest: str, kind) -> None:
    """An earlier spelling of a flag, still accepted and not shown in --help."""
    parser.add_argument(flag, dest=dest, type=kind, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _train_impl(text: str) -> str:
    """--impl of train and gradients: triton (this project's kernels; 'kernels' is the earlier name) or torch."""
    if text in ("triton", "kernels"):
        return "kernels"
    if text == "torch":
        return "torch"
    raise argparse.ArgumentTypeError(f"expected triton or torch, got {text!r}")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def cmd_train(a) -> int:
    """Train the byte-level language models to a budget and report the time each took to a quality target."""
    import dataclasses

    import torch
    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
    from bench.report import training
    from bench.report.report import write_report
    from bench.train import train as tr
    from bench.train.dist import DistError, close_distributed, init_distributed
    from bench.measure.env import device_slug
    from bench.schema import RunFolderError
    gpu = torch.cuda.is_available()
    chosen = tr.defaults(a.quick, gpu)
    if a.tokens is not None or a.seconds is not None:
        chosen.update(tokens=a.tokens, seconds=a.seconds)
    for f in dataclasses.fields(tr.TrainConfig):
        if f.name not in ("tokens", "seconds") and getattr(a, f.name, None) is not None:
            chosen[f.name] = getattr(a, f.name)
    cfg = tr.TrainConfig(**chosen)
    try:
        d = init_distributed()
    except DistError as exc:
        return _fail("train", exc)
    try:
        out = a.out or os.path.join("runs", f"{time.strftime('%Y-%m-%d')}-{device_slug()}-train")
        problem = writable_folder(out) if d.main else None
        if problem:
            return _fail("train", problem)
        if d.main:
            print(f"seqbench train -> {out} (world size {d.world})")
            if not gpu:
                print("No CUDA GPU here: tiny models, CPU timings"
                      + (" of the PyTorch implementations (--impl torch)" if cfg.impl == "torch" else
                         ", Triton kernels through the interpreter") + " - not GPU numbers.")
        try:
            tr.train(cfg, out, resume=a.resume, progress=not a.no_progress, dist_=d)
        except tr.TrainError as exc:
            return _fail("train", exc)
        except RunFolderError as exc:
            return _fail("train", f"{exc}; move it away or run without --resume")
        except KeyboardInterrupt:
            print(f"\ninterrupted: finished evaluations are in {out}/train.csv; rerun with --resume to go on",
                  file=sys.stderr)
            if d.main and os.path.exists(os.path.join(out, "train.csv")):
                write_report(out)       # what finished, reported
            return 130
        if not d.main:
            return 0
        report = write_report(out)
        rows = training.load_rows(out)
        target, runs = training.time_to_quality(rows, cfg.target_bpb)
        failed = rows[rows.status != "ok"]
        for f in failed.itertuples():
            print(f"  {f.model} ({f.impl}) failed: {f.status}: {f.reason}", file=sys.stderr)
        if runs:
            print(f"time to {target:.3f} bits/byte:")
            for r in runs:
                got = (f"{r['seconds']:.1f} s, {r['tokens']:,} tokens" if r["reached"] else
                       f"not reached (best {r['best_bpb']:.3f})")
                print(f"  {r['model']:<12} {r['impl']:<11} {int(r['params']):>11,} params  {got}")
            if not any(r["reached"] for r in runs):
                print(f"no model reached the target {target:.3f} bits/byte")
        print(f"wrote {out}/train.csv, train.png and {os.path.basename(report)}")
        return 1 if not runs and not failed.empty else 0       # every model failed: the run did not work
    finally:
        close_distributed(d)


def cmd_gradients(a) -> int:
    """The textbook's vanishing-gradient demo for every architecture: gradients.csv, gradients.png, GRADIENTS.md."""
    import torch
    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
    from bench.experiments import gradients as gr
    from bench.measure.env import device_slug
    seq_len = a.seq_len or (100 if a.quick else 1000)
    seeds = a.seeds or (2 if a.quick else 5)
    out = a.out or os.path.join("runs", f"{time.strftime('%Y-%m-%d')}-{device_slug()}-gradients")
    problem = writable_folder(out)
    if problem:
        return _fail("gradients", problem)
    print(f"seqbench gradients -> {out} (T={seq_len}, {seeds} seeds, {a.impl})")
    if not torch.cuda.is_available() and a.impl == "kernels":
        print("No CUDA GPU here: the kernels run through the Triton interpreter (slow at long T; --quick is T=100).")
    try:
        gr.run(out, a.models or gr.MODELS, seq_len, seeds, a.hidden, a.impl, a.checkpoint, progress=not a.no_progress)
    except gr.GradientError as exc:
        return _fail("gradients", exc)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished (model, seed) rows are in {out}/gradients.csv", file=sys.stderr)
        if os.path.exists(os.path.join(out, "gradients.csv")):
            gr.write_report(out)
        return 130
    except OSError as exc:
        return _fail("gradients", _os_error(exc))
    with open(os.path.join(out, "GRADIENTS.md")) as f:
        print("".join(line for line in f if line.startswith("|")), end="")
    print(f"wrote {out}/gradients.csv, gradients.png and GRADIENTS.md")
    return 0


# --impl tags: a group of implementations in every workload, beside their names.
IMPL_TAGS = {"triton": lambda i: i.triton, "torch": lambda i: not i.triton, "peers": lambda i: bool(i.peer),
             "eager": lambda i: not i.triton and not i.compiles}


def _chosen_impls(a, workloads):
    """The implementation names --impl selects in these workloads (None: all): names, and tags (IMPL_TAGS)
    that stand for each workload's implementations of that kind; or why they cannot be run."""
    if a.impl is None:
        return None
    known = {i for w in workloads for i in w.impls}
    unknown = [i for i in a.impl if i not in known and i not in IMPL_TAGS]
    if unknown:
        return (f"unknown implementation(s) {unknown} for workload(s) {[w.name for w in workloads]}; expected tags "
                f"{sorted(IMPL_TAGS)} or names from {sorted(known)}")
    names = [i for i in a.impl if i not in IMPL_TAGS]
    for tag in (t for t in a.impl if t in IMPL_TAGS):
        names += [i.name for w in workloads for i in w.impls.values() if IMPL_TAGS[tag](i)]
    return list(dict.fromkeys(names))


def cmd_check(a) -> int:
    """Run the kernel checks (the interpreter on a CPU; real shapes too on a GPU); exit 1 if one fails."""
    import json

    import torch
    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
    from bench.sweep.checks import run_checks
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if a.gpu_only and device.type != "cuda":
        return _fail("check", "--gpu-only needs a CUDA GPU: there is none here, so there is nothing to check "
                              "(seqbench check without it runs the interpreter checks)")
    if a.out:
        if os.path.isdir(a.out):
            return _fail("check", f"--out {a.out} is a folder; give the JSON-lines file to write")
        problem = writable_folder(os.path.dirname(os.path.abspath(a.out)))
        if problem:
            return _fail("check", f"--out {a.out}: {problem.removeprefix('--out ')}")
    try:
        out = open(a.out, "a") if a.out else None
    except OSError as exc:
        return _fail("check", _os_error(exc))
    results = []

    def report(c):
        results.append(c)
        print(f"  check {'ok  ' if c['ok'] else 'FAIL'} {c['kernel']}: error {c['error']} "
              f"(tolerance {c['tolerance']}, {c['seconds']:.1f} s){' ' + c['reason'] if c['reason'] else ''}",
              flush=True)
        if out:
            out.write(json.dumps(c) + "\n")
            out.flush()
    try:
        run_checks(device, gpu_only=a.gpu_only, on_result=report,
                   isolate=device.type == "cuda" if a.isolate is None else a.isolate, timeout_s=a.timeout)
    finally:
        if out:
            out.close()
    return 0 if all(c["ok"] for c in results) else 1


def cmd_list(a) -> int:
    """Workloads, their implementations and the shapes a run would measure on this machine."""
    import torch

    from bench.workload import shape_label
    from bench.workloads import WORKLOADS
    gpu = torch.cuda.is_available()
    unknown = [w for w in (a.workload or []) if w not in WORKLOADS]
    if unknown:
        return _fail("list", f"unknown workload(s) {unknown}; expected some of {sorted(WORKLOADS)}")
    print(f"shapes for {'this GPU' if gpu else 'a CPU-only machine'}, {'--quick' if a.quick else 'full'}"
          f" (seqbench list{'' if a.quick else ' --quick'} for the other)\n")
    for w in (WORKLOADS[n] for n in (a.workload or WORKLOADS)):
        print(f"{w.name}: {w.description}")
        for i in w.impls.values():
            flags = [f for f, on in (("baseline", i.baseline), ("triton", i.triton), (i.peer, i.peer),
                                     ("needs CUDA", i.needs_cuda)) if on]
            runs = "" if gpu or not (i.triton or i.needs_cuda) else "  (skipped here: needs a GPU)"
            print(f"  {i.name:<38} {', '.join(flags):<32} {i.note}{runs}")
        print("  shapes: " + "; ".join(shape_label(w, s) for s in w.default_shapes(a.quick, gpu)) + "\n")
    return 0


def cmd_report(a) -> int:
    from bench.report.report import write_report
    from bench.schema import RunFolderError
    try:
        print(write_report(a.dir))
    except (FileNotFoundError, RunFolderError) as exc:
        return _fail("report", exc)
    except OSError as exc:
        return _fail("report", _os_error(exc))
    return 0


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text!r}")
    return value


def cmd_compare(a) -> int:
    from bench.report.compare import compare
    from bench.schema import RunFolderError
    try:
        stable, shaky = compare(a.dir_a, a.dir_b, a.threshold)
    except (FileNotFoundError, RunFolderError) as exc:
        return _fail("compare", exc)
    print(f"tokens/s of {a.dir_b} over {a.dir_a}; low/high: the ratio's p20/p80 bounds; host_b_over_a: B's host "
          f"probe time over A's (a fixed single-thread loop timed through each CPU window), which the ratio is "
          f"multiplied by, so a host slowed by its other tenants is not a regression; raw_b_over_a: as measured (a "
          f"regression must be one both ways)\n")
    if stable.attrs.get("note"):
        print(f"note: {stable.attrs['note']}\n")
    print(stable.to_markdown(index=False, floatfmt=".4g") if not stable.empty else "no point stable in both runs")
    if not shaky.empty:
        print(f"\nunstable in either run (never a regression): {len(shaky)} point(s)\n")
        print(shaky.to_markdown(index=False, floatfmt=".4g"))
    regressed = int(stable.regressed.sum()) if not stable.empty else 0
    if regressed:
        print(f"\nregression: {regressed} point(s) slower by more than {a.threshold:.0%}, outside both runs' "
              f"p20-p80 spread")
    return 1 if regressed else 0


def build_parser() -> argparse.ArgumentParser:
    """Every command and flag of ``seqbench`` (``inspect`` parses its own: bench.tools.inspect_cli.build_parser)."""
    from bench.workloads import WORKLOADS

    ap = _Parser(prog="seqbench", description="Does the textbook's hardware argument (LSTMs leave a GPU idle, "
                                               "attention keeps it busy) hold?  Real Triton kernels, measured.")
    ap.add_argument("--version", action="version", version=f"seqbench {_version()}")
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    r = sub.add_parser("run", help="check the kernels and sweep the workloads (the main job)")
    r.add_argument("--quick", action="store_true", help="fewer shapes (the quick sweep)")
    r.add_argument("--only", dest="workload", type=_names, default=list(WORKLOADS), metavar="NAMES",
                   help=f"comma list of workloads (default all): {', '.join(WORKLOADS)}")
    _old_name(r, "--workload", "workload", _names)
    r.add_argument("--impl", type=_names, metavar="NAMES",
                   help="comma list of implementation names (seqbench list shows them) or tags: triton (this "
                        "project's kernels), torch (everything else: PyTorch eager, cuDNN, SDPA and the peers), "
                        "peers (torch.compile, FlexAttention, fla, FlashRNN), eager (torch without the peers); default all")
    r.add_argument("--seq-len", dest="seq_lens", type=_positive_ints, metavar="LENGTHS",
                   help="comma list of sequence lengths (replaces the defaults)")
    _old_name(r, "--seq-lens", "seq_lens", _positive_ints)
    r.add_argument("--batch", type=_positive_ints, metavar="SIZES",
                   help="comma list of batch sizes for every workload (with --seq-len: their grid)")
    r.add_argument("--dtype", choices=DTYPES, default="bfloat16",
                   help="the inputs' and weights' dtype (default bfloat16)")
    r.add_argument("--mode", choices=("fwd", "fwd+bwd", "both"), default="both",
                   help="fwd: inference; fwd+bwd: a training step's forward and backward; both (default)")
    r.add_argument("--out", type=_path, help="output folder (default runs/<date>-<device>)")
    r.add_argument("--resume", action="store_true", help="keep finished rows of --out and skip them")
    r.add_argument("--cuda-graph", action="store_true",
                   help="time CUDA-graph replays of each point (launch gaps removed; L2 still flushed)")
    r.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                   help="measure in a worker process that is restarted after a crash, sticky CUDA error or hang "
                        "(default: on a GPU)")
    r.add_argument("--no-checks", action="store_true", help="skip the kernel checks (seqbench check runs them)")
    r.add_argument("--order", choices=("workload", "shape"), default="workload",
                   help="workload: one workload after another (default); shape: every workload at a shape and mode "
                        "before the next, so a run cut short has every table row at its first shapes")
    r.add_argument("--point-timeout", dest="point_timeout", type=_positive_float, default=300.0,
                   help="seconds before an isolated point counts as hung: a timeout row, tried again last by "
                        "--resume (default 300)")
    r.add_argument("--compile-budget", dest="compile_budget", type=_positive_float,
                   help="seconds a torch.compile'd implementation's setup and first call may take; past it the point "
                        "is a timeout row and its longer lengths are skipped (default 120 on a GPU, 30 on a CPU)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.set_defaults(fn=cmd_run)
    t = sub.add_parser("train", help="train byte-level LSTM / ConvS2S / Transformer / minGRU LMs; time to a quality target")
    t.add_argument("--quick", action="store_true", help="small and short (about a minute in all on a CPU)")
    t.add_argument("--only", dest="models", type=_names, metavar="NAMES",
                   help="comma list of models (default lstm,convs2s,transformer,mingru)")
    _old_name(t, "--models", "models", _names)
    t.add_argument("--impl", type=_train_impl, metavar="{triton,torch}",
                   help="triton: this project's kernels; torch: the PyTorch references (nn.LSTM/cuDNN, F.conv1d, "
                        "SDPA) (default: triton on a GPU, torch on a CPU)")
    t.add_argument("--lstm-kernel", dest="lstm_kernel", choices=("step", "persistent"), help="LSTM kernel (default step)")
    t.add_argument("--d-model", dest="d_model", type=_positive_int, help="the transformer's width (default 512 GPU, 64 CPU)")
    t.add_argument("--layers", type=_positive_int, help="blocks per model (default 4 GPU, 2 CPU)")
    t.add_argument("--match", choices=("params", "d_model"),
                   help="params: widths matching the transformer's parameter count within 10%% (default); d_model: one width")
    t.add_argument("--seq-len", dest="seq_len", type=_positive_int, help="bytes per training window (default 256 "
                                                                             "GPU, 64 CPU)")
    t.add_argument("--batch", type=_positive_int, help="global batch, split across torchrun's ranks")
    t.add_argument("--tokens", type=_positive_int, help="token budget per model")
    t.add_argument("--seconds", type=_positive_float, help="training-time budget per model")
    t.add_argument("--lr", type=_positive_float, help="AdamW's peak learning rate")
    t.add_argument("--warmup", type=_positive_int, help="steps of linear warm-up before the cosine decay")
    t.add_argument("--eval-every", dest="eval_every", type=_positive_int, help="steps between evaluations")
    t.add_argument("--val-tokens", dest="val_tokens", type=_positive_int, help="size of the fixed validation slice")
    t.add_argument("--seed", type=int, help="the seed of the initialisation and of every step's batch")
    t.add_argument("--corpus", type=_path,
                   help="a text file or a folder of them (default: the Python standard library's source)")
    t.add_argument("--target-bpb", dest="target_bpb", type=_positive_float,
                   help="time to this validation bits/byte (default: the best every model reached)")
    t.add_argument("--out", type=_path, help="output folder (default runs/<date>-<device>-train)")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint of --out")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(fn=cmd_train)
    tr = sub.add_parser("translate", help="encoder-decoder LSTM / Bahdanau / Luong / Transformer translation; BLEU by "
                                          "source length and time to a BLEU target")
    tr.add_argument("--quick", action="store_true", help="small and short (about three minutes on a CPU)")
    tr.add_argument("--models", type=_names, metavar="NAMES",
                    help="comma list of encdec,bahdanau,luong,transformer (default all four)")
    tr.add_argument("--impl", type=_translate_impl, metavar="{kernels,torch}",
                    help="kernels: this project's Triton kernels; torch: the PyTorch references (default: kernels on a "
                         "GPU, torch on a CPU)")
    tr.add_argument("--pairs", type=_positive_int, help="training pairs (default 200000 GPU, 20000 CPU)")
    tr.add_argument("--max-len", dest="max_len", type=_positive_int, help="longest source sentence in words (default 60)")
    tr.add_argument("--vocab", type=_positive_int, help="synthetic source words, or a corpus' sentencepiece pieces "
                                                      "(default 4000 GPU, 200 CPU)")
    tr.add_argument("--d-model", dest="d_model", type=_positive_int,
                    help="the transformer's width (default 192 GPU, 64 CPU; on the kernels the attention models' "
                         "matched widths must stay within 256)")
    tr.add_argument("--layers", type=_positive_int, help="layers per encoder and decoder (default 2 GPU, 1 CPU)")
    tr.add_argument("--batch", type=_positive_int, help="sentence pairs per step, split across torchrun's ranks")
    tr.add_argument("--tokens", type=_positive_int, help="token budget per model (source + target tokens)")
    tr.add_argument("--seconds", type=_positive_float, help="training-time budget per model")
    tr.add_argument("--lr", type=_positive_float, help="AdamW's peak learning rate")
    tr.add_argument("--eval-every", dest="eval_every", type=_positive_int, help="steps between evaluations")
    tr.add_argument("--test-per-bucket", dest="test_per_bucket", type=_positive_int,
                    help="held-out pairs per source-length bucket (default 100 GPU, 25 CPU)")
    tr.add_argument("--seed", type=int, help="the seed of the data, the initialisation and every step's batch")
    tr.add_argument("--corpus", nargs=2, type=_path, metavar=("SRC", "TGT"),
                    help="a parallel corpus, one sentence per line (default: the synthetic pair)")
    tr.add_argument("--target-bleu", dest="target_bleu", type=_positive_float,
                    help="time to this BLEU (default: the lowest best BLEU of the models)")
    tr.add_argument("--out", type=_path, help="output folder (default runs/<date>-<device>-translate)")
    tr.add_argument("--resume", action="store_true", help="continue from the last checkpoints of --out")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")
    tr.set_defaults(fn=cmd_translate)
    g = sub.add_parser("gradients", help="the textbook's vanishing-gradient demo (‖∂L/∂x_t‖ per position) for every "
                                         "architecture")
    g.add_argument("--only", dest="models", type=_names, metavar="NAMES",
                   help="comma list of models from rnn,lstm,gru,mingru,transformer (default all)")
    _old_name(g, "--models", "models", _names)
    g.add_argument("--seq-len", dest="seq_len", type=_positive_int, help="sequence length (default 1000; --quick 100)")
    g.add_argument("--seeds", type=_positive_int, help="initialisations and inputs per model (default 5; --quick 2)")
    g.add_argument("--hidden", type=_positive_int, default=64, help="hidden size (default 64, the textbook's)")
    g.add_argument("--impl", type=_train_impl, default="kernels", metavar="{triton,torch}",
                   help="triton: this project's kernels (default); torch: the PyTorch references")
    g.add_argument("--checkpoint", type=_path,
                   help="a seqbench train checkpoint (runs/.../checkpoints/<model>-<impl>.pt): probe that trained LM "
                        "instead of default-initialised layers")
    g.add_argument("--quick", action="store_true", help="T=100 (the chapter's length) and 2 seeds")
    g.add_argument("--out", type=_path, help="output folder (default runs/<date>-<device>-gradients)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.set_defaults(fn=cmd_gradients)
    k = sub.add_parser("check", help="every Triton kernel against its float64 reference on this machine")
    k.add_argument("--gpu-only", action="store_true", help="only the checks at real GPU shapes")
    k.add_argument("--out", type=_path, help="write the results as JSON lines, each as soon as it is known")
    k.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                   help="each check in a worker process, restarted after a crash, sticky CUDA error or hang "
                        "(default: on a GPU)")
    k.add_argument("--timeout", type=_positive_float, default=120.0,
                   help="seconds before an isolated check counts as hung (default 120)")
    k.set_defaults(fn=cmd_check)
    ls = sub.add_parser("list", help="the workloads, their implementations and the shapes a run would measure")
    ls.add_argument("--quick", action="store_true", help="the --quick shapes")
    ls.add_argument("--only", dest="workload", type=_names, metavar="NAMES", help="comma list of workloads (default all)")
    ls.set_defaults(fn=cmd_list)
    p = sub.add_parser("report", help="rebuild REPORT.md and the plots of a run folder")
    p.add_argument("dir", help="a run folder (results.csv and run.json, or train.csv)")
    p.set_defaults(fn=cmd_report)
    c = sub.add_parser("compare", help="side-by-side tokens/s of two runs; exit 1 on a regression")
    c.add_argument("dir_a", help="the run to compare with (the baseline)")
    c.add_argument("dir_b", help="the run compared")
    c.add_argument("--threshold", type=_fraction, default=0.10, help="allowed slowdown as a fraction (default 0.10)")
    c.set_defaults(fn=cmd_compare)
    i = sub.add_parser("inspect", help="compile every kernel config for sm_80/sm_90a and show registers, spills, SASS",
                       add_help=False)
    i.set_defaults(fn=None)
    return ap


def main(argv=None) -> int:
    """The ``seqbench`` command.  Whatever goes wrong ends in one line on stderr: bad input and unusable files
    or folders with exit 2 (the commands name them), an interruption with 130, and an error nothing expected
    with 1, naming it as a bug (SEQBENCH_TRACEBACK=1 shows the traceback)."""
    from bench.schema import RunFolderError
    ap = build_parser()
    args, rest = ap.parse_known_args(argv)
    if args.cmd != "inspect" and rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        if args.cmd == "inspect":
            from bench.tools.inspect_cli import main as inspect_main
            return inspect_main(rest)
        return args.fn(args)
    except KeyboardInterrupt:
        print(f"\nseqbench {args.cmd}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        return _fail(args.cmd, _os_error(exc))
    except RunFolderError as exc:
        return _fail(args.cmd, exc)
    except Exception as exc:
        if os.environ.get("SEQBENCH_TRACEBACK"):
            raise
        from bench.schema import describe
        print(f"seqbench {args.cmd}: unexpected {describe(exc, 200)} (a bug in seqbench: SEQBENCH_TRACEBACK=1 shows "
              f"where; please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
