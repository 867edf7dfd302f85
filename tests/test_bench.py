"""The harness: workload formulas against hand-computed values, CSV/JSON schema, failure rows,
accuracy against the baseline, resume, report, compare, CLI errors and the NVML sampler's degraded paths."""
import collections
import csv
import json
import os
import sys
import types

import pandas as pd
import pytest
import torch

from bench import cli as cli_module
from bench import schema
from bench.measure import nvml, timing
from bench.sweep import point as bpoint
from bench.sweep import run as brun
from bench.cli import main as cli
from bench.workload import MODES, Point, Shapes, Workload, namespace, shape_label
from bench.workloads import WORKLOADS
from bench.report.compare import compare
from bench.report.report import load, write_report


# ------------------------------------------------------------------------------------ workloads

def test_registry_lists_the_workloads_and_impls():
    assert set(WORKLOADS) == {"lstm_layer", "lstm_heads", "attention", "model_lstm", "model_transformer", "gru_layer",
                              "model_convs2s", "lstm_ragged", "gru_ragged", "attention_scores", "rnn_layer",
                              "recurrence", "model_mingru"}
    assert {"torch_loop", "nn_lstm", "triton_step", "triton_persistent"} <= set(WORKLOADS["lstm_layer"].impls)
    assert {"naive", "sdpa_flash", "sdpa_efficient", "sdpa_cudnn", "sdpa_math", "triton", "naive_compile",
            "naive_compile_cudagraphs", "flex_attention"} == set(WORKLOADS["attention"].impls)
    for w in WORKLOADS.values():
        for quick in (True, False):
            for gpu in (True, False):
                shapes = w.default_shapes(quick, gpu)
                assert shapes and all(set(w.shape_keys) <= set(s) for s in shapes)


def test_flop_byte_token_formulas_hand_computed():
    lstm = WORKLOADS["lstm_layer"]
    s = dict(B=16, T=1024, H=1024)
    # per step: x·W_ihᵀ and h·W_hhᵀ, each 2·16·4096·1024 FLOPs -> 1024 steps
    assert lstm.flops(s, "fwd") == 1024 * 2 * (2 * 16 * 4096 * 1024)
    assert lstm.flops(s, "fwd+bwd") == 3 * lstm.flops(s, "fwd")
    # bf16: weights 4096·2048 + 8192 biases, x and out 1024·16·1024 each, 2 bytes apiece
    assert lstm.min_bytes(s, torch.bfloat16, "fwd") == (4096 * 2048 + 8192) * 2 + 2 * 1024 * 16 * 1024 * 2
    assert lstm.tokens(s) == 16 * 1024
    # a ragged batch counts its real tokens only, and FLOPs in proportion
    from bench.workloads._rnn import ragged_lengths
    lengths = ragged_lengths(16, 1024)
    assert lengths.max() == 1024 and lengths.min() >= 256 and lengths.tolist() == ragged_lengths(16, 1024).tolist()
    ragged = WORKLOADS["lstm_ragged"]
    assert ragged.tokens(s) == int(lengths.sum())
    assert ragged.flops(s, "fwd") == pytest.approx(lstm.flops(s, "fwd") * int(lengths.sum()) / (16 * 1024))
    assert WORKLOADS["gru_ragged"].params(s) * 4 == lstm.params(s) * 3 == 3 * 4 * 1024 * 2050

    attn = WORKLOADS["attention"]
    s = dict(B=8, H=16, N=8192, D=128)
    assert attn.flops(s, "fwd") == 4 * 8 * 16 * 8192 ** 2 * 128       # 549.8 TFLOP, FA's convention
    assert attn.flops(s, "fwd+bwd") == 3.5 * attn.flops(s, "fwd")
    assert attn.min_bytes(s, torch.float16, "fwd") == 4 * 8 * 16 * 8192 * 128 * 2
    assert attn.tokens(s) == 8 * 8192

    blk = WORKLOADS["model_transformer"]
    s = dict(B=2, T=512, d=1024)
    dense = 24 * 2 * 512 * 1024 ** 2   # QKV 6, out-proj 2, MLP 16 (× B·T·d²)
    assert blk.flops(s, "fwd") == dense + 4 * 2 * 512 ** 2 * 1024
    assert WORKLOADS["model_lstm"].flops(s, "fwd") == 16 * 2 * 512 * 1024 ** 2
    heads = WORKLOADS["lstm_heads"]
    s = dict(B=16, T=1024, NH=12, DH=64)
    # input projection 2·16·3072·768 plus 12 heads × 2·16·256·64 per step
    assert heads.flops(s, "fwd") == 1024 * (2 * 16 * 3072 * 768 + 12 * 2 * 16 * 256 * 64)


def test_runner_fwd_and_training_closures():
    w = WORKLOADS["attention"]
    s = dict(B=1, H=2, N=8, D=16)
    for mode in MODES:
        fn = Point(w, s, mode, torch.float32, torch.device("cpu")).runner(w.impls["sdpa_math"])
        out = fn()
        if mode == "fwd":
            assert out.shape == (1, 2, 8, 16) and not out.requires_grad


# ----------------------------------------------------------------------------------- the sweep

def _toy_workload(fail_on=None, calls=None, wrong=None):
    """Impls good (the baseline), boom, oom, gpu_kernel (Triton) and, if ``wrong``, one that is off by ``wrong``."""
    def inputs(s, dtype, device, grad):
        return namespace(x=torch.randn(s["T"], 8, dtype=dtype, requires_grad=grad), T=s["T"],
                         mode="fwd+bwd" if grad else "fwd")

    w = Workload("toy", "toy", ("B", "T"), "T", Shapes(*[[dict(B=2, T=4), dict(B=2, T=8)]] * 4),
                 lambda s, m: 1e9 * s["T"], lambda s, d, m: 1e6 * s["T"], lambda s: s["B"] * s["T"], inputs,
                 register=False)

    def setup(kind):
        def b(inp):
            if calls is not None:
                calls.append((kind, inp.T, inp.mode))
            if kind == fail_on == "boom":
                raise RuntimeError("compile failed: too many registers")
            if kind == fail_on == "oom":
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80 GiB")
            if kind == "wrong":
                return lambda: inp.x @ inp.x.t() + wrong
            return lambda: inp.x @ inp.x.t()
        return b
    w.impl("good", baseline=True)(setup("good"))
    w.impl("boom")(setup("boom"))
    w.impl("oom")(setup("oom"))
    w.impl("gpu_kernel", triton=True)(setup("gpu_kernel"))
    if wrong is not None:
        w.impl("wrong")(setup("wrong"))
    return w


def test_sweep_rows_schema_and_failures(tmp_path, monkeypatch):
    monkeypatch.setattr(brun, "run_checks", lambda device, **k: [])
    w = _toy_workload(fail_on="boom")
    meta = brun.sweep(str(tmp_path), [w], torch.float32, quick=True, modes=("fwd",), progress=False, device="cpu")
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert list(rows[0].keys()) == brun.COLUMNS
    by = {(r["impl"], r["seq_len"]): r for r in rows}
    assert len(rows) == 8
    good = by[("good", "8")]
    assert good["status"] == "ok" and float(good["ms"]) > 0
    assert float(good["ms_p20"]) <= float(good["ms"]) <= float(good["ms_p80"])
    ms = float(good["ms"])
    assert float(good["tokens_per_s"]) == pytest.approx(16 / (ms / 1e3))
    assert float(good["tflops"]) == pytest.approx(8e9 / (ms / 1e3) / 1e12)
    assert float(good["gbps"]) == pytest.approx(8e6 / (ms / 1e3) / 1e9)
    assert good["nvml_util_pct"] == "" and "no GPU" in good["nvml_reason"]
    assert by[("boom", "4")]["status"] == "error" and "too many registers" in by[("boom", "4")]["reason"]
    assert by[("gpu_kernel", "4")]["status"] == "skipped"
    run = json.load(open(tmp_path / "run.json"))
    assert run["cpu_only"] and "CPU timings" in run["note"]
    for key in ("device", "torch", "triton", "seqbench_commit", "python"):
        assert run["environment"][key]
    assert meta["workloads"] == ["toy"]


def test_oom_is_a_row(tmp_path, monkeypatch):
    monkeypatch.setattr(brun, "run_checks", lambda device, **k: [])
    brun.sweep(str(tmp_path), [_toy_workload(fail_on="oom")], torch.float32, True, modes=("fwd",), progress=False,
               device="cpu")
    rows = [r for r in csv.DictReader(open(tmp_path / "results.csv")) if r["impl"] == "oom"]
    assert rows and all(r["status"] == "oom" and "out of memory" in r["reason"] for r in rows)


def test_interrupted_sweep_keeps_rows_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(brun, "run_checks", lambda device, **k: [])
    calls = []
    w = _toy_workload(calls=calls)
    real = bpoint.measure_timed
    seen = []

    def flaky(*a, **k):
        if len(seen) == 3:
            raise KeyboardInterrupt
        seen.append(1)
        return real(*a, **k)
    monkeypatch.setattr(bpoint, "measure_timed", flaky)
    with pytest.raises(KeyboardInterrupt):
        brun.sweep(str(tmp_path), [w], torch.float32, True, modes=("fwd",), progress=False, device="cpu")
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert len(rows) == 3                      # every finished row is on disk
    assert os.path.exists(tmp_path / "run.json")
    monkeypatch.setattr(bpoint, "measure_timed", real)
    calls.clear()
    brun.sweep(str(tmp_path), [w], torch.float32, True, modes=("fwd",), resume=True, progress=False,
               device="cpu")
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert len(rows) == 8
    keys = [tuple(r[k] for k in brun.KEY) for r in rows]
    assert len(set(keys)) == 8                 # nothing measured twice
    assert ("good", 4, "fwd") not in calls     # the finished ok point was skipped


def test_a_resume_with_another_plan_keeps_the_other_rows(tmp_path, monkeypatch):
    """The GPU job's sweep resumes into its headline's folder with other implementations: the headline's rows,
    failed ones too, stay as they were (the first H200 run lost its unstable rows so); run.json keeps the
    earlier run's opening fields."""
    monkeypatch.setattr(brun, "run_checks", lambda device, **k: [])
    w = _toy_workload(fail_on="boom")
    brun.sweep(str(tmp_path), [w], torch.float32, True, modes=("fwd",), progress=False, device="cpu",
               impls=["good", "boom"])
    before = {tuple(r[k] for k in brun.KEY): r for r in csv.DictReader(open(tmp_path / "results.csv"))}
    assert {r["status"] for r in before.values()} == {"ok", "error"}
    meta = brun.sweep(str(tmp_path), [w], torch.float32, True, modes=("fwd",), resume=True, progress=False,
                      device="cpu", impls=["good", "gpu_kernel"])
    after = {tuple(r[k] for k in brun.KEY): r for r in csv.DictReader(open(tmp_path / "results.csv"))}
    booms = [k for k in before if k[1] == "boom"]
    assert booms and all(after[k] == before[k] for k in booms)
    assert {k[1] for k in after} == {"good", "boom", "gpu_kernel"}
    assert meta["resumed"]["other_rows"].startswith(f"{len(booms)} row(s)")
    assert meta["earlier_runs"][0]["workloads"] == ["toy"]
    planned = [r for k, r in after.items() if k[1] != "boom" and r["status"] in ("ok", "unstable")]
    assert meta["stability"]["timed"] == len(planned)      # this run's points, not the earlier run's
    again = brun.sweep(str(tmp_path), [w], torch.float32, True, modes=("fwd",), resume=True, progress=False,
                       device="cpu", impls=["good", "gpu_kernel"])
    assert len(again["earlier_runs"]) == 1                 # the same plan resumed is not another earlier run


def test_a_resume_on_another_device_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(brun, "run_checks", lambda device, **k: [])
    w = _toy_workload()
    brun.sweep(str(tmp_path), [w], torch.float32, True, modes=("fwd",), progress=False, device="cpu",
               impls=["good"])
    run = json.load(open(tmp_path / "run.json"))
    run["environment"]["device"] = "NVIDIA H200"
    json.dump(run, open(tmp_path / "run.json", "w"))
    rows = (tmp_path / "results.csv").read_text()
    with pytest.raises(brun.schema.RunFolderError, match="measured on NVIDIA H200"):
        brun.sweep(str(tmp_path), [w], torch.float32, True, modes=("fwd",), resume=True, progress=False,
                   device="cpu", impls=["good"])
    assert (tmp_path / "results.csv").read_text() == rows


def test_a_cpu_resume_times_again_rows_timed_otherwise(tmp_path, monkeypatch):
    """A resume keeps only CPU rows timed as this run times them: another thread count, or no host probe (a
    run from before the probe), is timed again, and run.json says how many."""
    monkeypatch.setattr(brun, "run_checks", lambda device, **k: [])
    w = _toy_workload()
    brun.sweep(str(tmp_path), [w], torch.float32, True, modes=("fwd",), progress=False, device="cpu")
    path = tmp_path / "results.csv"
    rows = list(csv.DictReader(open(path)))
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 6 and all(float(r["host_probe_ms"]) > 0 for r in ok)
    ok[0]["threads"], ok[1]["host_probe_ms"] = "99", ""
    with open(path, "w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=list(rows[0]))
        out.writeheader()
        out.writerows(rows)
    meta = brun.sweep(str(tmp_path), [w], torch.float32, True, modes=("fwd",), resume=True, progress=False,
                      device="cpu")
    again = [r for r in csv.DictReader(open(path)) if r["status"] == "ok"]
    assert len(again) == 6 and all(r["threads"] == str(torch.get_num_threads()) and r["host_probe_ms"] for r in again)
    assert meta["resumed"]["timed_again"].startswith("2 row(s)")


# ------------------------------------------------------------------------------ report, compare

def _fake_run(path, factor=1.0, gpu=False):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=brun.COLUMNS, extrasaction="ignore")
        w.writeheader()
        for wl, impl, keys in (("model_lstm", "lstm_torch", "B=16 T={} d=1024"),
                               ("model_transformer", "transformer_torch", "B=16 T={} d=1024"),
                               ("attention", "triton", "B=8 H=16 N={} D=128")):
            for t in (128, 512):
                w.writerow(dict(workload=wl, impl=impl, mode="fwd", dtype="bfloat16", shape=keys.format(t), seq_len=t,
                                batch=16, tokens=16 * t, status="ok", ms=1.0 * factor, ms_p20=0.9 * factor,
                                ms_p80=1.1 * factor,
                                tokens_per_s=16 * t * 1000 / factor, tflops=100.0, pct_peak_flops=10.1,
                                nvml_util_pct=97.0 if gpu else "", gpm_sm_util_pct=20.0 if gpu else ""))
        w.writerow(dict(workload="attention", impl="sdpa_flash", mode="fwd", dtype="bfloat16", shape="B=8 H=16 N=512 D=128",
                        seq_len=512, status="unsupported", reason="No available kernel"))
    json.dump({"environment": {"device": "NVIDIA H100 80GB HBM3" if gpu else "CPU"}, "cpu_only": not gpu,
               "note": "CPU timings"}, open(os.path.join(path, "run.json"), "w"))


def test_report_tables_and_plots(tmp_path):
    _fake_run(tmp_path, gpu=True)
    path = write_report(str(tmp_path))
    text = open(path).read()
    assert "The textbook table" in text and "15-25%" in text and "| 97 |" in text
    assert "## attention" in text and "No available kernel" in text
    for png in ("tokens_per_s.png", "tflops.png", "utilisation.png"):
        assert os.path.getsize(tmp_path / png) > 5000


def test_compare_ratios_and_regression(tmp_path):
    _fake_run(tmp_path / "a")
    _fake_run(tmp_path / "b", factor=1.05)
    table, shaky = compare(str(tmp_path / "a"), str(tmp_path / "b"), threshold=0.10)
    assert len(table) == 6 and not table.regressed.any() and shaky.empty
    assert table.ratio_b_over_a.iloc[0] == pytest.approx(1 / 1.05)
    _fake_run(tmp_path / "c", factor=1.5)
    assert cli(["compare", str(tmp_path / "a"), str(tmp_path / "c")]) == 1
    assert cli(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0


@pytest.mark.parametrize("argv", [["run", "--batch", "0"], ["run", "--seq-len", "12,x"], ["run", "--dtype", "int8"],
                                  ["run", "--bogus"], ["frobnicate"]])
def test_cli_bad_arguments(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error" in err[0]


def test_cli_unknown_workload_and_missing_dir(tmp_path, capsys):
    assert cli(["run", "--only", "nope", "--out", str(tmp_path)]) == 2
    assert cli(["report", str(tmp_path / "missing")]) == 2
    assert "no results.csv" in capsys.readouterr().err


def test_cli_run_end_to_end(tmp_path, capsys):
    """The main job on a CPU: checks, one small point per workload, report and plots; the terminal ends with
    the headline table and how steady the machine was."""
    out = tmp_path / "run"
    gpu = torch.cuda.is_available()
    # on a GPU the whole quick job (30 checks at real shapes, NVML windows) is the GPU job's, not a test's:
    # one small shape of the headline's workloads, without the GPU-scale checks
    # the peers' compiles are tests/test_peers.py's
    scope = ["--only", "attention,model_lstm,model_transformer", "--no-checks"] if gpu else []
    scope += ["--impl", "triton,eager"]
    assert cli(["run", "--quick", "--seq-len", "8", "--mode", "fwd", "--out", str(out), "--no-progress",
                *scope]) == 0
    files = set(os.listdir(out))
    assert {"results.csv", "run.json", "REPORT.md", "tokens_per_s.png", "tflops.png", "utilisation.png"} <= files
    run = json.load(open(out / "run.json"))
    if not gpu:
        assert run["checks"] and all(c["ok"] for c in run["checks"])
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert {r["workload"] for r in rows if r["status"] == "ok"} == (set(scope[1].split(",")) if gpu else set(WORKLOADS))
    report = open(out / "REPORT.md").read()
    assert "floor_ms" in report and "measured_over_floor" in report
    # the four-row textbook table and its figure (issue 12)
    assert "hardware_argument.png" in files
    for row in ("LSTM (sequential)", "LSTM (optimized)", "ConvSeq2Seq", "Transformer"):
        assert f"| {row} |" in report
    if not torch.cuda.is_available():
        assert "interpreter-checked, not timed" in report
    if not torch.cuda.is_available():
        assert "CPU-only machine" in report and "H100 SXM (model: no GPU here)" in report
    ok = [r for r in rows if r["status"] == "ok"]
    assert all(float(r["floor_ms"]) > 0 and float(r["measured_over_floor"]) > 0 for r in ok)
    printed = capsys.readouterr().out
    assert "| batch | row | best | tokens/s | ÷ Transformer [p20–p80] | textbook | verdict |" in printed
    assert "| LSTM (sequential) |" in printed and "timed points" in printed
    # REPORT.md opens with the answer and ends with how to cite it; the device is named by its model
    assert report.index("## The textbook table") < report.index("## The run") < report.index("## How to cite")
    assert "@software{seqbench," in report and "nvml nvml" not in report
    assert json.load(open(out / "run.json"))["environment"]["device"].startswith("NVIDIA" if gpu else "CPU: ")


# ---------------------------------------------------------------------------------------- NVML

def test_nvml_missing_gives_empty_fields_with_reason(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    s = nvml.NVMLSampler()
    assert not s.ok and "NVML unavailable" in s.reason
    row = s.measure(lambda: None, 10)
    assert all(row[k] is None for k in nvml.NVML_FIELDS) and row["nvml_reason"] == s.reason
    assert s.static_info() == {"nvml": s.reason}


def test_nvml_refused_init(monkeypatch):
    class Refused(Exception):
        pass

    def init():
        raise Refused("Insufficient Permissions")
    monkeypatch.setitem(sys.modules, "pynvml", types.SimpleNamespace(nvmlInit=init))
    s = nvml.NVMLSampler()
    assert not s.ok and "Insufficient Permissions" in s.reason


def test_shape_label():
    assert shape_label(WORKLOADS["attention"], dict(B=1, H=2, N=3, D=4)) == "B=1 H=2 N=3 D=4"


# ------------------------------------------------------------- resume and damaged files (issue 10)

def _ok_keys(path):
    rows, _ = schema.read_rows(str(path))
    return sorted(schema.row_key(r) for r in rows if r["status"] == "ok")


class _Stop(KeyboardInterrupt):
    pass


def _interrupt(monkeypatch, stage):
    """Make a resumed sweep stop at ``stage`` (a Ctrl-C there)."""
    def stop(*a, **k):
        raise _Stop
    if stage == "checks":
        monkeypatch.setattr(brun, "run_checks", stop)
    elif stage == "rewrite":                    # while the kept rows are being written to the new file
        monkeypatch.setattr(schema.os, "fsync", stop)
    elif stage == "measure":
        monkeypatch.setattr(bpoint, "measure_timed", stop)
    elif stage == "run.json":
        real = schema.write_json
        monkeypatch.setattr(schema, "write_json", lambda path, meta: stop() if "finished" in meta else real(path, meta))


@pytest.mark.parametrize("stage", ["checks", "rewrite", "measure", "run.json"])
def test_resume_interrupted_at_every_stage_keeps_finished_rows(tmp_path, monkeypatch, stage):
    monkeypatch.setattr(brun, "run_checks", lambda device, **k: [])
    w = _toy_workload()
    brun.sweep(str(tmp_path), [w], torch.float32, True, modes=("fwd",), progress=False, device="cpu")
    finished = _ok_keys(tmp_path / "results.csv")
    assert len(finished) == 6                      # good, boom, oom at two shapes; gpu_kernel is skipped
    with monkeypatch.context() as m:
        _interrupt(m, stage)
        with pytest.raises(_Stop):
            brun.sweep(str(tmp_path), [w], torch.float32, True, modes=("fwd",), resume=True, progress=False,
                       device="cpu")
    assert _ok_keys(tmp_path / "results.csv") == finished
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    brun.sweep(str(tmp_path), [w], torch.float32, True, modes=("fwd",), resume=True, progress=False, device="cpu")
    rows, dropped = schema.read_rows(str(tmp_path / "results.csv"))
    assert len(rows) == 8 and dropped == 0 and _ok_keys(tmp_path / "results.csv") == finished


def _cut_points(path):
    """Offsets inside the last row: in tokens_per_s (667.3 -> 66), mid-row, one character short, and
    at the end of the line before (the row lost whole)."""
    text = open(path, newline="").read()
    last = text.rstrip("\n").rfind("\n") + 1
    header = text[:text.index("\n")].split(",")
    fields = text[last:].rstrip("\n").split(",")
    col = header.index("tokens_per_s")
    start = last + len(",".join(fields[:col])) + 1
    return {"in tokens_per_s": start + 2, "mid-row": last + (len(text) - last) // 2,
            "last character": len(text) - 1, "whole row": last}


@pytest.mark.parametrize("cut", ["in tokens_per_s", "mid-row", "last character", "whole row"])
def test_truncated_row_is_measured_again(tmp_path, monkeypatch, cut):
    monkeypatch.setattr(brun, "run_checks", lambda device, **k: [])
    w = _toy_workload()
    w.impls = {"good": w.impls["good"]}
    brun.sweep(str(tmp_path), [w], torch.float32, True, modes=("fwd",), progress=False, device="cpu")
    path = tmp_path / "results.csv"
    whole = _ok_keys(path)
    offset = _cut_points(path)[cut]
    with open(path, "r+") as f:
        f.truncate(offset)
    rows, dropped = schema.read_rows(str(path))
    assert len(rows) == 1 and dropped == (0 if cut == "whole row" else 1)
    df, _ = load(str(tmp_path))                    # report and compare see only whole rows
    assert len(df) == 1
    brun.sweep(str(tmp_path), [w], torch.float32, True, modes=("fwd",), resume=True, progress=False, device="cpu")
    rows, dropped = schema.read_rows(str(path))
    assert _ok_keys(path) == whole and dropped == 0
    assert all(float(r["tokens_per_s"]) == pytest.approx(r_tokens(r)) for r in rows)


def r_tokens(r):
    return float(r["tokens"]) / (float(r["ms"]) / 1e3)


# -------------------------------------------------------------------------- CLI one-line errors

def _one_line_error(capsys, code, expect):
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and expect in err[0], err


def _cli_exit(argv):
    try:
        return cli(argv)
    except SystemExit as e:
        return e.code


def test_cli_run_out_is_a_file(tmp_path, capsys):
    f = tmp_path / "file.txt"
    f.write_text("x")
    _one_line_error(capsys, cli(["run", "--out", str(f)]), "exists and is not a folder")


def test_cli_unwritable_folders(tmp_path, capsys, monkeypatch):
    _fake_run(tmp_path / "a")
    os.mkdir(tmp_path / "a" / "REPORT.md")       # the report cannot be written there, even by root
    _one_line_error(capsys, cli(["report", str(tmp_path / "a")]), "REPORT.md")

    monkeypatch.setattr(cli_module.os, "access", lambda *a, **k: False)       # as a read-only folder answers
    _one_line_error(capsys, cli(["run", "--resume", "--out", str(tmp_path / "a")]), "Permission denied")
    _one_line_error(capsys, cli(["run", "--out", str(tmp_path / "a" / "new" / "deeper")]), "Permission denied")
    assert not (tmp_path / "a" / "new").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_cli_read_only_folder(tmp_path, capsys):
    _fake_run(tmp_path / "a")
    os.chmod(tmp_path / "a", 0o555)
    try:
        _one_line_error(capsys, cli(["report", str(tmp_path / "a")]), "Permission denied")
        _one_line_error(capsys, cli(["run", "--resume", "--out", str(tmp_path / "a")]), "Permission denied")
    finally:
        os.chmod(tmp_path / "a", 0o755)


DAMAGED = {
    "empty results.csv": ("results.csv", "", "is empty"),
    "unterminated quote": ("results.csv", ",".join(schema.COLUMNS) + '\nmodel_lstm,"lstm_torch,fwd\n', "not valid CSV"),
    "no status column": ("results.csv", "workload,impl,mode,dtype,shape\nx,y,fwd,bf16,B=1\n", "lacks the column"),
}


@pytest.mark.parametrize("case", list(DAMAGED))
def test_cli_damaged_results(tmp_path, capsys, case):
    name, text, expect = DAMAGED[case]
    _fake_run(tmp_path / "good")
    _fake_run(tmp_path / "bad")
    (tmp_path / "bad" / name).write_text(text)
    _one_line_error(capsys, cli(["report", str(tmp_path / "bad")]), expect)
    _one_line_error(capsys, cli(["compare", str(tmp_path / "good"), str(tmp_path / "bad")]), expect)
    _one_line_error(capsys, cli(["run", "--resume", "--out", str(tmp_path / "bad"), "--only", "attention"]), expect)


FOREIGN_JSON = {
    "a JSON list": ("[1, 2]", "holds a JSON list, not an object"),
    "checks as text": ('{"checks": "all fine"}', "its 'checks' is a str"),
    "a malformed check": ('{"checks": [{"kernel": 3}]}', "a kernel check is malformed"),
    "environment's nvml a list": ('{"environment": {"nvml": [1]}}', "'nvml' or 'device' is malformed"),
    "spread limit as text": ('{"stability": {"spread_limit": "tight"}}', "spread_limit is not a number"),
    "nested too deep": ("[" * 100000 + "]" * 100000, "not a readable run.json"),
}


@pytest.mark.parametrize("case", list(FOREIGN_JSON))
def test_cli_foreign_run_json(tmp_path, capsys, case):
    """A run.json that is JSON but not seqbench's (a hand edit, another tool's file) is named in one line."""
    text, expect = FOREIGN_JSON[case]
    _fake_run(tmp_path / "bad")
    (tmp_path / "bad" / "run.json").write_text(text)
    _one_line_error(capsys, cli(["report", str(tmp_path / "bad")]), expect)


def test_cli_run_files_that_are_not_files(tmp_path, capsys):
    """results.csv or run.json as a folder (or a FIFO, which would block the read) is one line, exit 2."""
    _fake_run(tmp_path / "a")
    os.remove(tmp_path / "a" / "run.json")
    os.mkdir(tmp_path / "a" / "run.json")
    _one_line_error(capsys, cli(["report", str(tmp_path / "a")]), "is not a file")
    _fake_run(tmp_path / "b")
    os.remove(tmp_path / "b" / "results.csv")
    os.mkfifo(tmp_path / "b" / "results.csv")
    _one_line_error(capsys, cli(["report", str(tmp_path / "b")]), "is not a file")


def test_report_marks_implausible_rows_incomplete(tmp_path):
    """Numbers no measurement gives (negative or infinite times, quantiles out of order) and a shape that is not
    its workload's make a row incomplete, with why; a whole-number column with a fraction drops the row."""
    _fake_run(tmp_path)
    df = pd.read_csv(tmp_path / "results.csv")
    df.loc[0, "ms"] = -1.0
    df.loc[1, "ms"] = float("inf")
    df.loc[2, "ms_p20"] = 5.0                          # above the median
    df.loc[3, "shape"] = "B=16 d=1024"                 # model_transformer's T is missing
    df.loc[4, "batch"] = 2.5
    df.to_csv(tmp_path / "results.csv", index=False)
    rows, _ = load(str(tmp_path))
    why = dict(zip(rows.index, rows.reason))
    assert list(rows.status[:4]) == ["incomplete"] * 4
    assert "not > 0" in why[0] and "not finite" in why[1] and "ms_p20 ≤ ms ≤ ms_p80" in why[2]
    assert "not its workload's" in why[3]
    assert len(rows) == len(df) - 1                    # the fractional batch's row is dropped
    text = open(write_report(str(tmp_path))).read()
    assert "ms_p20 ≤ ms ≤ ms_p80 does not hold" in text


@pytest.mark.parametrize("argv", [["run", "--out", ""], ["train", "--corpus", " "], ["gradients", "--out", ""],
                                  ["check", "--out", ""]])
def test_cli_empty_path_is_an_error(argv, capsys):
    assert _cli_exit(argv) == 2
    assert "is empty" in capsys.readouterr().err


@pytest.mark.parametrize("exc, code, expect", [
    (RuntimeError("boom"), 1, "unexpected RuntimeError: boom (a bug in seqbench"),
    (PermissionError(13, "Permission denied", "/x/results.csv.tmp", None, "/x/results.csv"), 2,
     "cannot write /x/results.csv: Permission denied"),
    (schema.RunFolderError("runs/x is not a run folder"), 2, "runs/x is not a run folder"),
    (KeyboardInterrupt(), 130, "interrupted"),
])
def test_cli_whatever_goes_wrong_is_one_line(monkeypatch, capsys, exc, code, expect):
    """The top-level guard: an error no command expected is still one line (exit 1, named as a bug), an OSError
    names the file it could not write (a rename's target), an interruption exits 130."""
    def fail(a):
        raise exc
    monkeypatch.setattr(cli_module, "cmd_list", fail)
    monkeypatch.delenv("SEQBENCH_TRACEBACK", raising=False)
    assert cli(["list"]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expect in err[0], err
    monkeypatch.setenv("SEQBENCH_TRACEBACK", "1")
    if code == 1:
        with pytest.raises(RuntimeError):
            cli(["list"])


def test_cli_truncated_run_json(tmp_path, capsys, monkeypatch):
    _fake_run(tmp_path / "good")
    _fake_run(tmp_path / "bad")
    text = (tmp_path / "bad" / "run.json").read_text()
    (tmp_path / "bad" / "run.json").write_text(text[: len(text) // 2])
    _one_line_error(capsys, cli(["report", str(tmp_path / "bad")]), "not a readable run.json")
    _one_line_error(capsys, cli(["compare", str(tmp_path / "good"), str(tmp_path / "bad")]), "not a readable run.json")
    # a resume needs only the rows: it goes on and writes a whole run.json
    monkeypatch.setattr(brun, "run_checks", lambda device, **k: [])
    assert cli(["run", "--resume", "--out", str(tmp_path / "bad"), "--only", "attention", "--seq-len", "8",
                "--mode", "fwd", "--no-progress"]) == 0
    assert json.load(open(tmp_path / "bad" / "run.json"))["finished"]


@pytest.mark.parametrize("argv, expect", [
    (["inspect", "--arch", ","], "--arch: names nothing"),
    (["inspect", "--only", ","], "--only: names nothing"),
    (["inspect", "--dtype", ","], "--dtype: names nothing"),
    (["inspect", "--jobs", "-1"], "--jobs must be a positive integer"),
    (["compare", "a", "b", "--threshold", "-1"], "expected a fraction"),
    (["compare", "a", "b", "--threshold", "nan"], "expected a fraction"),
    (["run", "--only", ","], "--only: names nothing"),
    (["run", "--workload", ","], "--workload: names nothing"),        # the earlier spelling, still accepted
    (["run", "--impl", ","], "--impl: names nothing"),
    (["train", "--only", ","], "--only: names nothing"),
    (["gradients", "--only", ","], "--only: names nothing"),
    (["train", "--impl", "kernel"], "expected triton or torch"),
])
def test_cli_nonsense_arguments(argv, expect, capsys):
    _one_line_error(capsys, _cli_exit(argv), expect)


# ----------------------------------------------------------------- accuracy, --impl, list (issue 9)

def test_every_row_is_compared_with_the_baseline(tmp_path, monkeypatch):
    """A fast wrong implementation shows: its row says how far it is from the baseline, and that it is out of
    tolerance."""
    monkeypatch.setattr(brun, "run_checks", lambda device, **k: [])
    w = _toy_workload(wrong=0.5)
    brun.sweep(str(tmp_path), [w], torch.float32, True, progress=False, device="cpu")
    rows, _ = schema.read_rows(str(tmp_path / "results.csv"))
    ok = [r for r in rows if r["status"] == "ok"]
    assert {r["impl"] for r in ok} == {"good", "boom", "oom", "wrong"} and len(ok) == 16   # 2 shapes × 2 modes
    for r in ok:
        assert r["baseline"] == "good"
        if r["impl"] == "wrong":
            assert r["accurate"] == "False" and float(r["max_abs_err"]) == pytest.approx(0.5, rel=1e-5)
        else:
            assert r["accurate"] == "True" and float(r["max_abs_err"]) == 0.0
        assert float(r["tolerance"]) > 0
    report = open(write_report(str(tmp_path))).read()
    assert "Outputs that disagree with the baseline" in report


def test_gradients_are_compared_in_training_mode():
    """fwd+bwd compares the input gradients too: an impl with the right output and a wrong gradient is flagged."""
    def inputs(s, dtype, device, grad):
        return namespace(x=torch.randn(4, 3, requires_grad=grad))

    w = Workload("grads", "", ("B", "T"), "T", Shapes(*[[dict(B=1, T=4)]] * 4), lambda s, m: 1, lambda s, d, m: 1,
                 lambda s: 4, inputs, register=False)
    w.impl("square", baseline=True)(lambda inp: lambda: inp.x * inp.x)
    w.impl("wrong_grad")(lambda inp: lambda: inp.x.detach() * inp.x)   # same values, half the gradient
    p = Point(w, dict(B=1, T=4), "fwd", torch.float32, torch.device("cpu"))
    assert p.accuracy(w.impls["wrong_grad"])["accurate"]
    p = Point(w, dict(B=1, T=4), "fwd+bwd", torch.float32, torch.device("cpu"))
    assert not p.accuracy(w.impls["wrong_grad"])["accurate"] and p.accuracy(w.impls["square"])["accurate"]


def test_workload_inputs_are_shared_by_every_impl():
    w = WORKLOADS["lstm_layer"]
    p = Point(w, w.default_shapes(True, False)[0], "fwd", torch.float32, torch.device("cpu"))
    first = p.inputs
    for name in ("torch_loop", "nn_lstm"):
        p.runner(w.impls[name])()
        assert p.inputs is first
    acc = p.accuracy(w.impls["nn_lstm"])
    assert acc["baseline"] == "torch_loop" and acc["accurate"] and acc["max_abs_err"] < 1e-5


def test_cli_impl_filter(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(brun, "run_checks", lambda device, **k: [])
    out = tmp_path / "run"
    assert cli(["run", "--only", "attention", "--impl", "naive,sdpa_math", "--seq-len", "8", "--mode", "fwd",
                "--out", str(out), "--no-progress"]) == 0
    rows, _ = schema.read_rows(str(out / "results.csv"))
    assert sorted(r["impl"] for r in rows) == ["naive", "sdpa_math"]
    capsys.readouterr()
    _one_line_error(capsys, cli(["run", "--only", "attention", "--impl", "nope", "--out", str(out)]),
                    "unknown implementation")


def test_cli_list_shows_workloads_impls_and_shapes(capsys):
    assert cli(["list", "--quick"]) == 0
    text = capsys.readouterr().out
    for name, w in WORKLOADS.items():
        assert f"{name}: {w.description}" in text
        assert all(i in text for i in w.impls)
        assert shape_label(w, w.default_shapes(True, torch.cuda.is_available())[0]) in text


TOY_MODULE = '''
from bench.workload import Shapes, Workload, namespace
import torch

toy = Workload("{name}", "a toy dropped into the folder", ("B", "T"), "T", Shapes(*[[dict(B=1, T=3)]] * 4),
               lambda s, m: 1, lambda s, d, m: 1, lambda s: 3, lambda s, d, dev, g: namespace(x=torch.ones(3)))


@toy.impl(baseline=True)
def toy_impl(inp):
    return lambda: inp.x * 2
'''


def test_a_module_dropped_into_workloads_is_listed(tmp_path):
    """No other edit: the new module's workload and impl appear in `seqbench list` (run fresh)."""
    import subprocess
    import bench.workloads
    name = f"toy_{os.getpid()}"
    path = os.path.join(os.path.dirname(bench.workloads.__file__), f"{name}.py")
    root = os.path.dirname(os.path.dirname(os.path.dirname(bench.workloads.__file__)))
    try:
        with open(path, "w") as f:
            f.write(TOY_MODULE.format(name=name))
        out = subprocess.run([sys.executable, "-m", "bench", "list"], cwd=root, capture_output=True, text=True,
                             env={**os.environ, "TRITON_INTERPRET": "1"})
    finally:
        os.remove(path)
    assert out.returncode == 0, out.stderr
    assert f"{name}: a toy dropped into the folder" in out.stdout and "toy_impl" in out.stdout


# --------------------------------------------------------------- NVML arithmetic (issue 11), faked

class FakeNVML:
    """Just enough of pynvml: the energy counter advances 300 J/s of wall time, utilisation reads 0 for the
    first 0.3 s (the idle period before the window) and 90 after, one throttle bit shows in one sample only,
    and the GPM tensor metric fails."""
    NVML_CLOCK_SM, NVML_SUCCESS = 0, 0
    NVML_GPM_METRIC_SM_UTIL, NVML_GPM_METRIC_SM_OCCUPANCY, NVML_GPM_METRIC_ANY_TENSOR_UTIL = 1, 2, 3
    NVML_GPM_METRIC_DRAM_BW_UTIL, NVML_GPM_METRICS_GET_VERSION = 4, 1
    nvmlClocksEventReasonSwPowerCap, nvmlClocksEventReasonHwSlowdown = 4, 8

    def __init__(self):
        import time as _t
        self.t0, self.now, self.calls = _t.perf_counter(), _t.perf_counter, 0

    def nvmlInit(self):
        pass

    def nvmlDeviceGetHandleByIndex(self, i):
        return "gpu0"

    def nvmlGpmQueryDeviceSupport(self, h):
        return types.SimpleNamespace(isSupportedDevice=1)

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        return int((self.now() - self.t0) * 300_000)            # mJ

    def nvmlDeviceGetUtilizationRates(self, h):
        busy = self.now() - self.start >= 0.3
        return types.SimpleNamespace(gpu=90 if busy else 0, memory=40 if busy else 0)

    def nvmlDeviceGetClockInfo(self, h, which):
        return 1980

    def nvmlDeviceGetCurrentClocksEventReasons(self, h):
        self.calls += 1
        return 4 if self.calls == 2 else 0

    def nvmlGpmSampleAlloc(self):
        return object()

    def nvmlGpmSampleGet(self, h, s):
        pass

    def nvmlGpmSampleFree(self, s):
        pass

    def c_nvmlGpmMetricsGet_t(self):
        metric = lambda: types.SimpleNamespace(metricId=0, nvmlReturn=0, value=0.0)  # noqa: E731
        return types.SimpleNamespace(version=0, numMetrics=0, sample1=None, sample2=None,
                                     metrics=[metric() for _ in range(4)])

    def nvmlGpmMetricsGet(self, m):
        for x in m.metrics:
            x.value = {1: 55.0, 2: 30.0, 3: 0.0, 4: 12.0}[x.metricId]
            x.nvmlReturn = 3 if x.metricId == 3 else 0


def test_nvml_window_arithmetic(monkeypatch):
    fake = FakeNVML()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    s = nvml.NVMLSampler(interval_s=0.01)
    assert s.ok and s.gpm
    import time as _t
    fake.start = _t.perf_counter()
    row = s.measure(lambda: _t.sleep(0.002), tokens_per_call=10, min_seconds=0.4, settle_s=0.35)
    # power from the energy counter over the window: 300 W exactly, not a lagging 1 s average
    assert row["power_w"] == pytest.approx(300, rel=0.05)
    assert row["energy_j"] == pytest.approx(300 * row["nvml_window_s"], rel=0.05)
    assert row["nvml_util_pct"] == 90 and row["nvml_mem_util_pct"] == 40      # the idle samples were dropped
    assert row["throttle_reasons"] == "SwPowerCap"                           # seen once, kept
    assert row["gpm_sm_util_pct"] == 55.0 and row["gpm_tensor_util_pct"] is None
    assert "gpm_tensor_util_pct failed" in row["nvml_reason"]


def test_nvml_window_of_a_long_call_runs_it_few_times(monkeypatch):
    """The window synchronizes after about CHECK_S of calls: a call longer than that is checked after each one
    (eight at a time made a 0.45 s call run 16 times, 7 s, for a 1.5 s window); short calls go in batches."""
    fake = FakeNVML()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    syncs = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: syncs.append(1))
    s = nvml.NVMLSampler(interval_s=0.01)
    import time as _t
    calls = []
    s.measure(lambda: calls.append(1) or _t.sleep(0.06), tokens_per_call=10, min_seconds=0.12, settle_s=0.06)
    assert len(calls) <= 5 and len(syncs) == len(calls)
    calls.clear(), syncs.clear()
    s.measure(lambda: calls.append(1) or _t.sleep(0.001), tokens_per_call=10, min_seconds=0.12, settle_s=0.06)
    assert len(syncs) < len(calls) / 5


def test_nvml_picks_the_gpu_torch_uses_by_pci_bus_id(monkeypatch):
    """Under CUDA_VISIBLE_DEVICES=3, torch's cuda:0 is the host's GPU 3: NVML is asked for it by PCI bus id, not
    by index 0; without bus ids it falls back to the UUID, then to the visible list."""
    asked = []

    class Host(FakeNVML):
        def nvmlDeviceGetHandleByPciBusId_v2(self, bus):
            asked.append(("bus", bus))
            return f"gpu at {bus}"

        def nvmlDeviceGetHandleByUUID(self, uuid):
            asked.append(("uuid", uuid))
            return f"gpu {uuid}"

        def nvmlDeviceGetHandleByIndex(self, i):
            asked.append(("index", i))
            return f"gpu{i}"
    monkeypatch.setitem(sys.modules, "pynvml", Host())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    props = types.SimpleNamespace(pci_domain_id=0, pci_bus_id=0x1A, pci_device_id=0, uuid="1234-abcd")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    s = nvml.NVMLSampler(0)
    assert s.handle == "gpu at 00000000:1A:00.0" and asked == [("bus", "00000000:1A:00.0")]
    assert "PCI bus id" in s.static_info()["device_matched"]
    asked.clear()
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: types.SimpleNamespace(uuid="1234-abcd"))
    assert nvml.NVMLSampler(0).handle == "gpu GPU-1234-abcd" and asked == [("uuid", "GPU-1234-abcd")]
    asked.clear()

    def no_props(i):
        raise RuntimeError("no CUDA")
    monkeypatch.setattr(torch.cuda, "get_device_properties", no_props)
    assert nvml.NVMLSampler(0).handle == "gpu3" and asked == [("index", 3)]


def test_a_cpu_window_waits_for_the_host_at_its_usual_speed(monkeypatch):
    """Before a CPU window the host probe's burst median must be within HOST_SLOW of the best of the last
    HOST_MEMORY_S: a slow phase (the host's other tenants) is waited out, at most max_wait_s, and counted in
    HOST_WAITS; a host slow for longer than the memory is the host as it is."""
    monkeypatch.setattr(timing, "HOST_WAITS", {"windows": 0, "waited_s": 0.0, "gave_up": 0, "retaken": 0,
                                               "best_ms": None})
    monkeypatch.setattr(timing, "_BURSTS", collections.deque())
    monkeypatch.setattr(timing, "HOST_CALIBRATE_S", 0.0)
    bursts = iter([1.0, 1.1, 2.0, 2.1, 1.2])         # calibration, a window at once, one after two slow
    monkeypatch.setattr(timing, "_burst_ms", lambda: next(bursts))
    waited, ok = timing.wait_for_host(1.0)
    assert ok and waited < 0.02                       # within 1.3x of the best: at once
    waited, ok = timing.wait_for_host(1.0)
    assert ok and waited >= 0.04                      # two slow bursts waited out
    assert timing.HOST_WAITS["gave_up"] == 0 and timing.HOST_WAITS["windows"] == 2
    monkeypatch.setattr(timing, "_burst_ms", lambda: 2.0)
    waited, ok = timing.wait_for_host(0.05)
    assert not ok and waited >= 0.05 and timing.HOST_WAITS["gave_up"] == 1 and timing.HOST_WAITS["best_ms"] == 1.0
    monkeypatch.setattr(timing, "HOST_MEMORY_S", 0.0)         # the fast bursts forgotten: 2.0 is the host now
    assert timing.wait_for_host(1.0)[1] and timing.HOST_WAITS["best_ms"] == 2.0


def test_a_cpu_window_the_host_slowed_is_taken_again(monkeypatch):
    """A window whose own probe came out slow (the host slowed after the wait) is retaken, the fastest-probed
    of at most 1 + HOST_RETRIES kept."""
    monkeypatch.setattr(timing, "HOST_WAITS", {"windows": 0, "waited_s": 0.0, "gave_up": 0, "retaken": 0,
                                               "best_ms": 1.0})
    monkeypatch.setattr(timing, "HOST_WAIT_S", 1.0)
    windows = iter([{"ms": 2.0, "probe_ms": 2.0}, {"ms": 1.1, "probe_ms": 1.1}, {"ms": 9.0, "probe_ms": 1.0}])
    monkeypatch.setattr(timing, "_cpu_window", lambda fn, lo, hi: next(windows))
    assert timing.time_cpu(lambda: None) == {"ms": 1.1, "probe_ms": 1.1} and timing.HOST_WAITS["retaken"] == 1
    windows = iter([{"ms": 3.0, "probe_ms": 3.0}, {"ms": 2.0, "probe_ms": 2.0}, {"ms": 2.5, "probe_ms": 2.5}])
    assert timing.time_cpu(lambda: None)["probe_ms"] == 2.0 and timing.HOST_WAITS["retaken"] == 4
    windows = iter([{"ms": 3.0, "probe_ms": 3.0, "host_ok": False}])   # the wait gave up: no retake
    assert timing.time_cpu(lambda: None) == {"ms": 3.0, "probe_ms": 3.0} and timing.HOST_WAITS["retaken"] == 4


def test_repetition_budget_takes_enough_samples():
    """A 100 ms budget gave one sample of a 150 ms call (p20 = p80 = median): the budget grows with the call,
    20 repetitions up to 2 s of calls, then 10."""
    assert timing.repetition_budget_ms(0.01) == 100.0
    assert timing.repetition_budget_ms(50.0) / 50.0 >= timing.MIN_REPS == 20
    assert timing.repetition_budget_ms(150.0) / 150.0 == 2000 / 150        # past 2 s of calls: fewer, at least 10
    assert timing.repetition_budget_ms(450.0) / 450.0 == 10
    assert timing.repetition_budget_ms(5000.0) / 5000.0 == 3                 # past 10 s: three samples
    t = timing.summarize([3.0, 1.0, 2.0, 4.0, 5.0], "x")
    assert t["ms"] == 3.0 and t["reps"] == 5 and t["ms_p20"] < t["ms"] < t["ms_p80"]


def test_gpu_checks_are_right_at_small_sizes():
    """The smoke stage's GPU-scale checks, run here through the interpreter at small sizes: their forward +
    backward comparison is right, so on a GPU only the kernels can fail them."""
    import functools
    from bench.workloads import attention as wa, gru as wg, lstm as wl, lstm_persistent as wp
    cpu = torch.device("cpu")
    runs = [wp.check_gpu(1, 40, "float32", B=3, T=5), wp.check_gpu(2, 40, "float32", B=3, T=5),
            wl.check_gpu("cell", torch.float32, B=3, H=40), wl.check_gpu("layer", torch.float32, B=3, H=40, T=4),
            functools.partial(wg.check_gpu, B=3, H=40, dtype=torch.float32),
            wa.check_gpu(1, 4, 2, 40, 16, "float32", True)]
    for run in runs:
        got, want = run(cpu)
        assert got.shape == want.shape and got.numel() > want.shape[0] // 2
        assert (got - want).abs().max().item() / max(1.0, want.abs().max().item()) < 1e-4
    gpu_checks = [c for w in WORKLOADS.values() for c in w.checks if c.gpu_only]
    assert any(c.first and "grid barrier" in c.name for c in gpu_checks)
    small = brun.run_checks(cpu)
    assert small and all(c["ok"] for c in small) and not any("fp16" in c["kernel"] for c in small)


def test_isolated_sweep_survives_a_crash_and_a_hang(tmp_path, monkeypatch):
    """Issue 11: a point that kills its process (a sticky CUDA error does the same to every later point)
    or hangs is recorded with its reason, and a fresh worker measures the rest."""
    from tests.crashy_workload import crashy
    monkeypatch.setattr(brun, "run_checks", lambda device, **k: [])
    brun.sweep(str(tmp_path), [crashy], torch.float32, True, modes=("fwd",), progress=False, device="cpu",
               isolate=True, point_timeout_s=10)
    rows = {(r["impl"], r["seq_len"]): r for r in schema.read_rows(str(tmp_path / "results.csv"))[0]}
    assert len(rows) == 6
    assert rows[("crash", "4")]["status"] == "error" and "exit code 7" in rows[("crash", "4")]["reason"]
    assert rows[("hang", "8")]["status"] == "timeout" and "timed out" in rows[("hang", "8")]["reason"]
    for key in (("fine", "4"), ("hang", "4"), ("fine", "8"), ("crash", "8")):
        assert rows[key]["status"] == "ok" and rows[key]["accurate"] == "True", key


def test_a_point_that_hung_is_tried_again_last(tmp_path, monkeypatch):
    """On --resume a timed-out point is measured after every other point (it may hang again), a failed one
    again in its place, and an ok one not at all."""
    from tests.crashy_workload import crashy
    monkeypatch.setattr(brun, "run_checks", lambda device, **k: [])
    out = str(tmp_path)
    rows = [dict(workload="crashy", impl=i, mode="fwd", dtype="float32", shape=f"B=1 T={t}", status=st, reason="",
                 threads=timing.cpu_threads(), host_probe_ms=0.3)       # timed as this run times (else timed again)
            for i, t, st in (("fine", 4, "ok"), ("hang", 8, "timeout"), ("crash", 4, "error"))]
    schema.RowWriter(os.path.join(out, "results.csv"), rows).close()
    order = []

    class Recording(brun._InProcess):
        def measure(self, w, impl, s, mode, keep=False):
            order.append((impl.name, s["T"]))
            return schema.Row(**bpoint._identity(w, impl, s, mode, self.dtype, self.device), status="ok"), None
    monkeypatch.setattr(brun, "_InProcess", Recording)
    brun.sweep(out, [crashy], torch.float32, True, modes=("fwd",), progress=False, device="cpu", resume=True)
    assert ("fine", 4) not in order and order[-1] == ("hang", 8) and ("crash", 4) in order[:-1]


# ------------------------------------------------------------------ the textbook table (issue 12)

def _model_rows(tokens: dict, accurate=None, batch=16, seq_len=512, mode="fwd"):
    """Synthetic ok rows: {(workload, impl): tokens/s} at one shape."""
    rows = []
    for (wl, impl), tps in tokens.items():
        rows.append(dict(workload=wl, impl=impl, mode=mode, status="ok", batch=batch, seq_len=seq_len,
                         shape=f"B={batch} T={seq_len} d=1024", tokens_per_s=float(tps),
                         accurate=(accurate or {}).get(impl, "True")))
    return pd.DataFrame(rows)


def test_verdict_rule_every_outcome():
    from bench.report import tables as table
    t = {("model_transformer", "transformer_torch"): 100_000,
         ("model_lstm", "lstm_torch_loop"): 20_000,        # ratio 0.2 <= 2 × 0.16: holds
         ("model_lstm", "lstm_torch"): 95_000,             # LSTM (optimized) 0.95 > 2 × 0.3: does not hold
         ("model_lstm", "lstm_triton_persistent"): 10_000}
    rows = {r["row"]: r for r in table.table(_model_rows(t), WORKLOADS, "fwd")}
    assert rows["LSTM (sequential)"]["verdict"] == "holds" and rows["LSTM (sequential)"]["ratio"] == 0.2
    assert rows["LSTM (optimized)"]["verdict"] == "does not hold"
    assert rows["LSTM (optimized)"]["best"].impl == "lstm_torch"               # the row's best implementation
    assert rows["ConvSeq2Seq"]["verdict"] == "not measured"
    assert rows["Transformer"]["verdict"] == "reference"
    # a fast but wrong implementation does not count: the row falls back to its accurate one
    wrong = table.table(_model_rows(t, accurate={"lstm_torch": "False"}), WORKLOADS, "fwd")
    opt = next(r for r in wrong if r["row"] == "LSTM (optimized)")
    assert opt["best"].impl == "lstm_triton_persistent" and opt["verdict"] == "holds"
    # no Transformer measurement: nothing can be compared
    alone = table.table(_model_rows({("model_lstm", "lstm_torch"): 1.0}), WORKLOADS, "fwd")
    assert {r["verdict"] for r in alone} == {"not measured", "reference"}
    assert table.verdict("ConvSeq2Seq", (1.01,) * 3) == "does not hold" and table.verdict("ConvSeq2Seq", (1.0,) * 3) == "holds"


def test_verdict_per_batch():
    from bench.report import tables as table
    small = _model_rows({("model_transformer", "transformer_torch"): 100, ("model_lstm", "lstm_torch"): 10}, batch=1)
    big = _model_rows({("model_transformer", "transformer_torch"): 100, ("model_lstm", "lstm_torch"): 90}, batch=512)
    rows = table.table(pd.concat([small, big]), WORKLOADS, "fwd")
    by = {(r["batch"], r["row"]): r["verdict"] for r in rows}
    assert by[(1, "LSTM (optimized)")] == "holds" and by[(512, "LSTM (optimized)")] == "does not hold"


def test_gpu_model_shapes_sweep_batch():
    for name in ("model_lstm", "model_transformer", "model_convs2s"):
        for quick in (True, False):
            shapes = WORKLOADS[name].default_shapes(quick, True)
            assert {1, 16, 128, 512} <= {s["B"] for s in shapes}
            assert len({tuple(sorted(s.items())) for s in shapes}) == len(shapes)


def test_batch_option_does_not_measure_a_shape_twice(tmp_path, monkeypatch):
    """--batch over the model rows' batch axis turns (2, 64) and (8, 64) into one shape, measured once."""
    monkeypatch.setattr(brun, "run_checks", lambda device, **k: [])
    brun.sweep(str(tmp_path), [WORKLOADS["model_lstm"]], torch.float32, True, batch=4, modes=("fwd",),
               progress=False, device="cpu", impls=["lstm_torch"])
    rows, _ = schema.read_rows(str(tmp_path / "results.csv"))
    assert sorted(r["shape"] for r in rows) == ["B=4 T=16 d=64", "B=4 T=64 d=64"]


def test_a_failed_comparison_keeps_the_timing(monkeypatch):
    """If only the comparison run fails (here: its evaluation), the row keeps its timing and says why."""
    def inputs(s, dtype, device, grad):
        return namespace(x=torch.ones(4))

    def flaky(inp):
        return lambda: inp.x * 2
    evaluate = Point.evaluate

    def failing(self, impl):
        if impl.name == "flaky":
            raise RuntimeError("CUDA out of memory on the comparison")
        return evaluate(self, impl)
    monkeypatch.setattr(Point, "evaluate", failing)

    w = Workload("flaky", "", ("B", "T"), "T", Shapes(*[[dict(B=1, T=4)]] * 4), lambda s, m: 1, lambda s, d, m: 1,
                 lambda s: 4, inputs, register=False)
    w.impl("base", baseline=True)(lambda inp: lambda: inp.x * 2)
    w.impl("flaky")(flaky)
    row = bpoint.measure_point(w, w.impls["flaky"], dict(B=1, T=4), "fwd", torch.float32, torch.device("cpu"), None)
    assert row.status == "ok" and row.ms > 0 and row.accurate is None
    assert "comparison failed: RuntimeError: CUDA out of memory" in row.baseline


def test_lstm_vs_gru_guide_table(tmp_path):
    """The guide pairs the LSTM and GRU impls of one kind at equal shapes: parameters 4:3, tokens/s ratio
    from the rows, and a reason where a side was not measured (Triton on a CPU)."""
    from bench.report import report
    from bench.report import tables as table
    from bench.sweep.run import sweep
    ws = [WORKLOADS["lstm_layer"], WORKLOADS["gru_layer"]]
    sweep(str(tmp_path), ws, torch.float32, quick=True, modes=("fwd",), progress=False, checks=False)
    df, _ = report.load(str(tmp_path))
    rows = {r["kind"]: r for r in table.guide(df, WORKLOADS) if r["mode"] == "fwd"}
    nn_row = rows["nn (cuDNN on a GPU)"]
    shapes = ws[0].default_shapes(True, torch.cuda.is_available())       # this device's own quick list
    big = max(shapes, key=ws[0].tokens)
    label, H = shape_label(ws[0], big), big["H"]
    assert nn_row["shape"] == label and nn_row["lstm_params"] == 4 * H * (2 * H + 2)
    assert nn_row["gru_params"] / nn_row["lstm_params"] == 0.75
    d = df[(df["shape"] == label) & (df["mode"] == "fwd")].set_index(["workload", "impl"]).tokens_per_s
    assert nn_row["ratio"] == pytest.approx(d[("gru_layer", "nn_gru")] / d[("lstm_layer", "nn_lstm")])
    assert len(nn_row["ratios"]) == len(shapes)
    if not torch.cuda.is_available():
        assert "timed on a GPU only" in rows["Triton step"]["reason"]
    text = "\n".join(table.guide_markdown(df, WORKLOADS, True))
    assert "LSTM-vs-GRU guide" in text and "(0.75)" in text and table.guide_verdict(nn_row["interval"]) in text


def test_attention_scores_groups_and_table(tmp_path):
    """Each score is compared with its own baseline (a group), and the scoring table reads time per pair."""
    from bench.report import report
    from bench.report import tables as table
    from bench.sweep.run import sweep
    w = WORKLOADS["attention_scores"]
    assert {w.baseline_for(i).name for i in w.impls.values()} == {"dot_torch", "general_torch", "additive_torch"}
    assert w.baseline_for(w.impls["dot_sdpa"]).name == "dot_torch"
    sweep(str(tmp_path), [w], torch.float32, quick=True, modes=("fwd",), progress=False, checks=False,
          impls=["dot_torch", "dot_sdpa", "general_torch", "additive_torch", "additive_triton"])
    df, _ = report.load(str(tmp_path))
    ok = df[df.status == "ok"]
    assert set(ok.baseline) == {"dot_torch", "general_torch", "additive_torch"} and (ok.accurate.astype(str) == "True").all()
    assert ok[ok.impl == "dot_sdpa"].baseline.eq("dot_torch").all()
    rows = {r["score"]: r for r in table.scoring(df, WORKLOADS) if r["mode"] == "fwd"}
    add = rows["Bahdanau (additive)"]
    shapes = w.default_shapes(True, torch.cuda.is_available())          # this device's own quick list
    n = max(s["N"] for s in shapes)
    big = max((s for s in shapes if s["N"] == n), key=lambda s: s["d"])
    one = ok[(ok.impl == "additive_torch") & (ok["shape"] == shape_label(w, big))].iloc[0]
    assert add["ns_per_pair"] == pytest.approx(one.ms * 1e6 / (big["B"] * n * n)) and add["d_max"] == big["d"]
    assert add["textbook"] == "O(d²)" and rows["Luong dot"]["textbook"] == "O(d)"
    assert add["vs_dot"] == pytest.approx(add["ns_per_pair"] / rows["Luong dot"]["ns_per_pair"])
    if not torch.cuda.is_available():
        assert "additive_triton" in add["not_timed"]
    text = "\n".join(table.scoring_markdown(df, WORKLOADS, True))
    assert "scoring functions, measured" in text and "| Bahdanau (additive) |" in text
    from bench.report import figures
    assert figures.scoring_figure(df, WORKLOADS, str(tmp_path), "cpu").endswith("scores.png")


def test_recurrence_groups_counts_and_floors(tmp_path):
    """Five functions in one workload: each impl is compared with its group's baseline, and each group's rows
    carry its own FLOPs and floor: the step kernels a sequential floor, the scans none."""
    from bench.measure import roofline
    from bench.report import report
    from bench.sweep.run import sweep
    w = WORKLOADS["recurrence"]
    assert {w.baseline_for(i).name for i in w.impls.values()} == {
        "nn_rnn", "nn_gru", "nn_lstm", "mingru_torch_loop", "minlstm_torch_loop"}
    s = dict(B=16, T=1024, H=1024)
    h100 = roofline.GPUS["H100 SXM"]
    floors = {g: roofline.floor_ms(w.counted(next(i for i in w.impls.values() if i.group == g)), s, "fwd",
                                   torch.bfloat16, h100) for g in ("rnn", "lstm", "mingru")}
    # the scan's floor is its work: 2·16·1024·(2·1024·1024 + 1024) FLOPs at 989 TFLOP/s = 0.0695 ms (bytes: 0.021 ms)
    assert floors["mingru"]["floor_bound"] == "compute"
    assert floors["mingru"]["floor_ms"] == pytest.approx(2 * 16 * 1024 * (2 * 1024 * 1024 + 1024) / 989e12 * 1e3)
    assert floors["lstm"]["floor_bound"] == floors["rnn"]["floor_bound"] == "compute"   # W_hh on chip at H=1024
    assert roofline.sequential_floor_ms(w.counted(w.impls["mingru_triton_scan"]), s, "fwd", torch.bfloat16, h100) is None
    seq = {g: roofline.sequential_floor_ms(w.counted(w.impls[f"{g}_triton_step"]), s, "fwd", torch.bfloat16, h100)
           for g in ("rnn", "gru", "lstm")}
    assert seq["gru"] == pytest.approx(3 * seq["rnn"]) and seq["lstm"] == pytest.approx(4 * seq["rnn"])
    assert w.counted(w.impls["nn_gru"]).flops(s, "fwd") == pytest.approx(3 / 4 * w.flops(s, "fwd"))
    sweep(str(tmp_path), [w], torch.float32, quick=True, seq_lens=[8], modes=("fwd+bwd",), progress=False,
          checks=False, impls=["nn_rnn", "nn_lstm", "mingru_torch_loop", "mingru_torch_scan"])
    df, _ = report.load(str(tmp_path))
    ok = df[df.status == "ok"].set_index("impl")
    assert (ok.accurate.astype(str) == "True").all() and len(ok) == 4
    assert ok.baseline["mingru_torch_scan"] == "mingru_torch_loop" and ok.baseline["nn_rnn"] == "nn_rnn"
    assert ok.tflops["nn_lstm"] / ok.tflops["nn_rnn"] == pytest.approx(4 * ok.ms["nn_rnn"] / ok.ms["nn_lstm"])


def test_fifth_row_parallel_scan():
    """The fifth row stands for the minGRU scans, is judged against the ratio the textbook implies for any
    recurrence (the sequential LSTM's 0.16) and says so."""
    from bench.report import tables as table
    assert table.ROWS[-1] == table.BEYOND and table.textbook_ratio(table.BEYOND) == table.textbook_ratio(
        "LSTM (sequential)")
    assert set(table.stand_ins(WORKLOADS)[table.BEYOND]) == {("model_mingru", i) for i in (
        "mingru_torch_scan", "mingru_triton", "mingru_torch_scan_compile", "mingru_torch_scan_compile_cudagraphs",
        "mingru_fla_fused_recurrent", "mingru_fla_chunk")}
    t = {("model_transformer", "transformer_torch"): 100_000, ("model_mingru", "mingru_triton"): 90_000,
         ("model_mingru", "mingru_torch_loop"): 200_000}        # the sequential loop does not stand for the row
    rows = {r["row"]: r for r in table.table(_model_rows(t), WORKLOADS, "fwd")}
    assert rows[table.BEYOND]["ratio"] == 0.9 and rows[table.BEYOND]["verdict"] == "does not hold"
    slow = {r["row"]: r for r in table.table(_model_rows({**t, ("model_mingru", "mingru_triton"): 30_000}),
                                               WORKLOADS, "fwd")}
    assert slow[table.BEYOND]["verdict"] == "holds"
    text = "\n".join(table.markdown(_model_rows(t), WORKLOADS, False))
    assert "| beyond the textbook: parallel-scan RNN | not given |" in text and "0.16 (implied)" in text


def test_recurrence_table_picks_each_architectures_best():
    from bench.report import tables as table
    rows = [dict(workload="recurrence", impl=impl, mode="fwd+bwd", status="ok", batch=16, seq_len=512,
                 shape="B=16 T=512 H=1024", tokens_per_s=float(tps), accurate=acc)
            for impl, tps, acc in (("nn_gru", 100, "True"), ("gru_triton_step", 150, "True"),
                                   ("mingru_torch_loop", 50, "True"), ("mingru_triton_scan", 6000, "False"),
                                   ("mingru_torch_scan", 3000, "True"), ("nn_lstm", 80, "True"))]
    (r,) = table.recurrence(pd.DataFrame(rows), WORKLOADS)
    assert r["gru"] == ("gru_triton_step", 150.0) and r["mingru"] == ("mingru_torch_scan", 3000.0)  # wrong: not counted
    assert r["mingru_over_gru"] == (20.0, 20.0, 20.0) and "minlstm_over_lstm" not in r and "rnn" not in r
    text = "\n".join(table.recurrence_markdown(pd.DataFrame(rows), WORKLOADS, False))
    assert "| fwd+bwd | 16 | 512 | not measured | 150 (gru_triton_step) |" in text and "| 20 |  |" in text


# ------------------------------------------------------------------------ rough edges (issue 21)

@pytest.mark.parametrize("body", [
    "workload,impl,mode,dtype,shape,status\nattention,naive,fwd,float32,B=2 T=8,ok\n",
    "workload,impl,mode,dtype,shape,status,tokens_per_s,seq_len,batch,tokens,ms\n"
    "attention,naive,fwd,float32,B=2 T=8,ok,,8,2,16,1.0\n"
    "model_transformer,transformer_torch,fwd,float32,B=2 T=8,ok,5,,2,16,1.0\n",
], ids=["identity columns only", "blank tokens_per_s and seq_len"])
def test_report_of_a_sparse_results_csv(tmp_path, capsys, body):
    """ok rows lacking the numbers a measured point has: a report that lists them as incomplete, no traceback."""
    (tmp_path / "results.csv").write_text(body)
    assert cli(["report", str(tmp_path)]) == 0, capsys.readouterr().err
    text = (tmp_path / "REPORT.md").read_text()
    assert "an ok row without" in text


def test_run_files_follow_the_umask(tmp_path, monkeypatch):
    monkeypatch.setattr(brun, "run_checks", lambda device, **k: [])
    old = os.umask(0o027)
    try:
        assert cli(["run", "--only", "attention", "--impl", "naive", "--seq-len", "8", "--mode", "fwd",
                    "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    finally:
        os.umask(old)
    for name in ("results.csv", "run.json", "REPORT.md"):
        assert os.stat(tmp_path / "run" / name).st_mode & 0o777 == 0o640, name


# ------------------------------------------------------------- numbers you can cite (issue 22)

def _fake_timer(spreads: dict):
    """A stand-in for timing.time_cpu: the spreads each impl's successive timings have, keyed by the first value
    of the impl's output, so a test decides which points are unstable."""
    seen = {}

    def time_cpu(fn, *a, **k):
        tag = float(fn().flatten()[0])
        n = seen[tag] = seen.get(tag, 0) + 1
        s = spreads.get(tag, [0.05])[min(n, len(spreads.get(tag, [0.05]))) - 1]
        times = [1.0 - s / 1.2, 1.0, 1.0 + s / 1.2]            # spread s
        return timing.summarize(times, "fake") | {"times_ms": times}
    return time_cpu


@pytest.mark.spread_rule
def test_spread_rule_remeasure_and_unstable(tmp_path, monkeypatch):
    """A point over the CPU limit is measured again at the end of the run: stable then, it is ok; still over,
    it is `unstable` (kept, flagged, with both spreads), and the run says the machine was busy."""
    monkeypatch.setattr(brun, "run_checks", lambda device, **k: [])
    w = Workload("wobbly", "", ("B", "T"), "T", Shapes(*[[dict(B=1, T=4)]] * 4), lambda s, m: 1, lambda s, d, m: 1,
                 lambda s: 4, lambda s, dtype, device, grad: namespace(x=torch.ones(4)), register=False)
    w.impl("steady", baseline=True)(lambda inp: lambda: inp.x * 2)
    w.impl("shaky")(lambda inp: lambda: inp.x * 0 + 5)
    limit = timing.SPREAD_LIMIT["cpu"]
    monkeypatch.setattr(timing, "CPU_PASSES", 1)          # one window per measurement: the spreads are the fake's
    monkeypatch.setattr(timing, "time_cpu", _fake_timer({2.0: [0.05], 5.0: [limit + 0.3, limit + 0.1]}))
    meta = brun.sweep(str(tmp_path), [w], torch.float32, True, modes=("fwd",), progress=False, device="cpu")
    rows = {r["impl"]: r for r in schema.read_rows(str(tmp_path / "results.csv"))[0]}
    assert len(rows) == 2                                  # re-measured points replace their first row
    assert rows["steady"]["status"] == "ok" and float(rows["steady"]["spread"]) == pytest.approx(0.05)
    shaky = rows["shaky"]
    assert shaky["status"] == "unstable" and float(shaky["spread"]) == pytest.approx(limit + 0.1)   # the steadier
    assert f"spread {limit + 0.3:.2f}, then {limit + 0.1:.2f} measured again" in shaky["reason"]
    assert meta["stability"]["unstable"] == 1 and meta["stability"]["timed"] == 2
    assert all(rows[i]["threads"] == str(torch.get_num_threads()) and rows[i]["load_start"] for i in rows)
    df, run = load(str(tmp_path))
    from bench.report.report import stability_line
    assert "The machine was busy" in stability_line(df, run) and "1 of 2 timed points" in stability_line(df, run)
    assert "measured twice)" in stability_line(df, run)
    write_report(str(tmp_path))
    assert "The machine was busy" in (tmp_path / "REPORT.md").read_text()
    cut = df.copy()                                        # a run stopped before its second measurement
    cut.loc[cut.status == "unstable", "reason"] = "spread 0.5 over the CPU limit 0.25"
    assert "0 of them measured twice, 1 not measured again" in stability_line(cut, {})
    assert "? cores" not in stability_line(cut, {})


@pytest.mark.spread_rule
def test_an_unstable_point_that_settles_is_ok(tmp_path, monkeypatch):
    monkeypatch.setattr(brun, "run_checks", lambda device, **k: [])
    w = Workload("settling", "", ("B", "T"), "T", Shapes(*[[dict(B=1, T=4)]] * 4), lambda s, m: 1,
                 lambda s, d, m: 1, lambda s: 4, lambda s, dtype, device, grad: namespace(x=torch.ones(4)),
                 register=False)
    w.impl("base", baseline=True)(lambda inp: lambda: inp.x * 2)
    limit = timing.SPREAD_LIMIT["cpu"]
    monkeypatch.setattr(timing, "CPU_PASSES", 1)
    monkeypatch.setattr(timing, "time_cpu", _fake_timer({2.0: [limit + 0.3, 0.02]}))
    meta = brun.sweep(str(tmp_path), [w], torch.float32, True, modes=("fwd",), progress=False, device="cpu")
    (row,) = schema.read_rows(str(tmp_path / "results.csv"))[0]
    assert row["status"] == "ok" and float(row["spread"]) == pytest.approx(0.02) and meta["stability"]["unstable"] == 0


@pytest.mark.spread_rule
def test_cpu_passes_pool_windows_spread_over_the_run(tmp_path, monkeypatch):
    """Each CPU point is timed once per pass over all points and its statistics pool the windows: a machine whose
    speed drifts between passes shows it as spread, where each window alone looked steady."""
    monkeypatch.setattr(brun, "run_checks", lambda device, **k: [])
    w = Workload("drifting", "", ("B", "T"), "T", Shapes(*[[dict(B=1, T=4), dict(B=1, T=8)]] * 4), lambda s, m: 1,
                 lambda s, d, m: 1, lambda s: 4, lambda s, dtype, device, grad: namespace(x=torch.ones(4)),
                 register=False)
    w.impl("base", baseline=True)(lambda inp: lambda: inp.x * 2)
    calls = []

    def drifting(fn, *a, **k):          # steady within each window, 2x slower every pass
        calls.append(1)
        speed = 1.0 + (len(calls) - 1) // 2          # the two points of a pass share the machine's state
        times = [speed * 0.999, speed, speed * 1.001]
        return timing.summarize(times, "fake") | {"times_ms": times}
    monkeypatch.setattr(timing, "time_cpu", drifting)
    monkeypatch.setattr(timing, "CPU_PASSES", 3)
    meta = brun.sweep(str(tmp_path), [w], torch.float32, True, modes=("fwd",), progress=False, device="cpu")
    rows = schema.read_rows(str(tmp_path / "results.csv"))[0]
    assert len(rows) == 2 and {r["status"] for r in rows} == {"unstable"}     # measured again: still drifting
    first = [r for r in rows if r["seq_len"] == "4"][0]     # passes at speed 1, 2, 3, then again at 4, 5, 6
    assert float(first["spread"]) > timing.SPREAD_LIMIT["cpu"] and "then" in first["reason"]
    assert "3 windows spread over the run, pooled" in first["timer"] and int(first["reps"]) == 9
    assert meta["stability"]["unstable"] == 2 and len(calls) == 2 * 3 * 2      # 2 points, 3 passes, twice


def test_windows_pool_with_equal_weights(tmp_path, monkeypatch):
    """adaptive_autorange picks each window's block size: a first window of 1,000 single calls must not outvote
    a second of 5 blocks; pooled, each window weighs the same, and the row counts every repetition."""
    monkeypatch.setattr(brun, "run_checks", lambda device, **k: [])
    w = Workload("blocks", "", ("B", "T"), "T", Shapes(*[[dict(B=1, T=4)]] * 4), lambda s, m: 1, lambda s, d, m: 1,
                 lambda s: 4, lambda s, dtype, device, grad: namespace(x=torch.ones(4)), register=False)
    w.impl("base", baseline=True)(lambda inp: lambda: inp.x * 2)
    windows = iter([([1.0] * 1000, 0.5), ([2.0] * 5, 1.0)])        # the host twice as slow in the second

    def fake(fn, *a, **k):
        times, probe = next(windows)
        return timing.summarize(times, "fake") | {"times_ms": times, "probe_ms": probe}
    monkeypatch.setattr(timing, "time_cpu", fake)
    monkeypatch.setattr(timing, "CPU_PASSES", 2)
    brun.sweep(str(tmp_path), [w], torch.float32, True, modes=("fwd",), progress=False, device="cpu")
    (row,) = schema.read_rows(str(tmp_path / "results.csv"))[0]
    assert float(row["ms_p20"]) == 1.0 and float(row["ms_p80"]) == 2.0 and int(row["reps"]) == 1005
    assert 1.0 <= float(row["ms"]) <= 2.0 and "equal weights" in row["timer"]
    # each window is 2 probes a call: the median time is 2 of the row's host probe
    assert float(row["host_probe_ms"]) == pytest.approx(float(row["ms"]) / 2)
    assert timing.equal_weights([[1.0] * 1000, [2.0] * 5]).count(2.0) == 99


def test_cpu_points_record_the_host_probe_and_threads(tmp_path, monkeypatch):
    """The real CPU timer probes the host through each window; rows carry the probe and the
    threads (the usable cores less one unless SEQBENCH_CPU_THREADS says otherwise)."""
    t = timing.time_cpu(lambda: torch.ones(8) * 2)
    assert t["probe_ms"] > 0
    monkeypatch.delenv("SEQBENCH_CPU_THREADS", raising=False)
    assert timing.cpu_threads() == max(1, timing.usable_cores() - 1)
    monkeypatch.setenv("SEQBENCH_CPU_THREADS", "3")
    assert timing.cpu_threads() == 3
    monkeypatch.setenv("SEQBENCH_CPU_THREADS", "1")
    monkeypatch.setattr(brun, "run_checks", lambda device, **k: [])
    w = Workload("probed", "", ("B", "T"), "T", Shapes(*[[dict(B=1, T=4)]] * 4), lambda s, m: 1, lambda s, d, m: 1,
                 lambda s: 4, lambda s, dtype, device, grad: namespace(x=torch.ones(4)), register=False)
    w.impl("base", baseline=True)(lambda inp: lambda: inp.x * 2)
    threads = torch.get_num_threads()
    try:
        meta = brun.sweep(str(tmp_path), [w], torch.float32, True, modes=("fwd",), progress=False, device="cpu")
    finally:
        torch.set_num_threads(threads)
    (row,) = schema.read_rows(str(tmp_path / "results.csv"))[0]
    assert row["threads"] == "1" and float(row["host_probe_ms"]) > 0
    lo, hi = meta["stability"]["host_probe_ms"]
    assert 0 < lo <= hi


def _cite_rows(points: dict, batch=16, seq_len=512, mode="fwd"):
    """Synthetic rows {(workload, impl): (tokens/s, p20/median, p80/median, status)} with their times."""
    rows = []
    for (wl, impl), (tps, lo, hi, status) in points.items():
        ms = 1e3 * batch * seq_len / tps
        rows.append(dict(workload=wl, impl=impl, mode=mode, status=status, batch=batch, seq_len=seq_len,
                         shape=f"B={batch} T={seq_len} d=1024", tokens=batch * seq_len, tokens_per_s=float(tps), ms=ms,
                         ms_p20=ms * lo, ms_p80=ms * hi, accurate="True"))
    return pd.DataFrame(rows)


def test_interval_verdicts_hold_not_hold_inconclusive():
    """The LSTM (sequential) row's textbook ratio is 0.16, so 0.32 is the line: an interval wholly under it holds,
    wholly over it does not hold, across it is inconclusive; an unstable point decides nothing; a CPU run is not
    judged."""
    from bench.report import tables as table
    ref = {("model_transformer", "transformer_torch"): (100_000, 0.95, 1.05, "ok")}
    cases = {"holds": (25_000, 0.9, 1.1), "does not hold": (40_000, 0.9, 1.1), "inconclusive": (31_000, 0.8, 1.2)}
    for want, (tps, lo, hi) in cases.items():
        rows = table.table(_cite_rows({**ref, ("model_lstm", "lstm_torch_loop"): (tps, lo, hi, "ok")}), WORKLOADS, "fwd")
        r = next(r for r in rows if r["row"] == "LSTM (sequential)")
        assert r["verdict"] == want, (want, r["interval"])
        mid, low, high = r["interval"]
        assert low < mid < high and mid == pytest.approx(tps / 100_000)
    # the interval: the row's p80 time against the Transformer's p20, and the reverse
    r = next(r for r in table.table(_cite_rows({**ref, ("model_lstm", "lstm_torch_loop"): (31_000, 0.8, 1.2, "ok")}),
                                    WORKLOADS, "fwd") if r["row"] == "LSTM (sequential)")
    assert r["interval"][1] == pytest.approx(0.31 * 0.95 / 1.2) and r["interval"][2] == pytest.approx(0.31 * 1.05 / 0.8)
    shaky = table.table(_cite_rows({**ref, ("model_lstm", "lstm_torch_loop"): (25_000, 0.5, 1.9, "unstable")}),
                        WORKLOADS, "fwd")
    r = next(r for r in shaky if r["row"] == "LSTM (sequential)")
    assert r["verdict"] == "unstable: not judged" and r["unstable"] == ["lstm_torch_loop"]
    text = "\n".join(table.markdown(_cite_rows({**ref, ("model_lstm", "lstm_torch_loop"): (25_000, 0.5, 1.9,
                                                                                         "unstable")}), WORKLOADS, False))
    assert "lstm_torch_loop: unstable, not judged" in text
    cpu = table.table(_cite_rows({**ref, ("model_lstm", "lstm_torch_loop"): (25_000, 0.9, 1.1, "ok")}), WORKLOADS,
                      "fwd", cpu_only=True)
    r = next(r for r in cpu if r["row"] == "LSTM (sequential)")
    assert r["verdict"] == table.NOT_JUDGED and r["ratio"] == pytest.approx(0.25)


def test_guide_verdict_needs_the_whole_interval():
    from bench.report import tables as table
    assert table.guide_verdict((1.2, 1.1, 1.3)) == "GRU faster"
    assert table.guide_verdict((0.8, 0.7, 0.9)) == "LSTM faster"
    assert table.guide_verdict((1.0, 0.97, 1.03)) == "the same (within 5%)"
    assert table.guide_verdict((1.1, 0.9, 1.3)) == "inconclusive"


def _cite_run(path, points: dict, device="CPU", probe=None):
    """A run folder of synthetic rows {(workload, impl, seq_len): (ms, p20/ms, p80/ms, status)}, each with the
    host probe ``probe`` (ms) when one is given."""
    os.makedirs(path, exist_ok=True)
    rows = []
    for (wl, impl, t), (ms, lo, hi, status) in points.items():
        rows.append(dict(workload=wl, impl=impl, mode="fwd", dtype="float32", shape=f"B=2 H=1 N={t} D=8", seq_len=t,
                         batch=2,
                         tokens=2 * t, status=status, ms=ms, ms_p20=ms * lo, ms_p80=ms * hi,
                         tokens_per_s=2 * t / (ms / 1e3), **({"host_probe_ms": probe} if probe else {})))
    pd.DataFrame(rows).to_csv(os.path.join(path, "results.csv"), index=False)
    json.dump({"environment": {"device": device}, "cpu_only": True}, open(os.path.join(path, "run.json"), "w"))


def test_compare_calls_a_regression_only_outside_both_spreads(tmp_path, capsys):
    a = {("attention", "naive", 8): (1.0, 0.9, 1.1, "ok"), ("attention", "naive", 16): (1.0, 0.98, 1.02, "ok"),
         ("attention", "sdpa_math", 8): (1.0, 0.98, 1.02, "unstable")}
    b = {("attention", "naive", 8): (1.25, 0.85, 1.15, "ok"),        # 20% slower, but the spreads overlap
         ("attention", "naive", 16): (1.25, 0.98, 1.02, "ok"),       # 20% slower, clear of both spreads
         ("attention", "sdpa_math", 8): (3.0, 0.98, 1.02, "ok")}     # unstable in A: listed, never a regression
    _cite_run(tmp_path / "a", a)
    _cite_run(tmp_path / "b", b)
    stable, shaky = compare(str(tmp_path / "a"), str(tmp_path / "b"), threshold=0.10)
    by = {r.seq_len if "seq_len" in stable else r.shape: r for r in stable.itertuples()}
    assert list(stable.regressed) == [False, True] and len(shaky) == 1 and shaky.impl.iloc[0] == "sdpa_math"
    assert stable.ratio_b_over_a.iloc[0] == pytest.approx(0.8) and stable.high.iloc[0] > 1 > stable.high.iloc[1]
    assert by
    assert cli(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    out = capsys.readouterr().out
    assert "regression: 1 point(s)" in out and "unstable in either run (never a regression): 1 point(s)" in out
    _cite_run(tmp_path / "c", {k: v for k, v in a.items() if k[2] == 8 and k[1] == "naive"})
    _cite_run(tmp_path / "d", {k: (v[0] * 1.25, 0.85, 1.15, "ok") for k, v in a.items() if k[2] == 8 and k[1] == "naive"})
    assert cli(["compare", str(tmp_path / "c"), str(tmp_path / "d")]) == 0


def test_compare_takes_the_hosts_speed_out(tmp_path, capsys):
    """A CPU point 1.6x slower in B while B's host probe was 1.6x slower too is the host, not a regression; the
    same slowdown on an unchanged host is one.  A run without probes (older, or a GPU's) is compared as it is."""
    a = {("attention", "naive", 8): (1.0, 0.98, 1.02, "ok")}
    b = {("attention", "naive", 8): (1.6, 0.98, 1.02, "ok")}
    _cite_run(tmp_path / "a", a, probe=0.5)
    _cite_run(tmp_path / "slow-host", b, probe=0.8)
    _cite_run(tmp_path / "same-host", b, probe=0.5)
    _cite_run(tmp_path / "no-probe", b)
    stable, _ = compare(str(tmp_path / "a"), str(tmp_path / "slow-host"))
    assert stable.host_b_over_a.iloc[0] == pytest.approx(1.6) and stable.ratio_b_over_a.iloc[0] == pytest.approx(1.0)
    assert not stable.regressed.any() and cli(["compare", str(tmp_path / "a"), str(tmp_path / "slow-host")]) == 0
    assert "host_b_over_a" in capsys.readouterr().out
    for other in ("same-host", "no-probe"):
        stable, _ = compare(str(tmp_path / "a"), str(tmp_path / other))
        assert stable.ratio_b_over_a.iloc[0] == pytest.approx(1 / 1.6) and stable.regressed.all()
    # faster as measured, slower only once A's slow host is divided out: the probe over-corrects such a point,
    # which is no regression (both must say so)
    _cite_run(tmp_path / "fast-host", {("attention", "naive", 8): (0.9, 0.98, 1.02, "ok")}, probe=0.35)
    stable, _ = compare(str(tmp_path / "a"), str(tmp_path / "fast-host"))
    assert stable.ratio_b_over_a.iloc[0] == pytest.approx(0.7 / 0.9) and stable.raw_b_over_a.iloc[0] > 1
    assert not stable.regressed.any()
    _cite_run(tmp_path / "other-cpu", b, device="CPU: another model (2 cores, x86_64)", probe=0.8)
    stable, _ = compare(str(tmp_path / "a"), str(tmp_path / "other-cpu"))    # probes of two CPU models: not divided
    assert stable.ratio_b_over_a.iloc[0] == pytest.approx(1 / 1.6) and "hosts differ" in stable.attrs["note"]


def test_compare_with_no_common_point_is_an_error(tmp_path, capsys):
    _cite_run(tmp_path / "a", {("attention", "naive", 8): (1.0, 0.9, 1.1, "ok")})
    _cite_run(tmp_path / "b", {("attention", "naive", 16): (1.0, 0.9, 1.1, "ok")})
    _one_line_error(capsys, cli(["compare", str(tmp_path / "a"), str(tmp_path / "b")]), "no measured point in common")


def _own_pytest_env() -> dict:
    """This environment without the variables of a pytest-xdist worker: pytest-benchmark turns itself off in
    a process it takes for one (the test's own pytest runs alone)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST", "PYTEST_CURRENT_TEST"))}


def test_pytest_benchmark_writes_a_run_folder_seqbench_reads(tmp_path):
    """pytest --benchmark on two tiny points: rows in seqbench's schema from bench.measure's timer, a report
    rebuilt by `seqbench report`, and pytest-benchmark's JSON with the same medians, grouped by point."""
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out, js = tmp_path / "bench", tmp_path / "pb.json"
    points = [f"tests/benchmarks/test_benchmarks.py::test_benchmark[attention-{impl}-B=1_H=2_N=64_D=32-fwd]"
              for impl in ("naive", "sdpa_math")]
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *points,
                        "--benchmark", f"--benchmark-json={js}"], cwd=root, capture_output=True,
                       text=True, timeout=600, env={**_own_pytest_env(), "SEQBENCH_BENCHMARK_OUT": str(out)})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = {x["impl"]: x for x in schema.read_rows(str(out / "results.csv"))[0]}
    assert set(rows) == {"naive", "sdpa_math"} and {x["status"] for x in rows.values()} <= {"ok", "unstable"}
    assert all(x["timer"].startswith("torch.utils.benchmark") or torch.cuda.is_available() for x in rows.values())
    assert cli(["report", str(out)]) == 0 and "## attention" in (out / "REPORT.md").read_text()
    bench = {b["params"]["impl"].name if hasattr(b["params"]["impl"], "name") else b["name"]: b
             for b in json.load(open(js))["benchmarks"]}
    assert len(bench) == 2 and {b["group"] for b in bench.values()} == {"attention B=1 H=2 N=64 D=32 fwd"}
    for b in bench.values():
        impl = "naive" if "naive" in b["name"] else "sdpa_math"
        assert b["stats"]["median"] * 1e3 == pytest.approx(float(rows[impl]["ms"]), rel=1e-6)
        assert b["stats"]["rounds"] == int(rows[impl]["reps"])


def test_benchmark_only_runs_the_benchmarks(tmp_path):
    """pytest-benchmark's own --benchmark-only runs them too (it skipped all of them with "run with --benchmark")."""
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    point = "tests/benchmarks/test_benchmarks.py::test_benchmark[attention-naive-B=1_H=2_N=64_D=32-fwd]"
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", point, "--benchmark-only"],
                       cwd=root, capture_output=True, text=True, timeout=300,
                       env={**_own_pytest_env(), "SEQBENCH_BENCHMARK_OUT": str(tmp_path / "b")})
    assert r.returncode == 0 and "1 passed" in r.stdout, r.stdout[-2000:]


# ------------------------------------------------------------------ one CLI vocabulary (issue 24)

def test_impl_tags_select_a_group_in_every_workload(tmp_path, monkeypatch):
    """--impl triton is each workload's Triton implementations and --impl torch the rest; no name means a Triton
    kernel in one workload and a PyTorch one in another, so a tag's names select the same in every workload."""
    kinds = {}
    for w in WORKLOADS.values():
        for i in w.impls.values():
            kinds.setdefault(i.name, set()).add(i.triton)
    assert all(len(v) == 1 for v in kinds.values()), {k: v for k, v in kinds.items() if len(v) > 1}
    for w in WORKLOADS.values():
        for tag, want in (("triton", {i.name for i in w.impls.values() if i.triton}),
                          ("torch", {i.name for i in w.impls.values() if not i.triton})):
            got = cli_module._chosen_impls(types.SimpleNamespace(impl=[tag]), [w])
            assert set(got) & set(w.impls) == want, (w.name, tag)
    monkeypatch.setattr(brun, "run_checks", lambda device, **k: [])
    assert cli(["run", "--only", "model_lstm", "--impl", "triton", "--seq-len", "8", "--mode", "fwd", "--no-progress",
                "--out", str(tmp_path)]) == 0
    rows = schema.read_rows(str(tmp_path / "results.csv"))[0]
    assert {r["impl"] for r in rows} == {"lstm_triton", "lstm_triton_persistent", "lstm_flashrnn_triton_fused"}


def test_version_and_help_on_every_flag(capsys):
    with pytest.raises(SystemExit) as e:
        cli(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("seqbench ")
    import argparse
    ap = cli_module.build_parser()
    subs = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction)).choices
    from bench.tools import inspect_cli
    parsers = [(n, p) for n, p in subs.items() if n != "inspect"] + [("inspect", inspect_cli.build_parser())]
    bare = [f"{name} {o.option_strings or o.dest}" for name, p in parsers for o in p._actions
            if not o.help and not isinstance(o, argparse._HelpAction)]
    assert not bare, bare
    assert "(default runs/<date>-inspect)" in " ".join(inspect_cli.build_parser().format_help().split())


def test_plots_take_one_repetition_points(tmp_path):
    """A point timed once has p20 = p80 = its median, and v·ms/ms can round a hair past v: the error bars
    start at zero, they are not negative (matplotlib refused the whole plot)."""
    import pandas as pd
    from bench.report import figures
    _fake_run(tmp_path)
    df = pd.read_csv(tmp_path / "results.csv")
    ok = df.status == "ok"
    df.loc[ok, ["ms", "ms_p20", "ms_p80"]] = 0.3
    df.loc[ok, "tokens_per_s"] = 0.1 * 9          # 0.9000000000000001: (v × 0.3) / 0.3 > v
    assert (df.loc[ok, "tokens_per_s"] * 0.3 / 0.3 > df.loc[ok, "tokens_per_s"]).all()
    df.to_csv(tmp_path / "results.csv", index=False)
    write_report(str(tmp_path))
    assert os.path.getsize(tmp_path / "tokens_per_s.png") > 5000
    assert figures._errors([1.0], [1.0 + 1e-16], [1.0 - 1e-16]) == [[0.0], [0.0]]


@pytest.mark.parametrize("value, want", [("", (0.1, 1.0)), ("0.02,0.2", (0.02, 0.2)), ("0.5,0.1", (0.1, 1.0)),
                                         ("x", (0.1, 1.0)), ("0,1", (0.1, 1.0)), ("0.1,inf", (0.1, 1.0))])
def test_cpu_window_from_the_environment(value, want, monkeypatch, capsys):
    from bench.measure import timing
    monkeypatch.setenv("SEQBENCH_CPU_WINDOW_S", value)
    assert timing._window() == want
    assert ("SEQBENCH_CPU_WINDOW_S" in capsys.readouterr().err) == (bool(value) and want == (0.1, 1.0))
