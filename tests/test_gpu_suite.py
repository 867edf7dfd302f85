"""The staged GPU job, rehearsed on the CPU: steps past their budget get SIGINT then SIGKILL, the state and
the archive are on disk after every stage, a killed suite leaves the finished stages in the archive, and
the real smoke stage runs end to end here (checks say there is no GPU; the headline points are CPU timings)."""
import json
import os
import subprocess
import sys
import tarfile
import textwrap
import time

import pytest
import torch

from bench import gpu_suite

PY = sys.executable


def _names(archive):
    with tarfile.open(archive) as tar:
        return {os.path.relpath(n, tar.getnames()[0]) for n in tar.getnames()}


def test_budget_sigint_then_sigkill_and_archive_per_stage(tmp_path):
    out, archive = tmp_path / "suite", tmp_path / "suite.tar.gz"
    trap = textwrap.dedent("""
        import signal, sys, time
        def stop(*a):
            open(sys.argv[1], "w").write("got SIGINT"); sys.exit(130)
        signal.signal(signal.SIGINT, stop)
        time.sleep(60)""")
    deaf = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(60)"
    steps = {"a": [gpu_suite.Step("write", [PY, "-c", f"open({str(out / 'a.txt')!r}, 'w').write('a')"], 30)],
             "b": [gpu_suite.Step("trap", [PY, "-c", trap, str(out / "b.txt")], 2)],
             "c": [gpu_suite.Step("deaf", [PY, "-c", deaf], 2),
                   gpu_suite.Step("later", [PY, "-c", "print('runs')"], 30, skip="not today")]}
    t0 = time.time()
    state = gpu_suite.run_stages(["a", "b", "c"], str(out), str(archive), steps_for=steps.get, grace_s=2)
    assert time.time() - t0 < 30
    exits = {r["step"]: r["exit"] for r in state["steps"]}
    assert exits == {"write": 0, "trap": "timeout (stopped by SIGINT)",
                     "deaf": "timeout (killed: SIGKILL after SIGINT)", "later": "skipped"}
    assert (out / "b.txt").read_text() == "got SIGINT"
    assert state["finished"] == ["a"]             # b and c were cut short: not finished
    assert {"a.txt", "b.txt", "SUITE.md", "suite.json", "write.log", "trap.log"} <= _names(archive)
    assert "not today" in (out / "SUITE.md").read_text()
    # --resume skips what is finished and runs again what was cut short
    n = len(state["steps"])
    again = gpu_suite.run_stages(["a", "b"], str(out), resume=True, steps_for=steps.get, grace_s=2)
    assert [r["step"] for r in again["steps"][n:]] == ["trap"]


def test_killed_suite_keeps_finished_stages_in_the_archive(tmp_path):
    """The suite process itself is killed mid-stage (the device tool's time limit): the archive, packed
    after the first stage, still holds it."""
    out, archive = tmp_path / "suite", tmp_path / "suite.tar.gz"
    script = tmp_path / "suite.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        from bench import gpu_suite
        first = [sys.executable, "-c", "open({str(out / 'first.txt')!r}, 'w')"]
        steps = {{"first": [gpu_suite.Step("done", first, 30)],
                  "second": [gpu_suite.Step("hang", [sys.executable, "-c", "import time; time.sleep(120)"], 120)]}}
        gpu_suite.run_stages(["first", "second"], {str(out)!r}, {str(archive)!r}, steps_for=steps.get)
        """))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen([PY, str(script)], cwd=root, env={**os.environ, "PYTHONPATH": root},
                            start_new_session=True)
    deadline = time.time() + 60
    while not (archive.exists() and (out / "hang.log").exists()) and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, 9)
    proc.wait()
    names = _names(archive)
    assert "first.txt" in names and "done.log" in names
    state = json.load(open(out / "suite.json"))
    assert state["finished"] == ["first"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU rehearsal; a GPU runs the real smoke stage")
def test_smoke_stage_rehearsed_on_the_cpu(tmp_path):
    out, archive = tmp_path / "suite", tmp_path / "suite.tar.gz"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([PY, "-m", "bench.gpu_suite", "--stage", "smoke,train", "--out", str(out), "--archive",
                        str(archive)], cwd=root, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "SEQBENCH_COMMIT": "abc1234", "SEQBENCH_SUITE_TRAIN_S": "2",
                            "SEQBENCH_SUITE_GRADIENTS_T": "8"})
    assert r.returncode == 0, r.stdout + r.stderr
    state = json.load(open(out / "suite.json"))
    exits = {s["step"]: s["exit"] for s in state["steps"]}
    assert exits["smoke-checks"] == 0 and exits["smoke-headline"] == 0 and exits["train"] == exits["gradients"] == 0
    names = _names(archive)
    assert {"smoke/results.csv", "smoke/REPORT.md", "SUITE.md"} <= names
    rows = open(out / "smoke" / "results.csv").read()
    assert "model_lstm,lstm_torch" in rows and "model_transformer,transformer_torch" in rows
    assert "abc1234" in open(out / "smoke" / "run.json").read()
    assert {"train/train.csv", "train/train.png", "train/REPORT.md"} <= names
    assert "Time to quality" in (out / "train" / "REPORT.md").read_text()
    assert {"gradients/gradients.csv", "gradients/gradients.png", "gradients/GRADIENTS.md"} <= names


def test_unknown_stage_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit) as e:
        gpu_suite.main(["--stage", "smok", "--out", "x"])
    assert e.value.code == 2 and "unknown ['smok']" in capsys.readouterr().err
