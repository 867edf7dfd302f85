"""seqbench train (issue 13): the models, the data, the training loop, time to quality, resume,
torchrun (DDP and the sharded sweep) and bad input.  Tiny sizes: everything runs on the CPU."""
import copy
import os
import subprocess
import sys

import pytest
import torch

from bench import schema
from bench.train import lm
from bench.report import training
from bench.report.report import write_report
from bench.train import train as tr
from bench.cli import main
from bench.train.dist import Dist
from tests.tolerance import assert_within_2x

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(d_model=32, layers=1, seq_len=32, batch=8, lr=3e-3, warmup=5, eval_every=10, val_tokens=512,
            impl="torch")


def tiny(**kw) -> tr.TrainConfig:
    return tr.TrainConfig(**{**TINY, **kw})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A small real-text corpus (this repository's Python sources), so the tests do not read the stdlib."""
    folder = tmp_path_factory.mktemp("corpus")
    for i, path in enumerate(sorted(os.path.join(r, f) for r, _, fs in os.walk(os.path.join(ROOT, "bench"))
                                    for f in fs if f.endswith(".py"))):
        with open(path, "rb") as src, open(folder / f"{i:03d}.txt", "wb") as dst:
            dst.write(src.read())
    return str(folder)


# ------------------------------------------------------------------------------------------------ models

def test_widths_match_the_transformers_parameters():
    for d, layers in ((32, 1), (64, 2), (512, 4)):
        widths = lm.match_widths(list(lm.MODELS), d, layers)
        target = lm.count_params("transformer", d, layers)
        assert widths["transformer"] == d
        for m, w in widths.items():
            assert abs(lm.count_params(m, w, layers) / target - 1) <= 0.10, (m, w)
    assert lm.match_widths(["lstm", "convs2s"], 48, 2, match="d_model") == {"lstm": 48, "convs2s": 48}
    with pytest.raises(ValueError, match="match must be"):
        lm.match_widths(["lstm"], 48, 2, match="flops")


def test_a_model_is_one_registration():
    @lm.register("toy", impls=("torch",), description="a causal identity")
    def toy(d, layers, impl):
        return torch.nn.Linear(d, d)
    try:
        assert "toy" in lm.MODELS and lm.ByteLM("toy", 16, 1, "torch")(torch.zeros(2, 3, dtype=torch.long)).shape == (
            2, 3, 256)
        assert "toy" in lm.match_widths(["toy"], 32, 1)
    finally:
        del lm.MODELS["toy"]
    with pytest.raises(ValueError, match="end with 'torch'"):
        lm.register("bad", impls=("triton",), description="")


@pytest.mark.parametrize("model,impl", [(m, i) for m, s in lm.MODELS.items() for i in s.impls[:-1]])
def test_kernel_model_matches_its_torch_reference(model, impl):
    """Each model on this project's kernels (interpreter) against the same model on PyTorch: the mixer's
    output, the logits and every parameter's gradient, by the shared 2x rule against the float64 model.

    Floor: the final LayerNorm divides an absolute error in the mixer's output by that row's standard
    deviation σ (small here: the embedding is scaled by d^-1/2), so past the mixer the rounding floor is
    two steps at the tensor's scale times κ = 1 / min σ."""
    torch.manual_seed(0)
    width = 24 if model != "transformer" else 16
    ref = lm.ByteLM(model, width, 2, "torch")
    kern = lm.ByteLM(model, width, 2, impl)
    kern.load_state_dict(ref.state_dict())
    ref64 = copy.deepcopy(ref).double()
    x = torch.randint(0, 256, (2, 12))
    outs = []
    for m in (kern, ref, ref64):
        mixed = []
        hook = m.mixer.register_forward_hook(lambda mod, inp, out: mixed.append(out))
        logits = m(x)
        hook.remove()
        (logits.log_softmax(-1)[..., 7].sum() + logits.square().mean()).backward()
        outs.append((mixed[0].detach(), logits.detach(), {n: p.grad for n, p in m.named_parameters()}))
    (km, k, kg), (tm, t, tg), (rm, r, rg) = outs
    eps = torch.finfo(torch.float32).eps
    assert_within_2x(f"{model}/{impl} mixer output", km, rm, tm, extra_atol=eps)
    kappa = 1 / rm.std(-1, unbiased=False).min().item()
    assert_within_2x(f"{model}/{impl} logits", k, r, t, extra_atol=2 * eps * kappa * r.abs().max().item())
    for n in rg:
        assert_within_2x(f"{model}/{impl} d{n}", kg[n], rg[n], tg[n],
                         extra_atol=2 * eps * kappa * rg[n].abs().max().item())


# -------------------------------------------------------------------------------------------------- data

def test_corpus_split_and_batches(corpus, tmp_path):
    train, val, desc = tr.load_corpus(corpus)
    files = sorted(os.listdir(corpus))
    assert desc["files"] == len(files) >= 10
    # every tenth file (sorted) is validation
    expect_val = b"".join(open(os.path.join(corpus, f), "rb").read() for i, f in enumerate(files) if i % 10 == 9)
    assert bytes(val.tolist()) == expect_val and len(train) + len(val) == desc["train_bytes"] + desc["val_bytes"]
    one = tmp_path / "one.txt"
    one.write_bytes(bytes(range(256)) * 10)
    t1, v1, _ = tr.load_corpus(str(one))
    assert len(v1) == 256 and bytes(t1.tolist()) + bytes(v1.tolist()) == one.read_bytes()
    # a step's batch is fixed by (seed, step); the ranks' shares make up the global batch
    x, y = tr.batch_at(train, 5, 0, 8, 16)
    assert torch.equal(x, tr.batch_at(train, 5, 0, 8, 16)[0]) and not torch.equal(x, tr.batch_at(train, 6, 0, 8, 16)[0])
    assert torch.equal(x[:, 1:], y[:, :-1])
    shares = [tr.batch_at(train, 5, 0, 8, 16, r, 4)[0] for r in range(4)]
    assert torch.equal(torch.cat(shares), x)
    w = tr.val_windows(val, 16, 100)
    assert w.shape == (6, 17) and torch.equal(w[1, 0], val[16].long())


def test_default_corpus_is_the_standard_library():
    train, val, desc = tr.load_corpus(None, max_bytes=1 << 20)
    assert "standard library" in desc["source"] and len(train) > 100_000 and len(val) > 10_000


def test_lr_schedule():
    cfg = tiny(lr=1.0, warmup=10)
    assert tr.lr_at(cfg, 0, 0.0) == pytest.approx(0.1)
    assert tr.lr_at(cfg, 9, 0.0) == pytest.approx(1.0)
    assert tr.lr_at(cfg, 100, 0.5) == pytest.approx(0.55)
    assert tr.lr_at(cfg, 100, 1.0) == pytest.approx(0.1) == tr.lr_at(cfg, 100, 2.0)


# ----------------------------------------------------------------------------------------------- training

@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """Every model, tiny, 60 steps on the PyTorch references."""
    out = str(tmp_path_factory.mktemp("trained"))
    cfg = tiny(corpus=corpus, tokens=60 * 8 * 32, eval_every=20, layers=2)
    tr.train(cfg, out, progress=False, dist_=Dist())
    return out, cfg


def test_tiny_models_learn(trained):
    out, cfg = trained
    df = training.load_rows(out)
    assert set(df.model) == set(lm.MODELS) and (df.status == "ok").all()
    for m, g in df.groupby("model"):
        g = g.sort_values("step")
        assert list(g.step) == [0, 20, 40, 60] and list(g.final) == ["False"] * 3 + ["True"]
        # from about 8 bits/byte (uniform-ish) to under 5.5 in 60 steps: at least 2.5 bits/byte gained
        assert g.val_bpb.iloc[0] - g.val_bpb.iloc[-1] >= 2.5, (m, list(g.val_bpb))
        assert (g.tokens_seen == g.step * cfg.batch * cfg.seq_len).all()
        trained_rows = g[g.step > 0]
        assert (trained_rows.tokens_per_s > 0).all() and (trained_rows.grad_norm > 0).all()
        assert (trained_rows.train_loss > 0).all() and trained_rows.train_seconds.is_monotonic_increasing
        assert trained_rows.nvml_reason.eq("no GPU on this machine").all()
        # the untimed warm-up (compiles, autotuning) is on the first trained row alone
        assert trained_rows.warmup_s.iloc[0] > 0 and trained_rows.warmup_s.iloc[1:].isna().all()
        assert g.warmup_s.isna().iloc[0]
        assert os.path.exists(tr.checkpoint_path(out, m, "torch"))


def test_time_to_quality_and_report(trained):
    out, _ = trained
    df = training.load_rows(out)
    target, runs = training.time_to_quality(df)
    assert target == pytest.approx(max(df[df.model == m].val_bpb.min() for m in lm.MODELS))
    for r in runs:
        g = df[df.model == r["model"]].sort_values("step")
        first = g[g.val_bpb <= target + 1e-12].iloc[0]
        assert r["reached"] and r["seconds"] == pytest.approx(first.train_seconds) and r["tokens"] == first.tokens_seen
    _, none = training.time_to_quality(df, target=0.5)
    assert not any(r["reached"] for r in none)
    report = open(write_report(out)).read()
    assert "## Time to quality" in report and "the best every model reached" in report and "train.png" in report
    assert os.path.exists(os.path.join(out, "train.png"))


def test_kernel_models_train_through_the_interpreter(corpus, tmp_path):
    """Two steps of every model on this project's kernels: the whole training path runs them."""
    cfg = tiny(corpus=corpus, impl="kernels", d_model=16, seq_len=8, batch=4, tokens=2 * 4 * 8, eval_every=1,
               val_tokens=16)
    tr.train(cfg, str(tmp_path), progress=False, dist_=Dist())
    df = training.load_rows(str(tmp_path))
    assert (df.status == "ok").all() and set(df.impl) == {"step", "triton"} and len(df) == len(cfg.models) * 3
    assert df.val_bpb.notna().all()


def test_the_warm_up_changes_nothing_but_the_kernel_caches():
    """warm_up runs a forward and backward outside the clock: no parameter, gradient or RNG state changes."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5))
    opt = tr.adamw(model, 1e-3, 0.0, (0.9, 0.95), torch.device("cpu"))
    before = copy.deepcopy(model.state_dict())
    rng = torch.get_rng_state()
    seconds = tr.warm_up(lambda step: (model(torch.ones(2, 4)).sum(), 8), 0, opt, Dist())
    assert seconds > 0 and torch.equal(torch.get_rng_state(), rng)
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_window_shorter_than_a_second_has_no_power(monkeypatch):
    from bench.measure import nvml
    from tests.test_bench import FakeNVML
    fake = FakeNVML()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    s = nvml.NVMLSampler(interval_s=0.01)
    fake.start = fake.now() - 1
    row = s.window().finish(tokens=100)
    assert row["power_w"] is None and "shorter than 1 s" in row["nvml_reason"] and row["nvml_util_pct"] == 90
    w = s.window()
    import time
    time.sleep(1.05)
    row = w.finish(tokens=100)
    assert row["power_w"] == pytest.approx(300, rel=0.05) and row["joules_per_token"] == pytest.approx(
        row["energy_j"] / 100)


# -------------------------------------------------------------------------------------------------- resume

def test_resume_after_an_interrupt_loses_nothing(corpus, tmp_path, monkeypatch):
    cfg = tiny(corpus=corpus, models=["lstm", "transformer"], tokens=30 * 8 * 32)
    whole = str(tmp_path / "whole")
    tr.train(cfg, whole, progress=False, dist_=Dist())
    cut = str(tmp_path / "cut")
    monkeypatch.setenv(tr.STOP_AFTER_EVALS_ENV, "6")        # lstm's 4 evaluations, then 2 of the transformer's
    with pytest.raises(KeyboardInterrupt):
        tr.train(cfg, cut, progress=False, dist_=Dist())
    before = schema.read_rows(os.path.join(cut, "train.csv"), schema.TrainRow)[0]
    assert [(r["model"], r["step"]) for r in before] == [("lstm", s) for s in ("0", "10", "20", "30")] + [
        ("transformer", "0"), ("transformer", "10")]
    monkeypatch.delenv(tr.STOP_AFTER_EVALS_ENV)
    tr.train(cfg, cut, resume=True, progress=False, dist_=Dist())
    a, b = training.load_rows(whole), training.load_rows(cut)
    assert list(zip(a.model, a.step)) == list(zip(b.model, b.step))
    # the resumed run saw the same batches from the same state: the same losses
    assert (a.val_bpb - b.val_bpb).abs().max() < 1e-6
    assert b[b.model == "transformer"].train_seconds.is_monotonic_increasing
    # a finished run resumed again trains nothing and keeps every row
    tr.train(cfg, cut, resume=True, progress=False, dist_=Dist())
    assert len(training.load_rows(cut)) == len(b)


def test_resume_with_other_settings_is_refused(corpus, tmp_path):
    cfg = tiny(corpus=corpus, models=["convs2s"], tokens=10 * 8 * 32)
    tr.train(cfg, str(tmp_path), progress=False, dist_=Dist())
    with pytest.raises(tr.TrainError, match="different settings \\(lr\\)"):
        tr.train(tiny(corpus=corpus, models=["convs2s"], tokens=10 * 8 * 32, lr=1e-3), str(tmp_path), resume=True,
                 progress=False, dist_=Dist())


# ------------------------------------------------------------------------------------------------ torchrun

def _run(args, timeout=240):
    env = dict(os.environ, OMP_NUM_THREADS="1", TRITON_INTERPRET="1")
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _torchrun(n, *args):
    return _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n),
                 "-m", "bench", *args])


def test_ddp_two_ranks_match_one_process(corpus, tmp_path):
    """2 gloo ranks with the global batch split end with the parameters of one process after 12 AdamW steps.
    Tolerance 1e-3 (lr 3e-3): Adam's normalisation amplifies rounding in near-zero gradients."""
    args = ["train", "--only", "lstm,transformer", "--impl", "torch", "--d-model", "32", "--layers", "1",
            "--seq-len", "32", "--batch", "8", "--tokens", str(12 * 8 * 32), "--eval-every", "4", "--val-tokens",
            "512", "--lr", "3e-3", "--corpus", corpus, "--no-progress"]
    one = _run([sys.executable, "-m", "bench", *args, "--out", str(tmp_path / "one")])
    two = _torchrun(2, *args, "--out", str(tmp_path / "two"))
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, two.stderr[-2000:]
    for m in ("lstm", "transformer"):
        a = torch.load(tr.checkpoint_path(str(tmp_path / "one"), m, "torch"))
        b = torch.load(tr.checkpoint_path(str(tmp_path / "two"), m, "torch"))
        assert a["step"] == b["step"] == 12
        diff = max((a["model"][k] - b["model"][k]).abs().max().item() for k in a["model"])
        assert diff < 1e-3, (m, diff)
    rows = training.load_rows(str(tmp_path / "two"))
    assert (rows.world_size == 2).all() and (rows[rows.step > 0].tokens_seen % (8 * 32) == 0).all()
    assert not os.path.exists(tmp_path / "two" / "train.rank1.csv")


def test_sharded_sweep_has_every_point_once(tmp_path):
    args = ["run", "--quick", "--only", "model_lstm,model_transformer", "--impl", "triton,eager", "--no-checks",
            "--no-progress", "--mode", "fwd", "--seq-len", "8,16", "--batch", "2"]    # 4 groups of points
    one = _run([sys.executable, "-m", "bench", *args, "--out", str(tmp_path / "one")])
    two = _torchrun(2, *args, "--out", str(tmp_path / "two"))
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, two.stderr[-2000:]
    keys = lambda d: [schema.row_key(r) for r in schema.read_rows(str(tmp_path / d / "results.csv"))[0]]  # noqa: E731
    assert sorted(keys("one")) == sorted(keys("two")) and len(set(keys("two"))) == len(keys("two"))
    assert not [f for f in os.listdir(tmp_path / "two") if f.startswith("results.rank")]
    assert os.path.exists(tmp_path / "two" / "REPORT.md")


def test_merge_shards_keeps_the_ok_row(tmp_path):
    from bench.sweep.shards import merge_shards
    base = dict(workload="w", impl="i", mode="fwd", dtype="bfloat16", shape="B=1")
    for rank, status in ((0, "ok"), (1, "error")):
        w = schema.RowWriter(str(tmp_path / f"results.rank{rank}.csv"))
        w.write(schema.Row(**base, status=status))
        w.write(schema.Row(**{**base, "shape": f"B={rank + 2}"}, status="ok"))
        w.close()
    assert merge_shards(str(tmp_path)) == 3
    rows = schema.read_rows(str(tmp_path / "results.csv"))[0]
    assert sorted((r["shape"], r["status"]) for r in rows) == [("B=1", "ok"), ("B=2", "ok"), ("B=3", "ok")]


# ------------------------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize("args,message", [
    (["--only", "lstm,gpt"], "unknown model(s) ['gpt']"),
    (["--corpus", "/nonexistent/corpus"], "does not exist"),
    (["--seq-len", "100000"], "longer than the corpus"),
    (["--d-model", "200", "--match", "d_model"], "divide into 3 heads"),
    (["--d-model", "8", "--layers", "1", "--only", "convs2s"], None),   # a valid tiny run, for contrast
])
def test_bad_train_input_is_one_line(args, message, corpus, tmp_path, capsys):
    base = ["train", "--tokens", "256", "--batch", "8", "--seq-len", "16", "--d-model", "16", "--layers", "1",
            "--val-tokens", "64", "--impl", "torch", "--no-progress", "--out", str(tmp_path / "o")]
    if "--corpus" not in args:
        base += ["--corpus", corpus]
    code = main(base + args)
    err = capsys.readouterr().err
    if message is None:
        assert code == 0, err
        return
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err


def test_empty_corpus_and_indivisible_batch(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "blank.txt").write_bytes(b"")
    for corpus in (str(empty), str(tmp_path / "blank.txt")):
        assert main(["train", "--corpus", corpus, "--tokens", "64", "--out", str(tmp_path / "o")]) == 2
        assert "is empty" in capsys.readouterr().err
    with pytest.raises(tr.TrainError, match="--batch 9 is not divisible by the world size 2"):
        tr.train(tiny(batch=9, tokens=64), str(tmp_path / "o"), dist_=Dist(rank=0, world=2))


def test_unreached_target_is_said(corpus, tmp_path, capsys):
    code = main(["train", "--only", "convs2s", "--tokens", "512", "--batch", "8", "--seq-len", "16",
                 "--d-model", "16", "--layers", "1", "--val-tokens", "64", "--impl", "torch", "--no-progress",
                 "--corpus", corpus, "--target-bpb", "0.01", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0 and "no model reached the target 0.010 bits/byte" in out
    report = open(tmp_path / "REPORT.md").read()
    assert "not reached" in report and "No model reached 0.010 bits/byte" in report


def test_damaged_train_csv_on_resume(corpus, tmp_path, capsys):
    (tmp_path / "train.csv").write_text("garbage\n")
    code = main(["train", "--only", "convs2s", "--tokens", "256", "--corpus", corpus, "--resume",
                 "--out", str(tmp_path)])
    assert code == 2 and "not a seqbench train.csv" in capsys.readouterr().err


def test_failed_model_is_a_row_and_the_run_goes_on(corpus, tmp_path, monkeypatch):
    real = lm.ByteLM.forward

    def broken(self, idx):
        if self.model == "lstm":
            raise RuntimeError("CUDA error: an illegal memory access (simulated)")
        return real(self, idx)
    monkeypatch.setattr(lm.ByteLM, "forward", broken)
    tr.train(tiny(corpus=corpus, models=["lstm", "convs2s"], tokens=4 * 8 * 32), str(tmp_path), progress=False,
             dist_=Dist())
    df = training.load_rows(str(tmp_path))
    bad = df[df.model == "lstm"]
    assert list(bad.status) == ["error"] and "illegal memory access" in bad.reason.iloc[0]
    assert (df[df.model == "convs2s"].status == "ok").all()
    assert "lstm (torch) failed: error" in open(write_report(str(tmp_path))).read()


# ------------------------------------------------------------------------ rough edges (issue 21)

def _tiny_cli(corpus, out, *extra):
    return main(["train", "--only", "convs2s", "--tokens", "512", "--batch", "8", "--seq-len", "16",
                 "--d-model", "16", "--layers", "1", "--val-tokens", "64", "--eval-every", "2", "--impl", "torch",
                 "--no-progress", "--corpus", corpus, "--out", str(out), *extra])


def test_resume_onto_other_data_is_refused(tmp_path, capsys, monkeypatch):
    """Stop after the first evaluations, change the corpus' bytes, resume: refused, naming the corpus; the
    run's record of what it trained on is not overwritten."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(open(os.path.join(ROOT, "bench", "train", "train.py"), "rb").read())
    out = tmp_path / "run"
    monkeypatch.setenv(tr.STOP_AFTER_EVALS_ENV, "2")
    assert _tiny_cli(str(corpus), out) == 130
    monkeypatch.delenv(tr.STOP_AFTER_EVALS_ENV)
    was = schema.read_json(str(out / "train.json"))["corpus"]["sha1"]
    corpus.write_bytes(open(os.path.join(ROOT, "bench", "train", "lm.py"), "rb").read())
    capsys.readouterr()
    assert _tiny_cli(str(corpus), out, "--resume") == 2
    err = capsys.readouterr().err
    assert "--resume onto other data" in err and str(corpus) in err and err.count("\n") == 1
    assert schema.read_json(str(out / "train.json"))["corpus"]["sha1"] == was


def test_resume_onto_a_truncated_checkpoint_names_it(corpus, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setenv(tr.STOP_AFTER_EVALS_ENV, "2")
    assert _tiny_cli(corpus, out) == 130
    monkeypatch.delenv(tr.STOP_AFTER_EVALS_ENV)
    ckpt = tr.checkpoint_path(str(out), "convs2s", "torch")
    data = open(ckpt, "rb").read()
    open(ckpt, "wb").write(data[: len(data) // 2])
    rows = open(out / "train.csv").read()
    capsys.readouterr()
    assert _tiny_cli(corpus, out, "--resume") == 2
    err = capsys.readouterr().err
    assert f"the checkpoint {ckpt} is damaged" in err and err.count("\n") == 1 and "Traceback" not in err
    assert open(out / "train.csv").read() == rows          # train.csv survives


@pytest.mark.parametrize("key, value", [("optimizer", []), ("step", "12"), ("tokens", True),
                                        ("optimizer", {"state": {}})])
def test_unit_checkpoint_with_a_malformed_field_is_named(tmp_path, key, value):
    """A checkpoint torch can read but whose fields are not what a resume reads is named, with the field."""
    path = str(tmp_path / "x.pt")
    state = {"model": {}, "optimizer": {"state": {}, "param_groups": []}, "step": 1, "tokens": 2,
             "train_seconds": 0.5}
    torch.save(state, path)
    assert tr._load_checkpoint(path, "cpu")["step"] == 1
    torch.save(state | {key: value}, path)
    with pytest.raises(tr.TrainError, match=rf"not a seqbench train checkpoint \(its \['{key}'\]"):
        tr._load_checkpoint(path, "cpu")


def test_unit_corpus_folder_with_a_link_loop(tmp_path):
    """A corpus folder holding a link to its parent is read once, not walked forever."""
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a.txt").write_text("hello")
    os.symlink(tmp_path / "c", tmp_path / "c" / "loop")
    assert tr._files(str(tmp_path / "c")) == [str(tmp_path / "c" / "a.txt")]


def test_checkpoints_name_the_corpus_absolutely(corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(os.path.dirname(corpus))
    out = tmp_path / "run"
    assert _tiny_cli(os.path.basename(corpus), out) == 0
    state = torch.load(tr.checkpoint_path(str(out), "convs2s", "torch"), weights_only=False)
    assert state["config"]["corpus"] == corpus and state["corpus"]["sha1"]


@pytest.mark.parametrize("args", [["--only", "foo"], ["--only", "lstm", "--match", "nope"],
                                  ["--only", "transformer", "--d-model", "200", "--match", "d_model"]])
def test_bad_arguments_write_nothing(corpus, tmp_path, args):
    out = tmp_path / "never"
    try:
        code = main(["train", *args, "--tokens", "64", "--corpus", corpus, "--out", str(out)])
    except SystemExit as exc:          # argparse's own refusal
        code = exc.code
    assert code == 2 and not out.exists()


def test_result_files_follow_the_umask(corpus, tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "run"
        assert _tiny_cli(corpus, out) == 0
    finally:
        os.umask(old)
    for path in [out / "train.csv", out / "train.json", tr.checkpoint_path(str(out), "convs2s", "torch")]:
        assert os.stat(path).st_mode & 0o777 == 0o644, path

