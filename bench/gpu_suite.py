"""The GPU job, in stages that each fit one 10-minute call of a lent GPU:

    python -m bench.gpu_suite --stage smoke,tests --out DIR --archive $OUT/suite.tar.gz
    python -m bench.gpu_suite --stage sweep       --out DIR --archive $OUT/suite.tar.gz --resume
    python -m bench.gpu_suite --stage train,benchmarks,inspect --out DIR --archive $OUT/suite.tar.gz --resume

* smoke (< 3 min): every Triton kernel once at a real GPU shape against its float64 reference, the
  grid-barrier path of the split-head persistent LSTM first of all; then the headline points of the
  textbook table (each stand-in at one sequence length and batch).  A run that gets no further still
  answers the main question.
* tests: the test suite on the GPU, in parallel (pytest-xdist) where installed, RNN and barrier tests
  before the compile-heavy attention matrix; every failure's traceback is on disk as it happens.
* sweep: the full sweep (``--quick`` for the short one) into DIR/sweep, resumable across calls.
* train: ``seqbench train --quick`` on the kernels: the four models, 35 s of training each, resumable; then
  ``seqbench gradients`` (T = 1000, 5 seeds: every recurrent kernel's backward over a long sequence).
* benchmarks: pytest-benchmark over a handful of representative points, so its JSON is written.
* inspect: ``seqbench inspect --arch sm_90a`` for the record.

Every step writes to disk as it goes and has a time budget: past it the step gets SIGINT (pytest and
``seqbench run`` stop cleanly and keep what they have), then SIGKILL.  SUITE.md and suite.json are
rewritten after every step and the archive (one file, for the device tool) after every stage, so it
always holds everything finished so far.  ``--resume`` skips the stages a previous call finished with every
step exiting 0; one cut short (the sweep) or failing runs again and picks up where it stopped.
"""
from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field

from bench import schema

STAGES = ("smoke", "tests", "sweep", "train", "benchmarks", "inspect")
# Seconds per stage; smoke + tests fit one 10-minute call, the sweep another, the rest a third.
BUDGETS = {"smoke": 170, "tests": 380, "sweep": 540, "train": 300, "benchmarks": 200, "inspect": 150}
GRACE_S = 20     # between SIGINT and SIGKILL
# Training seconds per model in the train stage: four models, each with compile and evaluation time on top.
TRAIN_SECONDS = 35
GRADIENTS_S = 90    # of the train stage's budget (autotuning every recurrent kernel in fp32 comes first)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # steps run here


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


def stage_steps(stage: str, out: str, quick: bool, budget_s: float) -> list[Step]:
    """The steps of a stage; their budgets share the stage's."""
    py = [sys.executable]
    if stage == "smoke":
        from bench.table import ROWS, stand_ins
        from bench.workloads import WORKLOADS
        rows = stand_ins(WORKLOADS)         # the hardware-argument table's five rows (not the scoring table's)
        pairs = [p for label in ROWS for p in rows.get(label, [])]
        headline = sorted({i for _, i in pairs})
        workloads = sorted({w for w, _ in pairs})
        return [Step("smoke-checks", py + ["-m", "bench", "check", "--gpu-only", "--out",
                                           os.path.join(out, "smoke-checks.jsonl")], budget_s * 0.6),
                Step("smoke-headline", py + ["-m", "bench", "run", "--workload", ",".join(workloads), "--impl",
                                             ",".join(headline), "--seq-lens", "512", "--mode", "fwd", "--no-checks",
                                             "--no-progress", "--resume", "--out", os.path.join(out, "smoke")],
                     budget_s * 0.4)]
    if stage == "tests":
        first = ["tests/test_lstm_persistent.py", "tests/test_lstm.py", "tests/test_gru.py"]
        last = ["tests/test_attention.py", "tests/test_inspect.py"]     # the compile-heavy matrix
        found = {os.path.relpath(f, ROOT) for f in glob.glob(os.path.join(ROOT, "tests", "test_*.py"))}
        rest = sorted(found - set(first) - set(last))
        order = first + rest + last
        par = ["-n", str(min(8, os.cpu_count() or 1)), "--dist", "loadfile"] if _has("xdist") else []
        return [Step("tests", py + ["-m", "pytest", "-q", "-rf", "--tb=short", "-p", "no:cacheprovider", *par, *order],
                     budget_s, env={"HYPOTHESIS_PROFILE": "gpu",
                                    "SEQBENCH_FAILURE_LOG": os.path.join(out, "test-failures.txt")})]
    if stage == "sweep":
        sweep = os.path.join(out, "sweep")
        return [Step("sweep", py + ["-m", "bench", "run", "--resume", "--no-progress", "--out", sweep]
                     + (["--quick"] if quick else []), budget_s - 40),
                Step("sweep-report", py + ["-m", "bench", "report", sweep], 40)]
    if stage == "train":
        # the quick GPU sizes (d_model 512, 4 layers, T=256, global batch 32; LSTM, ConvS2S and minGRU widths matched
        # to the transformer's 12.7 M parameters), each model for TRAIN_SECONDS of training on the kernels
        seconds = os.environ.get("SEQBENCH_SUITE_TRAIN_S", str(TRAIN_SECONDS))
        return [Step("train", py + ["-m", "bench", "train", "--quick", "--seconds", seconds, "--resume",
                                    "--no-progress", "--out", os.path.join(out, "train")], budget_s - GRADIENTS_S),
                Step("gradients", py + ["-m", "bench", "gradients", "--seq-len",
                                        os.environ.get("SEQBENCH_SUITE_GRADIENTS_T", "1000"), "--no-progress",
                                        "--out", os.path.join(out, "gradients")], GRADIENTS_S)]
    if stage == "benchmarks":
        json_out = os.path.join(out, "pytest-benchmark.json")
        return [Step("benchmarks", py + ["-m", "pytest", "-q", "tests/benchmarks", "--benchmark", "-p",
                                         "no:cacheprovider", f"--benchmark-json={json_out}"],
                     budget_s, env={"SEQBENCH_BENCHMARK": "representative"},
                     skip="" if _has("pytest_benchmark") else "pytest-benchmark is not installed")]
    if stage == "inspect":
        return [Step("inspect", py + ["-m", "bench", "inspect", "--arch", "sm_90a", "--out",
                                      os.path.join(out, "inspect")], budget_s)]
    raise ValueError(f"unknown stage {stage!r}; expected some of {STAGES}")


def pack(out: str, archive: str) -> None:
    """The whole folder as one .tar.gz, replaced atomically (an interrupted pack leaves the previous one)."""
    os.makedirs(os.path.dirname(os.path.abspath(archive)), exist_ok=True)

    def write(f):
        with tarfile.open(fileobj=f, mode="w:gz") as tar:
            tar.add(out, arcname=os.path.basename(os.path.normpath(out)))
    schema.atomic_write(archive, write, binary=True)


def _write_state(out: str, state: dict) -> None:
    schema.write_json(os.path.join(out, "suite.json"), state)     # a kill mid-write leaves the last whole one
    lines = ["# GPU suite", "", f"commit: {state.get('commit', '')}", "",
             "| stage | step | exit | seconds | budget | note |", "|---|---|---|---|---|---|"]
    for r in state["steps"]:
        lines.append(f"| {r['stage']} | {r['step']} | {r['exit']} | {r['seconds']} | {r['budget_s']:.0f} | "
                     f"{r.get('reason', '')} |")
    lines += ["", "Finished stages: " + (", ".join(state["finished"]) or "none"), ""]
    schema.atomic_write(os.path.join(out, "SUITE.md"), lambda f: f.write("\n".join(lines)))


def run_stages(stages: list[str], out: str, archive: str | None = None, resume: bool = False, quick: bool = False,
               steps_for=None, grace_s: float = GRACE_S) -> dict:
    """Run the stages in order; state, SUITE.md and the archive are on disk after every step and stage."""
    from bench.env import git_commit
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "suite.json")
    state = (schema.read_json(path) if resume else {}) or {"steps": [], "finished": []}
    state["commit"] = git_commit()
    steps_for = steps_for or (lambda stage: stage_steps(stage, out, quick, BUDGETS[stage]))
    for stage in stages:
        if resume and stage in state["finished"]:
            print(f"stage {stage}: finished by an earlier call, skipped", flush=True)
            continue
        complete = True
        for step in steps_for(stage):
            record = run_step(step, out, grace_s) | {"stage": stage}
            state["steps"].append(record)
            complete = complete and record["exit"] in (0, "skipped")
            _write_state(out, state)
            print(f"{stage}/{step.name}: exit {record['exit']} in {record['seconds']} s", flush=True)
        if complete:        # a stage cut short or failing is run again by the next --resume call
            state["finished"].append(stage)
        _write_state(out, state)
        if archive:
            pack(out, archive)
            print(f"packed {out} into {archive}", flush=True)
    return state


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu_suite", description=__doc__.splitlines()[0])
    ap.add_argument("--stage", default="all", help=f"comma list from {', '.join(STAGES)}, or all")
    ap.add_argument("--out", required=True, help="the suite's folder (results/<date>-<gpu> to commit it)")
    ap.add_argument("--archive", metavar="FILE.tar.gz", help="also pack the folder into one file after every stage")
    ap.add_argument("--resume", action="store_true", help="skip the stages a previous call finished")
    ap.add_argument("--quick", action="store_true", help="the quick sweep instead of the full one")
    a = ap.parse_args(argv)
    stages = list(STAGES) if a.stage == "all" else [s for s in a.stage.split(",") if s]
    bad = [s for s in stages if s not in STAGES]
    if bad or not stages:
        ap.exit(2, f"python -m bench.gpu_suite: error: --stage: unknown {bad or 'nothing'}; expected some of "
                   f"{list(STAGES)} or all\n")
    run_stages(stages, a.out, a.archive, a.resume, a.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
