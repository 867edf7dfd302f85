"""The whole GPU job in one command, for a lent GPU with a 10-minute limit per call:

    python -m bench.gpu_suite --out results/<date>-<gpu> [--archive $OUT/suite.tar.gz]

1. the test suite on the GPU (kernels against the references at GPU scale of the same tests);
2. ``seqbench run`` (the full sweep, or --quick), with its report and plots;
3. ``pytest --benchmark`` with pytest-benchmark's JSON;
4. ``seqbench inspect`` for the record.
Each step has a time budget and logs to the folder; a step that fails or overruns is noted in
SUITE.md and the next one still runs.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import time


def _step(name, cmd, out, budget_s, log, env=None):
    t0 = time.time()
    with open(os.path.join(out, f"{name}.log"), "w") as f:
        try:
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=budget_s,
                                env={**os.environ, **(env or {})}).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    log.append(f"| {name} | `{' '.join(cmd)}` | {rc} | {time.time() - t0:.0f} s |")
    print(log[-1], flush=True)
    return rc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu_suite")
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true", help="the quick sweep instead of the full one")
    ap.add_argument("--budget", type=int, default=520, help="seconds for the whole suite (default 520)")
    ap.add_argument("--archive", metavar="FILE.tar.gz",
                    help="also pack the folder into one file (the device tool returns at most 8 files)")
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    py = sys.executable
    start, log = time.time(), ["| step | command | exit | time |", "|---|---|---|---|"]

    def left(frac):
        return max(30, int((a.budget - (time.time() - start)) * frac))

    # every new head dim compiles and autotunes on a GPU: fewer hypothesis examples there
    _step("tests", [py, "-m", "pytest", "-q", "--ignore=tests/test_inspect.py", "-p", "no:cacheprovider"],
          a.out, left(0.3), log, env={"HYPOTHESIS_PROFILE": "gpu"})
    _step("sweep", [py, "-m", "bench", "run", "--out", a.out, "--no-progress"] + (["--quick"] if a.quick else []),
          a.out, left(0.7), log)
    # rows are on disk as they finish: rebuild the report even if the sweep ran out of time
    _step("report", [py, "-m", "bench", "report", a.out], a.out, 60, log)
    _step("benchmarks", [py, "-m", "pytest", "-q", "tests/benchmarks", "--benchmark", "-p", "no:cacheprovider",
                         f"--benchmark-json={os.path.join(a.out, 'pytest-benchmark.json')}"], a.out, left(0.6), log)
    _step("inspect", [py, "-m", "bench", "inspect", "--arch", "sm_90a", "--out", a.out], a.out, left(0.9), log)
    with open(os.path.join(a.out, "SUITE.md"), "w") as f:
        f.write("# GPU suite\n\n" + "\n".join(log) + "\n")
    if a.archive:
        with tarfile.open(a.archive, "w:gz") as tar:
            tar.add(a.out, arcname=os.path.basename(os.path.normpath(a.out)))
        print(f"packed {a.out} into {a.archive}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
