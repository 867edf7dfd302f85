"""The GPU job: two calls of a lent GPU that together fit its 15 minutes of device time (a machine's start,
a minute or more, included), each one prepared command of at most 10 minutes:

    python -m bench.tools.gpu_suite --call 1 --out DIR --archive $OUT/suite.tar.gz            # < 7 min
    python -m bench.tools.gpu_suite --call 2 --out DIR --archive $OUT/suite.tar.gz --resume   # < 6 min

* Call 1, what a window must not end without:
  * checks: every Triton kernel at a real GPU shape against its float64 reference, the grid-barrier path of
    the split-head persistent LSTM first, each check in a worker process that is restarted after a sticky
    CUDA error, a crash or a hang (one bad kernel fails alone);
  * headline: the hardware-argument table's five rows (every stand-in implementation), two lengths, two
    batches, inference and training, with NVML, every row at a shape before the next shape.
* Call 2, the rest in priority order: the kernel test files on the GPU (RNN and barrier tests first, the
  compile-heavy attention matrix last), the rest of the quick sweep into the same run folder (never the
  checks again), ``seqbench train --quick`` and ``seqbench translate --quick``, a few seconds per model each.

Every step has a budget; past it the step gets SIGINT (pytest and ``seqbench run`` stop cleanly and keep what
they have), then SIGKILL after GRACE_S.  SUITE.md, suite.json and the archive are rewritten after every step,
so a call cut short at any point still returns every finished step.  ``--resume`` skips the steps an earlier
call finished with exit 0.  On a CPU the same commands run (the rehearsal in tests/test_gpu_suite.py): the
checks step says there is no GPU, the headline takes the CPU shapes, and each step has CPU_BUDGET_SCALE times
its budget.  The budgets' arithmetic is below and in
docs/gpu-job.md.
"""
from __future__ import annotations

import argparse
import glob
import importlib.util
import io
import os
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field

from bench import schema

# What the device tool allows one command, and the share of it each call may use (its start is not in it).
CALL_LIMIT_S = {"1": 420, "2": 360}
GRACE_S = 10        # between SIGINT and SIGKILL
PACK_S = 5          # packing the archive after a step (a few MB)
START_S = 15        # before the first step: the install and Python's start (call 1 on the H200: 312 s, steps 297)
# Per-step budgets, from the first H200 run (2026-12-04, results/2026-12-04-h200): the 14 checks took 104 s on
# a cold cache (130 s leaves a quarter more).  The headline ran at least 29 of its 104 points in 190 s (all 26
# at B=16 T=512, then T=2048 until the cut), under 6.6 s a point where 2 s was assumed; 10 of them ended other
# than ok and their rows were lost (a resume bug since fixed), so where the time went is not on record: up to
# two 45 s point timeouts, and the long calls (75-450 ms) at 20 repetitions plus 16 more for NVML's window
# (it synchronized every 8 calls).  Both are shorter now (10 repetitions past 2 s; NVML checks after each long
# call) and every row records point_s, so the next run can size this again.  Every row at a shape comes before
# the next shape, the Transformer first, so a cut leaves whole rows with their reference at the first shapes.
# Call 2 as measured: 138 kernel tests passed in 90 s (80 now, the start counted); train ran out its 50 s in
# first-step compiles, translate wrote no row (per-length autotuning, inferred); warm_up and BucketedKeys fix
# both, not yet re-run on a GPU.
BUDGETS = {"checks": 130, "headline": 245, "tests": 80, "sweep": 100, "train": 50, "translate": 50}
CALLS = {"1": ("checks", "headline"), "2": ("tests", "sweep", "train", "translate")}
POINT_TIMEOUT_S = 45         # below every sweep step's budget: a hung point is a row, and the step goes on
CHECK_TIMEOUT_S = 60
HEADLINE = {"seq_lens": "512,2048", "batch": "16,128"}       # on a GPU; a CPU rehearsal takes the CPU shapes
# A CPU rehearsal checks the commands, not the GPU's arithmetic: the interpreter and host timers on shared cores
# (CI runs it beside other tests) get this many times each budget, and the quick shapes at their smallest batch.
CPU_BUDGET_SCALE = 3
CPU_HEADLINE_BATCH = "2"
TRAIN_SECONDS = 7            # of training per model in call 2 (four models, compile and evaluation on top)
TRANSLATE_SECONDS = 5        # the same for seqbench translate (and its evaluations' greedy decoding)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # the checkout: steps run here


@dataclass
class Step:
    name: str
    cmd: list[str]
    budget_s: float
    env: dict = field(default_factory=dict)
    skip: str = ""          # why this step does not run (it is recorded, not silently dropped)


def run_step(step: Step, out: str, grace_s: float = GRACE_S) -> dict:
    """Run one step into out/<name>.log; past its budget, SIGINT to its process group, then SIGKILL."""
    t0 = time.time()
    record = {"step": step.name, "command": " ".join(step.cmd), "budget_s": step.budget_s}
    if step.skip:
        return record | {"exit": "skipped", "reason": step.skip, "seconds": 0.0}
    with open(os.path.join(out, f"{step.name}.log"), "w") as log:
        proc = subprocess.Popen(step.cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **step.env},
                                cwd=ROOT, start_new_session=True)
        try:
            rc = proc.wait(timeout=step.budget_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=grace_s)
                rc = "timeout (stopped by SIGINT)"
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                rc = "timeout (killed: SIGKILL after SIGINT)"
    return record | {"exit": rc, "seconds": round(time.time() - t0, 1)}


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def headline_impls() -> tuple[list[str], list[str]]:
    """(workloads, implementations) standing for the hardware-argument table's five rows, two kinds left out
    that do not fit the window: what compiles at its first call (torch.compile unrolls a loop over T, minutes at
    T = 2048; FlashRNN's nvcc build), and a peer's plain PyTorch loop (FlashRNN's vanilla backend: a second
    2048-step loop beside the textbook's own, seconds a call; the sweep step times it)."""
    from bench.report.tables import ROWS, stand_ins
    from bench.workloads import WORKLOADS
    rows = stand_ins(WORKLOADS)
    fits = lambda i: not i.compiles and not (i.peer and not i.triton)  # noqa: E731
    pairs = [(w, i) for label in ROWS for w, i in rows.get(label, []) if fits(WORKLOADS[w].impls[i])]
    # the Transformer first at each shape: every other row's ratio needs it (on the first H200 run it came last)
    workloads = sorted({w for w, _ in pairs}, key=lambda w: (w != "model_transformer", w))
    return workloads, sorted({i for _, i in pairs})


def step_for(name: str, out: str, gpu: bool) -> Step:
    """One of the job's steps, with its budget."""
    py, budget = [sys.executable], BUDGETS[name] * (1 if gpu else CPU_BUDGET_SCALE)
    run_dir = os.path.join(out, "run")
    if name == "checks":
        return Step(name, py + ["-m", "bench", "check", "--gpu-only", "--isolate", "--timeout", str(CHECK_TIMEOUT_S),
                                "--out", os.path.join(out, "checks.jsonl")], budget)
    if name == "headline":
        workloads, impls = headline_impls()
        shapes = (["--seq-len", HEADLINE["seq_lens"], "--batch", HEADLINE["batch"]] if gpu
                  else ["--quick", "--batch", CPU_HEADLINE_BATCH])
        return Step(name, py + ["-m", "bench", "run", "--only", ",".join(workloads), "--impl", ",".join(impls),
                                *shapes, "--mode", "both", "--order", "shape", "--no-checks", "--no-progress",
                                "--point-timeout", str(POINT_TIMEOUT_S), "--resume", "--out", run_dir], budget)
    if name == "tests":
        first = ["tests/test_lstm_persistent.py", "tests/test_lstm.py", "tests/test_gru.py", "tests/test_rnn.py",
                 "tests/test_scan.py", "tests/test_conv.py", "tests/test_additive_attention.py"]
        found = {os.path.relpath(f, ROOT) for f in glob.glob(os.path.join(ROOT, "tests", "test_*.py"))}
        order = [f for f in first if f in found] + ["tests/test_attention.py"]
        par = ["-n", str(min(8, os.cpu_count() or 1)), "--dist", "loadfile"] if _has("xdist") else []
        return Step(name, py + ["-m", "pytest", "-q", "-rf", "--tb=short", "-p", "no:cacheprovider", *par, *order],
                    budget, env={"HYPOTHESIS_PROFILE": "gpu",
                                 "SEQBENCH_FAILURE_LOG": os.path.join(out, "test-failures.txt")})
    if name == "sweep":
        return Step(name, py + ["-m", "bench", "run", "--quick", "--impl", "triton,eager", "--resume", "--no-checks",
                                "--no-progress",
                                "--point-timeout", str(POINT_TIMEOUT_S), "--out", run_dir], budget)
    if name == "train":
        seconds = os.environ.get("SEQBENCH_SUITE_TRAIN_S", str(TRAIN_SECONDS))
        return Step(name, py + ["-m", "bench", "train", "--quick", "--seconds", seconds, "--resume", "--no-progress",
                                "--out", os.path.join(out, "train")], budget)
    if name == "translate":
        seconds = os.environ.get("SEQBENCH_SUITE_TRANSLATE_S", str(TRANSLATE_SECONDS))
        return Step(name, py + ["-m", "bench", "translate", "--quick", "--seconds", seconds, "--resume",
                                "--no-progress", "--out", os.path.join(out, "translate")], budget)
    raise ValueError(f"unknown step {name!r}; expected some of {list(BUDGETS)}")


def call_fits(call: str, budgets: dict = BUDGETS, grace_s: float = GRACE_S) -> tuple[float, float]:
    """(the call's worst case in seconds: its start, every step to its budget, then its grace, then a pack; its
    limit)."""
    worst = START_S + sum(budgets[s] + grace_s + PACK_S for s in CALLS[call])
    return worst, CALL_LIMIT_S[call]


# The device tool returns files of at most 16 MiB: the archive leaves out what is not a result (the training
# checkpoints, 500 MB on the first H200 run, made its archive too large to come back) and any file over this.
PACK_SKIP_DIRS = ("checkpoints",)
PACK_MAX_FILE = 4 * 2**20
PACK_MAX_ARCHIVE = 15 * 2**20      # past it, the largest files left are left out too, one at a time


def pack(out: str, archive: str) -> list[str]:
    """The folder as one .tar.gz, replaced atomically (an interrupted pack leaves the previous one), without
    checkpoints or files over PACK_MAX_FILE; returns the paths it left out (also listed in the archive's
    left_out.txt)."""
    os.makedirs(os.path.dirname(os.path.abspath(archive)), exist_ok=True)
    root = os.path.basename(os.path.normpath(out))
    dropped: set = set()          # files left out to bring the whole archive under PACK_MAX_ARCHIVE
    while True:
        left, sizes = [], {}

        def keep(info):
            parts = info.name.split("/")
            if (any(p in PACK_SKIP_DIRS for p in parts[1:]) or info.name in dropped
                    or (info.isfile() and info.size > PACK_MAX_FILE)):
                if not any(p in PACK_SKIP_DIRS for p in parts[1:-1]):
                    left.append(info.name)
                return None
            if info.isfile():
                sizes[info.name] = info.size
            return info

        def write(f):
            with tarfile.open(fileobj=f, mode="w:gz") as tar:
                tar.add(out, arcname=root, filter=keep)
                if left:
                    text = ("left out of this archive (checkpoints, files over "
                            f"{PACK_MAX_FILE // 2**20} MiB, the largest past {PACK_MAX_ARCHIVE // 2**20} MiB "
                            "in all):\n" + "\n".join(left) + "\n").encode()
                    info = tarfile.TarInfo(f"{root}/left_out.txt")
                    info.size, info.mtime = len(text), int(time.time())
                    tar.addfile(info, io.BytesIO(text))
        schema.atomic_write(archive, write, binary=True)
        if os.path.getsize(archive) <= PACK_MAX_ARCHIVE or not sizes:
            return left
        dropped.add(max(sizes, key=sizes.get))


def _write_state(out: str, state: dict) -> None:
    schema.write_json(os.path.join(out, "suite.json"), state)     # a kill mid-write leaves the last whole one
    lines = ["# GPU suite", "", f"commit: {state.get('commit', '')}", "",
             "| step | exit | seconds | budget | note |", "|---|---|---|---|---|"]
    for r in state["steps"]:
        lines.append(f"| {r['step']} | {r['exit']} | {r['seconds']} | {r['budget_s']:.0f} | {r.get('reason', '')} |")
    lines += ["", "Finished steps: " + (", ".join(state["finished"]) or "none"), ""]
    schema.atomic_write(os.path.join(out, "SUITE.md"), lambda f: f.write("\n".join(lines)))


def run_steps(names: list[str], out: str, archive: str | None = None, resume: bool = False, steps_for=None,
              grace_s: float = GRACE_S) -> dict:
    """Run the steps in order; suite.json, SUITE.md and the archive are on disk after every step."""
    import torch

    from bench.measure.env import git_commit
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "suite.json")
    state = {"steps": [], "finished": []} | ((schema.read_json(path) if resume else {}) or {})
    state["commit"] = git_commit()
    gpu = torch.cuda.is_available()
    steps_for = steps_for or (lambda name: step_for(name, out, gpu))
    for name in names:
        if resume and name in state["finished"]:
            print(f"{name}: finished by an earlier call, skipped", flush=True)
            continue
        record = run_step(steps_for(name), out, grace_s)
        state["steps"].append(record)
        if record["exit"] in (0, "skipped"):        # a step cut short or failing runs again on --resume
            state["finished"].append(name)
        _write_state(out, state)
        left = pack(out, archive) if archive else []
        print(f"{name}: exit {record['exit']} in {record['seconds']} s" + (f"; packed {archive}" if archive else "")
              + (f" (left out: {', '.join(left)})" if left else ""), flush=True)
    return state


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.tools.gpu_suite", description=__doc__.splitlines()[0])
    ap.add_argument("--call", choices=sorted(CALLS), help="the job's call: 1 (checks, headline) or 2 (tests, sweep, "
                                                           "train, translate)")
    ap.add_argument("--steps", help=f"comma list from {', '.join(BUDGETS)} instead of a call's")
    ap.add_argument("--out", required=True, help="the suite's folder (results/<date>-<gpu> to commit it)")
    ap.add_argument("--archive", metavar="FILE.tar.gz", help="also pack the folder into one file after every step")
    ap.add_argument("--resume", action="store_true", help="skip the steps an earlier call finished")
    a = ap.parse_args(argv)
    names = list(CALLS[a.call]) if a.call else [s for s in (a.steps or "").split(",") if s]
    bad = [s for s in names if s not in BUDGETS]
    prog = "python -m bench.tools.gpu_suite"
    if bad or not names or (a.call and a.steps):
        ap.exit(2, f"{prog}: error: give --call 1, --call 2 or --steps from {list(BUDGETS)}"
                   f"{f'; unknown {bad}' if bad else ''}\n")
    problem = schema.writable_folder(a.out) or (schema.writable_folder(os.path.dirname(os.path.abspath(a.archive)))
                                                if a.archive else None)
    if a.archive and os.path.isdir(a.archive):
        problem = f"--archive {a.archive} is a folder; give the .tar.gz file to write"
    if problem:
        ap.exit(2, f"{prog}: error: {problem}\n")
    try:
        run_steps(names, a.out, a.archive, a.resume)
    except (OSError, schema.RunFolderError) as exc:
        ap.exit(2, f"{prog}: error: {exc}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
