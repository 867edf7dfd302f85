"""The GPU job, rehearsed on the CPU: each call's steps with their real budgets fit the call's limit even when
every step runs to its budget and then ignores SIGINT; a step past its budget gets SIGINT then SIGKILL; the
archive holds every finished step after every step, also when the job itself is killed mid-step; and call 1's
real commands run end to end here (the checks step says there is no GPU, the headline takes CPU shapes)."""
import json
import os
import subprocess
import sys
import tarfile
import textwrap
import time

import pytest
import torch

from bench.tools import gpu_suite

PY = sys.executable
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _names(archive):
    with tarfile.open(archive) as tar:
        return {os.path.relpath(n, tar.getnames()[0]) for n in tar.getnames()}


@pytest.mark.parametrize("call", sorted(gpu_suite.CALLS))
def test_each_call_fits_its_limit_in_the_worst_case(call):
    """Every step to its budget, then the whole grace after SIGINT, then a pack: still inside the call's limit
    (7 and 6 minutes of the 10 a command may run; the machine's start comes on top of both)."""
    worst, limit = gpu_suite.call_fits(call)
    assert worst <= limit <= 420, (call, worst, limit)
    assert sum(gpu_suite.CALL_LIMIT_S.values()) <= 15 * 60 - 120          # two calls and a 2-minute start
    assert gpu_suite.POINT_TIMEOUT_S < min(gpu_suite.BUDGETS[s] for s in ("headline", "sweep"))
    assert gpu_suite.CHECK_TIMEOUT_S < gpu_suite.BUDGETS["checks"]


@pytest.mark.parametrize("call", sorted(gpu_suite.CALLS))
def test_worst_case_rehearsal_ends_inside_the_scaled_limit(call, tmp_path):
    """The same call with budgets, grace and limit scaled down 60×, every step deaf to SIGINT: the job kills
    each at its budget plus grace and ends inside the scaled limit."""
    scale = 60.0
    deaf = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(600)"
    budgets = {s: b / scale for s, b in gpu_suite.BUDGETS.items()}
    steps = {s: gpu_suite.Step(s, [PY, "-c", deaf], budgets[s]) for s in gpu_suite.CALLS[call]}
    t0 = time.time()
    state = gpu_suite.run_steps(list(gpu_suite.CALLS[call]), str(tmp_path / "s"), str(tmp_path / "s.tar.gz"),
                                steps_for=steps.get, grace_s=gpu_suite.GRACE_S / scale)
    took = time.time() - t0
    worst, limit = gpu_suite.call_fits(call, budgets, gpu_suite.GRACE_S / scale)
    assert took <= limit / scale + 3, (took, limit / scale)         # 3 s for Python's own start of each step
    assert {r["exit"] for r in state["steps"]} == {"timeout (killed: SIGKILL after SIGINT)"}


def test_budget_sigint_then_sigkill_and_archive_per_step(tmp_path):
    out, archive = tmp_path / "suite", tmp_path / "suite.tar.gz"
    trap = textwrap.dedent("""
        import signal, sys, time
        def stop(*a):
            open(sys.argv[1], "w").write("got SIGINT"); sys.exit(130)
        signal.signal(signal.SIGINT, stop)
        time.sleep(60)""")
    steps = {"write": gpu_suite.Step("write", [PY, "-c", f"open({str(out / 'a.txt')!r}, 'w').write('a')"], 30),
             "trap": gpu_suite.Step("trap", [PY, "-c", trap, str(out / "b.txt")], 2),
             "later": gpu_suite.Step("later", [PY, "-c", "print('runs')"], 30, skip="not today")}
    state = gpu_suite.run_steps(["write", "trap", "later"], str(out), str(archive), steps_for=steps.get, grace_s=2)
    exits = {r["step"]: r["exit"] for r in state["steps"]}
    assert exits == {"write": 0, "trap": "timeout (stopped by SIGINT)", "later": "skipped"}
    assert (out / "b.txt").read_text() == "got SIGINT"
    assert state["finished"] == ["write", "later"]
    assert {"a.txt", "b.txt", "SUITE.md", "suite.json", "write.log", "trap.log"} <= _names(archive)
    assert "not today" in (out / "SUITE.md").read_text()
    # --resume skips what is finished and runs again what was cut short
    n = len(state["steps"])
    again = gpu_suite.run_steps(["write", "trap"], str(out), resume=True, steps_for=steps.get, grace_s=2)
    assert [r["step"] for r in again["steps"][n:]] == ["trap"]


def test_a_kill_mid_step_leaves_every_finished_step_in_the_archive(tmp_path):
    """The job itself is killed during its second step (the device tool's limit): the archive, packed after the
    first step, holds it."""
    out, archive = tmp_path / "suite", tmp_path / "suite.tar.gz"
    script = tmp_path / "suite.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        from bench.tools import gpu_suite
        steps = {{"first": gpu_suite.Step("first", [sys.executable, "-c", "open({str(out / 'first.txt')!r}, 'w')"], 30),
                  "hang": gpu_suite.Step("hang", [sys.executable, "-c", "import time; time.sleep(120)"], 120)}}
        gpu_suite.run_steps(["first", "hang"], {str(out)!r}, {str(archive)!r}, steps_for=steps.get)
        """))
    proc = subprocess.Popen([PY, str(script)], cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
                            start_new_session=True)
    deadline = time.time() + 60
    while not (archive.exists() and (out / "hang.log").exists()) and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, 9)
    proc.wait()
    names = _names(archive)
    assert "first.txt" in names and "first.log" in names
    assert json.load(open(out / "suite.json"))["finished"] == ["first"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU rehearsal; a GPU runs the real call")
def test_call_1_rehearsed_on_the_cpu(tmp_path):
    """Call 1's real commands: the checks step refuses (no GPU, exit 2, one line), the headline measures every
    stand-in of the five rows at the CPU shapes, every row at a shape before the next, into run/.  The CPU's
    budgets are CPU_BUDGET_SCALE times the GPU's (the GPU's arithmetic is the worst-case tests' above)."""
    out, archive = tmp_path / "suite", tmp_path / "suite.tar.gz"
    limit = gpu_suite.CALL_LIMIT_S["1"] * gpu_suite.CPU_BUDGET_SCALE
    t0 = time.time()
    r = subprocess.run([PY, "-m", "bench.tools.gpu_suite", "--call", "1", "--out", str(out), "--archive", str(archive)],
                       cwd=ROOT, capture_output=True, text=True, timeout=limit,
                       env={**os.environ, "SEQBENCH_COMMIT": "abc1234"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert time.time() - t0 < limit
    state = json.load(open(out / "suite.json"))
    exits = {s["step"]: s["exit"] for s in state["steps"]}
    assert exits == {"checks": 2, "headline": 0}
    assert "needs a CUDA GPU" in (out / "checks.log").read_text()
    names = _names(archive)
    assert {"run/results.csv", "run/REPORT.md", "SUITE.md", "headline.log"} <= names
    rows = [line.split(",") for line in open(out / "run" / "results.csv").read().splitlines()[1:]]
    workloads, impls = gpu_suite.headline_impls()
    assert {r[1] for r in rows} == set(impls)
    shapes = [r[4] for r in rows]
    assert len(set(shapes)) >= 2
    first = shapes.index(shapes[-1])          # the last shape's rows come after every other shape's
    assert all(s == shapes[-1] for s in shapes[first:])
    assert "abc1234" in open(out / "run" / "run.json").read()


def test_the_archive_leaves_out_checkpoints_and_large_files(tmp_path, monkeypatch):
    """The device tool returns files of at most 16 MiB: train's checkpoints (500 MB on the first H200 run) and
    any file over PACK_MAX_FILE stay out, named in left_out.txt; the results go in."""
    out = tmp_path / "suite"
    (out / "train" / "checkpoints").mkdir(parents=True)
    (out / "train" / "checkpoints" / "lstm-step.pt").write_bytes(b"x" * 100)
    (out / "train" / "train.csv").write_text("model\n")
    (out / "big.log").write_bytes(b"y" * 2048)
    monkeypatch.setattr(gpu_suite, "PACK_MAX_FILE", 1024)
    left = gpu_suite.pack(str(out), str(tmp_path / "suite.tar.gz"))
    names = _names(tmp_path / "suite.tar.gz")
    assert "train/train.csv" in names and "left_out.txt" in names
    assert not any("checkpoints" in n for n in names) and "big.log" not in names
    assert sorted(left) == ["suite/big.log", "suite/train/checkpoints"]
    (out / "noise-a.bin").write_bytes(os.urandom(900))      # incompressible: past the whole archive's limit
    (out / "noise-b.bin").write_bytes(os.urandom(600))
    monkeypatch.setattr(gpu_suite, "PACK_MAX_ARCHIVE", 1400)
    left = gpu_suite.pack(str(out), str(tmp_path / "suite.tar.gz"))
    assert "suite/noise-a.bin" in left and os.path.getsize(tmp_path / "suite.tar.gz") <= 1400
    assert "train/train.csv" in _names(tmp_path / "suite.tar.gz")


def test_unknown_step_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit) as e:
        gpu_suite.main(["--steps", "smok", "--out", "x"])
    assert e.value.code == 2 and "unknown ['smok']" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["sweep", "train", "translate"])
def test_call_2s_seqbench_steps_parse(name, tmp_path):
    """Call 2's seqbench commands are ones the CLI takes (a typo would cost a lent GPU's step)."""
    from bench.cli import build_parser
    step = gpu_suite.step_for(name, str(tmp_path), gpu=True)
    assert step.cmd[1:3] == ["-m", "bench"]
    a = build_parser().parse_args(step.cmd[3:])
    assert a.fn.__name__ == f"cmd_{'run' if name == 'sweep' else name}" and a.resume
