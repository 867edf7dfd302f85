"""seqbench gradients (issue 16): per-position gradients through the kernels equal autograd through the
PyTorch references; the run's files, failures and bad input; a trained checkpoint.  No test asserts which
model's gradients decay faster: the experiment reports that."""
import math
import os

import pandas as pd
import pytest
import torch

from bench.experiments import gradients as gr
from bench import schema
from bench.train import train as tr
from bench.cli import main
from tests.helpers import DEVICE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("model", gr.MODELS)
def test_kernel_gradients_equal_the_references(model):
    """The 2x rule on relative errors: max over positions of |kernel − ref64| / max(ref64, its median) is at most
    twice PyTorch's own fp32 maximum, plus a floor of 8 fp32 rounding steps per time step.  Relative, because the
    gradients span many orders of magnitude (a max-norm of absolute errors would see only the last positions);
    at least the median, because a position whose gradient nearly vanishes (a Transformer's, 1000× below the
    others, on one CPU) is a difference of terms of the typical size, and rounds at that size; the maximum
    over positions, because at one position PyTorch's error can be ~0 by luck.  The floor: the kernels' tanh
    is 2σ(2x) − 1 (no libdevice in the interpreter), a few rounding steps off where torch.tanh is correctly
    rounded; any such tanh in the torch loop measured 1.9e-5 to 2.6e-5 here, against torch's 4.5e-6."""
    T, hidden = 40, 16
    got = gr.position_grads(model, T, seed=3, impl="kernels", hidden=hidden, device=DEVICE)
    want = gr.position_grads(model, T, seed=3, impl="torch", hidden=hidden, device=DEVICE, dtype=torch.float64)
    same = gr.position_grads(model, T, seed=3, impl="torch", hidden=hidden, device=DEVICE)
    assert got.shape == want.shape == (T,) and (want > 0).all()
    rel = lambda g: ((g - want).abs() / want.clamp(min=want.median().item())).max().item()  # noqa: E731
    assert rel(got) <= 2 * rel(same) + 8 * T * torch.finfo(torch.float32).eps, (rel(got), rel(same))


def test_probe_is_the_textbooks_demo():
    """nn.RNN(1, 64) and Linear(64, 1) on the last output: the same gradient as the chapter's code."""
    torch.manual_seed(5)
    rnn, head = torch.nn.RNN(1, 64, batch_first=True), torch.nn.Linear(64, 1)
    g = torch.Generator().manual_seed(10_005)
    x = torch.randn(1, 30, 1, generator=g).requires_grad_()
    head(rnn(x)[0][:, -1]).sum().backward()
    torch.testing.assert_close(gr.position_grads("rnn", 30, seed=5, impl="torch"), x.grad[0, :, 0].abs().double())


def test_ratios_and_horizon_from_known_rows():
    rows = []
    for seed, decay in ((0, 0.5), (1, 0.25)):
        g = [decay ** (9 - t) for t in range(10)]
        rows += [dict(model="m", impl="torch", seed=seed, source="default init", seq_len=10, position=t, grad_norm=v,
                      status="ok", reason="") for t, v in enumerate(g)]
    rows.append(dict(model="m", impl="torch", seed=2, source="default init", seq_len=10, status="error",
                     reason="RuntimeError: boom"))
    (r,) = gr.ratios(pd.DataFrame(rows))
    assert r["seeds"] == 2 and r["failed"] == ["seed 2: RuntimeError: boom"]
    assert r["ratio_min"] == pytest.approx(2 ** 9) and r["ratio_max"] == pytest.approx(4 ** 9)
    assert r["ratio"] == pytest.approx((2 ** 9 + 4 ** 9) / 2)
    assert r["per_step"] == pytest.approx((0.5 + 0.25) / 2)       # each seed its decay, the median of two
    # 10^-6 of the last: 0.5^20 < 1e-6 < 0.5^19, so every position of 10 is reached; 0.25^10 < 1e-6 < 0.25^9
    assert r["horizon"] == 10 and r["zeros"] == 0


def test_zero_first_gradient_is_an_infinite_ratio():
    rows = [dict(model="m", impl="kernels", seed=0, source="default init", seq_len=3, position=t, grad_norm=v,
                 status="ok", reason="") for t, v in enumerate((0.0, 1e-3, 1.0))]
    (r,) = gr.ratios(pd.DataFrame(rows))
    assert r["ratio"] == math.inf and r["zeros"] == 1 and r["horizon"] == 2
    assert r["per_step"] == pytest.approx(1e-3)       # from position 1, the earliest above 1e-30 of the last


def test_cli_writes_the_files(tmp_path, capsys):
    out = tmp_path / "g"
    assert main(["gradients", "--only", "rnn,mingru", "--seq-len", "12", "--seeds", "2", "--hidden", "8",
                 "--out", str(out), "--no-progress"]) == 0
    assert {"gradients.csv", "gradients.png", "GRADIENTS.md", "gradients.json"} <= set(os.listdir(out))
    rows, dropped = schema.read_rows(str(out / "gradients.csv"), schema.GradientRow)
    assert dropped == 0 and len(rows) == 2 * 2 * 12
    assert {r["model"] for r in rows} == {"rnn", "mingru"} and {r["impl"] for r in rows} == {"kernels"}
    report = (out / "GRADIENTS.md").read_text()
    assert "| rnn | kernels | default init | 12 | 2 |" in report and "| mingru | kernels |" in report
    assert "| rnn | kernels | default init | 12 | 2 |" in capsys.readouterr().out


def test_a_failing_model_is_a_row_and_the_run_goes_on(tmp_path, monkeypatch):
    real = gr.position_grads

    def flaky(model, *a, **kw):
        if model == "gru":
            raise RuntimeError("simulated kernel failure")
        return real(model, *a, **kw)
    monkeypatch.setattr(gr, "position_grads", flaky)
    gr.run(str(tmp_path), ["gru", "rnn"], seq_len=6, seeds=1, hidden=8, impl="torch", progress=False)
    df = gr.load(str(tmp_path))
    assert list(df[df.model == "gru"].status) == ["error"] and "simulated kernel failure" in df.reason.iloc[0]
    assert (df[df.model == "rnn"].status == "ok").sum() == 6
    assert "seed 0: RuntimeError: simulated kernel failure" in (tmp_path / "GRADIENTS.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--only", "rnn,elman"], "unknown model(s) ['elman']"),
    (["--seq-len", "1"], "--seq-len must be at least 2"),
    (["--checkpoint", "/nonexistent.pt"], "--checkpoint /nonexistent.pt is not a file"),
])
def test_bad_input_is_one_line(tmp_path, capsys, args, message):
    assert main(["gradients", *args, "--out", str(tmp_path / "g"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_not_a_checkpoint(tmp_path, capsys):
    bad = tmp_path / "lstm-step.pt"
    bad.write_text("not a checkpoint")
    assert main(["gradients", "--checkpoint", str(bad), "--out", str(tmp_path / "g"), "--no-progress"]) == 2
    assert "is not a seqbench train checkpoint" in capsys.readouterr().err


def test_trained_checkpoint(tmp_path):
    """A tiny mingru LM from seqbench train, probed on the kernels: the embeddings' gradients, one row per
    position, equal to the reference impl's on the same checkpoint."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    sources = sorted(os.path.join(r, f) for r, _, fs in os.walk(os.path.join(ROOT, "bench")) for f in fs
                     if f.endswith(".py"))
    for i, path in enumerate(sources):
        (corpus / f"{i:03d}.txt").write_bytes(open(path, "rb").read())
    cfg = tr.TrainConfig(models=["mingru"], d_model=16, layers=1, seq_len=16, batch=4, tokens=4 * 16 * 3, warmup=1,
                         eval_every=2, val_tokens=64, impl="torch", corpus=str(corpus))
    tr.train(cfg, str(tmp_path / "train"), progress=False)
    ckpt = tr.checkpoint_path(str(tmp_path / "train"), "mingru", "torch")
    outs = {}
    for impl in ("kernels", "torch"):
        out = tmp_path / impl
        gr.run(str(out), seq_len=20, seeds=2, impl=impl, checkpoint=ckpt, progress=False)
        df = gr.load(str(out))
        assert set(df.status) == {"ok"} and len(df) == 2 * 20 and set(df.source) == {ckpt}
        outs[impl] = torch.tensor(df.grad_norm.to_numpy())
    torch.testing.assert_close(outs["kernels"], outs["torch"], rtol=1e-4, atol=1e-9)
    assert "trained checkpoint" in (tmp_path / "kernels" / "GRADIENTS.md").read_text()


# ------------------------------------------------------------------------ rough edges (issue 21)

def _tiny_checkpoint(tmp_path, corpus_arg):
    cfg = tr.TrainConfig(models=["convs2s"], d_model=16, layers=1, seq_len=16, batch=4, tokens=4 * 16 * 2, warmup=1,
                         eval_every=2, val_tokens=64, impl="torch", corpus=corpus_arg)
    tr.train(cfg, str(tmp_path / "train"), progress=False)
    return tr.checkpoint_path(str(tmp_path / "train"), "convs2s", "torch")


def test_checkpoint_with_a_relative_corpus_works_from_elsewhere(tmp_path, monkeypatch, capsys):
    corpus = tmp_path / "data" / "corpus.txt"
    corpus.parent.mkdir()
    corpus.write_bytes(open(os.path.join(ROOT, "bench", "train", "train.py"), "rb").read())
    monkeypatch.chdir(corpus.parent)
    ckpt = _tiny_checkpoint(tmp_path, "corpus.txt")
    monkeypatch.chdir(tmp_path)
    assert main(["gradients", "--checkpoint", ckpt, "--seq-len", "8", "--seeds", "1", "--out", str(tmp_path / "g"),
                 "--no-progress"]) == 0
    # the corpus moved or changed: one line naming it, no traceback
    for change in ("moved", "changed"):
        if change == "moved":
            corpus.rename(tmp_path / "elsewhere.txt")
        else:
            (tmp_path / "elsewhere.txt").rename(corpus)
            corpus.write_bytes(b"other bytes " * 4000)
        capsys.readouterr()
        assert main(["gradients", "--checkpoint", ckpt, "--seq-len", "8", "--out", str(tmp_path / "g2"),
                     "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err and str(corpus) in err, err


@pytest.mark.parametrize("damage", ["empty dicts", "renamed model"])
def test_checkpoint_that_does_not_fit_is_one_line(tmp_path, capsys, damage):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(open(os.path.join(ROOT, "bench", "train", "train.py"), "rb").read())
    ckpt = _tiny_checkpoint(tmp_path, str(corpus))
    state = torch.load(ckpt, weights_only=False)
    state = {"model": {}, "config": {}} if damage == "empty dicts" else {**state, "model_name": "transformer"}
    torch.save(state, ckpt)
    assert main(["gradients", "--checkpoint", ckpt, "--seq-len", "8", "--out", str(tmp_path / "g"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and ckpt in err, err


def test_unknown_model_writes_nothing(tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["gradients", "--only", "foo", "--out", str(out), "--no-progress"]) == 2
    assert not out.exists()
